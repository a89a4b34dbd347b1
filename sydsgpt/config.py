"""What a model is, in one place: :class:`SydsGPTConfig`, :class:`Kernels` and the layer tables.

* :class:`SydsGPTConfig`: the architecture. Every default and every rule about a model's
  shape lives here, once; each layer is built from it (``TransformerBlock.from_config``).
  It is stored in every checkpoint and compared when a run resumes.
* :class:`Kernels`: how the same maths is computed (written-out attention or PyTorch's
  fused kernel, one fused Q/K/V product, a padded vocabulary). Switching a kernel never
  changes what a model computes beyond rounding, so it is not part of the config and a
  run may resume with other kernels.
* The layer tables :data:`NORMS`, :data:`FEED_FORWARDS` and :data:`ATTENTIONS`: the name a
  config gives (``norm="rmsnorm"``) -> the class that builds that layer from the config.
  A new variant is one module whose class is registered with :func:`register`; the config
  then accepts its name, and parameter and FLOP counts follow from the layers it builds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Iterator, TypeVar

from .validation import (
    check_bool,
    check_choice,
    check_keys,
    check_positive_int,
    check_real,
    field_names,
)

NORMS: dict[str, type] = {}
"""``config.norm`` -> the norm class (``"layernorm"``: chapter 3, ``"rmsnorm"``: chapter 7)."""
FEED_FORWARDS: dict[str, type] = {}
"""``config.ffn`` -> the feed-forward class (``"gelu"``: chapter 3, ``"swiglu"``: chapter 7)."""
ATTENTIONS: dict[str, type] = {}
"""``config.attention_type`` -> the attention class (``"multi-head"``: chapters 2 and 7)."""

_TABLES = {"norm": NORMS, "ffn": FEED_FORWARDS, "attention_type": ATTENTIONS}
LayerClass = TypeVar("LayerClass", bound=type)


def register(field: str, name: str) -> Callable[[LayerClass], LayerClass]:
    """Class decorator: the layer a config builds when ``config.<field> == name``.

    The class needs a ``from_config(config)`` classmethod. Example::

        @register("ffn", "relu2")
        class SquaredReLUFeedForward(nn.Module): ...

    makes ``SydsGPTConfig(..., ffn="relu2")`` valid and every block use it.
    """
    if field not in _TABLES:
        raise ValueError(f"register() takes one of {sorted(_TABLES)} as field, got {field!r}")

    def add(cls: LayerClass) -> LayerClass:
        if not callable(getattr(cls, "from_config", None)):
            raise TypeError(
                f"{cls.__name__} needs a from_config(config) classmethod to be registered"
            )
        _TABLES[field][name] = cls
        return cls

    return add


@dataclass(frozen=True)
class Kernels:
    """How a model computes, not what: the switches of the appendix "Making it fast".

    ``SydsGPT(config, Kernels(attention="explicit"))`` computes the same function as
    ``SydsGPT(config)`` up to float rounding (tests/test_fast_paths.py proves each switch).
    """

    attention: str = "sdpa"
    """``"explicit"`` (chapter 2's maths written out) or ``"sdpa"`` (PyTorch's fused kernel)."""
    fused_qkv: bool = True
    """While training, compute queries, keys and values with one matrix product."""
    pad_vocab_multiple: int = 1
    """Round the embedding and head rows up to a multiple of this (64 suits GPUs); the
    logits keep ``vocab_size`` columns and checkpoints load with any padding."""
    gelu: str = "fused"
    """``"explicit"`` (chapter 3's tanh formula, seven element-wise operations) or
    ``"fused"`` (PyTorch's ``F.gelu(x, approximate="tanh")``: the same function, one kernel
    forward and one backward)."""

    def __post_init__(self) -> None:
        check_choice(self.attention, "Kernels.attention", ATTENTION_KERNELS)
        check_choice(self.gelu, "Kernels.gelu", GELU_KERNELS)
        check_bool(self.fused_qkv, "Kernels.fused_qkv")
        check_positive_int(self.pad_vocab_multiple, "Kernels.pad_vocab_multiple")

    def padded(self, vocab_size: int) -> int:
        """``vocab_size`` rounded up to ``pad_vocab_multiple``: the embedding's rows."""
        m = self.pad_vocab_multiple
        return (vocab_size + m - 1) // m * m


ATTENTION_KERNELS: tuple[str, ...] = ("explicit", "sdpa")
GELU_KERNELS: tuple[str, ...] = ("explicit", "fused")
POSITIONS: tuple[str, ...] = ("learned", "rope")
LLAMA3_SCALING_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_context_length")
_KERNEL_FIELDS = tuple(field_names(Kernels))


@dataclass(frozen=True, eq=False)
class SydsGPTConfig(Mapping):
    """Hyper-parameters of a SydsGPT model: every default and shape rule, written once.

    The first seven fields are the original project's dict keys; the rest are chapter 7's
    switches, whose defaults are GPT-2's. It reads like the original dict as well
    (``config["num_layers"]``, ``dict(config)``, ``config == {...}``).
    """

    vocab_size: int
    embedding_dim: int
    context_length: int
    num_layers: int
    num_heads: int
    dropout: float = 0.0
    """Dropout on the embeddings, the attention weights and both residual branches."""
    qkv_bias: bool = False
    """A bias in the query, key and value projections (GPT-2 has one)."""
    tie_weights: bool = False
    """Share the output head's weight with the token embedding (as GPT-2 does)."""
    # Chapter 7: the parts of a modern LLM (Llama 3, Qwen3). Every default is GPT-2's.
    norm: str = "layernorm"
    """The blocks' and the final norm, a name in :data:`NORMS`: ``"layernorm"`` (GPT-2) or
    ``"rmsnorm"`` (Llama, Qwen3)."""
    norm_eps: float = 1e-5
    """Every norm's epsilon, QK-norm's included (GPT-2 and Llama 3: 1e-5; Qwen3: 1e-6)."""
    ffn: str = "gelu"
    """The feed-forward network, a name in :data:`FEED_FORWARDS`: ``"gelu"`` (GPT-2's
    ``d -> 4d -> d``) or ``"swiglu"`` (Llama, Qwen3)."""
    ffn_hidden_dim: int | None = None
    """Hidden width of the feed-forward network; ``None``: the network's own default
    (``4 d`` for GELU, the same weight count for SwiGLU: ``8d/3``)."""
    linear_bias: bool = True
    """Biases in the attention output projection and the feed-forward layers (GPT-2 has
    them, Llama and Qwen3 not)."""
    positions: str = "learned"
    """``"learned"``: a position embedding added to the tokens (GPT-2); ``"rope"``: rotary
    embeddings inside attention."""
    rope_theta: float = 10000.0
    """RoPE's base: pair ``i`` of a head turns by ``rope_theta ** (-2i / head_dim)``
    radians per position."""
    rope_scaling: dict[str, float] | None = None
    """Llama 3's rope scaling (keys ``factor``, ``low_freq_factor``, ``high_freq_factor``,
    ``original_context_length``), or ``None``."""
    num_kv_heads: int | None = None
    """Key/value heads for grouped-query attention (must divide ``num_heads``; 1:
    multi-query); ``None``: ``num_heads``."""
    head_dim: int | None = None
    """Features per head; ``None``: ``embedding_dim / num_heads`` (Qwen3 0.6B has 128 with
    16 heads of a 1024-wide model)."""
    qk_norm: bool = False
    """RMS-normalise every head's queries and keys before RoPE (Qwen3)."""
    attention_type: str = "multi-head"
    """The attention layer, a name in :data:`ATTENTIONS`."""

    REQUIRED = ("vocab_size", "embedding_dim", "context_length", "num_layers", "num_heads")

    def __post_init__(self) -> None:
        for name in self.REQUIRED:
            check_positive_int(getattr(self, name), f"config['{name}']")
        check_real(self.dropout, "config['dropout']", low=0.0, high=1.0, high_open=True)
        for name in ("qkv_bias", "tie_weights", "linear_bias", "qk_norm"):
            check_bool(getattr(self, name), f"config['{name}']")
        for name, table in _TABLES.items():
            check_choice(getattr(self, name), f"config['{name}']", sorted(table))
        check_choice(self.positions, "config['positions']", POSITIONS)
        for name in ("ffn_hidden_dim", "num_kv_heads", "head_dim"):
            check_positive_int(getattr(self, name), f"config['{name}']", allow_none=True)
        for name in ("norm_eps", "rope_theta"):
            check_real(getattr(self, name), f"config['{name}']", low=0.0, low_open=True)
        self._check_heads()
        self._check_rope()

    def _check_heads(self) -> None:
        if self.head_dim is None and self.embedding_dim % self.num_heads != 0:
            raise ValueError(
                f"config['embedding_dim'] ({self.embedding_dim}) must be divisible by "
                f"config['num_heads'] ({self.num_heads}) so every head gets the same number "
                f"of features (or set config['head_dim'])."
            )
        if self.num_heads % self.kv_heads != 0:
            divisors = [h for h in range(1, self.num_heads + 1) if self.num_heads % h == 0]
            raise ValueError(
                f"config['num_heads'] ({self.num_heads}) must be a multiple of "
                f"config['num_kv_heads'] ({self.num_kv_heads}): each key/value head serves "
                f"the same number of query heads. Choose num_kv_heads in {divisors}."
            )

    def _check_rope(self) -> None:
        if self.positions == "rope" and self.head_size % 2:
            raise ValueError(
                f"RoPE rotates pairs of features, so the head dimension must be even; this "
                f"config has {self.head_size} features per head. Change "
                f"embedding_dim/num_heads or set an even head_dim."
            )
        if self.rope_scaling is None:
            return
        if self.positions != "rope":
            raise ValueError(
                "config['rope_scaling'] is set but config['positions'] is not 'rope'; "
                "set positions='rope'"
            )
        scaling = self.rope_scaling
        if not isinstance(scaling, Mapping) or sorted(scaling) != sorted(LLAMA3_SCALING_KEYS):
            raise ValueError(
                f"config['rope_scaling'] must be None or a dict with exactly the keys "
                f"{list(LLAMA3_SCALING_KEYS)} (Llama 3's rope scaling), got {scaling!r}"
            )
        if not scaling["high_freq_factor"] > scaling["low_freq_factor"]:
            raise ValueError(
                "config['rope_scaling']: high_freq_factor must be larger than low_freq_factor"
            )

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> SydsGPTConfig:
        """Build from a dict, with clear errors for missing or unknown keys."""
        if isinstance(config, SydsGPTConfig):
            return config
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict or SydsGPTConfig, got {type(config).__name__}")
        kernel_keys = sorted(set(config) & set(_KERNEL_FIELDS))
        if kernel_keys:
            raise ValueError(
                f"config key(s) {kernel_keys} choose kernels, not the architecture: pass them "
                f"as SydsGPT(config, Kernels({kernel_keys[0]}=...)) (sydsgpt.config.Kernels)"
            )
        check_keys(config, field_names(cls), "config key", required=cls.REQUIRED)
        return cls(**dict(config))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (what checkpoints store)."""
        return asdict(self)

    def replace(self, **changes: Any) -> SydsGPTConfig:
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
        """The feed-forward hidden width: ``ffn_hidden_dim``, or the network's own default."""
        if self.ffn_hidden_dim is not None:
            return self.ffn_hidden_dim
        return FEED_FORWARDS[self.ffn].default_hidden_dim(self.embedding_dim)
