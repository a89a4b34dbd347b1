"""Chapter 6: how a next token is chosen from the model's logits.

Pure functions that reshape a logits vector, so the book can plot each one:
:func:`apply_temperature`, :func:`top_k_filter`, :func:`top_p_filter`,
:func:`apply_repetition_penalty`, :func:`block_repeated_ngrams`; and
:func:`select_next_token`, which chains them and picks a token (greedy or sampled).
The decoding loop that calls them is :mod:`sydsgpt.generate`.

Shapes: ``B`` batch, ``T`` tokens, ``V`` vocabulary. Every logits function accepts
``(V,)`` or ``(B, V)`` and works on the last dimension.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from .generate import GenerationConfig

NEG_INF = float("-inf")


# --------------------------------------------------------------------------- validation

def _check_temperature(temperature: float) -> None:
    if not temperature >= 0:  # also catches NaN
        raise ValueError(
            f"temperature must be >= 0, got {temperature}. Use 0 for greedy decoding, "
            "values below 1 for safer text, above 1 for more varied text."
        )
    if not math.isfinite(temperature):  # logits / inf is uniform noise, not "very varied" text
        raise ValueError(f"temperature must be a finite number, got {temperature}; values around 0.5-1.5 are typical")


def _check_top_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be an integer >= 1 (the number of tokens kept), got {k!r}; use None to switch it off.")


def _check_top_p(p: float) -> None:
    if not 0 < p <= 1:
        raise ValueError(
            f"top_p must be in (0, 1] (the probability mass kept), got {p}; 1 keeps every token, "
            "0.9 is a common choice; use None to switch it off."
        )


def _check_penalty(penalty: float) -> None:
    if not penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 = no penalty, 1.2 is typical), got {penalty}")
    if not math.isfinite(penalty):
        raise ValueError(f"repetition_penalty must be a finite number (1 = no penalty, 1.2 is typical), got {penalty}")


def _check_ngram(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"no_repeat_ngram_size must be an integer >= 0 (0 = off), got {n!r}")


# --------------------------------------------------------------------------- logits transforms

def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide the logits by ``temperature`` (> 0).

    ``softmax(logits / T)``: ``T < 1`` sharpens the distribution towards the top token,
    ``T > 1`` flattens it towards uniform; ``T = 1`` leaves it as the model made it.
    (``T = 0`` is the greedy limit: use ``argmax`` instead, as :func:`select_next_token` does.)

    Shapes: ``(..., V) -> (..., V)``.
    """
    _check_temperature(temperature)
    if temperature == 0:
        raise ValueError("temperature 0 means greedy decoding: take logits.argmax(-1) instead of dividing by 0.")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits, set the others to ``-inf`` (probability 0).

    Exactly ``k`` tokens survive: among tied logits the lower token id wins (a stable
    sort orders them). ``k >= V`` keeps everything.

    Shapes: ``(..., V) -> (..., V)``.
    """
    _check_top_k(k)
    if k >= logits.shape[-1]:
        return logits.clone()
    order = torch.sort(logits, dim=-1, descending=True, stable=True).indices  # (..., V)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order[..., :k], True)
    return logits.masked_fill(~keep, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability reaches ``p``.

    Tokens are sorted by probability; a token is kept when the mass of the tokens
    *before* it is still below ``p``. So the token that crosses the threshold is kept,
    and the most likely token always is. ``p = 1`` keeps everything.

    Shapes: ``(..., V) -> (..., V)``.
    """
    _check_top_p(p)
    if p >= 1:
        return logits.clone()
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # (..., V): probability of the better tokens
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to token order
    return logits.masked_fill(drop, NEG_INF)


def apply_repetition_penalty(
    logits: torch.Tensor, seen_ids: torch.Tensor | Sequence[int], penalty: float
) -> torch.Tensor:
    """CTRL's repetition penalty: make every token already seen less likely.

    For each distinct token in ``seen_ids``: a positive logit is divided by ``penalty``,
    a negative one multiplied by it (dividing a negative logit would *raise* it).
    ``penalty = 1`` changes nothing; ``penalty > 1`` discourages repeats.

    Args:
        logits: ``(V,)`` or ``(B, V)``.
        seen_ids: ``(T,)`` or ``(B, T)`` token ids (prompt and generated so far).
    """
    _check_penalty(penalty)
    seen_ids = torch.as_tensor(seen_ids, dtype=torch.long, device=logits.device)
    if seen_ids.shape[-1] == 0:
        return logits.clone()
    seen = logits.gather(-1, seen_ids)  # (..., T)
    penalized = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(-1, seen_ids, penalized)


def block_repeated_ngrams(logits: torch.Tensor, ids: torch.Tensor | Sequence[int], n: int) -> torch.Tensor:
    """Forbid any token that would complete an ``n``-gram already present in ``ids``.

    The last ``n - 1`` tokens of ``ids`` are the start of the next ``n``-gram; every
    earlier place where those ``n - 1`` tokens occur names a token that followed them:
    that token gets ``-inf``. ``n = 1`` forbids every token seen; ``n = 0`` is off.

    Args:
        logits: ``(V,)`` or ``(B, V)``.
        ids: ``(T,)`` or ``(B, T)`` token ids so far.
    """
    _check_ngram(n)
    ids = torch.as_tensor(ids, dtype=torch.long, device=logits.device)
    if n == 0 or ids.shape[-1] < n:
        return logits.clone()
    single = logits.dim() == 1
    logits_2d, ids_2d = (logits[None], ids[None]) if single else (logits, ids)
    t = ids_2d.shape[-1]
    windows = ids_2d.unfold(-1, n, 1)  # (B, W, n): every n-gram in ids
    prefix = ids_2d[:, t - n + 1 :]  # (B, n-1): what the next n-gram starts with
    matches = (windows[..., :-1] == prefix[:, None, :]).all(dim=-1)  # (B, W)
    hits = torch.zeros_like(logits_2d).scatter_add(-1, windows[..., -1], matches.to(logits_2d.dtype))
    out = logits_2d.masked_fill(hits > 0, NEG_INF)
    return out[0] if single else out


# --------------------------------------------------------------------------- one step

def select_next_token(
    logits: torch.Tensor,
    ids: torch.Tensor,
    config: "GenerationConfig",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose the next token of each sequence.

    Order: repetition penalty, n-gram blocking, then greedy ``argmax`` (temperature 0)
    or temperature, top-k, top-p and a multinomial draw. Top-k and top-p never change
    the argmax, so greedy ignores them.

    Args:
        logits: ``(B, V)`` next-token logits.
        ids: ``(B, T)`` every token so far (what the penalties look at).
        generator: the random source for sampling (``None``: torch's global one).

    Returns:
        ``(B, 1)`` int64 token ids.
    """
    logits = logits.float()
    if config.repetition_penalty != 1:
        logits = apply_repetition_penalty(logits, ids, config.repetition_penalty)
    if config.no_repeat_ngram_size:
        logits = block_repeated_ngrams(logits, ids, config.no_repeat_ngram_size)
    if not config.greedy:
        logits = apply_temperature(logits, config.temperature)
        if config.top_k is not None:
            logits = top_k_filter(logits, config.top_k)
        if config.top_p is not None:
            logits = top_p_filter(logits, config.top_p)
    if torch.isneginf(logits).all(dim=-1).any():
        raise RuntimeError(
            "every token was filtered out (all logits are -inf), most likely by no_repeat_ngram_size "
            "on a tiny vocabulary; use a larger n-gram size or switch it off."
        )
    if config.greedy:
        return logits.argmax(dim=-1, keepdim=True)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


