"""Models by name: what a command or a notebook can load without a path (chapter 8).

=========================  ===============================================================
``smollm2-135m-instruct``  SmolLM2-135M-Instruct from its GGUF file (:mod:`sydsgpt.smollm2`)
``book-checkpoint``        the book's own checkpoint (:mod:`sydsgpt.book`); ``book`` too
=========================  ===============================================================

:func:`load_model` also takes a path: a ``.gguf`` file of the Llama architecture or a
checkpoint written by ``sydsgpt train`` (``.pt``). ``sydsgpt chat --model`` and
``sydsgpt generate --model`` both go through it, so a name that works for one works for the
other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SMOLLM2, BOOK = "smollm2-135m-instruct", "book-checkpoint"
ALIASES = {"book": BOOK}
"""Other spellings of a name (``finetune --base book`` predates the names)."""
NAMES = (SMOLLM2, BOOK)
CHECKPOINT_SUFFIXES = (".pt", ".pth")
"""A file with one of these suffixes is a checkpoint of ``sydsgpt train``."""
MODEL_SUFFIXES = (*CHECKPOINT_SUFFIXES, ".gguf")
"""A file with one of these suffixes is a model with its tokenizer."""


def canonical_name(spec: str) -> str | None:
    """The model name ``spec`` stands for, or ``None`` when it is not a name."""
    spec = ALIASES.get(spec, spec)
    return spec if spec in NAMES else None


def names_a_model(spec: str) -> bool:
    """Whether :func:`load_model` takes ``spec``: a name, or an existing file with one of
    :data:`MODEL_SUFFIXES` (checked without loading anything)."""
    path = Path(spec).expanduser()
    return canonical_name(spec) is not None or (path.is_file() and path.suffix in MODEL_SUFFIXES)


def describe() -> str:
    """One line naming what :func:`load_model` accepts (for help texts and errors)."""
    return f"{SMOLLM2}, {BOOK}, a .gguf file (Llama architecture) or a training checkpoint (.pt)"


def load_model(spec: str, context_length: int | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a model name or file, the model in float32 on the CPU,
    in eval mode.

    ``context_length`` caps the positions of a GGUF model (a smaller KV cache); a training
    checkpoint and the book checkpoint keep their own.

    Raises:
        ValueError: ``spec`` is neither a name nor an existing file of a known kind (one line
            saying what is accepted).
        FileNotFoundError: SmolLM2's file is not installed (one line saying how to get it).
    """
    name = canonical_name(spec)
    path = Path(spec).expanduser()
    if name == SMOLLM2:
        from .smollm2 import load_smollm2

        model, tokenizer = load_smollm2(context_length=context_length)
    elif name == BOOK:
        from .book import load_book_checkpoint

        run = load_book_checkpoint()
        model, tokenizer = run.model, run.tokenizer
    elif path.suffix == ".gguf" and path.is_file():
        from .gguf import read_gguf
        from .gguf_model import load_gguf_model
        from .gguf_tokenizer import tokenizer_from_gguf

        f = read_gguf(path)
        model, tokenizer = load_gguf_model(f, context_length), tokenizer_from_gguf(f)
    elif path.suffix in CHECKPOINT_SUFFIXES and path.is_file():
        from .checkpoint import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(path)
    else:
        missing = " (no such file)" if path.suffix and not path.exists() else ""
        raise ValueError(f"{spec!r}{missing} is not a model: give {describe()}")
    return model.eval(), tokenizer
