"""Chapter 4: the full model.

``SydsGPT(config)``: token + position embeddings, a stack of transformer blocks, a final
layer norm and a linear head to vocabulary logits. Plus the config (a plain dict, as in
the original SydsGPT-Pretraining project, validated here as :class:`SydsGPTConfig`),
parameter / memory / FLOP estimates, and greedy ``generate_simple``. The named configs
(GPT-2 sizes, the book's models) are in :mod:`sydsgpt.presets`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import torch
from torch import nn

from .attention import ATTENTION_IMPLS, KVCache
from .blocks import NORMS, TransformerBlock, make_norm
from .rope import LLAMA3_SCALING_KEYS, RotaryEmbedding
from .swiglu import swiglu_hidden_dim
from .validation import check_input_ids, check_keys, check_positive_int, field_names

FFNS: tuple[str, ...] = ("gelu", "swiglu")
POSITIONS: tuple[str, ...] = ("learned", "rope")


@dataclass(frozen=True, eq=False)
class SydsGPTConfig(Mapping):
    """Hyper-parameters of a SydsGPT model.

    The first seven fields are the original project's dict keys; the rest are optional
    switches with defaults that keep the original behaviour. It reads like the original
    dict as well (``config["num_layers"]``, ``dict(config)``, ``config == {...}``), so
    ``model.config`` is one object whichever way a script uses it.
    """

    vocab_size: int
    embedding_dim: int
    context_length: int
    num_layers: int
    num_heads: int
    dropout: float = 0.1
    qkv_bias: bool = False
    tie_weights: bool = False
    """Share the output head's weight with the token embedding (as GPT-2 does)."""
    attention: str = "sdpa"
    """``"explicit"`` (chapter 2's maths written out) or ``"sdpa"`` (PyTorch's fused kernel)."""
    fused_qkv: bool = True
    """Compute queries, keys and values with one matrix product."""
    pad_vocab_multiple: int = 1
    """Round the embedding/head rows up to a multiple of this (64 suits GPUs); logits keep ``vocab_size``."""
    # Chapter 7: the parts of a modern LLM (Llama 3, Qwen3). Every default is GPT-2's.
    norm: str = "layernorm"
    """``"layernorm"`` (GPT-2) or ``"rmsnorm"`` (Llama, Qwen3): the blocks' and the final norm."""
    norm_eps: float = 1e-5
    """The norms' epsilon (GPT-2 and Llama 3: 1e-5; Qwen3: 1e-6)."""
    ffn: str = "gelu"
    """Feed-forward network: ``"gelu"`` (GPT-2's ``d -> 4d -> d``) or ``"swiglu"`` (Llama, Qwen3)."""
    ffn_hidden_dim: int | None = None
    """Hidden width of the feed-forward network; ``None``: ``4 d`` for GELU, the same weight count for SwiGLU (``8d/3``)."""
    linear_bias: bool = True
    """Biases in the attention output projection and the feed-forward layers (GPT-2 has them, Llama and Qwen3 not)."""
    positions: str = "learned"
    """``"learned"``: a position embedding added to the tokens (GPT-2); ``"rope"``: rotary embeddings in attention."""
    rope_theta: float = 10000.0
    """RoPE's base: pair ``i`` of a head turns by ``rope_theta ** (-2i / head_dim)`` radians per position."""
    rope_scaling: dict[str, float] | None = None
    """Llama 3's rope scaling (keys ``factor``, ``low_freq_factor``, ``high_freq_factor``, ``original_context_length``), or ``None``."""
    num_kv_heads: int | None = None
    """Key/value heads for grouped-query attention (must divide ``num_heads``; 1: multi-query); ``None``: ``num_heads``."""
    head_dim: int | None = None
    """Features per head; ``None``: ``embedding_dim / num_heads`` (Qwen3 0.6B has 128 with 16 heads of a 1024-wide model)."""
    qk_norm: bool = False
    """RMS-normalise every head's queries and keys before RoPE (Qwen3)."""

    REQUIRED = ("vocab_size", "embedding_dim", "context_length", "num_layers", "num_heads")

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embedding_dim", "context_length", "num_layers", "num_heads", "pad_vocab_multiple"):
            check_positive_int(getattr(self, name), f"config['{name}']")
        if self.head_dim is None and self.embedding_dim % self.num_heads != 0:
            raise ValueError(
                f"config['embedding_dim'] ({self.embedding_dim}) must be divisible by config['num_heads'] "
                f"({self.num_heads}) so every head gets the same number of features (or set config['head_dim'])."
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"config['dropout'] must be a probability in [0, 1), got {self.dropout!r}")
        for name in ("qkv_bias", "tie_weights", "fused_qkv", "linear_bias", "qk_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"config['{name}'] must be True or False, got {getattr(self, name)!r}")
        if self.attention not in ATTENTION_IMPLS:
            raise ValueError(f"config['attention'] must be one of {ATTENTION_IMPLS}, got {self.attention!r}")
        self._check_modern_fields()

    def _check_modern_fields(self) -> None:
        """Validate chapter 7's fields and the combinations that make no sense."""
        for name, allowed in (("norm", NORMS), ("ffn", FFNS), ("positions", POSITIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"config['{name}'] must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("ffn_hidden_dim", "num_kv_heads", "head_dim"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"config['{name}'] must be a positive integer or None, got {value!r}")
        for name in ("norm_eps", "rope_theta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"config['{name}'] must be a positive number, got {value!r}")
        if self.num_heads % self.kv_heads != 0:
            divisors = [h for h in range(1, self.num_heads + 1) if self.num_heads % h == 0]
            raise ValueError(
                f"config['num_heads'] ({self.num_heads}) must be a multiple of config['num_kv_heads'] "
                f"({self.num_kv_heads}): each key/value head serves the same number of query heads. "
                f"Choose num_kv_heads in {divisors}."
            )
        if self.positions == "rope" and self.head_size % 2:
            raise ValueError(
                f"RoPE rotates pairs of features, so the head dimension must be even; this config has "
                f"{self.head_size} features per head. Change embedding_dim/num_heads or set an even head_dim."
            )
        if self.positions != "rope" and self.rope_scaling is not None:
            raise ValueError("config['rope_scaling'] is set but config['positions'] is not 'rope'; set positions='rope'")
        if self.rope_scaling is not None:
            if not isinstance(self.rope_scaling, Mapping) or sorted(self.rope_scaling) != sorted(LLAMA3_SCALING_KEYS):
                raise ValueError(
                    f"config['rope_scaling'] must be None or a dict with exactly the keys {list(LLAMA3_SCALING_KEYS)} "
                    f"(Llama 3's rope scaling), got {self.rope_scaling!r}"
                )
            if not self.rope_scaling["high_freq_factor"] > self.rope_scaling["low_freq_factor"]:
                raise ValueError("config['rope_scaling']: high_freq_factor must be larger than low_freq_factor")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "SydsGPTConfig":
        """Build from a dict, with clear errors for missing or unknown keys."""
        if isinstance(config, SydsGPTConfig):
            return config
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict or SydsGPTConfig, got {type(config).__name__}")
        check_keys(config, field_names(cls), "config key", required=cls.REQUIRED)
        return cls(**dict(config))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (what checkpoints store)."""
        return asdict(self)

    def replace(self, **changes: Any) -> "SydsGPTConfig":
        """A copy with ``changes`` applied (validated)."""
        return SydsGPTConfig.from_dict({**self.to_dict(), **changes})

    # The Mapping interface: the fields, by name.
    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)

    @property
    def head_size(self) -> int:
        """Features per attention head: ``head_dim``, or ``embedding_dim / num_heads``."""
        return self.head_dim if self.head_dim is not None else self.embedding_dim // self.num_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads: ``num_kv_heads``, or ``num_heads`` (plain multi-head attention)."""
        return self.num_kv_heads if self.num_kv_heads is not None else self.num_heads

    @property
    def ffn_hidden_size(self) -> int:
        """The feed-forward network's hidden width (see ``ffn_hidden_dim``)."""
        if self.ffn_hidden_dim is not None:
            return self.ffn_hidden_dim
        return 4 * self.embedding_dim if self.ffn == "gelu" else swiglu_hidden_dim(self.embedding_dim)

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding and head: ``vocab_size`` rounded up to ``pad_vocab_multiple``."""
        m = self.pad_vocab_multiple
        return (self.vocab_size + m - 1) // m * m


class SydsGPT(nn.Module):
    """A GPT-2 style decoder-only language model.

    Args:
        config: a dict with keys ``vocab_size``, ``embedding_dim``, ``context_length``,
            ``num_layers``, ``num_heads``, ``dropout``, ``qkv_bias`` (and the optional
            switches of :class:`SydsGPTConfig`), or a :class:`SydsGPTConfig`.

    Forward: ``(B, T)`` token ids -> ``(B, T, vocab_size)`` logits.
    """

    def __init__(self, config: Mapping[str, Any] | SydsGPTConfig) -> None:
        super().__init__()
        cfg = SydsGPTConfig.from_dict(config)
        self._config = cfg
        self.token_embedding = nn.Embedding(cfg.padded_vocab_size, cfg.embedding_dim)
        # Learned positions (GPT-2) or rotary embeddings applied inside attention (chapter 7).
        self.position_embedding = nn.Embedding(cfg.context_length, cfg.embedding_dim) if cfg.positions == "learned" else None
        # later: rotary position embeddings (chapter 7)
        self.rope = RotaryEmbedding(cfg.head_size, cfg.rope_theta, cfg.rope_scaling) if cfg.positions == "rope" else None
        # endlater
        self.drop_embedding = nn.Dropout(cfg.dropout)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(
                cfg.embedding_dim, cfg.context_length, cfg.num_heads, cfg.dropout, cfg.qkv_bias,
                # later: fast-path switches (appendix: making it fast) and the modern parts (chapter 7)
                attention=cfg.attention, fused_qkv=cfg.fused_qkv,  # type: ignore[arg-type]
                norm=cfg.norm, norm_eps=cfg.norm_eps, ffn=cfg.ffn, ffn_hidden_dim=cfg.ffn_hidden_size,
                linear_bias=cfg.linear_bias, num_kv_heads=cfg.kv_heads, head_dim=cfg.head_size, qk_norm=cfg.qk_norm,
                # endlater
            )
            for _ in range(cfg.num_layers)
        )
        self.final_layer_norm = make_norm(cfg.norm, cfg.embedding_dim, cfg.norm_eps)
        self.output_projection = nn.Linear(cfg.embedding_dim, cfg.padded_vocab_size, bias=False)
        if cfg.tie_weights:
            self.output_projection.weight = self.token_embedding.weight
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """GPT-2's initialisation: weights ~ N(0, 0.02), biases 0 (layer norms keep 1 and 0)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def config(self) -> SydsGPTConfig:
        """The model's :class:`SydsGPTConfig` (it also reads like the original dict config)."""
        return self._config

    # later: model.cfg, the old name of model.config (compatibility)
    @property
    def cfg(self) -> SydsGPTConfig:
        """Deprecated spelling of :attr:`config`."""
        warnings.warn("SydsGPT.cfg is deprecated: use model.config (the same object)", DeprecationWarning, stacklevel=2)
        return self._config
    # endlater

    # later: make_kv_cache, for fast generation (chapter 6)
    def make_kv_cache(self, preallocate: bool = True) -> list[KVCache]:
        """One empty :class:`KVCache` per layer, for incremental decoding."""
        return [KVCache(self.config.context_length, preallocate) for _ in self.transformer_blocks]
    # endlater

    def forward(
        self,
        input_ids: torch.Tensor,
        kv_cache: list[KVCache] | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits for every position.

        Args:
            input_ids: ``(B, T)`` int64 token ids.
            kv_cache: from :meth:`make_kv_cache`; ``input_ids`` then holds only the new
                tokens, which continue the cached ones (positions carry on).
            last_only: compute logits for the last position only (generation).

        Returns:
            ``(B, T, vocab_size)`` logits, or ``(B, 1, vocab_size)`` with ``last_only``.
        """
        check_input_ids(input_ids)
        b, t = input_ids.shape
        cfg = self.config
        past = kv_cache[0].length if kv_cache else 0
        if past + t > cfg.context_length:
            raise ValueError(
                f"sequence of {past + t} tokens exceeds context_length={cfg.context_length}; "
                f"crop to the last {cfg.context_length} tokens (e.g. input_ids[:, -context_length:])."
            )
        positions = torch.arange(past, past + t, device=input_ids.device)
        rope = None
        if self.position_embedding is not None:
            x = self.drop_embedding(self.token_embedding(input_ids) + self.position_embedding(positions))  # (B, T, d)
        # later: else: rotary positions, applied inside attention (chapter 7)
        else:  # RoPE: positions enter inside attention, as rotations of the queries and keys
            x = self.drop_embedding(self.token_embedding(input_ids))  # (B, T, d)
            rope = self.rope(positions)  # (cos, sin), each (T, head_dim), shared by every layer
        # endlater
        for i, block in enumerate(self.transformer_blocks):
            x = block(x, kv_cache=kv_cache[i] if kv_cache else None, rope=rope)
        x = self.final_layer_norm(x)
        # later: last_only: only the last position's logits (generation, chapter 6)
        if last_only:
            x = x[:, -1:, :]
        # endlater
        logits = self.output_projection(x)  # (B, T, padded_vocab)
        # later: drop the padding rows of a padded vocabulary (appendix: making it fast)
        if cfg.padded_vocab_size != cfg.vocab_size:
            logits = logits[..., : cfg.vocab_size]
        # endlater
        return logits


def count_parameters(config: Mapping[str, Any] | SydsGPTConfig | nn.Module, include_position: bool = True) -> int:
    """Number of parameters, from the config alone (no model is built) or from a model.

    Counts the tied head once when ``tie_weights`` is set. With
    ``include_position=False`` the position embedding is left out.
    """
    if isinstance(config, nn.Module):
        total = sum(p.numel() for p in config.parameters())
        if not include_position and getattr(config, "position_embedding", None) is not None:
            total -= config.position_embedding.weight.numel()
        return total
    c = SydsGPTConfig.from_dict(config)
    d, v, h = c.embedding_dim, c.padded_vocab_size, c.ffn_hidden_size
    q, kv = c.num_heads * c.head_size, c.kv_heads * c.head_size  # query and key/value widths
    attn = d * q + 2 * d * kv + (q + 2 * kv if c.qkv_bias else 0) + q * d + (d if c.linear_bias else 0)
    attn += 2 * c.head_size if c.qk_norm else 0  # a scale for queries and one for keys
    if c.ffn == "gelu":
        ff = 2 * d * h + (h + d if c.linear_bias else 0)
    else:  # SwiGLU: gate, up (d -> h) and down (h -> d)
        ff = 3 * d * h + (2 * h + d if c.linear_bias else 0)
    norm = 2 * d if c.norm == "layernorm" else d  # scale and shift, or scale only
    per_layer = attn + ff + 2 * norm
    total = v * d + c.num_layers * per_layer + norm
    if include_position and c.positions == "learned":
        total += c.context_length * d
    if not c.tie_weights:
        total += v * d
    return total


def model_memory_bytes(
    config: Mapping[str, Any] | SydsGPTConfig | nn.Module, bytes_per_param: int | torch.dtype = 4
) -> int:
    """Bytes the parameters take: 4 per parameter in float32, 2 in bfloat16.

    ``bytes_per_param`` is a number of bytes or a dtype (``torch.bfloat16``). Activations,
    gradients and optimizer state are not included.
    """
    if isinstance(bytes_per_param, torch.dtype):
        bytes_per_param = torch.empty((), dtype=bytes_per_param).element_size()
    return count_parameters(config) * bytes_per_param


def flops_per_token(
    config: Mapping[str, Any] | SydsGPTConfig, seq_len: int | None = None, training: bool = True
) -> int:
    """Model FLOPs per token: matrix products in the blocks and head, plus attention.

    Forward: ``2 N + 4 L T d``, where ``N`` counts the weights used in matrix products
    (``12 d^2`` per layer plus the head), and ``4 L T d`` is the attention scores
    ``Q K^T`` and the weighted sum ``A V`` over ``T`` positions (causal halving not
    counted). Training (forward + backward) is three times that: ``6 N + 12 L T d``,
    the convention of the PaLM paper (appendix B), used for model FLOPs utilisation.
    """
    c = SydsGPTConfig.from_dict(config)
    t = c.context_length if seq_len is None else seq_len
    d = c.embedding_dim
    q, kv = c.num_heads * c.head_size, c.kv_heads * c.head_size
    ff_matrices = 2 if c.ffn == "gelu" else 3
    per_layer = 2 * d * q + 2 * d * kv + ff_matrices * d * c.ffn_hidden_size  # 12 d^2 for GPT-2
    n_matmul = c.num_layers * per_layer + c.padded_vocab_size * d
    attn_forward = 2 * 2 * c.num_layers * t * q  # QK^T and AV, each 2*T*(heads*head_dim) per token per layer
    forward = 2 * n_matmul + attn_forward
    return 3 * forward if training else forward


@torch.no_grad()
def generate_simple(
    model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int, context_length: int | None = None,
    *, context_len: int | None = None,
) -> torch.Tensor:
    """Greedy decoding: append the most likely next token ``max_new_tokens`` times.

    The model only ever sees the last ``context_length`` tokens (default: the model's
    ``config.context_length``). ``context_len=`` is the original project's name for the
    same argument and still works.

    Args:
        input_ids: ``(B, T)`` prompt ids.
    Returns:
        ``(B, T + max_new_tokens)`` ids.
    """
    if context_len is not None:
        if context_length is not None and context_length != context_len:
            raise TypeError("give context_length or its old name context_len, not both")
        context_length = context_len
    if context_length is None:
        config = getattr(model, "config", None)
        if not isinstance(config, SydsGPTConfig):
            raise TypeError("generate_simple needs context_length for a model without a SydsGPTConfig")
        context_length = config.context_length
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1:
        raise ValueError(f"context_length must be an integer >= 1 (usually config['context_length']), got {context_length!r}")
    check_input_ids(input_ids)
    for _ in range(max_new_tokens):
        window = input_ids[:, -context_length:]  # crop: the model sees at most context_length tokens
        # SydsGPT can skip the head for every position but the last (the only one used).
        logits = model(window, last_only=True) if isinstance(model, SydsGPT) else model(window)
        logits = logits[:, -1, :]  # (B, vocab)
        next_id = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        input_ids = torch.cat([input_ids, next_id], dim=1)
    return input_ids
