"""SydsGPT: a GPT-style language model built from scratch in PyTorch, chapter by chapter.

The modules follow the book's table of contents:

1. ``tokenizer``, ``bpe``, ``corpora``, ``data``: text to token ids, and batches of them
2. ``attention``: scaled dot-product and multi-head attention
3. ``blocks``: layer norm, GELU, feed-forward, the transformer block
4. ``model``, ``gpt2_weights``: the full model, its sizes, GPT-2 weights
5. ``train``, ``checkpoint``, ``distributed``: pretraining (DDP under torchrun)
6. ``generate``: decoding strategies and the KV cache
7. ``norms``, ``swiglu``, ``rope``, ``gqa``, ``hf_weights``, ``hub``: the parts of Llama 3 and Qwen3, their weights

Appendix: ``bench`` (Making it fast). ``exercises`` holds every chapter's exercise checks.
"""

from .attention import KVCache, MultiHeadAttention, scaled_dot_product_attention
from .blocks import GELU, FeedForward, LayerNorm, TransformerBlock
from .gqa import repeat_kv
from .norms import RMSNorm
from .rope import RotaryEmbedding, apply_rope
from .swiglu import SwiGLUFeedForward
from .model import (
    PRESETS, SydsGPT, SydsGPTConfig, count_parameters, flops_per_token, generate_simple, get_preset, model_memory_bytes,
)

__version__ = "0.1.0"

__all__ = [
    "KVCache", "MultiHeadAttention", "scaled_dot_product_attention",
    "GELU", "FeedForward", "LayerNorm", "TransformerBlock",
    "PRESETS", "SydsGPT", "SydsGPTConfig", "count_parameters", "flops_per_token", "generate_simple", "get_preset",
    "model_memory_bytes", "RMSNorm", "RotaryEmbedding", "SwiGLUFeedForward", "apply_rope", "repeat_kv",
]
