"""A GGUF file's byte-level BPE tokenizer as the book's own :class:`~sydsgpt.bpe.BPETokenizer`.

A ``gpt2``-style GGUF vocabulary (``tokenizer.ggml.model == "gpt2"``) stores:

* ``tokenizer.ggml.tokens``: every token as text, in GPT-2's *printable byte alphabet*:
  each byte is written as one visible character (``"Ġ"`` is the space byte 0x20), so a
  token's bytes are its characters mapped back through :func:`byte_alphabet`;
* ``tokenizer.ggml.merges``: ``"left right"`` strings, earliest (most frequent) first;
* ``tokenizer.ggml.token_type``: 1 for an ordinary token, 3 for a control token such as
  ``<|im_start|>`` (these become the tokenizer's special tokens);
* ``tokenizer.ggml.pre``: the name of the pre-tokenizer (how text is cut into chunks).

Chapter 1's :class:`BPETokenizer` is exactly this algorithm once the tokens are turned
back into bytes and each merge into ``(left_id, right_id) -> new_id``.
"""

from __future__ import annotations

import os
from typing import Any

from .bpe import END_OF_TEXT, GPT2_SPLIT_PATTERN, BPETokenizer, read_saved
from .gguf import GGUFError, GGUFFile

# SmolLM2's pre-tokenizer (llama.cpp's "smollm"; Hugging Face: Digits(individual_digits) then
# ByteLevel): every digit is a chunk of its own, the rest is cut as in GPT-2. As one regular
# expression: digits first, and a whitespace run right before a digit is one chunk (in the
# two-step version, the digit ends the piece that the whitespace run belongs to).
SMOLLM_SPLIT_PATTERN = (
    r"\p{N}|'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?=\p{N})|\s+(?!\S)|\s+"
)

PRE_TOKENIZERS: dict[str, str] = {"smollm": SMOLLM_SPLIT_PATTERN, "gpt-2": GPT2_SPLIT_PATTERN}
"""``tokenizer.ggml.pre`` -> the pre-tokenization regular expression."""

CONTROL = 3  # tokenizer.ggml.token_type of a control (special) token


def byte_alphabet() -> dict[int, str]:
    """GPT-2's printable spelling of the 256 bytes: byte -> one character.

    Bytes that are visible, non-space Latin-1 characters stand for themselves (``!``..``~``,
    ``¡``..``¬``, ``®``..``ÿ``); the other 68 are given the characters U+0100, U+0101, ...
    in byte order, so that no token text contains a space or a control character.
    """
    visible = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    spelling = {b: chr(b) for b in visible}
    others = [b for b in range(256) if b not in spelling]
    spelling.update({b: chr(0x100 + k) for k, b in enumerate(others)})
    return spelling


class GGUFTokenizer(BPETokenizer):
    """A :class:`BPETokenizer` read from a GGUF file, with the file's ids and extra facts.

    Attributes (beyond :class:`BPETokenizer`'s):
        bos_id, eos_id: ``tokenizer.ggml.bos_token_id`` / ``eos_token_id`` (or ``None``).
        chat_template: ``tokenizer.chat_template`` (Jinja text) or ``None``.
        vocab_size: the number of tokens in the file. The bytes that never occur in UTF-8
            text (0xC0, 0xC1, 0xF5..0xFF) may have no token; they get ids from
            ``vocab_size`` on, which no text ever encodes to, and :attr:`n_vocab` stays
            ``vocab_size``.
    """

    BYTES_FIRST = False  # a GGUF vocabulary puts its byte tokens wherever its trainer did
    bos_id: int | None = None
    eos_id: int | None = None
    chat_template: str | None = None
    vocab_size: int = 0

    @property
    def n_vocab(self) -> int:
        return self.vocab_size

    def _payload(self) -> dict[str, Any]:
        """:meth:`save` keeps the file's facts too (under ``"gguf"``), so that a model
        finetuned from a GGUF file loads with its chat template and end-of-turn id."""
        return {**super()._payload(), "gguf": {k: getattr(self, k) for k in GGUF_FIELDS}}

    @classmethod
    def from_saved(cls, payload: Any, path: str | os.PathLike[str]) -> "GGUFTokenizer":
        """:meth:`BPETokenizer.from_saved` and the file's facts (see :func:`load_tokenizer`)."""
        tok = super().from_saved(payload, path)
        extra = payload.get("gguf")
        if not isinstance(extra, dict) or not isinstance(extra.get("vocab_size"), int):
            raise ValueError(f'{path} is not a saved GGUF tokenizer (no "gguf" facts)')
        for key in GGUF_FIELDS:
            setattr(tok, key, extra.get(key))
        return tok


