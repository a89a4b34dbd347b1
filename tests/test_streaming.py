"""Streaming encoding (sydsgpt.tokenizer.encode_iterable):
chunks in, ids out, equal to encoding the whole text."""

from __future__ import annotations

import random

import pytest

from sydsgpt.bpe import BPETokenizer
from sydsgpt.corpora import load_corpus
from sydsgpt.tokenizer import (
    encode_iterable,
    get_gpt2_tokenizer,
    iter_safe_pieces,
    split_at_boundary,
)

# Text where a careless cut changes the pre-tokens: contractions ("'ll" cut as "'l|l"),
# whitespace runs, digit runs, newlines, non-Latin letters, emoji, special-token text.
EOT = "<|endoftext|>"
TRICKY = (
    "We'll see: they'll've gone.  Two  spaces,   three   spaces\n\n\nnewlines\t tabs 12345 678 "
    "Ünïcödé 数字テキスト 😀😀 a'b 'll ' ll <|endoftext|> end   \n  x" * 3
)


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, object]:
    return {
        "tiktoken gpt2": get_gpt2_tokenizer(),
        "BPETokenizer": BPETokenizer().train(load_corpus("the-verdict"), 400),
    }


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
def test_encode_iterable_equals_encoding_the_whole_text(
    tokenizers: dict, name: str, max_len: int
) -> None:
    tok = tokenizers[name]
    text = TRICKY + load_corpus("the-verdict")[:3000]
    expected = tok.encode_ordinary(text)
    for seed in range(3):
        chunks = random_chunks(text, seed, max_len)
        assert list(encode_iterable(tok, chunks, allowed_special="none")) == expected


def test_the_bpe_method_is_the_same_stream(tokenizers: dict) -> None:
    tok = tokenizers["BPETokenizer"]
    chunks = random_chunks(TRICKY, 0, 5)
    assert (
        list(tok.encode_iterable(chunks))
        == list(encode_iterable(tok, chunks))
        == tok.encode_ordinary(TRICKY)
    )
    special = BPETokenizer().train(load_corpus("the-verdict"), 300, special_tokens=[EOT])
    assert list(special.encode_iterable(chunks, "all")) == special.encode(TRICKY, "all")


def test_cutting_at_every_chunk_boundary_would_be_wrong(tokenizers: dict) -> None:
    """The equality above is not free: encoding each chunk on its own differs on this text."""
    tok = tokenizers["tiktoken gpt2"]
    for chunks in (["we'l", "l go"], ["hello wor", "ld"], random_chunks(TRICKY, 0, 17)):
        naive = [i for c in chunks for i in tok.encode_ordinary(c)]
        assert naive != tok.encode_ordinary("".join(chunks))
        streamed = list(encode_iterable(tok, chunks, disallowed_special=()))
        assert streamed == tok.encode_ordinary("".join(chunks))


def test_split_at_boundary_cuts_before_a_space_between_letters_or_digits() -> None:
    assert split_at_boundary("the cat sat") == ("the cat", " sat")
    assert split_at_boundary("x 1 y,  z") == (
        "x 1",
        " y,  z",
    )  # "y,  z": no letter on both sides of a space
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


# ---------------------------------------------------------------------------- special tokens

STORIES = "".join(f"Story {i}: once there was a cat{'.' * i}{EOT}\n" for i in range(40))
"""Documents separated by <|endoftext|>, as in CS336's tinystories_sample.txt."""


@pytest.mark.parametrize("max_len", [1, 2, 5, 13, 200])
def test_allowed_special_tokens_become_their_id_even_cut_across_chunks(max_len: int) -> None:
    """The same contract as encode: with allowed_special="all" the separators are single ids,
    exactly tiktoken's encode(text, allowed_special="all"), wherever the chunks cut them."""
    gpt2 = get_gpt2_tokenizer()
    expected = gpt2.encode(STORIES, allowed_special="all")
    assert expected.count(gpt2.eot_token) == 40
    for seed in range(3):
        chunks = random_chunks(STORIES, seed, max_len)
        assert list(encode_iterable(gpt2, chunks, allowed_special="all")) == expected
        assert list(encode_iterable(gpt2, chunks, allowed_special={EOT})) == expected


def test_special_token_text_is_refused_unless_allowed() -> None:
    """encode_iterable used to encode the separator's spelling silently (7 ids per separator)."""
    gpt2 = get_gpt2_tokenizer()
    chunks = random_chunks(STORIES, 0, 7)
    refused = r"contains the special token '<\|endoftext\|>', which is not allowed"
    with pytest.raises(ValueError, match=refused):
        list(encode_iterable(gpt2, chunks))
    with pytest.raises(ValueError, match="pass allowed_special="):
        list(encode_iterable(gpt2, ["no separator yet ", "<|endof", "text|> after"]))
    plain = gpt2.encode_ordinary(STORIES)
    assert list(encode_iterable(gpt2, chunks, allowed_special="none")) == plain
    assert list(encode_iterable(gpt2, chunks, disallowed_special=())) == plain
    assert len(plain) > len(gpt2.encode(STORIES, allowed_special="all"))


def test_a_special_token_that_starts_another_waits_for_the_longer_one() -> None:
    tok = BPETokenizer().train(load_corpus("the-verdict"), 300, special_tokens=["<|a|>", "<|a|>b"])
    text = "x <|a|>b y <|a|> z <|a|>b"
    for max_len in (1, 2, 3, 50):
        for seed in range(3):
            chunks = random_chunks(text, seed, max_len)
            assert list(tok.encode_iterable(chunks, "all")) == tok.encode(text, "all")
