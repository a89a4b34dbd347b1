"""Checks shared by every config and entry point, each written once.

* :func:`check_keys`: a dict of options against the fields a dataclass has (a typo is an
  error, not silently ignored), used by the model, training and generation configs.
* :func:`check_positive_int`: sizes, counts and lengths; :func:`check_int` other integers
  (counts that may be 0, seeds).
* :func:`check_real`: a finite real number inside a domain (a learning rate > 0, a
  probability in ``[0, 1)``, ...); :func:`check_bool`: ``True``/``False`` (optionally ``None``).
* :func:`check_choice`: one of a fixed set of names; :func:`check_str`: a string (optionally
  not empty).
* :func:`check_input_ids`: the ``(batch, tokens)`` integer tensor every model call takes.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, Iterable, Mapping

import torch


def field_names(cls: type) -> list[str]:
    """The field names of dataclass ``cls``, in declaration order."""
    return [f.name for f in fields(cls)]


def check_keys(
    given: Iterable[str],
    known: Iterable[str],
    what: str,
    required: Iterable[str] = (),
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
    """``value`` must be an ``int >= 1`` (``bool`` is
    not a number here); ``None`` if ``allow_none``."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_int(value: Any, name: str, minimum: int | None = None, allow_none: bool = False) -> None:
    """``value`` must be an ``int`` (not a ``bool``),
    ``>= minimum`` when given; ``None`` if ``allow_none``."""
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (minimum is not None and value < minimum)
    ):
        expected = (
            "an integer"
            + (f" >= {minimum}" if minimum is not None else "")
            + (" or None" if allow_none else "")
        )
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def check_real(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
    hint: str = "",
) -> None:
    """``value`` must be a finite real number (an ``int`` or ``float``, not a ``bool``) in the
    interval from ``low`` to ``high`` (each bound excluded when ``*_open``); ``None`` if
    ``allow_none``.

    Example: ``check_real(lr, "lr", low=0, low_open=True)`` asks for ``lr > 0``; NaN and
    infinity are always refused (the maths of every option here needs a finite number).
    """
    if value is None and allow_none:
        return
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if low is not None and high is not None:
            domain = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            domain = f"{'>' if low_open else '>='} {low:g}"
        elif high is not None:
            domain = f"{'<' if high_open else '<='} {high:g}"
        else:
            domain = "a finite number"
        expected = f"a finite number {domain}" if low is not None or high is not None else domain
        raise ValueError(
            f"{name} must be {expected}{' or None' if allow_none else ''}, got {value!r}"
            + (f"; {hint}" if hint else "")
        )


def check_bool(value: Any, name: str, allow_none: bool = False) -> None:
    """``value`` must be ``True`` or ``False`` (or ``None`` if ``allow_none``)."""
    if value is None and allow_none:
        return
    if not isinstance(value, bool):
        raise ValueError(
            f"{name} must be True or False{' (or None)' if allow_none else ''}, got {value!r}"
        )


def check_token_range(ids: torch.Tensor, vocab_size: int, what: str) -> None:
    """Every id in ``ids`` must be in ``0 .. vocab_size - 1``
    (else the embedding lookup fails obscurely)."""
    if ids.numel() == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(
            f"{what} holds token id {bad}, but the model's ids are 0..{vocab_size - 1} (vocab_size "
            f"{vocab_size}); tokenize the data with the model's tokenizer, or build the model with "
            f"vocab_size >= {high + 1}"
        )


