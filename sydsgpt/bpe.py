"""Byte-level byte-pair encoding (BPE), from scratch: training, encoding, decoding.

A text is UTF-8 bytes; every byte is a token to begin with. Training repeatedly finds the
most frequent adjacent pair of tokens and *merges* it into a new token, until the
vocabulary has the requested size. Encoding replays the merges, earliest first.

As in GPT-2, the text is first cut into chunks by a regular expression (words with their
leading space, numbers, punctuation runs, whitespace) and pairs never cross a chunk
boundary, so no token glues a word to the punctuation after it.

:meth:`BPETokenizer.from_gpt2` recovers GPT-2's merges from tiktoken's ranks, after which
:meth:`BPETokenizer.encode` gives exactly tiktoken's ``gpt2`` ids.
"""

from __future__ import annotations

import heapq
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Collection, Iterable, Iterator, Literal, Mapping, Sequence

import regex

from .files import atomic_write
from .tokenizer import (
    END_OF_TEXT,
    AllowedSpecial,
    encode_iterable,
    get_gpt2_tokenizer,
    special_regex,
    special_token_error,
    special_token_sets,
)

#: GPT-2's pre-tokenization pattern (tiktoken's ``gpt2``/``r50k_base`` spelling): contractions,
#: optional space + letters, optional space + digits, optional space + other symbols, whitespace.
GPT2_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

Pair = tuple[int, int]
_FORMAT = "sydsgpt-bpe"
_CACHE_LIMIT = 200_000  # chunks remembered by encode


def count_pairs(
    ids: Iterable[int], counts: dict[Pair, int] | None = None, weight: int = 1
) -> dict[Pair, int]:
    """Count adjacent pairs in ``ids`` (overlapping: ``[1, 1, 1]``
    has ``(1, 1)`` twice), each ``weight`` times."""
    counts = {} if counts is None else counts
    ids = list(ids)
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge_pair(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids``
    by ``new_id``, non-overlapping, left to right."""
    first, second = pair
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == first and ids[i + 1] == second:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class _Greatest:
    """Wraps a sort key so that a min-heap pops the *greatest* key first."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __lt__(self, other: "_Greatest") -> bool:
        return self.key > other.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Greatest) and self.key == other.key


