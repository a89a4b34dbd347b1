"""Chapter 4: OpenAI's GPT-2 weights in SydsGPT, and back.

GPT-2 is distributed in the Hugging Face format: a folder with ``config.json`` and
``model.safetensors`` (or the older ``pytorch_model.bin``). Its tensor names map onto
ours one to one, with two twists:

* GPT-2's linear layers are ``Conv1D`` modules that store the weight as
  ``(in_features, out_features)``, the transpose of :class:`torch.nn.Linear`'s
  ``(out_features, in_features)``;
* ``attn.c_attn`` is one ``(d, 3d)`` projection holding queries, keys and values side
  by side; we keep three ``(d, d)`` linear layers.

=================================  ================================================
Hugging Face (``transformer.`` + )   SydsGPT
=================================  ================================================
``wte.weight``                      ``token_embedding.weight``
``wpe.weight``                      ``position_embedding.weight``
``h.N.ln_1.weight`` / ``.bias``     ``transformer_blocks.N.layer_norm1.scale`` / ``.shift``
``h.N.attn.c_attn``                 ``...attention.weight_query`` / ``weight_key`` /
                                    ``weight_value`` (split, transposed)
``h.N.attn.c_proj``                 ``...attention.output_projection`` (transposed)
``h.N.ln_2``                        ``...layer_norm2``
``h.N.mlp.c_fc``                    ``...feed_forward.layers.0`` (transposed)
``h.N.mlp.c_proj``                  ``...feed_forward.layers.2`` (transposed)
``ln_f``                            ``final_layer_norm``
``lm_head.weight``                  ``output_projection.weight`` (tied to ``wte`` in GPT-2;
                                    its own tensor when ``tie_word_embeddings`` is false)
=================================  ================================================

Errors name the Hugging Face tensor as the source gave it, with its shape and the shape
this model needs (before any splitting or transposing).

No TensorFlow is involved: the original TensorFlow checkpoints are not read.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save_file

from .hub import read_source
from .config import SydsGPTConfig
from .model import SydsGPT

StateDict = Mapping[str, torch.Tensor]

GPT2_EOT_TOKEN = 50256
"""Id of ``<|endoftext|>`` in the GPT-2 tokenizer (GPT-2's begin and end token)."""

# Per layer: (Hugging Face name under h.N, SydsGPT name
# under transformer_blocks.N, is a Conv1D weight).
_LAYER_NAMES: tuple[tuple[str, str, bool], ...] = (
    ("ln_1.weight", "layer_norm1.scale", False),
    ("ln_1.bias", "layer_norm1.shift", False),
    ("attn.c_proj.weight", "attention.output_projection.weight", True),
    ("attn.c_proj.bias", "attention.output_projection.bias", False),
    ("ln_2.weight", "layer_norm2.scale", False),
    ("ln_2.bias", "layer_norm2.shift", False),
    ("mlp.c_fc.weight", "feed_forward.layers.0.weight", True),
    ("mlp.c_fc.bias", "feed_forward.layers.0.bias", False),
    ("mlp.c_proj.weight", "feed_forward.layers.2.weight", True),
    ("mlp.c_proj.bias", "feed_forward.layers.2.bias", False),
)
_QKV_NAMES = ("attention.weight_query", "attention.weight_key", "attention.weight_value")
_TOP_NAMES: tuple[tuple[str, str], ...] = (
    ("wte.weight", "token_embedding.weight"),
    ("wpe.weight", "position_embedding.weight"),
    ("ln_f.weight", "final_layer_norm.scale"),
    ("ln_f.bias", "final_layer_norm.shift"),
)
_SIZE_KEYS = {
    "vocab_size": "vocab_size",
    "n_embd": "embedding_dim",
    "n_layer": "num_layers",
    "n_head": "num_heads",
}
_SUPPORTED_ACTIVATIONS = (
    "gelu_new",
    "gelu_pytorch_tanh",
)  # both are the tanh approximation our GELU computes


# ---------------------------------------------------------------------------- configs


def gpt2_config_to_sydsgpt(gpt2_config: Mapping[str, Any] | Any) -> dict[str, Any]:
    """A Hugging Face GPT-2 config (``config.json`` as a dict, or a ``GPT2Config``) as a SydsGPT
    config dict.

    Raises ``ValueError`` for GPT-2 variants this model cannot reproduce exactly (another
    activation, layer-norm epsilon or feed-forward width, cross-attention, ...).
    """
    cfg = dict(gpt2_config.to_dict() if hasattr(gpt2_config, "to_dict") else gpt2_config)
    if cfg.get("model_type", "gpt2") != "gpt2":
        raise ValueError(
            f"expected a GPT-2 config (model_type 'gpt2'), got model_type {cfg['model_type']!r}"
        )
    if "n_positions" not in cfg and "n_ctx" in cfg:
        cfg["n_positions"] = cfg["n_ctx"]
    missing = [k for k in (*_SIZE_KEYS, "n_positions") if k not in cfg]
    if missing:
        raise ValueError(
            f"GPT-2 config is missing {missing}; a config.json saved by transformers has them all."
        )
    problems = []
    if cfg.get("activation_function", "gelu_new") not in _SUPPORTED_ACTIVATIONS:
        problems.append(
            f"activation_function={cfg['activation_function']!r} (supported: "
            f"{_SUPPORTED_ACTIVATIONS})"
        )
    if abs(cfg.get("layer_norm_epsilon", 1e-5) - 1e-5) > 1e-12:
        problems.append(f"layer_norm_epsilon={cfg['layer_norm_epsilon']} (supported: 1e-05)")
    if cfg.get("n_inner") not in (None, 4 * cfg["n_embd"]):
        problems.append(
            f"n_inner={cfg['n_inner']} (supported: None or 4 * n_embd = {4 * cfg['n_embd']})"
        )
    for key, supported in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
    ):
        if cfg.get(key, supported) != supported:
            problems.append(f"{key}={cfg[key]!r} (supported: {supported})")
    if problems:
        raise ValueError(
            "this GPT-2 variant cannot be reproduced by SydsGPT: " + "; ".join(problems)
        )
    dropouts = {cfg.get(k, 0.1) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}
    dropout = cfg.get("resid_pdrop", 0.1)
    if len(dropouts) > 1:
        warnings.warn(
            f"GPT-2 config has different dropout rates {sorted(dropouts)}; SydsGPT uses one, "
            f"{dropout} (resid_pdrop)"
        )
    config = {ours: cfg[theirs] for theirs, ours in _SIZE_KEYS.items()}
    config.update(
        context_length=cfg["n_positions"],
        dropout=dropout,
        qkv_bias=True,
        tie_weights=bool(cfg.get("tie_word_embeddings", True)),
    )
    SydsGPTConfig.from_dict(config)
    return config


