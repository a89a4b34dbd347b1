"""``--base``: the pretrained model ``sydsgpt finetune`` starts from (chapters 9 and 10).

One place decides what ``--base SPEC`` may name and loads it, for every finetune command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..gpt2_weights import load_gpt2_weights
from ..hub import looks_like_hub_name
from ..models import load_model, names_a_model
from ..tokenizer import get_gpt2_tokenizer
from .errors import UsageError

BASE_HELP = (
    "the pretrained model: book or book-checkpoint (the book's checkpoint), "
    "smollm2-135m-instruct or another Llama-architecture .gguf file, a checkpoint "
    "file from sydsgpt train (.pt), a GPT-2 folder (config.json + model.safetensors), "
    "or a Hub name such as gpt2, gpt2-medium (needs the internet)"
)
WEIGHT_SUFFIXES = (".safetensors", ".bin")
"""A ``--base`` file with one of these suffixes is a GPT-2 weights file (config.json beside it)."""


def check_base(spec: str) -> None:
    """``--base SPEC`` must name a kind of base :func:`load_base` reads (checked before loading)."""
    path = Path(spec).expanduser()
    if names_a_model(spec):  # a name, a .gguf or a .pt (sydsgpt.models)
        return
    if path.is_dir() or (path.is_file() and path.suffix in WEIGHT_SUFFIXES):
        return
    if path.exists():
        kind = "file" if path.is_file() else "path"
        raise UsageError(
            f"--base {spec}: a {kind} of a kind that is not a model; --base is {BASE_HELP}"
        )
    if not looks_like_hub_name(spec):
        raise UsageError(f"--base {spec}: no such file or folder; --base is {BASE_HELP}")


def load_base(spec: str, device: Any = "cpu") -> tuple[Any, Any]:
    """The pretrained model (on ``device``) and its tokenizer that ``--base SPEC`` names."""
    check_base(spec)
    if names_a_model(spec):
        model, tokenizer = load_model(spec)
        return model.to(device), tokenizer
    return load_gpt2_weights(spec).to(device), get_gpt2_tokenizer()