class BPETokenizer:
    """A byte-level BPE tokenizer with tiktoken's interface (``encode``, ``decode``, ``n_vocab``,
    ``name``).

    A fresh tokenizer knows only the 256 bytes (``vocab[i] == bytes([i])``); :meth:`train`
    learns merges, :meth:`from_gpt2` loads GPT-2's.

    Attributes:
        name: a label, like tiktoken's ``Encoding.name``.
        pattern: the pre-tokenization regular expression.
        merges: ``(left_id, right_id) -> new_id``, in the order they were learned
            (a lower ``new_id`` is an earlier merge).
        vocab: ``id -> bytes`` for every ordinary token.
        special_tokens: ``text -> id`` (e.g. ``{"<|endoftext|>": 50256}``).
        byte_ids: ``byte_ids[b]`` is the id of the single byte ``b`` (``b`` itself after
            :meth:`train`; GPT-2 numbers its bytes differently).
    """

    BYTES_FIRST = True
    """A saved file must number its bytes 0..255 and its merges from 256 (as :meth:`train` and
    GPT-2 do); see :func:`check_vocabulary`."""

    def __init__(self, pattern: str = GPT2_SPLIT_PATTERN, name: str = "sydsgpt-bpe") -> None:
        self.name = name
        self.pattern = pattern
        self.byte_ids: list[int] = list(range(256))
        self.merges: dict[Pair, int] = {}
        self.special_tokens: dict[str, int] = {}
        self._rebuild()

    # ----------------------------------------------------------------- state
    def _rebuild(self) -> None:
        """Recompute everything derived from ``byte_ids``, ``merges`` and ``special_tokens``."""
        self._compiled = regex.compile(self.pattern)
        self.vocab: dict[int, bytes] = {i: bytes([b]) for b, i in enumerate(self.byte_ids)}
        for (left, right), new_id in self.merges.items():
            self.vocab[new_id] = self.vocab[left] + self.vocab[right]
        self._special_ids = {i: s for s, i in self.special_tokens.items()}
        self._n_vocab = max([*self.vocab, *self._special_ids]) + 1
        self._cache: dict[str, list[int]] = {}

    @property
    def n_vocab(self) -> int:
        """Number of ids (largest id + 1), special tokens included, like tiktoken's."""
        return self._n_vocab

    @property
    def eot_token(self) -> int:
        """The id of ``<|endoftext|>`` (AttributeError when this tokenizer has none)."""
        if END_OF_TEXT not in self.special_tokens:
            raise AttributeError(f"tokenizer {self.name!r} has no {END_OF_TEXT} special token")
        return self.special_tokens[END_OF_TEXT]

    @property
    def special_tokens_set(self) -> set[str]:
        return set(self.special_tokens)

    def __repr__(self) -> str:
        return (
            f"<BPETokenizer {self.name!r}: {self.n_vocab} ids, {len(self.merges)} merges, "
            f"{len(self.special_tokens)} special>"
        )

    # -------------------------------------------------------------- training
    def pretokenize(self, text: str) -> list[str]:
        """Cut ``text`` into the chunks that BPE works on (pairs never cross chunk boundaries)."""
        return self._compiled.findall(text)

    def train(
        self,
        text: str,
        vocab_size: int,
        special_tokens: Collection[str] | None = None,
        verbose: bool = False,
    ) -> "BPETokenizer":
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``; returns ``self``.

        Each step merges the most frequent adjacent pair; on equal counts the pair whose
        ``(bytes_of_left, bytes_of_right)`` is lexicographically greatest wins, so training
        is deterministic. Special tokens are cut out of the text first (never merged
        with their neighbours) and get the last ids. Training stops early if no pair is left.

        Pair counts are updated incrementally: a merge only revisits the distinct chunks
        that contain the merged pair, and a heap (with stale entries skipped when popped)
        finds the next best pair without scanning all of them.
        """
        specials = list(dict.fromkeys(special_tokens or ()))
        # later: checks of the special tokens and vocab_size
        bad = [s for s in specials if not isinstance(s, str) or not s]
        if bad:
            raise ValueError(
                f"special tokens must be non-empty strings, got {bad!r} (an empty one would match "
                "between every character)"
            )
        if vocab_size < 256 + len(specials):
            raise ValueError(
                f"vocab_size={vocab_size} is too small: the 256 byte tokens and {len(specials)} "
                f"special token(s) need at least {256 + len(specials)}"
            )
        # endlater
        # region: bpe-setup
        pieces = special_regex(specials).split(text) if specials else [text]
        chunk_counts = Counter(chunk for piece in pieces for chunk in self.pretokenize(piece))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
        freqs = list(chunk_counts.values())

        self.byte_ids = list(range(256))
        self.merges = {}
        self.special_tokens = {}
        vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
        pair_counts: dict[Pair, int] = {}
        where: dict[Pair, set[int]] = {}  # pair -> indices of the words that (may) contain it
        for w, (word, freq) in enumerate(zip(words, freqs)):
            count_pairs(word, pair_counts, freq)
            for pair in zip(word, word[1:]):
                where.setdefault(pair, set()).add(w)

        def entry(pair: Pair) -> tuple[int, _Greatest, Pair]:
            return (-pair_counts[pair], _Greatest((vocab[pair[0]], vocab[pair[1]])), pair)

        heap = [entry(pair) for pair in pair_counts]
        heapq.heapify(heap)
        # endregion: bpe-setup

        # region: bpe-merge-loop
        n_merges = vocab_size - 256 - len(specials)
        for new_id in range(256, 256 + n_merges):
            best = None
            while heap:
                neg_count, _, pair = heapq.heappop(heap)
                current = pair_counts.get(pair, 0)
                if current == -neg_count and current > 0:
                    best = pair
                    break
                if current > 0:  # stale entry (count went down): requeue with the true count
                    heapq.heappush(heap, entry(pair))
            if best is None:
                # later: a progress line when verbose
                if verbose:
                    print(f"no pairs left to merge after {new_id - 256} merges")
                # endlater
                break
            self.merges[best] = new_id
            vocab[new_id] = vocab[best[0]] + vocab[best[1]]
            # later: a progress line when verbose
            if verbose:
                print(
                    f"merge {new_id - 255}/{n_merges}: {vocab[best[0]]!r} + {vocab[best[1]]!r} -> "
                    f"{new_id} ({pair_counts[best]} times)"
                )
            # endlater
            touched: set[Pair] = set()
            for w in where.pop(best, ()):
                old = words[w]
                new = merge_pair(old, best, new_id)
                if len(new) == len(old):
                    continue
                freq = freqs[w]
                for pair in zip(old, old[1:]):
                    pair_counts[pair] -= freq
                for pair in zip(new, new[1:]):
                    pair_counts[pair] = pair_counts.get(pair, 0) + freq
                    if new_id in pair:  # only pairs with the new token are new to this word
                        where.setdefault(pair, set()).add(w)
                        touched.add(pair)
                words[w] = new
            pair_counts.pop(best, None)
            for pair in touched:  # counts only go up for pairs containing the new token
                if pair_counts.get(pair, 0) > 0:
                    heapq.heappush(heap, entry(pair))
        # endregion: bpe-merge-loop

        next_id = 256 + len(self.merges)
        self.special_tokens = {s: next_id + k for k, s in enumerate(specials)}
        self._rebuild()
        return self

    def truncated(self, n_merges: int) -> "BPETokenizer":
        """A copy with only the first ``n_merges`` merges (and no special tokens).

        Training is greedy, so ``BPETokenizer().train(text, V).truncated(k)`` has the same
        merges as ``BPETokenizer().train(text, 256 + k)``: one run gives every smaller vocabulary.
        """
        if not 0 <= n_merges <= len(self.merges):
            raise ValueError(
                f"n_merges must be between 0 and {len(self.merges)} (this tokenizer's merges), got "
                f"{n_merges}"
            )
        copy = type(self)(pattern=self.pattern, name=f"{self.name}[:{n_merges}]")
        copy.byte_ids = list(self.byte_ids)
        copy.merges = dict(list(self.merges.items())[:n_merges])
        copy._rebuild()
        return copy

    # -------------------------------------------------------------- encoding
    def clear_cache(self) -> None:
        """Forget the chunks already encoded (encode keeps up to 200,000 of them)."""
        self._cache.clear()

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Apply the merges to one pre-token chunk, earliest merge first."""
        # later: return the ids at once if this chunk was encoded before (a cache)
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        # endlater
        ids = [self.byte_ids[b] for b in chunk.encode("utf-8")]
        merges = self.merges
        while len(ids) > 1:
            best_rank, best_pair = None, None
            for pair in zip(ids, ids[1:]):
                rank = merges.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best_pair = rank, pair
            if best_pair is None:
                break
            ids = merge_pair(ids, best_pair, best_rank)
        # later: remember the ids of this chunk (the cache)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[chunk] = ids
        # endlater
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` treating special-token text as ordinary text."""
        out: list[int] = []
        for chunk in self._compiled.findall(text):
            out.extend(self._encode_chunk(chunk))
        return out

    def encode(
        self,
        text: str,
        allowed_special: AllowedSpecial = "none_raise",
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        """Encode ``text`` to token ids, handling special tokens exactly like tiktoken.

        Args:
            allowed_special: special tokens that become their id when they appear in the text:
                ``"all"``, a set of them, or ``"none_raise"`` (default, same as ``set()``).
                ``"none"`` allows none and disables the check below (encode them as plain text).
            disallowed_special: special tokens whose text raises ``ValueError`` when found:
                ``"all"`` (default: every special token not allowed) or a collection;
                ``()`` encodes them as ordinary text.
        """
        allowed, disallowed = special_token_sets(self, allowed_special, disallowed_special)
        if disallowed:
            found = special_regex(disallowed).search(text)
            if found:
                raise ValueError(special_token_error(found.group()))
        if not allowed:
            return self.encode_ordinary(text)
        out: list[int] = []
        start = 0
        for match in special_regex(allowed).finditer(text):
            out.extend(self.encode_ordinary(text[start : match.start()]))
            out.append(self.special_tokens[match.group()])
            start = match.end()
        out.extend(self.encode_ordinary(text[start:]))
        return out

    def encode_iterable(
        self,
        chunks: Iterable[str],
        allowed_special: AllowedSpecial = "none_raise",
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> Iterator[int]:
        """Encode a stream of text chunks lazily; equal to ``encode("".join(chunks), ...)`` with
        the same special-token arguments (see :func:`sydsgpt.tokenizer.encode_iterable`)."""
        return encode_iterable(self, chunks, allowed_special, disallowed_special)

    # -------------------------------------------------------------- decoding
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes that ``ids`` stand for."""
        parts = []
        for i in ids:
            if i in self.vocab:
                parts.append(self.vocab[i])
            elif i in self._special_ids:
                parts.append(self._special_ids[i].encode("utf-8"))
            else:
                raise KeyError(
                    f"token id {i} is not in this tokenizer's vocabulary (ids "
                    f"0..{self.n_vocab - 1})"
                )
        return b"".join(parts)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Decode ids to text (bytes that are not valid UTF-8 become U+FFFD, as in tiktoken)."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    # ------------------------------------------------------------- save/load
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the tokenizer as readable JSON (merges as ``[left, right, new_id]`` triples)."""
        payload = self._payload()
        return atomic_write(path, json.dumps(payload, indent=1, ensure_ascii=False) + "\n")

    def _payload(self) -> dict[str, Any]:
        """What :meth:`save` writes (a subclass adds its own fields)."""
        return {
            "format": _FORMAT,
            "version": 1,
            "name": self.name,
            "pattern": self.pattern,
            "byte_ids": self.byte_ids,
            "merges": [[left, right, new_id] for (left, right), new_id in self.merges.items()],
            "special_tokens": self.special_tokens,
        }

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "BPETokenizer":
        """Read a tokenizer written by :meth:`save`, checked so a damaged file cannot encode
        wrongly.

        Raises:
            ValueError: naming ``path``: not JSON, not this format, or its ids are inconsistent
                (see :func:`check_vocabulary`).
        """
        return cls.from_saved(read_saved(path), path)

    @classmethod
    def from_saved(cls, payload: Any, path: str | os.PathLike[str]) -> "BPETokenizer":
        """The tokenizer of a file's parsed JSON (:func:`read_saved`), checked as
        :meth:`load` says; ``path`` names the file in errors."""
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise ValueError(
                f"{path} is not a saved BPETokenizer (format {found!r}, expected {_FORMAT!r})"
            )
        try:
            tok = cls(pattern=payload["pattern"], name=payload["name"])
            byte_ids = [_as_id(i) for i in payload["byte_ids"]]
            merge_list = [tuple(_as_id(x) for x in m) for m in payload["merges"]]
            specials = {s: _as_id(i) for s, i in payload["special_tokens"].items()}
            check_vocabulary(byte_ids, merge_list, specials, bytes_first=cls.BYTES_FIRST)
        except (KeyError, TypeError, ValueError, AttributeError, regex.error) as exc:
            detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(
                f"{path} is a damaged BPETokenizer file: {detail}; train the tokenizer again or "
                "use another copy"
            ) from None
        tok.byte_ids = byte_ids
        tok.merges = {(a, b): c for a, b, c in merge_list}
        tok.special_tokens = specials
        tok._rebuild()
        return tok

    # ---------------------------------------------------------- from tiktoken
    @classmethod
    def from_tiktoken(cls, encoding: Any) -> "BPETokenizer":
        """Rebuild a tiktoken BPE encoding (e.g. ``gpt2``) as merges.

        tiktoken stores only ``token bytes -> rank``. The merge that made a token is found
        by running BPE on the token's own bytes with only lower-ranked tokens: it ends in
        exactly two parts, the token's left and right halves. Ids are tiktoken's ranks.
        """
        ranks: dict[bytes, int] = encoding._mergeable_ranks
        tok = cls(pattern=encoding._pat_str, name=encoding.name)
        tok.byte_ids = [ranks[bytes([b])] for b in range(256)]
        merges: dict[Pair, int] = {}
        for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            if len(token) == 1:
                continue
            left, right = _split_token(token, rank, ranks)
            merges[(ranks[left], ranks[right])] = rank
        tok.merges = merges
        tok.special_tokens = dict(encoding._special_tokens)
        tok._rebuild()
        return tok

    @classmethod
    def from_gpt2(cls) -> "BPETokenizer":
        """GPT-2's tokenizer as merges (50,000 merges +
        ``<|endoftext|>``; needs tiktoken's files)."""
        return cls.from_tiktoken(get_gpt2_tokenizer())


# ------------------------------------------------------------------ tokenizer specs

TOKENIZER_SPEC_HELP = (
    "gpt2 (GPT-2's), bpe:N (train an N-id byte-level BPE on the training text) "
    "or the path of a saved BPETokenizer JSON"
)
"""What a tokenizer *spec* (``sydsgpt train --tokenizer``, :class:`~sydsgpt.presets.RunPreset`)
may be."""


def resolve_tokenizer(spec: str, train_text: str | None = None, corpus_name: str = "text") -> Any:
    """The tokenizer a spec names: ``gpt2``, ``bpe:N`` (trained now on ``train_text``; its
    name is ``bpe<N>-<corpus_name>``) or the path of a saved :class:`~sydsgpt.bpe.BPETokenizer`."""
    if spec == "gpt2":
        return get_gpt2_tokenizer()
    if spec.startswith("bpe:"):
        size = spec.split(":", 1)[1]
        if not size.isdigit() or int(size) <= 256:
            raise ValueError(
                "tokenizer bpe:N needs an integer N > 256 (the byte tokens come "
                f"first), got {spec!r}"
            )
        if train_text is None:
            raise ValueError(f"tokenizer {spec!r} is trained on the training text: pass train_text")
        return BPETokenizer(name=f"bpe{size}-{corpus_name}").train(train_text, int(size))
    if not os.path.isfile(spec):
        raise FileNotFoundError(
            f"tokenizer {spec!r} is neither 'gpt2', 'bpe:N' nor an existing BPETokenizer JSON file"
        )
    return BPETokenizer.load(spec)


def _as_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"token ids must be non-negative integers, got {value!r}")
    return value


def check_vocabulary(
    byte_ids: Sequence[int],
    merges: Sequence[tuple[int, ...]],
    special_tokens: Mapping[str, int],
    bytes_first: bool = True,
) -> None:
    """Raise ``ValueError`` unless the ids make a consistent byte-level BPE: 256 distinct byte ids
    in ``0..255``; each merge ``(left, right, new)`` joins two ids that exist already into a new id
    ``>= 256`` used by no byte or earlier merge, and no pair is merged twice; each special token is
    a non-empty string whose id no other token has.

    ``bytes_first=False`` (a vocabulary read from a GGUF file, whose byte tokens sit wherever its
    trainer put them): the byte ids and merge ids may be any distinct non-negative ids."""
    low, high = (0, 256) if bytes_first else (0, None)
    if (
        len(byte_ids) != 256
        or len(set(byte_ids)) != 256
        or not all(low <= i and (high is None or i < high) for i in byte_ids)
    ):
        where = "in 0..255" if bytes_first else ">= 0"
        raise ValueError(f"byte_ids must be 256 distinct ids {where} (one per byte)")
    known, pairs = set(byte_ids), set()
    for n, merge in enumerate(merges):
        if len(merge) != 3:
            raise ValueError(f"merge {n} must be [left, right, new_id], got {list(merge)}")
        left, right, new = merge
        if left not in known or right not in known:
            raise ValueError(
                f"merge {n} {list(merge)} joins an id that no byte or earlier merge defines"
            )
        if (bytes_first and new < 256) or new < 0 or new in known:
            raise ValueError(
                f"merge {n} {list(merge)} gives id {new}, which is a byte id or already used (a "
                "merge makes a new id >= 256)"
            )
        if (left, right) in pairs:
            raise ValueError(
                f"merge {n} {list(merge)} merges the pair ({left}, {right}) a second time"
            )
        known.add(new)
        pairs.add((left, right))
    seen: dict[int, str] = {}
    for text, i in special_tokens.items():
        if not isinstance(text, str) or not text:
            raise ValueError(f"special tokens must be non-empty strings, got {text!r}")
        if i in known or i in seen:
            raise ValueError(
                f"special token {text!r} has id {i}, which "
                f"{'special token ' + repr(seen[i]) if i in seen else 'a byte or merge'} has "
                "already"
            )
        seen[i] = text


def _split_token(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The two parts that BPE with only tokens ranked below ``rank`` reduces ``token`` to."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best, best_rank = -1, rank
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best, best_rank = i, r
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise ValueError(
            f"token {token!r} (rank {rank}) cannot be built from lower-ranked tokens: not a BPE "
            "vocabulary"
        )
    return parts[0], parts[1]


def read_saved(path: str | os.PathLike[str]) -> Any:
    """The parsed JSON of a tokenizer file written by :meth:`BPETokenizer.save`.

    Raises:
        ValueError: naming ``path``: it is not JSON text.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a saved BPETokenizer (not JSON text: {exc})") from None
