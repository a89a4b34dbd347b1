"""Checks shared by every config and entry point, each written once.

* :func:`check_keys`: a dict of options against the fields a dataclass has (a typo is an
  error, not silently ignored), used by the model, training and generation configs.
* :func:`check_positive_int`: sizes, counts and lengths.
* :func:`check_input_ids`: the ``(batch, tokens)`` integer tensor every model call takes.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Iterable, Mapping

import torch


def field_names(cls: type) -> list[str]:
    """The field names of dataclass ``cls``, in declaration order."""
    return [f.name for f in fields(cls)]


def check_keys(
    given: Iterable[str], known: Iterable[str], what: str, required: Iterable[str] = (),
    error: type[Exception] = ValueError,
) -> None:
    """Raise ``error`` naming every unknown key of ``given`` (and every missing ``required`` one).

    Args:
        what: how the message names the keys, e.g. ``"config key"`` or ``"training option"``.
    """
    given, known = set(given), list(known)
    missing = [k for k in required if k not in given]
    if missing:
        raise error(f"missing required {what}(s) {missing}; required: {list(required)}")
    unknown = sorted(given - set(known))
    if unknown:
        raise error(f"unknown {what}(s) {unknown}; known: {sorted(known)}")


def check_positive_int(value: Any, name: str, allow_none: bool = False) -> None:
    """``value`` must be an ``int >= 1`` (``bool`` is not a number here); ``None`` if ``allow_none``."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_input_ids(input_ids: Any, name: str = "input_ids") -> None:
    """``input_ids`` must be a 2-D ``(batch, tokens)`` integer tensor with at least one token.

    The messages say how to fix the common mistakes: a single sequence without its batch
    dimension, a float tensor, an empty prompt.
    """
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(
            f"{name} must be a (batch, tokens) tensor of token ids, got {type(input_ids).__name__}; "
            "make one with torch.tensor([ids]) or sydsgpt.tokenizer.text_to_token_ids(text)."
        )
    if input_ids.dim() != 2:
        raise ValueError(
            f"{name} must have shape (batch, tokens), got shape {tuple(input_ids.shape)}; "
            f"for a single sequence use {name}.unsqueeze(0)."
        )
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be an integer tensor of token ids, got dtype {input_ids.dtype}")
    if input_ids.shape[1] == 0:
        raise ValueError(f"{name} has no tokens: give at least one token (e.g. the end-of-text token).")


def mapping_of(values: Any, what: str) -> Mapping[str, Any]:
    """``values`` if it is a mapping, else a ``TypeError`` saying what was expected."""
    if not isinstance(values, Mapping):
        raise TypeError(f"{what} must be a dict, got {type(values).__name__}")
    return values
