"""Chapter 9: LoRA, low-rank adaptation of a frozen model.

A linear layer ``y = x W^T + b`` with ``W`` of shape ``(out, in)`` is finetuned by
learning a low-rank *change* of its weight instead of the weight itself::

    W' = W + (alpha / r) * B A        A: (r, in), B: (out, r), r << min(in, out)

``W`` stays frozen; only ``A`` and ``B`` train: ``r * (in + out)`` numbers instead of
``in * out``. ``B`` starts at zero, so an adapted model starts out *equal* to the base
model. After training, ``B A`` can be added into ``W`` (:meth:`LoRALinear.merge`): the
merged layer is a plain matrix product again, as fast as the base model.

- :class:`LoRAConfig`: rank, alpha, dropout and which layers to adapt;
- :class:`LoRALinear`: a frozen ``nn.Linear`` with its trainable ``A`` and ``B`` beside it;
- :func:`apply_lora`, :func:`merge_lora`, :func:`unmerge_lora`, :func:`remove_lora`;
- :func:`count_trainable_parameters`; :func:`save_adapter` / :func:`load_adapter`: only
  the trained tensors go to disk (kilobytes), loaded later onto the same base model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .validation import check_positive_int, check_real

ADAPTER_NAME = "adapter.safetensors"
"""The file name :func:`save_adapter` is given in a run folder."""
_METADATA_KEY = "sydsgpt_lora"


@dataclass(frozen=True)
class LoRAConfig:
    """What :func:`apply_lora` adapts, and how."""

    rank: int = 8
    """``r``: the rank of the update ``B A`` (trainable numbers per layer: ``r * (in + out)``)."""
    alpha: float = 16.0
    """The update is scaled by ``alpha / rank``, so changing the rank keeps its size comparable."""
    dropout: float = 0.0
    """Dropout on the adapter's input (the frozen path sees the input unchanged)."""
    targets: tuple[str, ...] = ("attention", "feed_forward")
    """A linear layer inside the transformer blocks is adapted when one part of its dotted name
    is listed: ``"attention"`` (all four projections), ``"feed_forward"``, or single layers such
    as ``"weight_query"``, ``"weight_value"``, ``"output_projection"``."""

    def __post_init__(self) -> None:
        check_positive_int(self.rank, "LoRAConfig.rank")
        check_real(self.alpha, "LoRAConfig.alpha", low=0, low_open=True)
        check_real(self.dropout, "LoRAConfig.dropout", low=0, high=1, high_open=True)
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(
                f"LoRAConfig.targets must be non-empty layer names, got {self.targets!r}"
            )
        object.__setattr__(self, "targets", targets)

    @property
    def scaling(self) -> float:
        """``alpha / rank``, the factor in front of ``B A``."""
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "LoRAConfig":
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown LoRA option(s) {sorted(unknown)}; known: "
                f"{sorted(cls.__dataclass_fields__)}"
            )
        return cls(
            **{**values, **({"targets": tuple(values["targets"])} if "targets" in values else {})}
        )


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update beside it.

    ``forward(x) = base(x) + dropout(x) A^T B^T * (alpha / r)``,
    shapes ``(..., in) -> (..., out)``. ``A`` (``(r, in)``) starts random, ``B``
    (``(out, r)``) at zero: at first the layer computes exactly what ``base`` does.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.rank, self.scaling = rank, alpha / rank
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear draws W
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """The update ``(alpha / r) B A``, shaped like the base weight ``(out, in)``."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:  # W already holds W + (alpha / r) B A
            return self.base(x)
        # (..., in) -> (..., r) -> (..., out)
        update = self.dropout(x) @ self.lora_A.T @ self.lora_B.T
        return self.base(x) + update * self.scaling

    # later: merge / unmerge (adding B A into W and taking it out), shown next
    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into the base weight (forward is then one plain product)."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update out of the base weight again (to continue training the adapter)."""
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scaling={self.scaling:g}, merged={self.merged}"

    # endlater


