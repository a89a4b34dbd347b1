"""Models by name (sydsgpt.models): the same names in ``chat``, ``generate`` and ``finetune``,
and the real-model benchmark's quick mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gguf_files import tiny_chat_gguf
from sydsgpt.book import load_book_checkpoint
from sydsgpt.cli import main
from sydsgpt.cli.finetune import check_base
from sydsgpt.models import BOOK, SMOLLM2, canonical_name, load_model


def test_names_and_aliases() -> None:
    assert canonical_name("book") == canonical_name("book-checkpoint") == BOOK
    assert canonical_name(SMOLLM2) == SMOLLM2
    assert canonical_name("gpt2") is None and canonical_name("runs/x.pt") is None


def test_the_book_checkpoint_by_name_is_the_book_checkpoint() -> None:
    model, tokenizer = load_model("book")
    book = load_book_checkpoint()
    assert not model.training
    for (name, a), (_, b) in zip(model.state_dict().items(), book.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert tokenizer.encode("ROMEO:") == book.tokenizer.encode("ROMEO:")


def test_a_gguf_file_loads_with_its_context_capped(tmp_path: Path) -> None:
    path = tiny_chat_gguf(tmp_path / "tiny.gguf")
    model, tokenizer = load_model(str(path), context_length=16)
    assert model.config.context_length == 16
    assert tokenizer.chat_template is not None


@pytest.mark.parametrize(
    "spec, match",
    [
        ("no-such-model", "'no-such-model' is not a model: give smollm2-135m-instruct"),
        ("missing.gguf", "(no such file) is not a model"),
        ("notes.txt", "is not a model"),
    ],
)
def test_anything_else_is_refused_in_one_line(spec: str, match: str, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)")) as info:
        load_model(str(tmp_path / spec) if spec.endswith(".txt") else spec)
    assert "\n" not in str(info.value)


def test_generate_takes_a_model_name(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["generate", "--model", "book-checkpoint", "--prompt", "ROMEO:"]
    assert main([*argv, "--max-new-tokens", "12", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    book = load_book_checkpoint()
    ids = torch.tensor([book.tokenizer.encode("ROMEO:")])
    from sydsgpt.generate import generate

    expected = book.tokenizer.decode(generate(book.model, ids, 12)[0].tolist())
    assert out.strip() == expected.strip()


def test_generate_refuses_a_bad_model_and_two_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--model", "nope", "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert "--model 'nope' is not a model" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error
        main(["generate", "--model", "book", "--checkpoint", "a.pt", "--prompt", "x"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["generate", "--model", "book", "--tokenizer", "t.json", "--prompt", "x"]) == 2
    assert "--tokenizer goes with --checkpoint" in capsys.readouterr().err


def test_finetune_takes_the_book_checkpoints_name_too() -> None:
    check_base("book")
    check_base("book-checkpoint")  # the name chat and generate use


def test_real_model_benchmark_quick_mode(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--what", "realmodel", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "real_model_cpu.json").read_text())
    assert result["quick"] is True and len(result["loadavg_before"]) == 3
    assert [r["text"] for r in result["quality"]] == ["the-verdict"]
    assert 0 < result["quality"][0]["val_bpb"] < 20
    for row in result["rows"]:
        assert row["same_tokens"] is True  # ours and transformers' greedy tokens agree
        assert row["sydsgpt_tok_s"] > 0 and row["transformers_tok_s"] > 0
        assert row["bandwidth_limit_tok_s"] > 0 and 0 < row["matmul_share"] < 1


def test_a_model_trained_from_a_gguf_file_keeps_its_chat_template(tmp_path: Path) -> None:
    """A checkpoint of a GGUF model (what finetuning writes) loads back with the GGUF
    tokenizer's facts: the chat template, the end-of-turn id and the file's vocabulary size
    (a plain BPETokenizer would count the byte ids the file lacks, and not fit the model)."""
    from sydsgpt.chat import ChatSession
    from sydsgpt.checkpoint import load_model_and_tokenizer, save_checkpoint
    from sydsgpt.gguf_tokenizer import GGUFTokenizer, load_tokenizer

    model, tokenizer = load_model(str(tiny_chat_gguf(tmp_path / "tiny.gguf")))
    folder = tmp_path / "run"
    folder.mkdir()
    tokenizer.save(folder / "tokenizer.json")
    loaded = load_tokenizer(folder / "tokenizer.json")
    assert isinstance(loaded, GGUFTokenizer)
    for key in ("bos_id", "eos_id", "chat_template", "vocab_size", "n_vocab", "special_tokens"):
        assert getattr(loaded, key) == getattr(tokenizer, key), key
    text = "hello there <|im_start|>, 2 + 2 = 4"
    assert loaded.encode_ordinary(text) == tokenizer.encode_ordinary(text)

    save_checkpoint(folder / "checkpoint.pt", model, tokenizer=tokenizer)
    back, back_tokenizer = load_model_and_tokenizer(folder / "checkpoint.pt")
    assert ChatSession(back, back_tokenizer).is_chat
    assert back_tokenizer.n_vocab <= back.config.vocab_size


def test_a_plain_tokenizer_file_still_loads_as_a_bpe_tokenizer(tmp_path: Path) -> None:
    from sydsgpt.bpe import BPETokenizer
    from sydsgpt.gguf_tokenizer import GGUFTokenizer, load_tokenizer

    plain = BPETokenizer().train("hello hello world " * 20, 270)
    plain.save(tmp_path / "t.json")
    loaded = load_tokenizer(tmp_path / "t.json")
    assert type(loaded) is BPETokenizer and loaded.merges == plain.merges
    with pytest.raises(ValueError, match="not a saved GGUF tokenizer"):
        GGUFTokenizer.load(tmp_path / "t.json")
    (tmp_path / "bad.json").write_text("not json")
    with pytest.raises(ValueError, match="not a saved BPETokenizer"):
        load_tokenizer(tmp_path / "bad.json")


def test_the_real_smollm2_tokenizer_survives_save_and_load(tmp_path: Path) -> None:
    """SmolLM2 numbers its control tokens first, so its byte tokens are not ids 0..255: a saved
    copy (what finetuning writes beside the checkpoint) must still load, as the same tokenizer,
    while a plain BPE file keeps the stricter rule."""
    from gguf_files import smollm2_path

    from sydsgpt.bpe import BPETokenizer
    from sydsgpt.gguf import read_gguf
    from sydsgpt.gguf_tokenizer import GGUFTokenizer, load_tokenizer, tokenizer_from_gguf

    tokenizer = tokenizer_from_gguf(read_gguf(smollm2_path()))
    assert max(tokenizer.byte_ids) > 255
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert isinstance(loaded, GGUFTokenizer) and loaded.merges == tokenizer.merges
    for key in ("bos_id", "eos_id", "chat_template", "vocab_size", "special_tokens"):
        assert getattr(loaded, key) == getattr(tokenizer, key), key
    text = "Hello <|im_start|>user wörld, call 08001234567 now!\n\t  ok"
    assert loaded.encode_ordinary(text) == tokenizer.encode_ordinary(text)
    with pytest.raises(ValueError, match="0..255"):
        BPETokenizer.load(tmp_path / "tokenizer.json")
