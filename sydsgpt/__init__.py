"""SydsGPT: a GPT-style language model built from scratch in PyTorch, chapter by chapter.

The modules follow the book's table of contents:

1. ``tokenizer``, ``bpe``, ``corpora``, ``data``: text to token ids, and batches of them
2. ``attention``: scaled dot-product and multi-head attention
3. ``blocks``: layer norm, GELU, feed-forward, the transformer block
4. ``config``, ``model``, ``presets``, ``gpt2_weights``: what a model is (the config, its
   kernels, the tables of layers it can name), the full model, its named sizes, GPT-2 weights
5. ``objectives``, ``losses``, ``optim``, ``train_config``, ``train``, ``divergence``, ``logs``,
   ``checkpoint``, ``distributed``, ``book``: pretraining (any objective, DDP under torchrun),
   the book's own runs and the book checkpoint (its weights ship in ``weights/book-checkpoint``)
6. ``sampling``, ``generate``: choosing each token, the decoding loop and the KV cache
7. ``norms``, ``swiglu``, ``rope``, ``gqa``, ``hf_weights``, ``hub``: the parts of Llama 3 and
   Qwen3, their weights
8. ``gguf`` (reading GGUF files), ``quants`` (their block formats, both ways), ``quantize``
   (int8 and 4-bit linear layers for our own models), ``gguf_tokenizer``, ``gguf_model``,
   ``gguf_writer`` (export), ``smollm2`` (finding SmolLM2-135M-Instruct), ``chat`` (the chat
   template and a chat session): a real model on your laptop
9. ``classify``, ``instruct``, ``lora``: finetuning a classifier, an instruction follower, LoRA
10. ``rewards`` (checkable tasks, the answer parser, the reward), ``rollouts`` (sampled and
    scored answers), ``grpo``, ``dpo``, ``reward_training`` (the loop): learning from rewards

Shared by all: ``runtime`` (device, precision, threads, seeding: every "auto" rule),
``validation`` (config and input checks), ``files`` (a run folder's file names, atomic writes,
its lock), ``flags`` (how a config field is spelled on the command line),
``notebook`` (the book's teaching views of this source).
Appendix: ``bench`` (Making it fast; ``bench.speedrun`` trains recipes with seeds and
intervals, ``bench.profile`` shows where a step's time goes), ``muon`` (the Muon optimizer
for the block matrices; ``TrainConfig.optimizer`` picks it). ``exercises`` holds every
chapter's exercise checks; ``cli`` is the ``sydsgpt`` command.
"""

from .attention import KVCache, MultiHeadAttention, scaled_dot_product_attention
from .blocks import GELU, FeedForward, LayerNorm, TransformerBlock
from .gqa import repeat_kv
from .config import Kernels, SydsGPTConfig
from .model import SydsGPT, count_parameters, flops_per_token, generate_simple, model_memory_bytes
from .norms import RMSNorm
from .presets import PRESETS, get_preset
from .rope import RotaryEmbedding, apply_rope
from .swiglu import SwiGLUFeedForward

__version__ = "0.1.0"

__all__ = [
    "KVCache",
    "MultiHeadAttention",
    "scaled_dot_product_attention",
    "GELU",
    "FeedForward",
    "LayerNorm",
    "TransformerBlock",
    "Kernels",
    "PRESETS",
    "SydsGPT",
    "SydsGPTConfig",
    "count_parameters",
    "flops_per_token",
    "generate_simple",
    "get_preset",
    "model_memory_bytes",
    "RMSNorm",
    "RotaryEmbedding",
    "SwiGLUFeedForward",
    "apply_rope",
    "repeat_kv",
]