def sydsgpt_config_to_gpt2(config: Mapping[str, Any] | SydsGPTConfig) -> dict[str, Any]:
    """A SydsGPT config as a Hugging Face GPT-2 ``config.json`` dict.

    An untied head (``tie_weights=False``) becomes ``tie_word_embeddings: false``:
    transformers then keeps ``lm_head.weight`` as its own tensor. A model without
    query/key/value biases exports with zero biases (the same function).
    """
    c = SydsGPTConfig.from_dict(config)
    d = c.embedding_dim
    not_gpt2 = [
        f"{name}={value!r}"
        for name, value, gpt2 in (
            ("norm", c.norm, "layernorm"),
            ("norm_eps", c.norm_eps, 1e-5),
            ("ffn", c.ffn, "gelu"),
            ("ffn_hidden_dim", c.ffn_hidden_size, 4 * d),
            ("linear_bias", c.linear_bias, True),
            ("positions", c.positions, "learned"),
            ("num_kv_heads", c.kv_heads, c.num_heads),
            ("head_dim", c.head_size, d // c.num_heads),
            ("qk_norm", c.qk_norm, False),
        )
        if value != gpt2
    ]
    if not_gpt2:
        raise ValueError(
            f"this model has chapter 7's parts ({', '.join(not_gpt2)}), which GPT-2 does not have; "
            "export it with sydsgpt.hf_weights.export_hf_weights (the Llama / Qwen3 format) "
            "instead."
        )
    eot = GPT2_EOT_TOKEN if c.vocab_size > GPT2_EOT_TOKEN else None
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.context_length,
        "n_embd": c.embedding_dim,
        "n_layer": c.num_layers,
        "n_head": c.num_heads,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": c.tie_weights,
        "bos_token_id": eot,
        "eos_token_id": eot,
    }


# ---------------------------------------------------------------------------- state dicts


def _is_attention_buffer(name: str) -> bool:
    """GPT-2's stored causal-mask buffers ``h.N.attn.bias``
    / ``h.N.attn.masked_bias`` (not weights)."""
    return name.endswith(".attn.bias") or name.endswith(".attn.masked_bias")


