"""sydsgpt.bpe: the from-scratch byte-level BPE, against tiktoken and against a naive trainer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import regex

from sydsgpt.bpe import GPT2_SPLIT_PATTERN, BPETokenizer, count_pairs, merge_pair
from sydsgpt.corpora import load_corpus
from sydsgpt.tokenizer import END_OF_TEXT, get_gpt2_tokenizer

VARIED_TEXTS = [
    "",
    " ",
    "a",
    "Hello, world!",
    "hello world   ",
    "  leading spaces and trailing\n",
    "line one\nline two\n\n\nline five\r\nwindows line",
    "tabs\tand\t\tmore\t",
    "    indented code():\n        return x  # comment\n",
    "I'm, you're, he's, we'll, they've, she'd, IT'S, don't",
    "numbers 1234567890 3.14159 -42 1,000,000 2024-06-01",
    "emoji 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷",
    "CJK 中文字符测试 日本語のテキスト 한국어 텍스트",
    "Ünïcödé àccents façade naïve coöperate Straße",
    "Ελληνικά Русский текст עברית العربية हिन्दी",
    "zero\u200bwidth and\u00a0nbsp and \ufeffbom",
    "$$$ !!! ??? ... --- === *** <<< >>> |||",
    "mixedCase camelCase snake_case kebab-case SCREAMING",
    "https://example.com/path?q=1&r=2#frag user@mail.org",
    "a" * 300 + " " + "ab" * 100,
    "\n\n \n \t \n",
    "trailing spaces before newline   \nnext",
    "<|endoftext",
    "endoftext|> <| endoftext |>",
]


@pytest.fixture(scope="module")
def gpt2() -> BPETokenizer:
    return BPETokenizer.from_gpt2()


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    return get_gpt2_tokenizer()


VERDICT_SPECIALS = [END_OF_TEXT, "<|pad|>"]


@pytest.fixture(scope="module")
def verdict() -> BPETokenizer:
    """The BPE of 700 ids trained on The Verdict (442 merges + 2 special tokens), trained once
    for every test here that needs a real trained tokenizer."""
    return BPETokenizer(name="verdict-700").train(
        load_corpus("the-verdict"), 700, special_tokens=VERDICT_SPECIALS
    )


def naive_train(text: str, vocab_size: int) -> dict[tuple[int, int], int]:
    """Reference trainer: recount every pair of the whole corpus before each merge."""
    words = [list(chunk.encode("utf-8")) for chunk in regex.findall(GPT2_SPLIT_PATTERN, text)]
    vocab = {i: bytes([i]) for i in range(256)}
    merges: dict[tuple[int, int], int] = {}
    for new_id in range(256, vocab_size):
        counts: dict[tuple[int, int], int] = {}
        for word in words:
            for k in range(len(word) - 1):
                counts[(word[k], word[k + 1])] = counts.get((word[k], word[k + 1]), 0) + 1
        if not counts:
            break
        best = max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]]))
        merges[best] = new_id
        vocab[new_id] = vocab[best[0]] + vocab[best[1]]
        for w, word in enumerate(words):
            out, k = [], 0
            while k < len(word):
                if tuple(word[k : k + 2]) == best:
                    out.append(new_id)
                    k += 2
                else:
                    out.append(word[k])
                    k += 1
            words[w] = out
    return merges


# ------------------------------------------------------------------ helpers


def test_count_pairs_counts_overlapping_pairs() -> None:
    assert count_pairs([1, 1, 1, 2]) == {(1, 1): 2, (1, 2): 1}
    assert count_pairs([7]) == {}


def test_merge_pair_is_non_overlapping_left_to_right() -> None:
    assert merge_pair([1, 1, 1], (1, 1), 9) == [9, 1]
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert merge_pair([2, 1], (1, 2), 9) == [2, 1]


# ------------------------------------------------------------------ training


def test_incremental_training_matches_a_naive_recount() -> None:
    text = load_corpus("the-verdict")[:6000] + " aaaa aaaaaaa bbbbbb    \n\n\n  x"
    vocab_size = 256 + 200
    assert BPETokenizer().train(text, vocab_size).merges == naive_train(text, vocab_size)


def test_training_is_deterministic(verdict: BPETokenizer) -> None:
    again = BPETokenizer().train(load_corpus("the-verdict"), 700, special_tokens=VERDICT_SPECIALS)
    assert list(again.merges.items()) == list(verdict.merges.items())
    assert len(verdict.merges) == 700 - 256 - 2


def test_a_smaller_vocabulary_is_a_prefix_of_a_larger_one(verdict: BPETokenizer) -> None:
    text = load_corpus("the-verdict")
    small = verdict.truncated(200)
    trained = BPETokenizer().train(text, 456)
    assert list(small.merges.items()) == list(trained.merges.items())
    assert small.special_tokens == {} and small.n_vocab == 456
    assert small.encode(text[:500]) == trained.encode(text[:500])
    with pytest.raises(ValueError, match="between 0 and 442"):
        verdict.truncated(443)


def test_equal_counts_break_towards_the_greatest_byte_pair() -> None:
    # "abcd" alone: every pair occurs once; (c, d) is the greatest, then (b, cd), then (a, bcd).
    assert BPETokenizer().train("abcd", 259).merges == {
        (99, 100): 256,
        (98, 256): 257,
        (97, 257): 258,
    }


def test_tie_break_compares_bytes_not_ids() -> None:
    # After "cd" -> 256 (3 times) and " x" -> 257 (twice), three pairs occur once each.
    # By bytes: (cd, cd) > (" x", "z") > (" x", "cd"); by ids the order would be reversed.
    merges = BPETokenizer().train("cdcd xcd xz", 261).merges
    assert merges == {
        (99, 100): 256,
        (32, 120): 257,
        (256, 256): 258,
        (257, 122): 259,
        (257, 256): 260,
    }


def test_a_higher_count_beats_a_greater_byte_pair() -> None:
    merges = BPETokenizer().train("abab cd", 257).merges
    assert merges == {(97, 98): 256}


def test_special_tokens_are_never_merged_across() -> None:
    text = f"hello world{END_OF_TEXT}" * 40
    plain = BPETokenizer().train(text, 300)
    assert any(b"<|" in plain.vocab[i] for i in plain.merges.values()), (
        "the test text must tempt the trainer"
    )
    tok = BPETokenizer().train(text, 300, special_tokens=[END_OF_TEXT])
    merged = [tok.vocab[i] for i in tok.merges.values()]
    assert not any(set(b"<|>") & set(token) for token in merged)
    # Only "hello" (4 merges) and " world" (5) are left to merge; the special token comes next.
    assert len(tok.merges) == 9 and tok.special_tokens == {END_OF_TEXT: 265}
    assert tok.eot_token == 265 and tok.n_vocab == 266
    ids = tok.encode(f"hello{END_OF_TEXT}world", allowed_special="all")
    assert tok.eot_token in ids and tok.decode(ids) == f"hello{END_OF_TEXT}world"


def test_training_stops_when_no_pair_is_left() -> None:
    tok = BPETokenizer().train("ab", 1000)
    assert tok.merges == {(97, 98): 256} and tok.n_vocab == 257


def test_verbose_training_reports_each_merge(capsys: pytest.CaptureFixture[str]) -> None:
    BPETokenizer().train("abcd", 300, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "merge 1/44: b'c' + b'd' -> 256 (1 times)"
    assert lines[-1] == "no pairs left to merge after 3 merges" and len(lines) == 4


def test_encode_cache_is_bounded_and_optional(
    verdict: BPETokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = verdict
    text = load_corpus("the-verdict")[:3000]
    expected = tok.encode(text)
    tok.clear_cache()
    monkeypatch.setattr("sydsgpt.bpe._CACHE_LIMIT", 5)
    assert tok.encode(text) == expected
    assert 0 < len(tok._cache) <= 5


def test_vocab_size_too_small_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least 257"):
        BPETokenizer().train("text", 256, special_tokens=[END_OF_TEXT])


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_training_tinyshakespeare_is_fast() -> None:
    text = load_corpus("tinyshakespeare")
    start = time.perf_counter()
    tok = BPETokenizer().train(text, 1000)
    # A naive recount per merge takes minutes here; the incremental trainer about a second.
    assert time.perf_counter() - start < 30
    assert len(tok.merges) == 744


def test_trained_tokenizer_round_trips_any_text(verdict: BPETokenizer) -> None:
    tok = verdict
    for text in VARIED_TEXTS:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert all(0 <= i < tok.n_vocab for i in ids)
    assert len(tok.encode("the the the the")) < len("the the the the".encode())


# ---------------------------------------------------------- GPT-2 equivalence


def test_from_gpt2_recovers_gpt2s_vocabulary(gpt2: BPETokenizer, tiktoken_gpt2) -> None:
    assert gpt2.name == "gpt2" and gpt2.n_vocab == tiktoken_gpt2.n_vocab == 50257
    assert len(gpt2.merges) == 50000 and gpt2.eot_token == 50256
    assert gpt2.byte_ids != list(range(256))  # GPT-2 numbers its bytes in its own order
    for i in [0, 188, 256, 1000, 12345, 50255]:
        assert gpt2.vocab[i] == tiktoken_gpt2.decode_single_token_bytes(i)


@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_encode_equals_tiktoken_on_varied_texts(
    text: str, gpt2: BPETokenizer, tiktoken_gpt2
) -> None:
    assert gpt2.encode(text) == tiktoken_gpt2.encode(text)
    assert gpt2.decode(gpt2.encode(text)) == text


@pytest.mark.parametrize("name", ["tinyshakespeare", "the-verdict"])
def test_encode_equals_tiktoken_on_whole_corpora(
    name: str, gpt2: BPETokenizer, tiktoken_gpt2
) -> None:
    text = load_corpus(name)
    ids = gpt2.encode(text)
    assert ids == tiktoken_gpt2.encode(text)
    assert gpt2.decode(ids) == tiktoken_gpt2.decode(ids) == text


def test_decode_of_a_split_character_matches_tiktoken(gpt2: BPETokenizer, tiktoken_gpt2) -> None:
    ids = tiktoken_gpt2.encode("数")
    assert len(ids) > 1  # one character, several byte tokens
    assert gpt2.decode(ids[:1]) == tiktoken_gpt2.decode(ids[:1])


SPECIAL_TEXTS = [
    "no special token here",
    END_OF_TEXT,
    f"first{END_OF_TEXT}second",
    f" a {END_OF_TEXT}{END_OF_TEXT} b ",
    "almost <|endoftext| but not",
]
SPECIAL_OPTIONS = [
    {},
    {"allowed_special": "all"},
    {"allowed_special": {END_OF_TEXT}},
    {"disallowed_special": ()},
    {"allowed_special": set(), "disallowed_special": ()},
    {"allowed_special": "all", "disallowed_special": ()},
    {"disallowed_special": {END_OF_TEXT}},
]


@pytest.mark.parametrize("options", SPECIAL_OPTIONS, ids=str)
@pytest.mark.parametrize("text", SPECIAL_TEXTS)
def test_special_tokens_behave_like_tiktoken(
    text: str, options: dict, gpt2: BPETokenizer, tiktoken_gpt2
) -> None:
    try:
        expected = tiktoken_gpt2.encode(text, **options)
    except ValueError:
        with pytest.raises(ValueError, match="special token"):
            gpt2.encode(text, **options)
    else:
        assert gpt2.encode(text, **options) == expected


def test_none_encodes_special_text_as_plain_text(gpt2: BPETokenizer, tiktoken_gpt2) -> None:
    text = f"a{END_OF_TEXT}b"
    assert gpt2.encode(text, allowed_special="none") == tiktoken_gpt2.encode(
        text, disallowed_special=()
    )
    with pytest.raises(ValueError, match="allowed_special"):
        gpt2.encode(text, allowed_special="none_raise")


def test_decode_unknown_id_is_a_clear_error(gpt2: BPETokenizer) -> None:
    with pytest.raises(KeyError, match="50257 is not in"):
        gpt2.decode([50257])


def test_eot_token_missing_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no"):
        BPETokenizer().eot_token


# --------------------------------------------------------------- save / load


def test_save_load_round_trips_a_trained_tokenizer(tmp_path: Path, verdict: BPETokenizer) -> None:
    tok = verdict
    loaded = BPETokenizer.load(tok.save(tmp_path / "tok.json"))
    assert list(loaded.merges.items()) == list(tok.merges.items())
    assert loaded.vocab == tok.vocab and loaded.special_tokens == tok.special_tokens
    assert (loaded.name, loaded.pattern, loaded.n_vocab) == (tok.name, tok.pattern, tok.n_vocab)
    text = f"It was the verdict{END_OF_TEXT}<|pad|>"
    assert loaded.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")


def test_save_load_round_trips_gpt2(tmp_path: Path, gpt2: BPETokenizer, tiktoken_gpt2) -> None:
    loaded = BPETokenizer.load(gpt2.save(tmp_path / "gpt2.json"))
    assert loaded.byte_ids == gpt2.byte_ids and loaded.merges == gpt2.merges
    text = VARIED_TEXTS[11] + VARIED_TEXTS[12]
    assert loaded.encode(text) == tiktoken_gpt2.encode(text)


def test_load_refuses_other_files(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a saved BPETokenizer"):
        BPETokenizer.load(path)
