"""What the benchmarks compare: every setup of the training benchmark and the ablation.

A *setup* is a model config plus the training switches of :class:`sydsgpt.train.TrainConfig`.
The plain path and the speed switches are named here once; what each ``"auto"`` switch
resolves to on a device is :mod:`sydsgpt.runtime`'s rule, never restated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..config import Kernels
from ..runtime import resolve_fast_paths
from ..train_config import TrainConfig

MODEL_SWITCHES = ("attention", "fused_qkv", "pad_vocab_multiple", "gelu")
"""The model's speed switches: the fields of :class:`sydsgpt.config.Kernels`."""
TRAIN_SWITCHES = ("dtype", "tf32", "compile", "fused_adamw")
"""TrainConfig fields that are speed switches."""

PLAIN_MODEL: dict[str, Any] = {
    "attention": "explicit",
    "fused_qkv": False,
    "pad_vocab_multiple": 1,
    "gelu": "explicit",
}
PLAIN_TRAIN: dict[str, Any] = {
    "dtype": "float32",
    "tf32": False,
    "compile": False,
    "fused_adamw": False,
}

TINY_MODEL: dict[str, Any] = {
    "vocab_size": 500,
    "embedding_dim": 64,
    "context_length": 32,
    "num_layers": 2,
    "num_heads": 4,
    "dropout": 0.0,
    "qkv_bias": False,
    "tie_weights": True,
}
"""The ``--quick`` model: a smoke test of the whole
benchmark in seconds (its speed means nothing)."""

DEVICE_DEFAULTS: dict[str, tuple[str, int, int]] = {
    "cpu": ("gpt2-mini", 4, 256),
    "cuda": ("gpt2-small", 8, 1024),
}
"""``(preset, batch_size, seq_len)`` measured by default on each kind of device."""


@dataclass(frozen=True)
class Setup:
    """One configuration to measure: model-config and :class:`TrainConfig` overrides.

    Keys left out take the plain path's values (:data:`PLAIN_MODEL`, :data:`PLAIN_TRAIN`)
    unless ``defaults=True``, where they take the package defaults (model config and
    ``TrainConfig()``), i.e. what a user gets without asking for anything.
    """

    name: str
    model: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    defaults: bool = False
    note: str = ""
    decoding_layout: bool = False
    """Store the linear weights transposed (:func:`sydsgpt.generate.use_decoding_layout`)."""

    def switches(self, base_model: Mapping[str, Any]) -> dict[str, Any]:
        """The eight switch values this setup asks for (``"auto"`` / ``None`` where the
        package decides by device; measured rows report what they resolved to)."""
        kernels = (
            {k: getattr(Kernels(), k) for k in MODEL_SWITCHES}
            if self.defaults
            else dict(PLAIN_MODEL)
        )
        kernels.update(self.model)
        train_defaults = TrainConfig()
        train = (
            {k: getattr(train_defaults, k) for k in TRAIN_SWITCHES}
            if self.defaults
            else dict(PLAIN_TRAIN)
        )
        train.update(self.train)
        return {**{k: getattr(Kernels(**kernels), k) for k in MODEL_SWITCHES}, **train}


def resolved_switches(
    switches: Mapping[str, Any], device_kind: str, bf16_supported: bool | None = True
) -> dict[str, Any]:
    """``switches`` with every ``"auto"`` / ``None`` spelled out by
    :func:`sydsgpt.runtime.resolve_fast_paths` for ``device_kind`` (a plan for an absent GPU assumes
    it supports bfloat16)."""
    fast = resolve_fast_paths(
        device_kind,
        switches["dtype"],
        switches["tf32"],
        switches["fused_adamw"],
        switches["compile"],
        bf16_supported=bf16_supported,
    )
    return {
        **dict(switches),
        "dtype": fast.dtype_name,
        "tf32": fast.tf32,
        "fused_adamw": fast.fused_adamw,
        "compile": fast.compile,
    }


def default_setups(compile: bool = True) -> list[Setup]:
    """The training benchmark's setups: the plain path, the package defaults, every fast path
    on, and the package defaults with the weights in the layout ``sydsgpt generate`` uses
    (:func:`sydsgpt.generate.use_decoding_layout`), to show what that layout costs in training.

    ``compile=False`` leaves ``torch.compile`` out of the last one (it takes a minute to compile).
    """
    return [
        Setup("plain"),
        Setup("package defaults", defaults=True),
        Setup(
            "all fast paths",
            model={"attention": "sdpa", "fused_qkv": True, "pad_vocab_multiple": 64},
            train={"dtype": "bfloat16", "tf32": True, "compile": compile, "fused_adamw": True},
        ),
        Setup("defaults, decoding layout", defaults=True, decoding_layout=True),
    ]


STEPS: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    ("+TF32", "train", {"tf32": True}, "cuda"),
    ("+fused QKV", "model", {"fused_qkv": True}, "any"),
    ("+SDPA attention", "model", {"attention": "sdpa"}, "any"),
    ("+padded vocab (x64)", "model", {"pad_vocab_multiple": 64}, "any"),
    ("+bf16 autocast", "train", {"dtype": "bfloat16"}, "any"),
    ("+torch.compile", "train", {"compile": True}, "any"),
    ("+fused AdamW", "train", {"fused_adamw": True}, "any"),
)
"""The optimisations in the order they are added:
``(row name, "model"|"train", switch values, devices)``."""


def ablation_setups(device_type: str = "cpu", compile: bool = True) -> list[Setup]:
    """The cumulative setups for ``device_type`` (``"cpu"`` or ``"cuda"``), plus the package
    defaults.

    ``compile=False`` leaves out the ``torch.compile`` row (it takes a minute to compile).
    """
    model: dict[str, Any] = {}
    train: dict[str, Any] = {}
    setups = [Setup("plain")]
    for name, kind, values, devices in STEPS:
        if devices not in ("any", device_type) or (not compile and "compile" in values):
            continue
        (model if kind == "model" else train).update(values)
        setups.append(Setup(name, model=dict(model), train=dict(train)))
    setups.append(
        Setup(
            "package defaults",
            defaults=True,
            note="sydsgpt.model / sydsgpt.train defaults on this device",
        )
    )
    return setups