def gpt2_to_sydsgpt_state_dict(gpt2_state: StateDict, num_layers: int) -> dict[str, torch.Tensor]:
    """Rename and reshape a GPT-2 state dict into SydsGPT's names.

    Accepts names with or without the ``transformer.`` prefix (both exist on the Hub).
    ``c_attn`` ``(d, 3d)`` becomes query/key/value ``(d, d)`` weights, Conv1D weights are
    transposed. ``lm_head.weight``, when present, becomes ``output_projection.weight``.
    Raises ``ValueError`` naming any missing or unexpected tensor.
    """
    remaining = {
        k.removeprefix("transformer."): v
        for k, v in gpt2_state.items()
        if not _is_attention_buffer(k)
    }

    def take(name: str) -> torch.Tensor:
        if name not in remaining:
            raise ValueError(
                f"GPT-2 state dict has no tensor {name!r} (expected for a {num_layers}-layer model)"
            )
        return remaining.pop(name)

    ours = {our_name: take(name) for name, our_name in _TOP_NAMES}
    for i in range(num_layers):
        hf, block = f"h.{i}.", f"transformer_blocks.{i}."
        for name, our_name, is_conv1d in _LAYER_NAMES:
            tensor = take(hf + name)
            ours[block + our_name] = tensor.t() if is_conv1d else tensor
        qkv_weight = take(
            hf + "attn.c_attn.weight"
        ).t()  # (3d, d): query rows, then key rows, then value rows
        qkv_bias = take(hf + "attn.c_attn.bias")  # (3d,)
        for our_name, weight, bias in zip(
            _QKV_NAMES, qkv_weight.chunk(3, dim=0), qkv_bias.chunk(3)
        ):
            ours[block + our_name + ".weight"] = weight
            ours[block + our_name + ".bias"] = bias
    if "lm_head.weight" in remaining:
        ours["output_projection.weight"] = remaining.pop("lm_head.weight")
    if remaining:
        raise ValueError(
            f"GPT-2 state dict has tensors this {num_layers}-layer model has no place for: "
            f"{sorted(remaining)[:8]}"
        )
    return ours


def sydsgpt_to_gpt2_state_dict(model: SydsGPT) -> dict[str, torch.Tensor]:
    """The model's weights under GPT-2's names (``transformer.`` prefix, Conv1D layout).

    Vocabulary padding is dropped; missing query/key/value biases become zeros;
    ``lm_head.weight`` is included only for an untied head. Tensors are contiguous
    copies, ready for :func:`safetensors.torch.save_file`.
    """
    cfg = model.config
    ours = {k: v.detach() for k, v in model.state_dict().items()}
    gpt2: dict[str, torch.Tensor] = {}
    for name, our_name in _TOP_NAMES:
        tensor = ours[our_name]
        gpt2[name] = tensor[: cfg.vocab_size] if name == "wte.weight" else tensor
    for i in range(cfg.num_layers):
        hf, block = f"h.{i}.", f"transformer_blocks.{i}."
        for name, our_name, is_conv1d in _LAYER_NAMES:
            tensor = ours[block + our_name]
            gpt2[hf + name] = tensor.t() if is_conv1d else tensor
        weights = [ours[block + n + ".weight"] for n in _QKV_NAMES]
        gpt2[hf + "attn.c_attn.weight"] = torch.cat(weights, dim=0).t()  # (d, 3d)
        biases = [
            ours.get(block + n + ".bias", torch.zeros(w.shape[0], dtype=w.dtype))
            for n, w in zip(_QKV_NAMES, weights)
        ]
        gpt2[hf + "attn.c_attn.bias"] = torch.cat(biases)
    state = {"transformer." + k: v.contiguous().clone() for k, v in gpt2.items()}
    if not cfg.tie_weights:
        state["lm_head.weight"] = (
            ours["output_projection.weight"][: cfg.vocab_size].contiguous().clone()
        )
    return state


def _load_into(model: SydsGPT, ours: dict[str, torch.Tensor]) -> None:
    """Copy renamed GPT-2 tensors into ``model``, handling tying, padding and absent biases."""
    cfg = model.config
    wte = ours["token_embedding.weight"]
    head = ours.pop("output_projection.weight", None)
    if cfg.tie_weights and head is not None and not torch.equal(head, wte):
        raise ValueError(
            "the checkpoint's lm_head.weight differs from its token embedding (an untied head), "
            "but the model ties them; build the model with tie_weights=False."
        )
    ours["output_projection.weight"] = wte if head is None or cfg.tie_weights else head
    if not cfg.qkv_bias:
        for name in [
            k
            for k in ours
            if k.endswith(("weight_query.bias", "weight_key.bias", "weight_value.bias"))
        ]:
            if ours.pop(name).any():
                raise ValueError(
                    f"the checkpoint has non-zero {name} but the model was built with "
                    "qkv_bias=False"
                )
    rows = model.token_embedding.weight.shape[0]  # vocab_size, or more with a padded vocabulary
    for name in ("token_embedding.weight", "output_projection.weight"):
        if rows != cfg.vocab_size:  # padded rows never reach the logits: zeros
            padded = ours[name].new_zeros(rows, ours[name].shape[1])
            padded[: ours[name].shape[0]] = ours[name]
            ours[name] = padded
    expected = model.state_dict()
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in ours.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if wrong:
        raise ValueError("GPT-2 weights do not fit this model's sizes: " + "; ".join(wrong[:6]))
    model.load_state_dict(ours, strict=True)


