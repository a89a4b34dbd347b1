"""``sydsgpt train``: help text, a tiny run end to end, clear errors for misuse, and the chapter's
documented command reproducing ``train_book_model``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from train_helpers import CLI_MODEL, cli_args, logged, write_cli_inputs

from sydsgpt.checkpoint import load_checkpoint
from sydsgpt.cli import main
from sydsgpt.train import BOOK_MODEL, BOOK_TRAINING, BOOK_VOCAB_SIZE, train_book_model

pytestmark = pytest.mark.usefixtures("one_thread")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["train", *args])
    return code, capsys.readouterr().err


def test_help_reads_well(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.index("Pretrain a SydsGPT model") < text.index("examples:") < text.index("options:")
    for expected in ("torchrun --standalone", "--resume", "bpe:N", "--grad-accum", "--warmup", "--compile", "--dtype",
                     "model:", "optimization:", "hardware:", "gpt2-small"):
        assert expected in text, expected


def test_tiny_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, model_cfg = write_cli_inputs(tmp_path)
    out = tmp_path / "run"
    code, err = run(capsys, *cli_args(text, model_cfg, out, "--steps", "30", "--eval-interval", "15", "--lr", "5e-3", "--warmup", "3"))
    assert code == 0, err
    assert "done: step 30" in err
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "log.jsonl", "run.json", "loss.png", "tokenizer.json"}
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["step"] == 30 and checkpoint["tokenizer"] == {"name": "bpe280-tiny", "n_vocab": 280}
    assert {k: checkpoint["config"][k] for k in CLI_MODEL} == {**CLI_MODEL, "vocab_size": 280}  # sized to the tokenizer
    train_cfg = checkpoint["train_config"]
    assert (train_cfg["max_steps"], train_cfg["lr"], train_cfg["warmup_steps"], train_cfg["batch_size"]) == (30, 5e-3, 3, 4)
    val = logged(out, "val_loss")
    assert list(val) == [0, 15, 30] and val[30] < val[0] - 0.5
    assert json.loads((out / "run.json").read_text())["train"]["eval_interval"] == 15

    # the same output directory again: refused without --resume
    code, err = run(capsys, *cli_args(text, model_cfg, out, "--steps", "30"))
    assert code == 1 and "already exists: add --resume" in err
    # resuming with another model or tokenizer: a clear error
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**CLI_MODEL, "embedding_dim": 32}))
    code, err = run(capsys, *cli_args(text, other, out, "--steps", "30", "--resume"))
    assert code == 1 and "'embedding_dim': checkpoint has 16, this run has 32" in err
    code, err = run(capsys, *cli_args(text, model_cfg, out, "--steps", "30", "--resume", "--tokenizer", "gpt2"))
    assert code == 1 and "tokenizer: checkpoint was trained with {'name': 'bpe280-tiny', 'n_vocab': 280}" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resume"], "there is no"),
        (["--context-length", "64"], "longer than the model's context_length 16"),
        (["--tokenizer", "bpe:abc"], "needs an integer N > 256"),
        (["--tokenizer", "missing.json"], "neither 'gpt2', 'bpe:N' nor an existing"),
    ],
)
def test_misuse_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    text, model_cfg = write_cli_inputs(tmp_path)
    code, err = run(capsys, *cli_args(text, model_cfg, tmp_path / "run", "--steps", "2", *extra))
    assert code == 1 and message in err, err


def test_unknown_data_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, model_cfg = write_cli_inputs(tmp_path)
    code, err = run(capsys, "no-such-corpus", "--config", str(model_cfg), "--out", str(tmp_path / "r"))
    assert code == 1 and "neither a known corpus" in err


def test_the_documented_command_reproduces_the_book_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The chapter's command (in the --help examples and the notebook), for 2 steps, against train_book_model.
    cfg = replace(BOOK_TRAINING, max_steps=2, eval_interval=0)
    book = train_book_model(tmp_path / "book", cfg=cfg, show_progress=False)
    model_json = tmp_path / "book-ch05.json"
    model_json.write_text(json.dumps({**BOOK_MODEL, "vocab_size": BOOK_VOCAB_SIZE}))
    code, err = run(capsys, "tinyshakespeare", "--tokenizer", f"bpe:{BOOK_VOCAB_SIZE}", "--config", str(model_json), "--steps", "2",
                    "--batch-size", str(cfg.batch_size), "--context-length", str(cfg.context_length), "--lr", str(cfg.lr),
                    "--warmup", str(cfg.warmup_steps), "--eval-interval", "0", "--device", "cpu", "--quiet", "--out", str(tmp_path / "cli"))
    assert code == 0, err
    from_cli = load_checkpoint(tmp_path / "cli" / "checkpoint.pt")
    assert from_cli["tokenizer"] == {"name": book.tokenizer.name, "n_vocab": book.tokenizer.n_vocab}
    for name, tensor in book.model.state_dict().items():
        assert torch.equal(from_cli["model"][name], tensor), name
    again = train_book_model(tmp_path / "book", cfg=cfg, show_progress=False)  # finished: loaded, not retrained
    assert not again.trained_now and again.history == book.history
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(), book.model.state_dict().values()))