def _blocks_root(model: nn.Module) -> tuple[str, nn.Module]:
    """Where adapted layers are looked for: ``model.transformer_blocks`` (a SydsGPT, also inside a
    classifier's ``model``), else the whole module."""
    for prefix in ("transformer_blocks", "model.transformer_blocks"):
        sub = model.get_submodule(prefix) if _has_submodule(model, prefix) else None
        if sub is not None:
            return prefix + ".", sub
    return "", model


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The :class:`LoRALinear` layers of ``model``, by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def apply_lora(model: nn.Module, config: LoRAConfig | None = None) -> list[str]:
    """Wrap the linear layers ``config.targets`` names (inside the transformer blocks) in
    :class:`LoRALinear`, in place, and freeze every other parameter of ``model``.

    Attention layers whose query, key or value projection is adapted compute them one by
    one from then on (their fused path joins the raw weights and would skip the update);
    the result is the same.

    Returns:
        The qualified names of the adapted layers.
    Raises:
        ValueError: ``model`` already has LoRA layers, or no linear layer matches the targets
            (the message lists the names there are).
    """
    config = config or LoRAConfig()
    if lora_layers(model):
        raise ValueError(
            "the model already has LoRA layers; apply_lora once (remove_lora first to start over)"
        )
    prefix, root = _blocks_root(model)
    linears = [(name, m) for name, m in root.named_modules() if isinstance(m, nn.Linear)]
    chosen = [(name, m) for name, m in linears if set(name.split(".")) & set(config.targets)]
    if not chosen:
        names = sorted(
            {part for name, _ in linears for part in name.split(".") if not part.isdigit()}
        )
        raise ValueError(
            f"no linear layer matches the LoRA targets {list(config.targets)}; parts of the layer "
            f"names are {names}"
        )
    model.requires_grad_(False)
    for name, linear in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, child, LoRALinear(linear, config.rank, config.alpha, config.dropout))
        if child in ("weight_query", "weight_key", "weight_value") and hasattr(parent, "kernels"):
            parent.kernels = dataclasses.replace(parent.kernels, fused_qkv=False)
    return [prefix + name for name, _ in chosen]


def merge_lora(model: nn.Module) -> int:
    """Merge every LoRA layer's update into its base weight; returns how many layers."""
    for layer in lora_layers(model).values():
        layer.merge()
    return len(lora_layers(model))


def unmerge_lora(model: nn.Module) -> int:
    """Undo :func:`merge_lora` (the weights are restored
    up to float rounding); returns how many layers."""
    for layer in lora_layers(model).values():
        layer.unmerge()
    return len(lora_layers(model))


def remove_lora(model: nn.Module, merge: bool = True) -> nn.Module:
    """Replace every LoRA layer by its base ``nn.Linear`` (with the update merged in, unless
    ``merge=False``): a plain model again, whose state dict loads into the base architecture."""
    for name, layer in lora_layers(model).items():
        layer.merge() if merge else layer.unmerge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer.base)
    return model


def count_trainable_parameters(model: nn.Module) -> int:
    """Parameters that receive gradients (``requires_grad``), each shared tensor counted once."""
    return sum(
        p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values()
    )


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter by name (the LoRA ``A`` and ``B``, plus anything else left
    trainable, e.g. a new classification head): what :func:`save_adapter` writes."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def save_adapter(
    path: str | os.PathLike[str],
    model: nn.Module,
    config: LoRAConfig,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write only the trained tensors (:func:`adapter_state_dict`) and the LoRA config as a
    safetensors file (written atomically). ``metadata``: more JSON values to store beside."""
    from safetensors.torch import save

    from .files import atomic_write

    if any(layer.merged for layer in lora_layers(model).values()):
        raise ValueError(
            "the model's LoRA layers are merged; unmerge_lora(model) before saving the adapter"
        )
    tensors = {name: t.contiguous().cpu() for name, t in adapter_state_dict(model).items()}
    if not tensors:
        raise ValueError(
            "the model has no trainable parameters: apply_lora first, there is no adapter to save"
        )
    info = {"lora": config.to_dict(), **(dict(metadata) if metadata else {})}
    return atomic_write(path, save(tensors, metadata={_METADATA_KEY: json.dumps(info)}))


def read_adapter(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, metadata)`` of an adapter file (``metadata["lora"]``: the LoRA config dict)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_METADATA_KEY)
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ValueError(
            f"{path} is not a readable safetensors adapter file ({type(exc).__name__}: {exc})"
        ) from None
    if raw is None:
        raise ValueError(
            f"{path} has no LoRA metadata: it was not written by sydsgpt.lora.save_adapter"
        )
    return tensors, json.loads(raw)


def load_adapter(model: nn.Module, path: str | os.PathLike[str]) -> LoRAConfig:
    """Load an adapter written by :func:`save_adapter` onto ``model`` (the same base model and
    architecture it was trained on). Applies LoRA first when ``model`` has none.

    Raises:
        ValueError: naming the file: a tensor the model lacks, or one of another shape.
    """
    tensors, info = read_adapter(path)
    config = LoRAConfig.from_dict(info["lora"])
    if not lora_layers(model):
        apply_lora(model, config)
    params = dict(model.named_parameters())
    missing = [name for name in tensors if name not in params]
    if missing:
        raise ValueError(
            f"{path} holds tensors this model does not have ({', '.join(missing[:3])}...): "
            "load it onto the architecture it was trained on"
        )
    wrong = [
        f"{n}: file {tuple(t.shape)}, model {tuple(params[n].shape)}"
        for n, t in tensors.items()
        if t.shape != params[n].shape
    ]
    if wrong:
        raise ValueError(f"{path} does not fit this model: " + "; ".join(wrong[:3]))
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)
    for name, p in params.items():
        p.requires_grad_(name in tensors)
    return config