# ---------------------------------------------------------------------------- public API


def load_gpt2_weights(
    source: Any, model: SydsGPT | None = None, *, config: Mapping[str, Any] | None = None
) -> SydsGPT:
    """Load GPT-2 weights in the Hugging Face format into a SydsGPT model.

    Args:
        source: a folder with ``config.json`` and ``model.safetensors`` (or
            ``pytorch_model.bin``); a weights file with ``config.json`` beside it; a
            Hub model name such as ``"gpt2"`` or ``"openai-community/gpt2-medium"``
            (downloaded with :mod:`huggingface_hub`, needs network); a GPT-2 state
            dict; or a ``transformers.GPT2LMHeadModel``.
        model: load into this model (its sizes must match) instead of building one;
            it may differ in switches such as ``attention`` or ``pad_vocab_multiple``.
        config: the GPT-2 config dict, needed when ``source`` is a bare state dict and
            no ``model`` is given (a state dict does not say how many heads there are).

    Returns:
        The model in eval mode (as ``from_pretrained`` returns it), dropout set to
        GPT-2's value when the model is built here.
    """
    state, gpt2_config = read_source(source, "GPT-2", "load_gpt2_weights", "gpt2")
    gpt2_config = dict(config) if config is not None else gpt2_config
    if model is None:
        if gpt2_config is None:
            raise ValueError(
                "a bare state dict does not give the number of attention heads: pass config=<GPT-2 "
                "config dict> or model=SydsGPT(...) to load into."
            )
        model = SydsGPT(gpt2_config_to_sydsgpt(gpt2_config))
    elif gpt2_config is not None:
        wanted = gpt2_config_to_sydsgpt(gpt2_config)
        keys = ("vocab_size", "embedding_dim", "context_length", "num_layers", "num_heads")
        mismatch = {k: (wanted[k], model.config[k]) for k in keys if wanted[k] != model.config[k]}
        if mismatch:
            raise ValueError(
                f"the GPT-2 checkpoint and the model differ in (checkpoint, model): {mismatch}"
            )
    check_gpt2_shapes(state, model)
    _load_into(model, gpt2_to_sydsgpt_state_dict(state, model.config.num_layers))
    return model.eval()


def check_gpt2_shapes(gpt2_state: StateDict, model: SydsGPT) -> None:
    """Raise ``ValueError`` naming each Hugging Face tensor of ``gpt2_state`` (as the source names
    it) whose shape is not the one ``model`` needs, with both shapes. The shapes needed are those
    :func:`sydsgpt_to_gpt2_state_dict` writes for this model's config (computed on the meta
    device)."""
    with torch.device("meta"):
        needed = {
            k.removeprefix("transformer."): tuple(v.shape)
            for k, v in sydsgpt_to_gpt2_state_dict(SydsGPT(model.config)).items()
        }
    needed.setdefault(
        "lm_head.weight", needed["wte.weight"]
    )  # a tied model still accepts an (equal) head
    wrong = [
        f"{name} has shape {tuple(t.shape)}, this model needs {needed[key]}"
        for name, t in gpt2_state.items()
        if (key := name.removeprefix("transformer.")) in needed and tuple(t.shape) != needed[key]
    ]
    if wrong:
        c = model.config
        raise ValueError(
            f"GPT-2 weights do not fit this model (vocab_size {c.vocab_size}, context_length "
            f"{c.context_length}, embedding_dim {c.embedding_dim}, num_layers {c.num_layers}): "
            + "; ".join(wrong[:6])
            + ("; ..." if len(wrong) > 6 else "")
        )


def export_gpt2_weights(model: SydsGPT, folder: str | os.PathLike[str]) -> Path:
    """Write ``model.safetensors`` and ``config.json`` that ``transformers`` loads as a GPT-2.

    ``transformers.GPT2LMHeadModel.from_pretrained(folder)`` then computes the same
    logits, for a tied or an untied head (see :func:`sydsgpt_config_to_gpt2`).

    Returns:
        The folder.
    """
    gpt2_config = sydsgpt_config_to_gpt2(model.config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        sydsgpt_to_gpt2_state_dict(model),
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (folder / "config.json").write_text(json.dumps(gpt2_config, indent=2) + "\n")
    return folder