GGUF_FIELDS = ("bos_id", "eos_id", "chat_template", "vocab_size")
"""What a saved :class:`GGUFTokenizer` keeps beyond a :class:`BPETokenizer`."""


def load_tokenizer(path: str | os.PathLike[str]) -> BPETokenizer:
    """A tokenizer file written by :meth:`BPETokenizer.save`: a :class:`GGUFTokenizer` when
    it was saved by one (it has ``"gguf"`` facts), else a :class:`BPETokenizer`."""
    payload = read_saved(path)  # read once, whichever class reads it
    saved_by_gguf = isinstance(payload, dict) and "gguf" in payload
    return (GGUFTokenizer if saved_by_gguf else BPETokenizer).from_saved(payload, path)


def _token_bytes(tokens: list[str], types: list[int], path: Any) -> dict[int, bytes]:
    """id -> bytes for every ordinary token (control tokens are left out)."""
    decode = {c: b for b, c in byte_alphabet().items()}
    out = {}
    for i, (text, kind) in enumerate(zip(tokens, types)):
        if kind == CONTROL:
            continue
        try:
            out[i] = bytes(decode[c] for c in text)
        except KeyError as exc:
            raise GGUFError(
                f"{path}: token {i} {text!r} has the character {exc.args[0]!r}, "
                "which is not in GPT-2's byte alphabet"
            ) from None
    return out


def _list_of(f: GGUFFile, key: str, kind: type, default: list[Any] | None = None) -> list[Any]:
    """Metadata ``key``: a list of ``kind`` (GGUFError naming the file otherwise)."""
    value = f.metadata.get(key, default)
    if not isinstance(value, list) or not all(isinstance(x, kind) for x in value):
        raise GGUFError(f"{f.path}: metadata {key} must be a list of {kind.__name__}")
    return value


def _token_id(f: GGUFFile, key: str) -> int | None:
    value = f.metadata.get(key)
    n = len(f.metadata["tokenizer.ggml.tokens"])
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n
    ):
        raise GGUFError(f"{f.path}: metadata {key} is {value!r}, not a token id (0 to {n - 1})")
    return value


