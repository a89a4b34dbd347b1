"""Streaming encoding (sydsgpt.tokenizer.encode_iterable): chunks in, ids out, equal to encoding the whole text."""

from __future__ import annotations

import random

import pytest

from sydsgpt.bpe import BPETokenizer
from sydsgpt.corpora import load_corpus
from sydsgpt.tokenizer import encode_iterable, get_gpt2_tokenizer, iter_safe_pieces, split_at_boundary

# Text where a careless cut changes the pre-tokens: contractions ("'ll" cut as "'l|l"),
# whitespace runs, digit runs, newlines, non-Latin letters, emoji, special-token text.
TRICKY = (
    "We'll see: they'll've gone.  Two  spaces,   three   spaces\n\n\nnewlines\t tabs 12345 678 "
    "Ünïcödé 数字テキスト 😀😀 a'b 'll ' ll <|endoftext|> end   \n  x" * 3
)


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, object]:
    return {"tiktoken gpt2": get_gpt2_tokenizer(), "BPETokenizer": BPETokenizer().train(load_corpus("the-verdict"), 400)}


def random_chunks(text: str, seed: int, max_len: int) -> list[str]:
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(text):
        n = rng.randint(1, max_len)
        chunks.append(text[i : i + n])
        i += n
    return chunks


@pytest.mark.parametrize("name", ["tiktoken gpt2", "BPETokenizer"])
@pytest.mark.parametrize("max_len", [1, 3, 17, 200])
def test_encode_iterable_equals_encoding_the_whole_text(tokenizers: dict, name: str, max_len: int) -> None:
    tok = tokenizers[name]
    text = TRICKY + load_corpus("the-verdict")[:3000]
    expected = tok.encode_ordinary(text)
    for seed in range(3):
        assert list(encode_iterable(tok, random_chunks(text, seed, max_len))) == expected


def test_the_bpe_method_is_the_same_stream(tokenizers: dict) -> None:
    tok = tokenizers["BPETokenizer"]
    chunks = random_chunks(TRICKY, 0, 5)
    assert list(tok.encode_iterable(chunks)) == list(encode_iterable(tok, chunks)) == tok.encode_ordinary(TRICKY)


def test_cutting_at_every_chunk_boundary_would_be_wrong(tokenizers: dict) -> None:
    """The equality above is not free: encoding each chunk on its own differs on this text."""
    tok = tokenizers["tiktoken gpt2"]
    for chunks in (["we'l", "l go"], ["hello wor", "ld"], random_chunks(TRICKY, 0, 17)):
        naive = [i for c in chunks for i in tok.encode_ordinary(c)]
        assert naive != tok.encode_ordinary("".join(chunks))
        assert list(encode_iterable(tok, chunks)) == tok.encode_ordinary("".join(chunks))


def test_split_at_boundary_cuts_before_a_space_between_letters_or_digits() -> None:
    assert split_at_boundary("the cat sat") == ("the cat", " sat")
    assert split_at_boundary("x 1 y,  z") == ("x 1", " y,  z")  # "y,  z": no letter on both sides of a space
    assert split_at_boundary("no-spaces-here") == ("", "no-spaces-here")


def test_pieces_concatenate_to_the_input_and_hold_about_one_chunk() -> None:
    text = load_corpus("the-verdict")
    chunks = random_chunks(text, 1, 100)
    pieces = list(iter_safe_pieces(chunks, min_chars=50))
    assert "".join(pieces) == text
    assert all(len(p) >= 50 for p in pieces[:-1])
    assert max(len(p) for p in pieces) < 50 + 100 + 100  # carry + one chunk + one word's worth


def test_a_pattern_it_is_not_proven_for_is_refused() -> None:
    tok = BPETokenizer(pattern=r"\S+|\s+")
    with pytest.raises(ValueError, match="not proven"):
        list(encode_iterable(tok, ["a b"]))


def test_it_is_lazy() -> None:
    """Ids come out before the input stream ends (O(chunk) memory, not O(text))."""
    def endless():
        while True:
            yield "lorem ipsum dolor "

    stream = encode_iterable(get_gpt2_tokenizer(), endless())
    first = [next(stream) for _ in range(100)]
    assert len(first) == 100
