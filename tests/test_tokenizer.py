"""sydsgpt.tokenizer: GPT-2's tokenizer helpers (tiktoken's files come from TIKTOKEN_CACHE_DIR)."""

from __future__ import annotations

import pytest
import tiktoken
import torch

from sydsgpt.bpe import BPETokenizer
from sydsgpt.tokenizer import END_OF_TEXT, get_gpt2_tokenizer, text_to_token_ids, token_ids_to_text

TEXT = "Hello, I'm a language model. Ünïcödé and 数字 123!"


def test_gpt2_tokenizer_is_tiktokens_gpt2_and_cached() -> None:
    enc = get_gpt2_tokenizer()
    assert enc is get_gpt2_tokenizer()
    assert enc.name == "gpt2" and enc.n_vocab == 50257 and enc.eot_token == 50256


def test_text_to_token_ids_is_a_batch_of_one() -> None:
    ids = text_to_token_ids(TEXT)
    assert ids.dtype == torch.long and ids.dim() == 2 and ids.shape[0] == 1
    assert ids[0].tolist() == get_gpt2_tokenizer().encode(TEXT)


def test_end_of_text_becomes_its_special_id() -> None:
    ids = text_to_token_ids(f"one{END_OF_TEXT}two")[0].tolist()
    assert 50256 in ids
    assert token_ids_to_text(ids) == f"one{END_OF_TEXT}two"


@pytest.mark.parametrize("form", ["batch", "flat", "list"])
def test_token_ids_to_text_round_trips(form: str) -> None:
    ids = text_to_token_ids(TEXT)
    given = {"batch": ids, "flat": ids[0], "list": ids[0].tolist()}[form]
    assert token_ids_to_text(given) == TEXT


def test_token_ids_to_text_refuses_a_batch_of_several() -> None:
    with pytest.raises(ValueError, match=r"expected shape \(1, T\) or \(T,\), got \(2, 3\)"):
        token_ids_to_text(torch.zeros(2, 3, dtype=torch.long))


def test_text_to_token_ids_refuses_non_text() -> None:
    with pytest.raises(TypeError, match="needs a str"):
        text_to_token_ids([1, 2, 3])  # type: ignore[arg-type]


def test_helpers_accept_a_from_scratch_tokenizer() -> None:
    tok = BPETokenizer().train(
        "the cat sat on the mat " * 20, vocab_size=270, special_tokens=[END_OF_TEXT]
    )
    text = f"the mat sat{END_OF_TEXT}"
    ids = text_to_token_ids(text, tok)
    assert ids[0].tolist() == tok.encode(text, allowed_special="all")
    assert ids[0, -1].item() == tok.eot_token
    assert token_ids_to_text(ids, tok) == text


def test_offline_without_cache_names_tiktoken_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(name: str) -> None:
        raise ConnectionError("network is unreachable")

    get_gpt2_tokenizer.cache_clear()
    monkeypatch.setattr(tiktoken, "get_encoding", no_network)
    try:
        with pytest.raises(RuntimeError, match="TIKTOKEN_CACHE_DIR") as info:
            get_gpt2_tokenizer()
        assert "network is unreachable" in str(info.value)
    finally:
        get_gpt2_tokenizer.cache_clear()  # the next call loads the real encoding again