def check_input_ids(input_ids: Any, name: str = "input_ids") -> None:
    """``input_ids`` must be a 2-D ``(batch, tokens)`` integer tensor with at least one token.

    The messages say how to fix the common mistakes: a single sequence without its batch
    dimension, a float tensor, an empty prompt.
    """
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(
            f"{name} must be a (batch, tokens) tensor of token ids, got "
            f"{type(input_ids).__name__}; make one with torch.tensor([ids]) or "
            "sydsgpt.tokenizer.text_to_token_ids(text)."
        )
    if input_ids.dim() != 2:
        raise ValueError(
            f"{name} must have shape (batch, tokens), got shape {tuple(input_ids.shape)}; "
            f"for a single sequence use {name}.unsqueeze(0)."
        )
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(
            f"{name} must be an integer tensor of token ids, got dtype {input_ids.dtype}"
        )
    if input_ids.shape[1] == 0:
        raise ValueError(
            f"{name} has no tokens: give at least one token (e.g. the end-of-text token)."
        )


def check_features(x: torch.Tensor, expected: int, layer: str) -> None:
    """``x``'s last dimension must be ``expected`` (the features
    a ``layer`` such as ``"LayerNorm"`` was built for)."""
    if x.shape[-1] != expected:
        raise ValueError(
            f"{layer} was built for {expected} features per token but the input's last dimension "
            f"is {x.shape[-1]} (shape {tuple(x.shape)}); build it with {layer}({x.shape[-1]})."
        )


def mapping_of(values: Any, what: str) -> Mapping[str, Any]:
    """``values`` if it is a mapping, else a ``TypeError`` saying what was expected."""
    if not isinstance(values, Mapping):
        raise TypeError(f"{what} must be a dict, got {type(values).__name__}")
    return values


def check_choice(value: Any, name: str, choices: Iterable[Any], allow_none: bool = False) -> None:
    """``value`` must be one of ``choices`` (``None`` too if ``allow_none``)."""
    choices = tuple(choices)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or value not in choices:
        or_none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be one of {choices}{or_none}, got {value!r}")


def check_str(value: Any, name: str, allow_empty: bool = True) -> None:
    """``value`` must be a ``str`` (a non-empty one unless ``allow_empty``)."""
    if not isinstance(value, str) or (not allow_empty and not value):
        expected = "a str" if allow_empty else "a non-empty str"
        raise ValueError(f"{name} must be {expected}, got {value!r}")


# --------------------------------------------------------------------------- decoding options
# (chapter 6: sydsgpt.sampling's filters and sydsgpt.generate.GenerationConfig check with these)


def check_temperature(temperature: float) -> None:
    """``temperature`` must be a finite number ``>= 0`` (0 is greedy decoding)."""
    if not temperature >= 0:  # also catches NaN
        raise ValueError(
            f"temperature must be >= 0, got {temperature}. Use 0 for greedy decoding, "
            "values below 1 for safer text, above 1 for more varied text."
        )
    if not math.isfinite(temperature):  # logits / inf is uniform noise, not "very varied" text
        raise ValueError(
            f"temperature must be a finite number, got {temperature}; values around "
            "0.5-1.5 are typical"
        )


def check_top_k(k: int) -> None:
    """``k`` (top-k) must be an integer ``>= 1``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(
            f"top_k must be an integer >= 1 (the number of tokens kept), got {k!r}; "
            "use None to switch it off."
        )


def check_top_p(p: float) -> None:
    """``p`` (top-p) must be in ``(0, 1]``."""
    if not 0 < p <= 1:
        raise ValueError(
            f"top_p must be in (0, 1] (the probability mass kept), got {p}; 1 keeps every token, "
            "0.9 is a common choice; use None to switch it off."
        )


def check_repetition_penalty(penalty: float) -> None:
    """``penalty`` must be a finite number ``> 0`` (1 is no penalty)."""
    if not penalty > 0:
        raise ValueError(
            f"repetition_penalty must be > 0 (1 = no penalty, 1.2 is typical), got {penalty}"
        )
    if not math.isfinite(penalty):
        raise ValueError(
            "repetition_penalty must be a finite number (1 = no penalty, 1.2 is "
            f"typical), got {penalty}"
        )


def check_ngram_size(n: int) -> None:
    """``n`` (no_repeat_ngram_size) must be an integer ``>= 0`` (0 is off)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"no_repeat_ngram_size must be an integer >= 0 (0 = off), got {n!r}")
