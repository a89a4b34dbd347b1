"""``sydsgpt train``: help text, a tiny run end to end, clear errors for misuse, and the chapter's
documented command reproducing ``train_book_model``."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import CLI_MODEL, cli_args, logged, write_cli_inputs

from sydsgpt.book import train_book_model
from sydsgpt.checkpoint import load_checkpoint
from sydsgpt.cli import build_parser, main
from sydsgpt.cli.train import train_config
from sydsgpt.presets import RUNS
from sydsgpt.train import TrainConfig


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["train", *args])
    return code, capsys.readouterr().err


def test_help_reads_well(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.index("Pretrain a SydsGPT model") < text.index("examples:") < text.index("options:")
    for expected in (
        "torchrun --standalone",
        "--resume",
        "bpe:N",
        "--grad-accum-steps",
        "--warmup-steps",
        "--compile",
        "--dtype",
        "model:",
        "training (sydsgpt.train.TrainConfig):",
        "gpt2-small",
        RUNS["book-ch05"].command("runs/book-ch05"),
    ):
        assert expected in text, expected


def test_every_training_option_is_derived_from_trainconfig(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # One option per TrainConfig field, its help the field's
    # docstring and its default the field's default.
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "--grad-clip X Clip the global gradient norm to this (> 0; None: no clipping). (default: "
        "1.0)" in text
    )
    assert (
        "--eval-at-start, --no-eval-at-start" in text and "--fused-adamw, --no-fused-adamw" in text
    )
    args = build_parser().parse_args(["train", "data.txt"])
    assert train_config(args) == TrainConfig()


def test_none_and_booleans_parse() -> None:
    args = build_parser().parse_args(
        ["train", "d", "--grad-clip", "none", "--no-tf32", "--compile", "--sample-prompt", "A:\\nB"]
    )
    cfg = train_config(args)
    assert (cfg.grad_clip, cfg.tf32, cfg.compile, cfg.sample_prompt) == (None, False, True, "A:\nB")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "d", "--max-steps", "many"])


def test_tiny_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, model_cfg = write_cli_inputs(tmp_path)
    out = tmp_path / "run"
    code, err = run(
        capsys,
        *cli_args(
            text,
            model_cfg,
            out,
            "--max-steps",
            "30",
            "--eval-interval",
            "15",
            "--lr",
            "5e-3",
            "--warmup-steps",
            "3",
        ),
    )
    assert code == 0, err
    assert "done: step 30" in err
    assert {p.name for p in out.iterdir()} == {
        "checkpoint.pt",
        "log.jsonl",
        "run.json",
        "loss.png",
        "tokenizer.json",
    }
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["step"] == 30 and checkpoint["tokenizer"] == {
        "name": "bpe280-tiny",
        "n_vocab": 280,
    }
    assert {k: checkpoint["config"][k] for k in CLI_MODEL} == {
        **CLI_MODEL,
        "vocab_size": 280,
    }  # sized to the tokenizer
    train_cfg = checkpoint["train_config"]
    assert (
        train_cfg["max_steps"],
        train_cfg["lr"],
        train_cfg["warmup_steps"],
        train_cfg["batch_size"],
    ) == (30, 5e-3, 3, 4)
    val = logged(out, "val_loss")
    assert list(val) == [0, 15, 30] and val[30] < val[0] - 0.5
    assert json.loads((out / "run.json").read_text())["train"]["eval_interval"] == 15

    # the same output directory again: refused without --resume (bad usage: exit status 2)
    code, err = run(capsys, *cli_args(text, model_cfg, out, "--max-steps", "30"))
    assert code == 2 and "already exists: add --resume" in err
    # resuming with another model or tokenizer: a clear error
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**CLI_MODEL, "embedding_dim": 32}))
    code, err = run(capsys, *cli_args(text, other, out, "--max-steps", "30", "--resume"))
    assert code == 2 and "'embedding_dim': checkpoint has 16, this run has 32" in err
    code, err = run(
        capsys,
        *cli_args(text, model_cfg, out, "--max-steps", "30", "--resume", "--tokenizer", "gpt2"),
    )
    assert (
        code == 2
        and "tokenizer: checkpoint was trained with {'name': 'bpe280-tiny', 'n_vocab': 280}" in err
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resume"], "there is no"),
        (["--seq-len", "64"], "longer than the model's context_length 16"),
        (["--tokenizer", "bpe:abc"], "needs an integer N > 256"),
        (["--tokenizer", "missing.json"], "neither 'gpt2', 'bpe:N' nor an existing"),
    ],
)
def test_misuse_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    text, model_cfg = write_cli_inputs(tmp_path)
    code, err = run(
        capsys, *cli_args(text, model_cfg, tmp_path / "run", "--max-steps", "2", *extra)
    )
    assert code == 2 and message in err and err.count("\n") == 1, (
        err
    )  # bad usage: one line, exit status 2


def test_unknown_data_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, model_cfg = write_cli_inputs(tmp_path)
    code, err = run(
        capsys, "no-such-corpus", "--config", str(model_cfg), "--out", str(tmp_path / "r")
    )
    assert code == 2 and "neither a known corpus" in err


def test_the_printed_command_line_parses_back_to_the_run(tmp_path: Path) -> None:
    run = RUNS["book-ch05"]
    words = shlex.split(run.command(str(tmp_path / "cli")))
    assert words[:3] == ["sydsgpt", "train", "tinyshakespeare"]
    args = build_parser().parse_args(words[1:])
    assert train_config(args) == run.train
    assert (args.preset, args.tokenizer, args.val_fraction) == (
        run.preset,
        run.tokenizer,
        run.val_fraction,
    )


@pytest.mark.slow
def test_the_chapter_command_reproduces_the_book_run_bit_for_bit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The one line chapter 5 prints, stopped after 3 steps,
    # against the book's Python run stopped there too.
    words = shlex.split(RUNS["book-ch05"].command(str(tmp_path / "cli")))
    code, err = run(capsys, *words[2:], "--stop-after", "3", "--quiet")
    assert code == 0, err
    book = train_book_model(tmp_path / "book", stop_after=3, show_progress=False)
    from_cli = load_checkpoint(tmp_path / "cli" / "checkpoint.pt")
    assert from_cli["step"] == 3 and from_cli["tokenizer"] == {
        "name": book.tokenizer.name,
        "n_vocab": book.tokenizer.n_vocab,
    }
    assert from_cli["train_config"] == RUNS["book-ch05"].train.to_dict()
    for name, tensor in book.model.state_dict().items():
        assert torch.equal(from_cli["model"][name], tensor), name


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_a_finished_book_run_is_loaded_not_retrained(tmp_path: Path) -> None:
    cfg = replace(RUNS["book-ch05"].train, max_steps=2, eval_interval=0)
    book = train_book_model(tmp_path / "book", cfg=cfg, show_progress=False)
    again = train_book_model(tmp_path / "book", cfg=cfg, show_progress=False)
    assert book.trained_now and not again.trained_now and again.history == book.history
    assert all(
        torch.equal(a, b)
        for a, b in zip(again.model.state_dict().values(), book.model.state_dict().values())
    )


@pytest.mark.parametrize("run", ["book-ch05", "book-checkpoint"])
def test_the_readme_shows_each_book_run_command_exactly(run: str) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index(f"sydsgpt train tinyshakespeare --preset {RUNS[run].preset} ")
    end = readme.index(f"--out runs/{run}", start) + len(f"--out runs/{run}")
    line = readme[start:end].replace("\\\n", " ")
    assert shlex.split(line) == shlex.split(RUNS[run].command(f"runs/{run}"))


@pytest.mark.parametrize("run", sorted(RUNS))
def test_a_wrapped_command_is_the_same_command_in_short_lines(run: str) -> None:
    line = RUNS[run].command(f"runs/{run}")
    wrapped = RUNS[run].command(f"runs/{run}", width=80)
    assert shlex.split(wrapped.replace("\\\n", " ")) == shlex.split(line)
    rows = wrapped.splitlines()
    assert len(rows) > 1 and all(len(row) <= 80 for row in rows)
    assert all(row.endswith(" \\") for row in rows[:-1])
    assert not any(
        row.rstrip(" \\").endswith(flag)
        for row in rows
        for flag in ("--lr", "--max-steps", "--out")
    ), "an option stays with its value"