def tokenizer_from_gguf(f: GGUFFile) -> GGUFTokenizer:
    """Rebuild the byte-level BPE tokenizer of GGUF file ``f`` (see the module docstring).

    Raises:
        GGUFError: not a ``gpt2``-style vocabulary, an unknown pre-tokenizer, or merges
            that do not fit the vocabulary.
    """
    meta = f.metadata
    kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre", "gpt-2")
    if kind != "gpt2":
        raise GGUFError(
            f"{f.path}: tokenizer.ggml.model is {kind!r}; only byte-level BPE "
            "('gpt2') vocabularies can be rebuilt as a BPETokenizer"
        )
    if pre not in PRE_TOKENIZERS:
        raise GGUFError(
            f"{f.path}: unknown pre-tokenizer {pre!r} (known: {sorted(PRE_TOKENIZERS)})"
        )
    tokens: list[str] = _list_of(f, "tokenizer.ggml.tokens", str)
    types: list[int] = _list_of(f, "tokenizer.ggml.token_type", int, [1] * len(tokens))
    if len(types) != len(tokens) or not tokens:
        raise GGUFError(f"{f.path}: {len(tokens)} tokens but {len(types)} token types")
    ordinary = _token_bytes(tokens, types, f.path)  # id -> bytes, control tokens left out
    by_bytes = {b: i for i, b in ordinary.items()}
    ids = {tokens[i]: i for i in ordinary}

    name = str(meta.get("general.name", f.path.stem))
    tok = GGUFTokenizer(pattern=PRE_TOKENIZERS[pre], name=name)
    missing = [b for b in range(256) if bytes([b]) not in by_bytes]
    extra = {b: len(tokens) + k for k, b in enumerate(missing)}
    tok.byte_ids = [by_bytes[bytes([b])] if b not in extra else extra[b] for b in range(256)]
    merges, last = {}, -1
    for n, merge in enumerate(_list_of(f, "tokenizer.ggml.merges", str, [])):
        left, _, right = merge.partition(" ")
        pair = (ids.get(left), ids.get(right))
        new = ids.get(left + right)
        # BPETokenizer ranks a merge by its new id, so the ids must grow with the merges.
        if None in pair or new is None or new <= last:
            raise GGUFError(
                f"{f.path}: merge {n} {merge!r} does not fit the vocabulary (each "
                "merge must join two tokens into a token with a larger id)"
            )
        merges[pair] = last = new
    tok.merges = merges
    tok.special_tokens = {t: i for i, (t, k) in enumerate(zip(tokens, types)) if k == CONTROL}
    tok.bos_id, tok.eos_id = (_token_id(f, f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos"))
    template = meta.get("tokenizer.chat_template")
    tok.chat_template = template if isinstance(template, str) else None
    tok.vocab_size = len(tokens)
    tok._rebuild()
    return tok


def tokenizer_metadata(tok: BPETokenizer) -> dict[str, Any]:
    """A :class:`BPETokenizer` as GGUF ``tokenizer.ggml.*`` metadata (the inverse of
    :func:`tokenizer_from_gguf`): every id ``0..n_vocab-1`` must be a byte, a merge or a
    special token, and the pre-tokenizer one that GGUF names (:data:`PRE_TOKENIZERS`)."""
    names = {pattern: name for name, pattern in PRE_TOKENIZERS.items()}
    if tok.pattern not in names:
        raise ValueError(
            "this tokenizer's pre-tokenization pattern has no GGUF name; "
            f"known: {sorted(PRE_TOKENIZERS)}"
        )
    spell = byte_alphabet()
    text = {i: "".join(spell[b] for b in raw) for i, raw in tok.vocab.items()}
    text.update({i: s for s, i in tok.special_tokens.items()})
    missing = [i for i in range(tok.n_vocab) if i not in text]
    if missing:
        raise ValueError(f"ids {missing[:5]} are neither bytes, merges nor special tokens")
    specials = set(tok.special_tokens.values())
    merges = sorted(tok.merges.items(), key=lambda item: item[1])  # earliest merge first
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": names[tok.pattern],
        "tokenizer.ggml.tokens": [text[i] for i in range(tok.n_vocab)],
        "tokenizer.ggml.token_type": [CONTROL if i in specials else 1 for i in range(tok.n_vocab)],
        "tokenizer.ggml.merges": [f"{text[a]} {text[b]}" for (a, b), _ in merges],
    }
    for key, value in (
        ("bos_token_id", getattr(tok, "bos_id", None)),
        ("eos_token_id", getattr(tok, "eos_id", None)),
        ("eos_token_id", tok.special_tokens.get(END_OF_TEXT)),
    ):
        if value is not None:
            meta.setdefault(f"tokenizer.ggml.{key}", value)
    if getattr(tok, "chat_template", None):
        meta["tokenizer.chat_template"] = tok.chat_template
    return meta
