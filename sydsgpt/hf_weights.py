"""Chapter 7: Llama 3 and Qwen3 weights (the Hugging Face format) in SydsGPT, and back.

Both families are the same decoder with chapter 7's parts (RMSNorm, SwiGLU, RoPE in
the "rotate half" layout, grouped-query attention, bias-free linears); Qwen3 adds
QK-norm. Their tensor names map onto ours one to one, with no reshaping:

====================================================  ==============================================
Hugging Face                                          SydsGPT
====================================================  ==============================================
``model.embed_tokens.weight``                         ``token_embedding.weight``
``model.layers.N.input_layernorm.weight``             ``transformer_blocks.N.layer_norm1.scale``
``model.layers.N.self_attn.{q,k,v}_proj``             ``...attention.weight_{query,key,value}``
``model.layers.N.self_attn.o_proj``                   ``...attention.output_projection``
``model.layers.N.self_attn.{q,k}_norm.weight``        ``...attention.{q,k}_norm.scale`` (Qwen3)
``model.layers.N.post_attention_layernorm.weight``    ``...layer_norm2.scale``
``model.layers.N.mlp.{gate,up,down}_proj``            ``...feed_forward.{gate,up,down}_projection``
``model.norm.weight``                                 ``final_layer_norm.scale``
``lm_head.weight``                                    ``output_projection.weight`` (absent when
                                                      tied)
====================================================  ==============================================

Real checkpoints come from the Hugging Face Hub (:func:`sydsgpt.hub.download_hf_model`,
which checks every file's size and sha256 against the Hub's records); offline, a folder
saved by ``save_pretrained`` (or copied from a machine with internet) loads the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from .hub import read_source
from .config import SydsGPTConfig
from .model import SydsGPT

StateDict = Mapping[str, torch.Tensor]

FAMILIES: dict[str, str] = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}
"""``model_type`` -> the ``transformers`` class that loads it."""

# (Hugging Face piece, SydsGPT piece), replaced in this order: whole names first, then parts.
_TOP_NAMES = (
    ("model.embed_tokens.weight", "token_embedding.weight"),
    ("model.norm.weight", "final_layer_norm.scale"),
    ("lm_head.weight", "output_projection.weight"),
)
_LAYER_PARTS = (
    ("model.layers.", "transformer_blocks."),
    (".input_layernorm.weight", ".layer_norm1.scale"),
    (".post_attention_layernorm.weight", ".layer_norm2.scale"),
    (".self_attn.q_proj.", ".attention.weight_query."),
    (".self_attn.k_proj.", ".attention.weight_key."),
    (".self_attn.v_proj.", ".attention.weight_value."),
    (".self_attn.o_proj.", ".attention.output_projection."),
    (".self_attn.q_norm.weight", ".attention.q_norm.scale"),
    (".self_attn.k_norm.weight", ".attention.k_norm.scale"),
    (".mlp.gate_proj.", ".feed_forward.gate_projection."),
    (".mlp.up_proj.", ".feed_forward.up_projection."),
    (".mlp.down_proj.", ".feed_forward.down_projection."),
)


def _rename(name: str, top: tuple[tuple[str, str], ...], parts: tuple[tuple[str, str], ...]) -> str:
    """``name`` under the ``(old, new)`` pairs: a whole
    top-level name, else every layer part replaced."""
    for old, new in top:
        if name == old:
            return new
    for old, new in parts:
        name = name.replace(old, new)
    return name


def _flipped(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple((ours, theirs) for theirs, ours in pairs)


def hf_name_to_ours(name: str) -> str:
    """``model.layers.3.mlp.up_proj.weight`` ->
    ``transformer_blocks.3.feed_forward.up_projection.weight``."""
    return _rename(name, _TOP_NAMES, _LAYER_PARTS)


def our_name_to_hf(name: str) -> str:
    """The inverse of :func:`hf_name_to_ours`."""
    return _rename(name, _flipped(_TOP_NAMES), _flipped(_LAYER_PARTS))


# ---------------------------------------------------------------------------- configs


def _rope_settings(cfg: Mapping[str, Any]) -> tuple[float, dict[str, float] | None]:
    """``(rope_theta, rope_scaling)`` from a config of transformers 4.x (``rope_theta``,
    ``rope_scaling``) or 5.x (``rope_parameters``)."""
    params = dict(cfg.get("rope_parameters") or {})
    scaling = dict(cfg.get("rope_scaling") or params)
    theta = float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise ValueError(
            f"rope scaling {kind!r} is not supported (supported: none, or Llama 3's 'llama3')"
        )
    return theta, {
        "factor": float(scaling["factor"]),
        "low_freq_factor": float(scaling["low_freq_factor"]),
        "high_freq_factor": float(scaling["high_freq_factor"]),
        "original_context_length": float(scaling["original_max_position_embeddings"]),
    }


def hf_config_to_sydsgpt(
    hf_config: Mapping[str, Any] | Any, context_length: int | None = None
) -> dict[str, Any]:
    """A Llama or Qwen3 config (``config.json`` as a dict, or a ``LlamaConfig`` / ``Qwen3Config``)
    as a SydsGPT config dict.

    ``context_length`` (default: the config's ``max_position_embeddings``, 131,072 for
    Llama 3.2) caps the positions, and with them the KV cache's preallocated buffers.
    Raises ``ValueError`` for variants this model cannot reproduce exactly.
    """
    cfg = dict(hf_config.to_dict() if hasattr(hf_config, "to_dict") else hf_config)
    family = cfg.get("model_type")
    if family not in FAMILIES:
        raise ValueError(
            f"expected a Llama or Qwen3 config (model_type in {sorted(FAMILIES)}), got model_type "
            f"{family!r}"
        )
    needed = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
    )
    missing = [k for k in needed if k not in cfg]
    if missing:
        raise ValueError(
            f"{family} config is missing {missing}; a config.json saved by transformers has them "
            "all"
        )
    attention_bias, mlp_bias = (
        bool(cfg.get("attention_bias", False)),
        bool(cfg.get("mlp_bias", False)),
    )
    problems = []
    if cfg.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={cfg['hidden_act']!r} (supported: 'silu')")
    if cfg.get("pretraining_tp", 1) != 1:
        problems.append(f"pretraining_tp={cfg['pretraining_tp']} (supported: 1)")
    if attention_bias != mlp_bias:
        problems.append(
            f"attention_bias={attention_bias} with mlp_bias={mlp_bias} (SydsGPT's linear_bias "
            "covers both)"
        )
    if cfg.get("use_sliding_window", False):
        problems.append("use_sliding_window=True (supported: full attention in every layer)")
    if problems:
        raise ValueError(
            f"this {family} variant cannot be reproduced by SydsGPT: " + "; ".join(problems)
        )
    theta, scaling = _rope_settings(cfg)
    heads = cfg["num_attention_heads"]
    config = {
        "vocab_size": cfg["vocab_size"],
        "embedding_dim": cfg["hidden_size"],
        "context_length": context_length or cfg["max_position_embeddings"],
        "num_layers": cfg["num_hidden_layers"],
        "num_heads": heads,
        "num_kv_heads": cfg.get("num_key_value_heads") or heads,
        "head_dim": cfg.get("head_dim") or cfg["hidden_size"] // heads,
        "ffn_hidden_dim": cfg["intermediate_size"],
        "dropout": float(cfg.get("attention_dropout", 0.0)),
        "qkv_bias": attention_bias,
        "linear_bias": attention_bias,
        "tie_weights": bool(cfg.get("tie_word_embeddings", False)),
        "norm": "rmsnorm",
        "norm_eps": float(cfg.get("rms_norm_eps", 1e-6)),
        "ffn": "swiglu",
        "positions": "rope",
        "rope_theta": theta,
        "rope_scaling": scaling,
        "qk_norm": family == "qwen3",
    }
    SydsGPTConfig.from_dict(config)
    return config


def sydsgpt_config_to_hf(
    config: Mapping[str, Any] | SydsGPTConfig, family: str | None = None
) -> dict[str, Any]:
    """A SydsGPT config as a Llama (``family="llama"``) or Qwen3 (``"qwen3"``) ``config.json`` dict.

    ``family`` defaults to ``"qwen3"`` with QK-norm, else ``"llama"``. Raises
    ``ValueError`` for a model the family cannot express (GPT-2 parts, QK-norm in a Llama, ...).
    """
    c = SydsGPTConfig.from_dict(config)
    family = family or ("qwen3" if c.qk_norm else "llama")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    problems = [
        f"{name}={getattr(c, name)!r} (needs {want!r})"
        for name, want in (
            ("norm", "rmsnorm"),
            ("ffn", "swiglu"),
            ("positions", "rope"),
            ("qk_norm", family == "qwen3"),
        )
        if getattr(c, name) != want
    ]
    if c.qkv_bias != c.linear_bias or (family == "qwen3" and c.linear_bias):
        problems.append(
            f"qkv_bias={c.qkv_bias}, linear_bias={c.linear_bias} (Llama: both equal; Qwen3: both "
            "False)"
        )
    if problems:
        raise ValueError(
            f"this model cannot be exported as {FAMILIES[family]}: " + "; ".join(problems)
        )
    hf: dict[str, Any] = {
        "architectures": [FAMILIES[family]],
        "model_type": family,
        "vocab_size": c.vocab_size,
        "hidden_size": c.embedding_dim,
        "intermediate_size": c.ffn_hidden_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.kv_heads,
        "head_dim": c.head_size,
        "hidden_act": "silu",
        "max_position_embeddings": c.context_length,
        "rms_norm_eps": c.norm_eps,
        "tie_word_embeddings": c.tie_weights,
        "attention_bias": c.qkv_bias,
        "attention_dropout": c.dropout,
        "rope_theta": c.rope_theta,
        "initializer_range": 0.02,
        "torch_dtype": "float32",
    }
    if family == "llama":
        hf["mlp_bias"] = c.linear_bias
    if c.rope_scaling is not None:
        s = c.rope_scaling
        hf["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": s["factor"],
            "low_freq_factor": s["low_freq_factor"],
            "high_freq_factor": s["high_freq_factor"],
            "original_max_position_embeddings": int(s["original_context_length"]),
        }
    return hf


# ---------------------------------------------------------------------------- state dicts


def hf_to_sydsgpt_state_dict(hf_state: StateDict, model: SydsGPT) -> dict[str, torch.Tensor]:
    """Rename a Llama/Qwen3 state dict to ``model``'s names, handling a tied head and vocabulary
    padding.

    Raises ``ValueError`` naming any missing, unexpected or mis-shaped tensor.
    """
    cfg = model.config
    ours = {
        hf_name_to_ours(k): v for k, v in hf_state.items() if not k.endswith("rotary_emb.inv_freq")
    }
    head = ours.pop("output_projection.weight", None)
    if cfg.tie_weights:
        if head is not None and not torch.equal(head, ours.get("token_embedding.weight", head)):
            raise ValueError(
                "the checkpoint's lm_head.weight differs from its token embedding (an untied "
                "head), but the model ties them; build the model with tie_weights=False."
            )
    elif head is None:
        raise ValueError(
            "the model has an untied head (tie_weights=False) but the checkpoint has no "
            "lm_head.weight"
        )
    else:
        ours["output_projection.weight"] = head
    rows = model.token_embedding.weight.shape[0]  # vocab_size, or more with a padded vocabulary
    for name in ("token_embedding.weight", "output_projection.weight"):
        if name in ours and rows != ours[name].shape[0]:  # padded rows never reach the logits
            padded = ours[name].new_zeros(rows, ours[name].shape[1])
            padded[: ours[name].shape[0]] = ours[name]
            ours[name] = padded
    expected = model.state_dict()
    if cfg.tie_weights:
        expected = {k: v for k, v in expected.items() if k != "output_projection.weight"}
    missing = sorted(our_name_to_hf(k) for k in set(expected) - set(ours))
    unexpected = sorted(our_name_to_hf(k) for k in set(ours) - set(expected))
    wrong = [
        f"{our_name_to_hf(k)}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in ours.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"the checkpoint does not fit this {cfg.num_layers}-layer model: "
            f"missing {missing[:6]}, unexpected {unexpected[:6]}, wrong shapes {wrong[:4]}"
        )
    return ours


def sydsgpt_to_hf_state_dict(model: SydsGPT) -> dict[str, torch.Tensor]:
    """The model's weights under Llama/Qwen3 names (no ``lm_head.weight`` when tied; padding
    dropped).

    Tensors are contiguous copies, ready for :func:`safetensors.torch.save_file`.
    """
    cfg = model.config
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "output_projection.weight" and cfg.tie_weights:
            continue
        if name in ("token_embedding.weight", "output_projection.weight"):
            tensor = tensor[: cfg.vocab_size]
        state[our_name_to_hf(name)] = tensor.detach().contiguous().clone()
    return state


# ---------------------------------------------------------------------------- public API


def load_hf_weights(
    source: Any,
    model: SydsGPT | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    context_length: int | None = None,
) -> SydsGPT:
    """Load Llama 3 or Qwen3 weights in the Hugging Face format into a SydsGPT model.

    Args:
        source: a ``transformers`` ``LlamaForCausalLM`` / ``Qwen3ForCausalLM``; a folder
            with ``config.json`` and ``model.safetensors`` (or a sharded index); a Hub
            name such as ``"Qwen/Qwen3-0.6B"`` (downloaded, needs network); or a state dict.
        model: load into this model (same sizes; switches such as ``attention`` may differ).
        config: the Hugging Face config dict, needed for a bare state dict without ``model``.
        context_length: cap on positions (see :func:`hf_config_to_sydsgpt`).

    Returns:
        The model in eval mode.
    """
    state, hf_config = read_source(source, "Llama / Qwen3", "load_hf_weights", "Qwen/Qwen3-0.6B")
    hf_config = dict(config) if config is not None else hf_config
    if model is None:
        if hf_config is None:
            raise ValueError(
                "a bare state dict does not give the number of heads: pass config=<config dict> or "
                "model=SydsGPT(...)"
            )
        model = SydsGPT(hf_config_to_sydsgpt(hf_config, context_length))
    elif hf_config is not None:
        wanted = hf_config_to_sydsgpt(hf_config, context_length)
        keys = (
            "vocab_size",
            "embedding_dim",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "ffn_hidden_dim",
            "qk_norm",
            "rope_theta",
            "rope_scaling",
            "norm_eps",
        )
        mine = model.config
        mismatch = {k: (wanted[k], mine[k]) for k in keys if wanted[k] != mine[k]}
        if mismatch:
            raise ValueError(
                f"the checkpoint and the model differ in (checkpoint, model): {mismatch}"
            )
    ours = hf_to_sydsgpt_state_dict(state, model)
    if model.config.tie_weights:
        ours["output_projection.weight"] = ours["token_embedding.weight"]
    model.load_state_dict(ours, strict=True)
    return model.eval()


def export_hf_weights(
    model: SydsGPT, folder: str | os.PathLike[str], family: str | None = None
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` that ``transformers`` loads as a Llama or
    Qwen3.

    ``transformers.AutoModelForCausalLM.from_pretrained(folder)`` then computes the same
    logits. ``family``: see :func:`sydsgpt_config_to_hf`.
    """
    from safetensors.torch import save_file

    hf_config = sydsgpt_config_to_hf(model.config, family)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        sydsgpt_to_hf_state_dict(model),
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    return folder


def load_hf_tokenizer(folder: str | os.PathLike[str]) -> Any:
    """The tokenizer saved beside the weights (``tokenizer.json``), with
    ``encode``/``decode``/``n_vocab``.

    Uses the ``tokenizers`` package (installed with ``transformers``); returns a
    :class:`HFTokenizer` that the book's generation functions accept.
    """
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no tokenizer.json in {folder}; download it with the weights (download_hf_model does)"
        )
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise ImportError(
            "reading tokenizer.json needs the tokenizers package (pip install tokenizers)"
        ) from exc
    return HFTokenizer(Tokenizer.from_file(str(path)))


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` with the interface of the
    book's tokenizers (``encode``, ``decode``, ``n_vocab``)."""

    END_OF_TEXT = ("<|endoftext|>", "<|end_of_text|>")
    """Qwen3's and Llama 3's end-of-text tokens (generation stops there)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.n_vocab: int = tokenizer.get_vocab_size()
        self.name = "hf-tokenizer"
        ids = [tokenizer.token_to_id(t) for t in self.END_OF_TEXT]
        self.eot_token: int | None = next((i for i in ids if i is not None), None)

    def encode(self, text: str, allowed_special: Any = None) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Any) -> str:
        """Text of ``ids``."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)
