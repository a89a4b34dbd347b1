"""Text to token ids and back, with GPT-2's tokenizer (tiktoken's ``gpt2`` encoding).

Any tokenizer with tiktoken's interface works here: a ``tiktoken.Encoding`` or the
from-scratch :class:`sydsgpt.bpe.BPETokenizer` (both have ``encode``, ``decode``,
``n_vocab`` and ``name``). When no tokenizer is given, GPT-2's is used.

tiktoken downloads GPT-2's BPE files on first use and caches them in the directory named
by the environment variable ``TIKTOKEN_CACHE_DIR``; offline, point it at a ready copy.
"""

from __future__ import annotations

import functools
import os
from typing import AbstractSet, Any, Collection, Iterable, Iterator, Literal, Sequence, Union

import torch

#: The text of GPT-2's only special token, which separates documents.
END_OF_TEXT = "<|endoftext|>"


@functools.lru_cache(maxsize=1)
def get_gpt2_tokenizer() -> Any:
    """GPT-2's tokenizer: tiktoken's ``gpt2`` encoding (50,257 ids), loaded once and cached.

    Raises:
        RuntimeError: tiktoken could not load its files (typically: no network and no
            cached copy). The message says how to point ``TIKTOKEN_CACHE_DIR`` at one.
    """
    import tiktoken

    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as exc:  # network errors come from requests/urllib, with many types
        cache = os.environ.get("TIKTOKEN_CACHE_DIR", "(not set)")
        raise RuntimeError(
            "could not load tiktoken's 'gpt2' encoding: tiktoken downloads its BPE files on "
            f"first use and that failed ({type(exc).__name__}: {exc}). TIKTOKEN_CACHE_DIR is "
            f"{cache}. Connect to the internet once, or set the environment variable "
            "TIKTOKEN_CACHE_DIR to a directory holding a ready copy of tiktoken's cache."
        ) from exc


