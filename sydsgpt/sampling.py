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

from typing import Protocol, Sequence

import torch

from .validation import (
    check_ngram_size,
    check_repetition_penalty,
    check_temperature,
    check_top_k,
    check_top_p,
)

NEG_INF = float("-inf")


class SamplingOptions(Protocol):
    """What :func:`select_next_token` reads from its config.
    :class:`~sydsgpt.generate.GenerationConfig` has all of it, and sampling needs nothing else
    from the decoding loop's module."""

    temperature: float
    top_k: int | None
    top_p: float | None
    repetition_penalty: float
    no_repeat_ngram_size: int

    @property
    def greedy(self) -> bool: ...


# --------------------------------------------------------------------------- logits transforms


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide the logits by ``temperature`` (> 0).

    ``softmax(logits / T)``: ``T < 1`` sharpens the distribution towards the top token,
    ``T > 1`` flattens it towards uniform; ``T = 1`` leaves it as the model made it.
    (``T = 0`` is the greedy limit: use ``argmax`` instead, as :func:`select_next_token` does.)

    Shapes: ``(..., V) -> (..., V)``.
    """
    check_temperature(temperature)
    if temperature == 0:
        raise ValueError(
            "temperature 0 means greedy decoding: take logits.argmax(-1) instead of dividing by 0."
        )
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits, set the others to ``-inf`` (probability 0).

    Exactly ``k`` tokens survive: among tied logits the lower token id wins (a stable
    sort orders them). ``k >= V`` keeps everything.

    Shapes: ``(..., V) -> (..., V)``.
    """
    check_top_k(k)
    if k >= logits.shape[-1]:
        return logits.clone()
    order = torch.sort(logits, dim=-1, descending=True, stable=True).indices  # (..., V)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order[..., :k], True)
    return logits.masked_fill(~keep, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability reaches
    ``p``.

    Tokens are sorted by probability; a token is kept when the mass of the tokens
    *before* it is still below ``p``. So the token that crosses the threshold is kept,
    and the most likely token always is. ``p = 1`` keeps everything.

    Shapes: ``(..., V) -> (..., V)``.
    """
    check_top_p(p)
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
    check_repetition_penalty(penalty)
    seen_ids = torch.as_tensor(seen_ids, dtype=torch.long, device=logits.device)
    if seen_ids.shape[-1] == 0:
        return logits.clone()
    seen = logits.gather(-1, seen_ids)  # (..., T)
    penalized = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(-1, seen_ids, penalized)


def block_repeated_ngrams(
    logits: torch.Tensor, ids: torch.Tensor | Sequence[int], n: int
) -> torch.Tensor:
    """Forbid any token that would complete an ``n``-gram already present in ``ids``.

    The last ``n - 1`` tokens of ``ids`` are the start of the next ``n``-gram; every
    earlier place where those ``n - 1`` tokens occur names a token that followed them:
    that token gets ``-inf``. ``n = 1`` forbids every token seen; ``n = 0`` is off.

    Args:
        logits: ``(V,)`` or ``(B, V)``.
        ids: ``(T,)`` or ``(B, T)`` token ids so far.
    """
    check_ngram_size(n)
    ids = torch.as_tensor(ids, dtype=torch.long, device=logits.device)
    if n == 0 or ids.shape[-1] < n:
        return logits.clone()
    single = logits.dim() == 1
    logits_2d, ids_2d = (logits[None], ids[None]) if single else (logits, ids)
    t = ids_2d.shape[-1]
    windows = ids_2d.unfold(-1, n, 1)  # (B, W, n): every n-gram in ids
    prefix = ids_2d[:, t - n + 1 :]  # (B, n-1): what the next n-gram starts with
    matches = (windows[..., :-1] == prefix[:, None, :]).all(dim=-1)  # (B, W)
    hits = torch.zeros_like(logits_2d).scatter_add(
        -1, windows[..., -1], matches.to(logits_2d.dtype)
    )
    out = logits_2d.masked_fill(hits > 0, NEG_INF)
    return out[0] if single else out


# --------------------------------------------------------------------------- one step


def select_next_token(
    logits: torch.Tensor,
    ids: torch.Tensor,
    config: SamplingOptions,
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
            "every token was filtered out (all logits are -inf), most likely by "
            "no_repeat_ngram_size on a tiny vocabulary; use a larger n-gram size or switch it off."
        )
    if config.greedy:
        return logits.argmax(dim=-1, keepdim=True)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)