def text_to_token_ids(text: str, tokenizer: Any = None) -> torch.Tensor:
    """Encode ``text`` as a batch of one sequence.

    Special tokens written in the text (e.g. ``<|endoftext|>``) become their special ids.

    Args:
        text: the text to encode.
        tokenizer: a tiktoken ``Encoding`` or a ``BPETokenizer``; default GPT-2's.

    Returns:
        ``LongTensor`` of shape ``(1, T)``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text_to_token_ids needs a str, got {type(text).__name__}")
    tokenizer = tokenizer if tokenizer is not None else get_gpt2_tokenizer()
    ids = tokenizer.encode(text, allowed_special="all")
    return torch.tensor(ids, dtype=torch.long).unsqueeze(0)


def token_ids_to_text(ids: torch.Tensor | Sequence[int], tokenizer: Any = None) -> str:
    """Decode token ids back to text.

    Args:
        ids: a tensor of shape ``(1, T)`` or ``(T,)``, or a list of ints.
        tokenizer: a tiktoken ``Encoding`` or a ``BPETokenizer``; default GPT-2's.

    Returns:
        The decoded text (invalid UTF-8, e.g. half of a multi-byte character, shows as U+FFFD).
    """
    if isinstance(ids, torch.Tensor):
        if ids.dim() == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.dim() != 1:
            raise ValueError(
                f"token_ids_to_text decodes one sequence: expected shape (1, T) or (T,), got "
                f"{tuple(ids.shape)}; decode a batch row by row, e.g. token_ids_to_text(batch[i])"
            )
        ids = ids.tolist()
    tokenizer = tokenizer if tokenizer is not None else get_gpt2_tokenizer()
    return tokenizer.decode([int(i) for i in ids])


# ---------------------------------------------------------------------------- streaming


SAFE_SPLIT_PATTERNS: frozenset[str] = frozenset(
    {
        # gpt2, r50k_base
        r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    }
)
"""Pre-tokenizer patterns for which a space between
two letters/digits is always a pre-token boundary."""


@functools.lru_cache(maxsize=1)
def _split_point_regex() -> Any:
    import regex

    # searched right to left: the last space with a letter or digit on both sides
    return regex.compile(r"(?r)(?<=[\p{L}\p{N}]) (?=[\p{L}\p{N}])")


def split_at_boundary(text: str) -> tuple[str, str]:
    """Cut ``text`` at its last *safe* point: ``(head, tail)`` with ``head + tail == text``.

    The safe point is a space with a letter or digit on each side (``"cat| sat"``). With
    GPT-2's pre-tokenizer a letter/digit run never takes in the space after it, and the
    space starts the next pre-token (``" sat"``), so every pre-token lies wholly in the head
    or wholly in the tail, whatever text follows the tail: ``encode(head) + encode(tail +
    rest) == encode(head + tail + rest)``. Without such a point, ``head`` is empty.
    """
    match = _split_point_regex().search(text)
    if match is None:
        return "", text
    return text[: match.start()], text[match.start() :]


def check_streamable(tokenizer: Any) -> None:
    """Raise ``ValueError`` unless ``tokenizer``'s pre-tokenizer
    is one :func:`split_at_boundary` is proven for."""
    pattern = getattr(tokenizer, "pattern", None) or getattr(tokenizer, "_pat_str", None)
    if pattern not in SAFE_SPLIT_PATTERNS:
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name', tokenizer)!r} pre-tokenizes with a pattern "
            "that streaming encoding is not proven for (it splits text only at a space between "
            "two letters/digits, a boundary of GPT-2's pattern); encode the whole text with "
            "tokenizer.encode_ordinary instead"
        )


def iter_safe_pieces(chunks: Iterable[str], min_chars: int = 1) -> Iterator[str]:
    """Re-cut a stream of text chunks into pieces that end at safe points
    (:func:`split_at_boundary`).

    Each piece holds at least ``min_chars`` characters (except the last) and the pieces
    concatenate to the input. Memory: the carried text, about one chunk plus the longest
    stretch without a safe point (e.g. a long run of text without spaces).
    """
    carry = ""
    for chunk in chunks:
        carry += chunk
        if len(carry) < min_chars:
            continue
        head, tail = split_at_boundary(carry)
        if head and len(head) >= min_chars:
            yield head
            carry = tail
    if carry:
        yield carry


AllowedSpecial = Union[Literal["all", "none", "none_raise"], AbstractSet[str]]
"""``encode``'s ``allowed_special``: ``"all"``, a set of special-token texts, ``"none_raise"``
(the default: none allowed, and finding one is an error) or ``"none"`` (none, and no check)."""


def special_token_sets(
    tokenizer: Any,
    allowed_special: AllowedSpecial = "none_raise",
    disallowed_special: Literal["all"] | Collection[str] = "all",
) -> tuple[set[str], set[str]]:
    """``(allowed, disallowed)``: the special-token texts that become their id, and those whose
    text in the input is an error, as ``encode``'s two arguments of that name say (tiktoken's
    contract; ``"none"`` and ``"none_raise"`` are :class:`~sydsgpt.bpe.BPETokenizer`'s
    spellings)."""
    specials = set(getattr(tokenizer, "special_tokens_set", ()))
    if allowed_special == "all":
        allowed = set(specials)
    elif isinstance(allowed_special, str):
        if allowed_special not in ("none", "none_raise"):
            raise ValueError(
                "allowed_special must be 'all', 'none', 'none_raise' or a set of "
                f"special tokens, got {allowed_special!r}"
            )
        allowed = set()
        if allowed_special == "none":
            disallowed_special = ()
    else:
        allowed = set(allowed_special)
    disallowed = specials - allowed if disallowed_special == "all" else set(disallowed_special)
    return allowed & specials, disallowed


def special_token_error(found: str) -> str:
    """The message for special-token text found where it is not allowed, saying both fixes."""
    return (
        f"the text contains the special token {found!r}, which is not allowed. To encode it "
        f"as its special id pass allowed_special={{{found!r}}} (or 'all'); to encode it as "
        "plain text pass disallowed_special=() (or allowed_special='none')."
    )


def special_regex(specials: Collection[str]) -> Any:
    """A regular expression matching any of ``specials``, longest first (so a special token that is
    a prefix of another never wins wrongly)."""
    import regex

    return regex.compile("|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)))


def partial_suffix(text: str, specials: Collection[str]) -> int:
    """Length of the longest end of ``text`` that is the beginning of one of ``specials`` (it must
    wait for the next chunk: the rest of the special token may be there)."""
    for size in range(min(max(map(len, specials), default=1) - 1, len(text)), 0, -1):
        tail = text[-size:]
        if any(s.startswith(tail) for s in specials):
            return size
    return 0


def encode_iterable(
    tokenizer: Any,
    chunks: Iterable[str],
    allowed_special: AllowedSpecial = "none_raise",
    disallowed_special: Literal["all"] | Collection[str] = "all",
) -> Iterator[int]:
    """Encode a stream of text chunks (e.g. a file read piece by piece) to ids, lazily.

    Gives exactly ``tokenizer.encode("".join(chunks), allowed_special, disallowed_special)``,
    with the same special-token contract: by default the text of a special token
    (``<|endoftext|>``) is an error (``ValueError`` saying how to allow it); an allowed one
    becomes its id, also when it is cut across chunks; ``allowed_special="none"`` encodes
    it as plain text. Only about one chunk is held at a time: chunks are re-cut at
    pre-token boundaries (:func:`iter_safe_pieces`) and each piece is encoded on its own.
    Works with a tiktoken ``Encoding`` and a :class:`~sydsgpt.bpe.BPETokenizer` whose
    pre-tokenizer is GPT-2's (``ValueError`` for another pattern).
    """
    check_streamable(tokenizer)
    allowed, disallowed = special_token_sets(tokenizer, allowed_special, disallowed_special)
    watched = allowed | disallowed
    if not watched:
        for piece in iter_safe_pieces(chunks):
            yield from tokenizer.encode_ordinary(piece)
        return
    finder = special_regex(watched)
    ids = {s: tokenizer.encode(s, allowed_special={s}, disallowed_special=()) for s in allowed}
    carry = ""
    for chunk in chunks:
        carry += chunk
        start, stop = 0, len(carry)
        for match in finder.finditer(carry):
            found = match.group()
            longer = any(len(s) > len(found) and s.startswith(found) for s in watched)
            if longer and len(carry) - match.start() < max(map(len, watched)):
                stop = match.start()  # a longer special token may start here: wait for more text
                break
            if found in disallowed:
                raise ValueError(special_token_error(found))
            yield from tokenizer.encode_ordinary(carry[start : match.start()])
            yield from ids[found]
            start = match.end()
        rest = carry[start:stop]
        hold = partial_suffix(rest, watched)
        head, tail = split_at_boundary(rest[: len(rest) - hold])
        if head:
            yield from tokenizer.encode_ordinary(head)
        carry = tail + rest[len(rest) - hold :] + carry[stop:]
    if carry:
        found = finder.search(carry)
        if found and found.group() in disallowed:
            raise ValueError(special_token_error(found.group()))
        yield from tokenizer.encode(carry, allowed_special=allowed, disallowed_special=disallowed)
