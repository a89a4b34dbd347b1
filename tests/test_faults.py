"""Fault injection: bad inputs and faults a hostile new user (or a bad day) brings, each with
the exact behaviour the package promises.

:data:`PROBES` is the table. Each row says where the fault is (``area``: config, cli, data,
files, tokenizer, checkpoint, resume, divergence, disk, concurrency, signals, checker,
interop), what is done (``fault``), what must happen (``expected``), and which of three
outcomes that is:

* **clear error**: the input is wrong; the work stops with one clear message (what was
  wrong, what was expected, how to fix it; the file, for a file). From the command line:
  one line ``sydsgpt <command>: error: ...``, exit status 2 for bad usage, 1 for a failed run,
  no traceback.
* **refused**: the input is fine on its own but conflicts with what is there (a run in
  progress, a checkpoint of another run); nothing is changed and the message says why.
* **recovered**: the fault happens and the run or check carries on correctly (a stale lock
  is taken over, an interrupted run is checkpointed and resumes, a hanging exercise answer
  is stopped and the other checks still run).

``test_probe`` runs every row; ``test_the_table`` keeps it at 50 rows or more and prints
the counts by outcome (``pytest tests/test_faults.py -s -k table``). The rows that start
processes (a real second run, a real Ctrl-C) are marked slow; the others take well under a
second each.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from helpers import (
    CLI_MODEL,
    SEQ,
    TINY_TEXT,
    cli_args,
    config,
    datasets,
    start_cli,
    tiny_config,
    train_model,
    write_cli_inputs,
)

from sydsgpt import corpora
from sydsgpt.bpe import BPETokenizer
from sydsgpt.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    RunState,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from sydsgpt.cli import main
from sydsgpt.data import GPTDataset, train_val_split
from sydsgpt.exercises.checker import (
    DEFAULT_TIME_LIMIT,
    Case,
    Exercise,
    check,
    expect_equal,
    run_checks,
)
from sydsgpt.files import CHECKPOINT_NAME, LOCK_NAME, RUN_INFO_NAME
from sydsgpt.generate import GenerationConfig
from sydsgpt.gpt2_weights import export_gpt2_weights, load_gpt2_weights, sydsgpt_to_gpt2_state_dict
from sydsgpt.interrupts import TrainingInterrupted
from sydsgpt.logs import read_log
from sydsgpt.model import SydsGPT, SydsGPTConfig
from sydsgpt.optim import lr_at_step
from sydsgpt.tokenizer import get_gpt2_tokenizer
from sydsgpt.train import Session, TrainConfig, TrainingDiverged, train


OUTCOMES = ("clear error", "refused", "recovered")


@dataclass(frozen=True)
class Probe:
    """One row of the table."""

    name: str
    area: str
    outcome: str
    fault: str
    expected: str
    run: Callable[["Env"], None]
    slow: bool = False


PROBES: list[Probe] = []


def probe(
    area: str, outcome: str, fault: str, expected: str, slow: bool = False
) -> Callable[[Callable[["Env"], None]], Callable[["Env"], None]]:
    """Add the decorated function to :data:`PROBES` as one row."""
    assert outcome in OUTCOMES, outcome

    def add(fn: Callable[["Env"], None]) -> Callable[["Env"], None]:
        PROBES.append(Probe(fn.__name__, area, outcome, fault, expected, fn, slow))
        return fn

    return add


class Env:
    """What a probe works with: a temporary folder with the tiny CLI inputs, capsys, monkeypatch."""

    def __init__(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.tmp, self.capsys, self.monkeypatch = tmp_path, capsys, monkeypatch
        self.text, self.model_cfg = write_cli_inputs(tmp_path)
        self.out = tmp_path / "run"

    def train_args(self, *extra: str, out: Path | None = None) -> list[str]:
        return cli_args(self.text, self.model_cfg, out or self.out, *extra)

    def cli(self, *argv: str) -> tuple[int, str]:
        """Run ``sydsgpt ARGV`` in this process; ``(exit status, stderr)``."""
        self.capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse ends the process itself for a malformed command line
            code = int(exc.code or 0)
        return code, self.capsys.readouterr().err

    def cli_error(self, argv: list[str], code: int, *fragments: str) -> str:
        """``sydsgpt ARGV`` must end with exit status ``code``
        and exactly one error line holding ``fragments``."""
        command = argv[0]
        status, err = self.cli(*argv)
        assert status == code, err
        lines = err.splitlines()
        errors = [line for line in lines if line.startswith(f"sydsgpt {command}: error: ")]
        assert len(errors) == 1 and errors[0] == lines[-1], err
        assert "Traceback" not in err, err
        for fragment in fragments:
            assert fragment in errors[0], (fragment, errors[0])
        return errors[0]


# ---------------------------------------------------------------------------- config (Python API)

CONFIG_PROBES: list[tuple[str, Callable[[], Any], str]] = [
    (
        "TrainConfig(grad_clip=-1)",
        lambda: TrainConfig(grad_clip=-1.0),
        "TrainConfig.grad_clip must be a finite number > 0 or None, got -1.0",
    ),
    (
        "TrainConfig(grad_clip=0)",
        lambda: TrainConfig(grad_clip=0),
        "use None (--grad-clip none) for no clipping",
    ),
    (
        "TrainConfig(weight_decay=-0.1)",
        lambda: TrainConfig(weight_decay=-0.1),
        "TrainConfig.weight_decay must be a finite number >= 0, got -0.1",
    ),
    (
        "TrainConfig(epochs=0)",
        lambda: TrainConfig(epochs=0),
        "TrainConfig.epochs must be a positive integer, got 0",
    ),
    (
        "TrainConfig(eval_batches=0)",
        lambda: TrainConfig(eval_batches=0),
        "TrainConfig.eval_batches must be a positive integer, got 0",
    ),
    (
        "TrainConfig(lr=nan)",
        lambda: TrainConfig(lr=float("nan")),
        "TrainConfig.lr must be a finite number > 0, got nan",
    ),
    (
        "TrainConfig(lr=inf)",
        lambda: TrainConfig(lr=float("inf")),
        "TrainConfig.lr must be a finite number > 0, got inf",
    ),
    (
        "TrainConfig(lr=0)",
        lambda: TrainConfig(lr=0.0),
        "TrainConfig.lr must be a finite number > 0, got 0.0",
    ),
    (
        "TrainConfig(beta1=1)",
        lambda: TrainConfig(beta1=1.0),
        "TrainConfig.beta1 must be a finite number in [0, 1), got 1.0",
    ),
    (
        "TrainConfig(beta2=-0.1)",
        lambda: TrainConfig(beta2=-0.1),
        "TrainConfig.beta2 must be a finite number in [0, 1), got -0.1",
    ),
    (
        "TrainConfig(min_lr_ratio=1.5)",
        lambda: TrainConfig(min_lr_ratio=1.5),
        "TrainConfig.min_lr_ratio must be a finite number in [0, 1], got 1.5",
    ),
    (
        "TrainConfig(warmup_steps=-1)",
        lambda: TrainConfig(warmup_steps=-1),
        "TrainConfig.warmup_steps must be an integer >= 0 or None, got -1",
    ),
    (
        "TrainConfig(batch_size=2.5)",
        lambda: TrainConfig(batch_size=2.5),
        "TrainConfig.batch_size must be a positive integer, got 2.5",
    ),
    (
        "TrainConfig(max_steps=True)",
        lambda: TrainConfig(max_steps=True),
        "TrainConfig.max_steps must be a positive integer, got True",
    ),
    (
        "TrainConfig(device='gpu')",
        lambda: TrainConfig(device="gpu"),
        "unknown device 'gpu'; use auto, cpu, cuda, cuda:N or mps",
    ),
    (
        "TrainConfig(sample_prompt='')",
        lambda: TrainConfig(sample_prompt="", sample_tokens=5),
        "TrainConfig.sample_prompt must not be empty",
    ),
    (
        "TrainConfig(compile='yes')",
        lambda: TrainConfig(compile="yes"),
        "TrainConfig.compile must be True or False, got 'yes'",
    ),
    (
        "TrainConfig(eval_interval=-1)",
        lambda: TrainConfig(eval_interval=-1),
        "TrainConfig.eval_interval must be an integer >= 0, got -1",
    ),
    (
        "TrainConfig.from_dict(typo)",
        lambda: TrainConfig.from_dict({"learning_rate": 1e-3}),
        "unknown training option(s) ['learning_rate']",
    ),
    (
        "train_val_split(val_fraction=1)",
        lambda: train_val_split(TINY_TEXT, 1.0),
        "val_fraction must be strictly between 0 and 1, got 1.0",
    ),
    (
        "GenerationConfig(temperature=-1)",
        lambda: GenerationConfig(temperature=-1.0),
        "temperature must be >= 0",
    ),
    (
        "GenerationConfig(temperature=inf)",
        lambda: GenerationConfig(temperature=float("inf")),
        "temperature must be a finite number, got inf",
    ),
    (
        "GenerationConfig(repetition_penalty=inf)",
        lambda: GenerationConfig(repetition_penalty=float("inf")),
        "repetition_penalty must be a finite number",
    ),
    (
        "GenerationConfig(context_length=2.5)",
        lambda: GenerationConfig(context_length=2.5),
        "context_length must be a positive integer, got 2.5",
    ),
    (
        "GenerationConfig(seed='x')",
        lambda: GenerationConfig(seed="x"),
        "seed must be an integer or None, got 'x'",
    ),
    (
        "GenerationConfig(use_cache=1)",
        lambda: GenerationConfig(use_cache=1),
        "use_cache must be True or False, got 1",
    ),
    (
        "SydsGPTConfig(dropout=1)",
        lambda: SydsGPTConfig(**tiny_config(dropout=1.0)),
        "config['dropout'] must be a finite number in [0, 1), got 1.0",
    ),
    (
        "SydsGPTConfig(embedding_dim=10, num_heads=4)",
        lambda: SydsGPTConfig(**tiny_config(embedding_dim=10)),
        "must be divisible by config['num_heads']",
    ),
]


def _config_probe(make: Callable[[], Any], message: str) -> Callable[[Env], None]:
    def run(env: Env) -> None:
        with pytest.raises(ValueError) as info:
            make()
        assert message in str(info.value), str(info.value)

    return run


for _fault, _make, _message in CONFIG_PROBES:
    PROBES.append(
        Probe(
            f"config: {_fault}",
            "config",
            "clear error",
            _fault,
            f"ValueError: {_message}",
            _config_probe(_make, _message),
        )
    )


@probe(
    "config",
    "clear error",
    "train(..., session=Session(stop_after=0))",
    "ValueError before anything is written",
)
def stop_after_zero(env: Env) -> None:
    train_data, val = datasets()
    with pytest.raises(ValueError, match="stop_after must be a positive integer, got 0"):
        train(
            train_model(),
            train_data,
            val,
            config(),
            session=Session(out_dir=env.out, stop_after=0, show_progress=False),
        )
    assert not env.out.exists()


@probe(
    "data",
    "clear error",
    "training ids outside the model's vocabulary (Python API)",
    "ValueError naming the id and vocab_size",
)
def ids_outside_vocabulary(env: Env) -> None:
    bad = GPTDataset(torch.full((50,), 40), SEQ, SEQ)  # the training model has 23 ids
    with pytest.raises(
        ValueError, match=r"the training data holds token id 40, but the model's ids are 0\.\.22"
    ):
        train(train_model(), bad, None, config(max_steps=2), session=Session(show_progress=False))


# ---------------------------------------------------------------------------- command-line options


CLI_OPTION_PROBES: list[tuple[list[str], int, str]] = [
    (["--grad-clip", "-1"], 2, "--grad-clip must be a finite number > 0 or None, got -1.0"),
    (["--lr", "nan"], 2, "--lr must be a finite number > 0, got nan"),
    (["--weight-decay", "-1"], 2, "--weight-decay must be a finite number >= 0, got -1.0"),
    (["--eval-batches", "0"], 2, "--eval-batches must be a positive integer, got 0"),
    (["--epochs", "0"], 2, "--epochs must be a positive integer, got 0"),
    (["--max-steps", "many"], 2, "argument --max-steps: 'many' is not a valid int (or none)"),
    (["--stop-after", "0"], 2, "--stop-after must be a positive integer, got 0"),
    (["--val-fraction", "1.5"], 2, "val_fraction must be strictly between 0 and 1, got 1.5"),
    (["--device", "foo"], 2, "unknown device 'foo'"),
    (["--seq-len", "64"], 2, "--seq-len 64 is longer than the model's context_length 16"),
    (["--tokenizer", "bpe:abc"], 2, "needs an integer N > 256"),
    (["--no-such-option"], 2, "unrecognized arguments: --no-such-option"),
]


def _cli_option_probe(extra: list[str], code: int, message: str) -> Callable[[Env], None]:
    def run(env: Env) -> None:
        env.cli_error(["train", *env.train_args("--max-steps", "2", *extra)], code, message)
        assert not (env.out / "tokenizer.json").exists()  # nothing was written

    return run


for _extra, _code, _message in CLI_OPTION_PROBES:
    PROBES.append(
        Probe(
            f"cli: train {' '.join(_extra)}",
            "cli",
            "clear error",
            f"sydsgpt train {' '.join(_extra)}",
            f"exit {_code}, one line: {_message}",
            _cli_option_probe(_extra, _code, _message),
        )
    )


@probe(
    "cli",
    "clear error",
    "sydsgpt train --device cuda on a machine without a GPU",
    "exit 2, one line, before anything is written",
)
def cuda_without_gpu(env: Env) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env.cli_error(
        ["train", *env.train_args("--device", "cuda")],
        2,
        "device 'cuda' was asked for but no CUDA GPU is available; use cpu",
    )
    assert not env.out.exists()


@probe(
    "cli",
    "clear error",
    "sydsgpt generate --device cuda on a machine without a GPU",
    "exit 2, one line",
)
def generate_cuda_without_gpu(env: Env) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    path = save_checkpoint(env.tmp / "c.pt", train_model())
    env.cli_error(
        ["generate", "--checkpoint", str(path), "--prompt", "Hi", "--device", "cuda"],
        2,
        "no CUDA GPU is available; use cpu",
    )


@probe("cli", "clear error", "sydsgpt generate --temperature -1", "exit 2, one line")
def generate_negative_temperature(env: Env) -> None:
    path = env.tmp / "c.pt"
    save_checkpoint(path, SydsGPT(tiny_config(vocab_size=50257, num_layers=1)))
    env.cli_error(
        [
            "generate",
            "--checkpoint",
            str(path),
            "--prompt",
            "Hi",
            "--temperature",
            "-1",
            "--device",
            "cpu",
        ],
        2,
        "temperature must be >= 0",
    )


@probe(
    "cli",
    "clear error",
    "sydsgpt generate --checkpoint missing.pt",
    "exit 2, one line naming the file",
)
def generate_missing_checkpoint(env: Env) -> None:
    env.cli_error(
        ["generate", "--checkpoint", str(env.tmp / "missing.pt"), "--prompt", "Hi"],
        2,
        f"no checkpoint at {env.tmp / 'missing.pt'}",
    )


@probe(
    "cli",
    "clear error",
    "--debug / SYDSGPT_DEBUG=1 with a bad option",
    "the traceback is shown (the exception propagates)",
)
def debug_shows_the_traceback(env: Env) -> None:
    with pytest.raises(ValueError, match="--grad-clip must be"):
        main(["train", *env.train_args("--grad-clip", "-1", "--debug")])
    env.monkeypatch.setenv("SYDSGPT_DEBUG", "1")
    with pytest.raises(ValueError, match="--grad-clip must be"):
        main(["train", *env.train_args("--grad-clip", "-1")])


@probe(
    "cli",
    "clear error",
    "an unexpected internal error (a bug) during sydsgpt train",
    "exit 1, one line naming the exception and --debug",
)
def unexpected_error(env: Env) -> None:
    def broken(name: Any) -> str:
        raise ZeroDivisionError("division by zero")

    env.monkeypatch.setattr("sydsgpt.cli.train.load_corpus", broken)
    env.cli_error(
        ["train", *env.train_args("--max-steps", "2")],
        1,
        "ZeroDivisionError: division by zero (unexpected: run again with --debug for the traceback "
        "and please report it)",
    )


# ---------------------------------------------------------------------------- data


@probe("data", "clear error", "DATA is neither a corpus name nor a file", "exit 2, one line")
def unknown_data(env: Env) -> None:
    env.cli_error(
        ["train", "no-such-corpus", "--config", str(env.model_cfg), "--out", str(env.out)],
        2,
        "'no-such-corpus' is neither a known corpus",
    )


@probe("data", "clear error", "an empty text file", "exit 2, one line naming the file")
def empty_text(env: Env) -> None:
    empty = env.tmp / "empty.txt"
    empty.write_text("")
    env.cli_error(
        ["train", str(empty), "--config", str(env.model_cfg), "--out", str(env.out)],
        2,
        f"{empty} is empty",
    )


@probe("data", "clear error", "a file that is not UTF-8", "exit 2, one line naming the file")
def not_utf8(env: Env) -> None:
    binary = env.tmp / "data.bin"
    binary.write_bytes(b"\xff\xfe\x00 binary")
    env.cli_error(
        ["train", str(binary), "--config", str(env.model_cfg), "--out", str(env.out)],
        2,
        f"{binary} is not UTF-8 text",
    )


@probe(
    "data",
    "clear error",
    "a text shorter than one training window",
    "exit 2, one line saying how many tokens are needed",
)
def text_too_short(env: Env) -> None:
    short = env.tmp / "short.txt"
    short.write_text("short text")
    env.cli_error(
        ["train", *cli_args(short, env.model_cfg, env.out)],
        2,
        "one training window needs at least 17",
    )


@probe(
    "data",
    "clear error",
    "a --val-fraction that leaves the validation text shorter than one window",
    "exit 2, one line saying which part",
)
def validation_text_too_short(env: Env) -> None:
    env.cli_error(
        ["train", *env.train_args("--val-fraction", "0.001")],
        2,
        "the validation text (the last 0.001 (val_fraction) of the data) is too short: the text "
        "has",
    )


@probe(
    "data",
    "clear error",
    "offline with an empty data dir (download fails)",
    "exit 1, one line naming the file, URL and SYDSGPT_DATA_DIR",
)
def offline_empty_data_dir(env: Env) -> None:
    env.monkeypatch.setenv("SYDSGPT_DATA_DIR", str(env.tmp / "empty-data"))

    def offline(url: str, timeout: float = 60.0) -> bytes:
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    env.monkeypatch.setattr(corpora, "_download", offline)
    env.cli_error(
        ["train", "the-verdict", "--config", str(env.model_cfg), "--out", str(env.out)],
        1,
        str(env.tmp / "empty-data" / "the-verdict.txt"),
        "https://raw.githubusercontent.com/",
        "SYDSGPT_DATA_DIR",
    )


@probe(
    "data",
    "clear error",
    "an empty TIKTOKEN_CACHE_DIR offline (--tokenizer gpt2)",
    "exit 1, one line naming TIKTOKEN_CACHE_DIR",
)
def empty_tiktoken_cache(env: Env) -> None:
    import tiktoken

    env.monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(env.tmp / "empty-cache"))

    def offline(name: str) -> Any:
        raise ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'")

    env.monkeypatch.setattr(tiktoken, "get_encoding", offline)
    get_gpt2_tokenizer.cache_clear()
    try:
        env.cli_error(
            [
                "train",
                str(env.text),
                "--config",
                str(env.model_cfg),
                "--out",
                str(env.out),
                "--tokenizer",
                "gpt2",
            ],
            1,
            f"TIKTOKEN_CACHE_DIR is {env.tmp / 'empty-cache'}",
            "Connect to the internet once",
        )
    finally:
        get_gpt2_tokenizer.cache_clear()  # the next user loads the real one again


@probe("data", "clear error", "--config holds invalid JSON", "exit 2, one line naming the file")
def config_not_json(env: Env) -> None:
    bad = env.tmp / "bad.json"
    bad.write_text("{vocab_size: 1")
    env.cli_error(
        ["train", str(env.text), "--config", str(bad), "--out", str(env.out)],
        2,
        f"{bad} is not valid JSON",
    )


@probe("data", "clear error", "--config has an unknown key", "exit 2, one line listing it")
def config_unknown_key(env: Env) -> None:
    typo = env.tmp / "typo.json"
    typo.write_text(json.dumps({**CLI_MODEL, "n_layers": 2}))
    env.cli_error(
        ["train", *cli_args(env.text, typo, env.out)], 2, "unknown config key(s) ['n_layers']"
    )


# ---------------------------------------------------------------------------- tokenizer files


def _saved_tokenizer(env: Env) -> tuple[Path, dict[str, Any]]:
    tok = BPETokenizer(name="t").train(TINY_TEXT, 270, special_tokens=["<|endoftext|>"])
    path = tok.save(env.tmp / "tok.json")
    return path, json.loads(path.read_text())


def _tokenizer_probe(edit: Callable[[dict[str, Any]], None], message: str) -> Callable[[Env], None]:
    def run(env: Env) -> None:
        path, payload = _saved_tokenizer(env)
        edit(payload)
        path.write_text(json.dumps(payload))
        with pytest.raises(ValueError) as info:
            BPETokenizer.load(path)
        assert str(info.value).startswith(f"{path} is a damaged BPETokenizer file") or str(
            info.value
        ).startswith(f"{path} is not"), info.value
        assert message in str(info.value), info.value

    return run


def _set_merge(index: int, value: list[int]) -> Callable[[dict[str, Any]], None]:
    return lambda payload: payload["merges"].__setitem__(index, value)


TOKENIZER_PROBES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "a merge whose new id is a byte id",
        lambda p: p["merges"][0].__setitem__(2, 65),
        "gives id 65, which is a byte id or already used",
    ),
    (
        "two merges giving the same id",
        lambda p: p["merges"][1].__setitem__(2, p["merges"][0][2]),
        "which is a byte id or already used (a merge makes a new id >= 256)",
    ),
    (
        "a merge of an id defined later",
        lambda p: p["merges"].__setitem__(0, [p["merges"][-1][2], 32, 999]),
        "joins an id that no byte or earlier merge defines",
    ),
    (
        "a special token with a merge's id",
        lambda p: p["special_tokens"].__setitem__("<|endoftext|>", p["merges"][0][2]),
        "special token '<|endoftext|>' has id 256, which a byte or merge has already",
    ),
    (
        "an empty special token",
        lambda p: p["special_tokens"].__setitem__("", 5000),
        "special tokens must be non-empty strings",
    ),
    (
        "byte_ids with a duplicate",
        lambda p: p["byte_ids"].__setitem__(0, 1),
        "byte_ids must be 256 distinct ids",
    ),
    ("a missing field", lambda p: p.pop("merges"), "missing 'merges'"),
]
for _fault, _edit, _message in TOKENIZER_PROBES:
    PROBES.append(
        Probe(
            f"tokenizer: {_fault}",
            "tokenizer",
            "clear error",
            f"a tokenizer file with {_fault}",
            f"ValueError naming the file: {_message}",
            _tokenizer_probe(_edit, _message),
        )
    )


@probe(
    "tokenizer",
    "clear error",
    "a tokenizer file that is not JSON, given to sydsgpt train --tokenizer",
    "exit 2, one line naming the file",
)
def tokenizer_not_json(env: Env) -> None:
    bad = env.tmp / "tok.json"
    bad.write_text("merges: none")
    env.cli_error(
        ["train", *env.train_args("--tokenizer", str(bad))],
        2,
        f"{bad} is not a saved BPETokenizer (not JSON text",
    )


@probe(
    "tokenizer",
    "clear error",
    "training a BPE with an empty special token",
    "ValueError before training",
)
def empty_special_token_at_training(env: Env) -> None:
    with pytest.raises(ValueError, match="special tokens must be non-empty strings, got \\[''\\]"):
        BPETokenizer().train(TINY_TEXT, 300, special_tokens=[""])


# ---------------------------------------------------------------------------- checkpoints


def _checkpoint(env: Env) -> Path:
    return save_checkpoint(env.tmp / "c.pt", train_model(), run=RunState(step=3))


@probe("checkpoint", "clear error", "a truncated checkpoint", "CheckpointError naming the file")
def truncated_checkpoint(env: Env) -> None:
    path = _checkpoint(env)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(
        CheckpointError,
        match=f"{path} is not a readable checkpoint: it is truncated, damaged or not a torch.save "
        "file",
    ):
        load_checkpoint(path)


@probe("checkpoint", "clear error", "an empty checkpoint file", "CheckpointError naming the file")
def empty_checkpoint(env: Env) -> None:
    path = env.tmp / "c.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"{path} is empty \(0 bytes\)"):
        load_checkpoint(path)


@probe(
    "checkpoint",
    "clear error",
    "a text file given as the checkpoint",
    "CheckpointError naming the file",
)
def text_as_checkpoint(env: Env) -> None:
    path = env.tmp / "notes.pt"
    path.write_text("hello, world\n")
    with pytest.raises(CheckpointError, match=f"{path} is not a readable checkpoint"):
        load_checkpoint(path)


def _tensor_bytes_offset(path: Path) -> tuple[int, int]:
    """Offset and size of the largest tensor's bytes
    inside a torch.save zip (stored uncompressed)."""
    with zipfile.ZipFile(path) as archive:
        info = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = (
        int.from_bytes(header[26:28], "little"),
        int.from_bytes(header[28:30], "little"),
    )
    return info.header_offset + 30 + name_len + extra_len, info.file_size


@probe(
    "checkpoint",
    "clear error",
    "one flipped byte inside a checkpoint's tensor data",
    "CheckpointError: the checksum does not match",
)
def flipped_byte(env: Env) -> None:
    path = _checkpoint(env)
    offset, size = _tensor_bytes_offset(path)
    data = bytearray(path.read_bytes())
    data[offset + size // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(
        CheckpointError,
        match=f"{path} is corrupted: its tensor data does not match the sha256 checksum",
    ):
        load_checkpoint(path)


@probe(
    "checkpoint",
    "recovered",
    "a checkpoint written before checksums existed",
    "loads, the same weights",
)
def old_checkpoint_without_checksum(env: Env) -> None:
    model = train_model()
    path = env.tmp / "old.pt"
    torch.save({"model": model.state_dict(), "optimizer": {}, "config": dict(model.config)}, path)
    loaded = load_model(path)
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values())
    )


@probe(
    "checkpoint",
    "clear error",
    "a checkpoint whose tensors do not fit its config",
    "CheckpointError naming the file and the tensor",
)
def tensors_do_not_fit(env: Env) -> None:
    model = train_model()
    path = env.tmp / "edited.pt"
    torch.save(
        {"model": model.state_dict(), "config": {**dict(model.config), "embedding_dim": 32}}, path
    )
    with pytest.raises(
        CheckpointError,
        match=rf"{path}: its tensors do not fit .*token_embedding.weight: checkpoint \(23, 16\), "
        r"model \(23, 32\)",
    ):
        load_model(path)


@probe(
    "checkpoint",
    "refused",
    "a checkpoint holding an arbitrary pickled object",
    "CheckpointError, the object is never run",
)
def pickled_object(env: Env) -> None:
    path = env.tmp / "evil.pt"
    torch.save({"model": {}, "config": {}, "payload": Probe}, path)
    trust = r"If you trust the file, open it yourself with torch.load\(path, weights_only=False\)"
    refused = "contains Python objects other than tensors.*" + trust
    with pytest.raises(CheckpointError, match=refused):
        load_checkpoint(path)


@probe(
    "checkpoint",
    "clear error",
    "sydsgpt generate with a truncated checkpoint",
    "exit 1, one line naming the file",
)
def generate_truncated_checkpoint(env: Env) -> None:
    path = _checkpoint(env)
    path.write_bytes(path.read_bytes()[:100])
    env.cli_error(
        ["generate", "--checkpoint", str(path), "--prompt", "Hi"],
        1,
        f"{path} is not a readable checkpoint",
    )


# ---------------------------------------------------------------------------- resume


def _stopped_run(env: Env, **overrides: Any) -> tuple[TrainConfig, Path]:
    train_data, val = datasets()
    cfg = config(max_steps=8, eval_interval=4, **overrides)
    train(
        train_model(),
        train_data,
        val,
        cfg,
        session=Session(out_dir=env.out, stop_after=4, show_progress=False),
    )
    return cfg, env.out / CHECKPOINT_NAME


@probe(
    "resume",
    "recovered",
    "--resume with a new learning rate, then again with new weight decay and beta2",
    "each applied from the next step; the log and run.json record every change",
)
def resume_with_new_options(env: Env) -> None:
    cfg, _ = _stopped_run(env)
    new = TrainConfig(**{**cfg.to_dict(), "lr": cfg.lr * 2})
    train_data, val = datasets()
    history = train(
        train_model(),
        train_data,
        val,
        new,
        session=Session(out_dir=env.out, resume=True, stop_after=6, show_progress=False),
    )
    first = next(r for r in history if r["step"] == 5)
    assert first["changed"] == {"lr": [cfg.lr, new.lr]}
    warmup = new.warmup_for(8)
    assert first["lr"] == pytest.approx(
        lr_at_step(4, new.lr, warmup, 8, new.lr * new.min_lr_ratio), rel=1e-12
    )
    assert load_checkpoint(env.out / CHECKPOINT_NAME)["train_config"]["lr"] == new.lr

    again = TrainConfig(
        **{**new.to_dict(), "weight_decay": 0.3, "beta2": 0.99, "fused_adamw": True}
    )
    train(
        train_model(),
        train_data,
        val,
        again,
        session=Session(out_dir=env.out, resume=True, show_progress=False),
    )
    groups = load_checkpoint(env.out / CHECKPOINT_NAME)["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.3, 0.0] and all(
        tuple(g["betas"]) == (cfg.beta1, 0.99) for g in groups
    )
    assert all(g["fused"] is True for g in groups)
    log = read_log(env.out / "log.jsonl")
    assert {r["step"]: r["changed"] for r in log if "changed" in r} == {
        5: {"lr": [cfg.lr, new.lr]},
        7: {
            "weight_decay": [cfg.weight_decay, 0.3],
            "beta2": [cfg.beta2, 0.99],
            "fused_adamw": [None, True],
        },
    }
    assert json.loads((env.out / RUN_INFO_NAME).read_text())["changes"] == [
        {"step": 5, "option": "lr", "from": cfg.lr, "to": new.lr},
        {"step": 7, "option": "weight_decay", "from": cfg.weight_decay, "to": 0.3},
        {"step": 7, "option": "beta2", "from": cfg.beta2, "to": 0.99},
        {"step": 7, "option": "fused_adamw", "from": None, "to": True},
    ]
    (env.out / CHECKPOINT_NAME).unlink()  # a fresh run in the same folder starts a fresh history
    train(
        train_model(), train_data, val, cfg, session=Session(out_dir=env.out, show_progress=False)
    )
    assert json.loads((env.out / RUN_INFO_NAME).read_text())["changes"] == []


@probe(
    "resume",
    "recovered",
    "resuming a checkpoint whose stored config the new checks refuse (grad_clip=0, once 'no "
    "clipping')",
    "resumes; the change to grad_clip=None is recorded",
)
def resume_old_config_values(env: Env) -> None:
    cfg, path = _stopped_run(env)
    state = torch.load(path, weights_only=True)
    state["train_config"]["grad_clip"] = 0.0
    state.pop("checksum")
    torch.save(state, path)
    train_data, val = datasets()
    history = train(
        train_model(),
        train_data,
        val,
        TrainConfig(**{**cfg.to_dict(), "grad_clip": None}),
        session=Session(out_dir=env.out, resume=True, show_progress=False),
    )
    assert history[-1]["step"] == 8 and next(r for r in history if r["step"] == 5)["changed"] == {
        "grad_clip": [0.0, None]
    }


@probe(
    "resume",
    "refused",
    "--resume with another batch size and seed",
    "CheckpointMismatchError listing both; the checkpoint is untouched",
)
def resume_with_fixed_changes(env: Env) -> None:
    cfg, path = _stopped_run(env)
    before = path.read_bytes()
    changed = TrainConfig(**{**cfg.to_dict(), "batch_size": 8, "seed": 1})
    train_data, val = datasets()
    with pytest.raises(
        CheckpointMismatchError, match=r"--resume cannot change batch_size: 4 -> 8, seed: 7 -> 1"
    ):
        train(
            train_model(),
            train_data,
            val,
            changed,
            session=Session(out_dir=env.out, resume=True, show_progress=False),
        )
    assert path.read_bytes() == before


@probe(
    "resume",
    "refused",
    "--resume with fewer --max-steps than the checkpoint has done",
    "CheckpointMismatchError saying so",
)
def resume_past_the_end(env: Env) -> None:
    cfg, path = _stopped_run(env)
    train_data, val = datasets()
    with pytest.raises(
        CheckpointMismatchError, match="is at step 4, past the 2 steps this run asks for"
    ):
        train(
            train_model(),
            train_data,
            val,
            TrainConfig(**{**cfg.to_dict(), "max_steps": 2}),
            session=Session(out_dir=env.out, resume=True, show_progress=False),
        )


@probe(
    "resume",
    "refused",
    "sydsgpt train twice into one --out, without --resume",
    "exit 2, one line; the first run's files untouched",
)
def same_out_without_resume(env: Env) -> None:
    assert env.cli("train", *env.train_args("--max-steps", "2"))[0] == 0
    before = (env.out / CHECKPOINT_NAME).read_bytes()
    env.cli_error(["train", *env.train_args("--max-steps", "2")], 2, "already exists: add --resume")
    assert (env.out / CHECKPOINT_NAME).read_bytes() == before


@probe(
    "resume",
    "refused",
    "--resume on other data with as many sequences (Python API)",
    "CheckpointMismatchError: the data differs",
)
def resume_on_other_data(env: Env) -> None:
    cfg, path = _stopped_run(env)
    train_data, val = datasets()
    other = GPTDataset(torch.flip(train_data.token_ids, [0]), SEQ, SEQ)  # the same tokens backwards
    assert len(other) == len(train_data)
    with pytest.raises(
        CheckpointMismatchError,
        match=f"the training data differs from the one {path} was trained on",
    ):
        train(
            train_model(),
            other,
            val,
            cfg,
            session=Session(out_dir=env.out, resume=True, show_progress=False),
        )


@probe(
    "resume",
    "refused",
    "sydsgpt train --resume with another --batch-size",
    "exit 2, one line listing the difference; checkpoint untouched",
)
def cli_resume_with_other_batch_size(env: Env) -> None:
    assert env.cli("train", *env.train_args("--max-steps", "4", "--stop-after", "2"))[0] == 0
    before = (env.out / CHECKPOINT_NAME).read_bytes()
    env.cli_error(
        ["train", *env.train_args("--max-steps", "4", "--batch-size", "8", "--resume")],
        2,
        "--resume cannot change batch_size: 4 -> 8",
    )
    assert (env.out / CHECKPOINT_NAME).read_bytes() == before


@probe(
    "resume",
    "clear error",
    "sydsgpt train --resume from a damaged checkpoint",
    "exit 1, one line naming the file",
)
def cli_resume_from_damaged_checkpoint(env: Env) -> None:
    assert env.cli("train", *env.train_args("--max-steps", "4", "--stop-after", "2"))[0] == 0
    path = env.out / CHECKPOINT_NAME
    offset, size = _tensor_bytes_offset(path)
    data = bytearray(path.read_bytes())
    data[offset + size // 3] ^= 0x10
    path.write_bytes(bytes(data))
    env.cli_error(
        ["train", *env.train_args("--max-steps", "4", "--resume")], 1, f"{path} is corrupted"
    )


@probe(
    "resume",
    "refused",
    "sydsgpt train --resume with another model config",
    "exit 2, one line (the multi-line list joined)",
)
def cli_resume_with_other_model(env: Env) -> None:
    assert env.cli("train", *env.train_args("--max-steps", "2"))[0] == 0
    other = env.tmp / "other.json"
    other.write_text(json.dumps({**CLI_MODEL, "num_layers": 2}))
    env.cli_error(
        ["train", *cli_args(env.text, other, env.out, "--max-steps", "4", "--resume")],
        2,
        "the checkpoint does not match this run: - model config 'num_layers': checkpoint has 1, "
        "this run has 2",
    )


# ---------------------------------------------------------------------------- divergence


def _assert_finite_checkpoint(path: Path, step: int) -> None:
    last_good = load_checkpoint(path)
    assert last_good["step"] == step
    tensors = [
        *last_good["model"].values(),
        *(t for s in last_good["optimizer"]["state"].values() for t in s.values()),
    ]
    assert len(tensors) > 10 and all(
        bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point()
    )


@probe(
    "divergence",
    "recovered",
    "a learning rate of 1e30 from a resume on (checkpoint every step)",
    "TrainingDiverged; the checkpoint it names as last good is finite and loads",
)
def exploding_learning_rate(env: Env) -> None:
    cfg, path = _stopped_run(env)
    explode = TrainConfig(**{**cfg.to_dict(), "lr": 1e30, "checkpoint_interval": 1})
    train_data, val = datasets()
    with pytest.raises(TrainingDiverged) as info:
        train(
            train_model(),
            train_data,
            val,
            explode,
            session=Session(out_dir=env.out, resume=True, show_progress=False),
        )
    assert info.value.checkpoint == str(path) and f"The last good checkpoint is {path}" in str(
        info.value
    )
    _assert_finite_checkpoint(path, info.value.step - 1)


@probe(
    "divergence",
    "recovered",
    "an update that overflows a weight to inf while the loss is still finite",
    "TrainingDiverged naming the weight, before the save; the last good checkpoint is the step "
    "before, finite",
)
def weight_overflows(env: Env) -> None:
    import sydsgpt.train as train_module

    real_step = train_module.train_step

    def overflowing_step(model: Any, *args: Any, **kwargs: Any) -> Any:
        result = real_step(model, *args, **kwargs)
        if kwargs["step"] == 6:
            with torch.no_grad():
                model.transformer_blocks[1].feed_forward.layers[0].weight[3, 3] = float("inf")
        return result

    env.monkeypatch.setattr(train_module, "train_step", overflowing_step)
    train_data, val = datasets()
    with pytest.raises(TrainingDiverged) as info:
        train(
            train_model(),
            train_data,
            val,
            config(max_steps=8, checkpoint_interval=1),
            session=Session(out_dir=env.out, show_progress=False),
        )
    assert (
        info.value.step == 6
        and info.value.tensor == "weight transformer_blocks.1.feed_forward.layers.0.weight"
    )
    assert str(info.value).startswith(
        "training diverged at step 6: weight transformer_blocks.1.feed_forward.layers.0.weight "
        "is not finite after the update"
    )
    _assert_finite_checkpoint(env.out / CHECKPOINT_NAME, 5)


@probe(
    "divergence",
    "clear error",
    "a NaN weight before the first step",
    "TrainingDiverged: the loss is nan; no checkpoint is written",
)
def nan_from_the_start(env: Env) -> None:
    model = train_model()
    with torch.no_grad():
        model.token_embedding.weight[0, 0] = float("nan")
    train_data, val = datasets()
    with pytest.raises(
        TrainingDiverged,
        match="training diverged at step 1: loss is nan.*No checkpoint was written yet",
    ):
        train(
            model, train_data, None, config(), session=Session(out_dir=env.out, show_progress=False)
        )
    assert not (env.out / CHECKPOINT_NAME).exists() and not (env.out / LOCK_NAME).exists()


# ---------------------------------------------------------------------------- disk and permissions


@probe(
    "disk",
    "clear error",
    "the disk fills up while a checkpoint is written (ENOSPC)",
    "exit 1, one line naming checkpoint.pt; the previous checkpoint intact, no temp file; --resume "
    "then finishes",
)
def disk_full_during_save(env: Env) -> None:
    import sydsgpt.checkpoint as checkpoint_module

    real_save, calls = torch.save, []

    def save_then_fill_up(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    env.monkeypatch.setattr(checkpoint_module.torch, "save", save_then_fill_up)
    args = env.train_args("--max-steps", "4", "--checkpoint-interval", "2", "--eval-interval", "0")
    env.cli_error(
        ["train", *args],
        1,
        "No space left on device (the previous version, if any, is intact): "
        f"{env.out / CHECKPOINT_NAME}",
        "free some disk space",
    )
    assert load_checkpoint(env.out / CHECKPOINT_NAME)["step"] == 2
    assert not list(env.out.glob(".*.tmp")) and not (env.out / LOCK_NAME).exists()
    env.monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert env.cli("train", *args, "--resume")[0] == 0
    assert load_checkpoint(env.out / CHECKPOINT_NAME)["step"] == 4


@probe(
    "disk",
    "clear error",
    "the disk is full when run.json is written (fsync fails, Python API)",
    "OSError naming run.json; no temp file",
)
def disk_full_run_info(env: Env) -> None:
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    train_data, val = datasets()
    env.monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        train(
            train_model(),
            train_data,
            val,
            config(max_steps=2),
            session=Session(out_dir=env.out, show_progress=False),
        )
    env.monkeypatch.setattr(os, "fsync", real_fsync)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(env.out / RUN_INFO_NAME)
    assert not list(env.out.glob(".*.tmp"))


class _FullDisk:
    """A text file whose writes fail with ENOSPC after ``room`` of them (a disk that fills up)."""

    def __init__(self, inner: Any, room: int) -> None:
        self.inner, self.room = inner, room

    def write(self, text: str) -> int:
        self.room -= 1
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.inner.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@probe(
    "disk",
    "clear error",
    "the disk fills up while the log is written",
    "exit 1, one line naming log.jsonl; the last checkpoint loads",
)
def disk_full_log(env: Env) -> None:
    real_open = Path.open

    def open_log(self: Path, *args: Any, **kwargs: Any) -> Any:
        f = real_open(self, *args, **kwargs)
        return _FullDisk(f, room=5) if self.name == "log.jsonl" and args[:1] == ("a",) else f

    env.monkeypatch.setattr(Path, "open", open_log)
    env.cli_error(
        ["train", *env.train_args("--max-steps", "8", "--eval-interval", "2")],
        1,
        f"No space left on device: {env.out / 'log.jsonl'}",
        "free some disk space",
    )
    assert load_checkpoint(env.out / CHECKPOINT_NAME)["step"] == 4


def _deny(env: Env, err: int, message: str) -> None:
    real_open = os.open

    def denied(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(LOCK_NAME):
            raise OSError(err, message, str(path))
        return real_open(path, flags, *args, **kwargs)

    env.monkeypatch.setattr(os, "open", denied)


@probe(
    "disk",
    "clear error",
    "an output folder the user cannot write to (EACCES)",
    "exit 1, one line naming the file and the fix",
)
def permission_denied(env: Env) -> None:
    _deny(env, errno.EACCES, "Permission denied")
    env.cli_error(
        ["train", *env.train_args("--max-steps", "2")],
        1,
        f"Permission denied: {env.out.resolve() / LOCK_NAME}",
        "choose a folder you can write to",
    )


@probe("disk", "clear error", "a read-only file system (EROFS)", "exit 1, one line naming the file")
def read_only_file_system(env: Env) -> None:
    _deny(env, errno.EROFS, "Read-only file system")
    env.cli_error(
        ["train", *env.train_args("--max-steps", "2")],
        1,
        f"Read-only file system: {env.out.resolve() / LOCK_NAME}",
        "read-only",
    )


# ---------------------------------------------------------------------------- concurrency


@probe(
    "disk", "clear error", "--out names an existing file", "exit 2, one line naming it and the fix"
)
def out_is_a_file(env: Env) -> None:
    env.out.write_text("not a folder")
    env.cli_error(
        ["train", *env.train_args("--max-steps", "2")],
        2,
        f"File exists: {env.out.resolve()}",
        "choose another --out",
    )


def _lock_held_by(env: Env, pid: int) -> None:
    env.out.mkdir(parents=True, exist_ok=True)
    (env.out / LOCK_NAME).write_text(f"{pid} {socket.gethostname()}\n")


@probe(
    "concurrency",
    "refused",
    "a second run on an --out whose lock a running process holds",
    "exit 1, one line naming the process; nothing written",
)
def folder_in_use(env: Env) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock_held_by(env, holder.pid)
        env.cli_error(
            ["train", *env.train_args("--max-steps", "2")],
            1,
            f"is in use by another run (process {holder.pid}",
        )
        assert sorted(p.name for p in env.out.iterdir()) == [LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()


@probe(
    "concurrency",
    "recovered",
    "a stale lock left by a process that died",
    "taken over with a message; the run finishes",
)
def stale_lock(env: Env) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _lock_held_by(env, gone.pid)
    code, err = env.cli("train", *env.train_args("--max-steps", "2"))
    assert code == 0, err
    assert (
        f"took over the stale lock {env.out.resolve() / LOCK_NAME} (process {gone.pid} is no "
        "longer running)" in err
    )
    assert not (env.out / LOCK_NAME).exists()


@probe(
    "concurrency",
    "recovered",
    "temp files left by saves that were killed",
    "removed at start (with a message); other files kept",
)
def stale_temp_files(env: Env) -> None:
    env.out.mkdir()
    stale = env.out / ".checkpoint.pt.k3j4h5.tmp"
    stale.write_bytes(b"\0" * 1000)
    keep = env.out / ".notes.tmp"
    keep.write_text("mine")
    code, err = env.cli("train", *env.train_args("--max-steps", "2"))
    assert code == 0, err
    assert (
        "removed 1 stale temporary file(s) left by an interrupted save" in err
        and ".checkpoint.pt.k3j4h5.tmp" in err
    )
    assert not stale.exists() and keep.read_text() == "mine"


def _wait_for(path: Path, proc: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.exists(), proc.communicate()[0]


def _signal_and_wait(proc: subprocess.Popen[str], sig: int, expected_code: int) -> str:
    """Send ``sig`` to a running ``sydsgpt train``, wait for
    it to exit with ``expected_code``; returns its output."""
    try:
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == expected_code, output
    return output


@probe(
    "concurrency",
    "refused",
    "two real sydsgpt train runs on one --out at once; then SIGTERM to the first",
    "the second exits 1 (folder in use); the first saves its step and exits 143",
    slow=True,
)
def two_runs_one_folder(env: Env) -> None:
    first = start_cli(
        env.train_args(
            "--max-steps", "100000", "--eval-interval", "0", "--checkpoint-interval", "100000"
        )
    )
    try:
        _wait_for(env.out / "log.jsonl", first)
        env.cli_error(
            ["train", *env.train_args("--max-steps", "2")],
            1,
            f"is in use by another run (process {first.pid}",
        )
    except BaseException:
        first.kill()
        raise
    output = _signal_and_wait(first, signal.SIGTERM, 143)
    step = load_checkpoint(env.out / CHECKPOINT_NAME)["step"]
    assert (
        f"sydsgpt train: interrupted by SIGTERM: checkpoint of step {step} saved to "
        f"{env.out / CHECKPOINT_NAME}" in output
    )
    assert not (env.out / LOCK_NAME).exists()


# ---------------------------------------------------------------------------- signals


class _SignalAt(torch.utils.data.Dataset):
    """A dataset that sends this process ``signum`` when item number ``at`` is read (mid-step)."""

    def __init__(self, inner: torch.utils.data.Dataset, at: int, signum: int) -> None:
        self.inner, self.at, self.signum, self.reads = inner, at, signum, 0

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        self.reads += 1
        if self.reads == self.at:
            os.kill(os.getpid(), self.signum)
        return self.inner[index]


def _signal_probe(signum: int, start_ignored: bool = False) -> Callable[[Env], None]:
    def run(env: Env) -> None:
        if start_ignored:  # as `nohup pytest &` or a CI runner starts the process
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                return _signal_probe(signum)(env)
            finally:
                signal.signal(signal.SIGINT, previous)
        train_data, val = datasets()
        cfg = config(
            max_steps=12, eval_interval=100
        )  # no checkpoint before the end unless interrupted
        before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        with pytest.raises(TrainingInterrupted) as info:
            train(
                train_model(),
                _SignalAt(train_data, 4 * 5 + 1, signum),
                val,
                cfg,
                session=Session(out_dir=env.out, show_progress=False),
            )
        assert info.value.step == 6 and info.value.exit_code == 128 + signum
        assert str(info.value) == (
            f"interrupted by {signal.Signals(signum).name}: checkpoint of step 6 saved to "
            f"{env.out / CHECKPOINT_NAME}; continue with train(..., session=Session(..., "
            "resume=True))"
        )
        assert load_checkpoint(env.out / CHECKPOINT_NAME)["step"] == 6
        # the handlers are put back as they were (not as a terminal starts them: under nohup,
        # `&` or a CI runner SIGINT may be ignored)
        assert {sig: signal.getsignal(sig) for sig in before} == before
        history = train(
            train_model(seed=5),
            train_data,
            val,
            cfg,
            session=Session(out_dir=env.out, resume=True, show_progress=False),
        )
        assert [r["step"] for r in history] == list(range(13))

    return run


for _sig in (signal.SIGINT, signal.SIGTERM):
    PROBES.append(
        Probe(
            f"signals: {_sig.name} mid-step",
            "signals",
            "recovered",
            f"{_sig.name} while a step runs (in-process)",
            "the step finishes, its checkpoint is saved, TrainingInterrupted names it; resume "
            "completes the run",
            _signal_probe(_sig),
        )
    )
PROBES.append(
    Probe(
        "signals: SIGINT mid-step, started with SIGINT ignored",
        "signals",
        "recovered",
        "SIGINT while a step runs in a process started with SIGINT ignored (`&`)",
        "as above, and the handlers are put back as they were before (SIG_IGN), "
        "not as a terminal starts them",
        _signal_probe(signal.SIGINT, start_ignored=True),
    )
)


@probe(
    "signals",
    "clear error",
    "SIGINT while training without an output folder (Python API)",
    "TrainingInterrupted saying nothing was saved",
)
def interrupted_without_out_dir(env: Env) -> None:
    train_data, val = datasets()
    with pytest.raises(
        TrainingInterrupted,
        match="interrupted by SIGINT at step 2; no output folder was given, so nothing was saved",
    ):
        train(
            train_model(),
            _SignalAt(train_data, 5, signal.SIGINT),
            val,
            config(),
            session=Session(show_progress=False),
        )


@probe(
    "signals",
    "recovered",
    "Ctrl-C (SIGINT) to a real sydsgpt train process",
    "exit 130, one line naming the checkpoint; --resume finishes",
    slow=True,
)
def ctrl_c_cli(env: Env) -> None:
    args = env.train_args(
        "--max-steps", "100000", "--eval-interval", "0", "--checkpoint-interval", "100000"
    )
    proc = start_cli(args)
    try:
        _wait_for(env.out / "log.jsonl", proc)
        time.sleep(0.3)
    except BaseException:
        proc.kill()
        raise
    output = _signal_and_wait(proc, signal.SIGINT, 130)
    step = load_checkpoint(env.out / CHECKPOINT_NAME)["step"]
    assert step >= 1 and output.strip().splitlines()[-1] == (
        f"sydsgpt train: interrupted by SIGINT: checkpoint of step {step} saved to "
        f"{env.out / CHECKPOINT_NAME}; continue with the same command plus --resume"
    )
    code, err = env.cli(
        "train",
        *env.train_args(
            "--max-steps",
            str(step + 2),
            "--eval-interval",
            "0",
            "--checkpoint-interval",
            "100000",
            "--resume",
        ),
    )
    assert code == 0, err
    assert load_checkpoint(env.out / CHECKPOINT_NAME)["step"] == step + 2


# ---------------------------------------------------------------------------- the exercise checker


def _doubling_exercise() -> Exercise:
    def doubled(f: Callable[[list[int]], list[int]]) -> None:
        expect_equal(f([1, 2]), [2, 4], "f([1, 2])")

    def doubled_tensor(f: Callable[[Any], Any]) -> None:
        x = torch.tensor([1.0, 2.0])
        expect_equal(torch.as_tensor(f(x)).tolist(), [2.0, 4.0], "f(tensor([1., 2.]))")

    return Exercise(
        "0.1",
        "double every element",
        [Case("a list", doubled), Case("a tensor", doubled_tensor)],
        solution=lambda xs: [2 * x for x in xs] if isinstance(xs, list) else xs * 2,
    )


def _loops(xs: Any) -> Any:
    while True:
        pass


def _loops_and_catches(xs: Any) -> Any:
    while True:
        try:
            time.sleep(0.01)
        except Exception:  # a reader's blanket except must not swallow the time limit
            pass


def _checker_timeout_probe(candidate: Callable[[Any], Any]) -> Callable[[Env], None]:
    def run(env: Env) -> None:
        start = time.monotonic()
        report = run_checks(_doubling_exercise(), candidate, time_limit=0.2)
        assert time.monotonic() - start < 3
        assert [r.passed for r in report.results] == [False, False]  # both cases ran, each stopped
        assert all(
            r.message.startswith("still running after 0.2 s (the time limit of each check)")
            for r in report.results
        )
        assert "pass time_limit=<seconds> to check()" in report.results[0].message

    return run


PROBES.append(
    Probe(
        "checker: endless loop",
        "checker",
        "recovered",
        "an answer that loops forever",
        "each case stops after its time limit with a friendly message; the next case still runs",
        _checker_timeout_probe(_loops),
    )
)
PROBES.append(
    Probe(
        "checker: endless loop inside try/except Exception",
        "checker",
        "recovered",
        "an answer that loops forever and catches Exception",
        "stopped all the same",
        _checker_timeout_probe(_loops_and_catches),
    )
)


@probe(
    "checker",
    "clear error",
    "an answer that changes its input list in place",
    "that case fails, saying the input was changed",
)
def mutates_list(env: Env) -> None:
    def doubles_in_place(xs: Any) -> Any:
        if isinstance(xs, list):
            xs[:] = [2 * x for x in xs]
            return xs
        return xs * 2

    report = run_checks(_doubling_exercise(), doubles_in_place)
    assert [r.passed for r in report.results] == [False, True]
    assert report.results[0].message.startswith(
        "your function changed its input in place (argument 1, a list)"
    )


@probe(
    "checker",
    "clear error",
    "an answer that changes its input tensor in place",
    "that case fails, saying the input was changed",
)
def mutates_tensor(env: Env) -> None:
    def doubles_in_place(xs: Any) -> Any:
        if isinstance(xs, torch.Tensor):
            return xs.mul_(2)
        return [2 * x for x in xs]

    report = run_checks(_doubling_exercise(), doubles_in_place)
    assert [r.passed for r in report.results] == [True, False]
    assert "changed its input in place (argument 1, a Tensor)" in report.results[1].message


@probe(
    "checker",
    "recovered",
    "a correct answer given an object compared by identity (a loader)",
    "passes: no false mutation report",
)
def identity_argument_is_not_a_mutation(env: Env) -> None:
    loader = torch.utils.data.DataLoader(list(range(4)), batch_size=2)
    exercise = Exercise(
        "0.2",
        "sum a loader",
        [Case("sum", lambda f: expect_equal(int(f(loader)), 6, "f(loader)"))],
        solution=lambda batches: sum(int(b.sum()) for b in batches),
    )
    assert run_checks(exercise, exercise.solution).passed


@probe(
    "checker",
    "recovered",
    "a slow but correct answer and the default limit",
    "passes: the default limit is 10 s, and check() takes time_limit",
)
def slow_answer_default_limit(env: Env) -> None:
    import inspect

    assert (
        DEFAULT_TIME_LIMIT == 10.0
        and inspect.signature(check).parameters["time_limit"].default == DEFAULT_TIME_LIMIT
    )

    def slow(xs: Any) -> Any:
        time.sleep(0.3)
        return [2 * x for x in xs] if isinstance(xs, list) else xs * 2

    assert run_checks(_doubling_exercise(), slow).passed
    assert not run_checks(_doubling_exercise(), slow, time_limit=0.1).passed


# ---------------------------------------------------------------------------- GPT-2 interop


def _tied_model() -> SydsGPT:
    torch.manual_seed(0)
    return SydsGPT(tiny_config(vocab_size=101, tie_weights=True, qkv_bias=True))


@probe(
    "interop",
    "clear error",
    "importing GPT-2 weights whose c_fc is the wrong size",
    "ValueError naming the Hugging Face tensor and both shapes",
)
def gpt2_import_wrong_shape(env: Env) -> None:
    state = sydsgpt_to_gpt2_state_dict(_tied_model())
    state["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(16, 32)
    with pytest.raises(
        ValueError,
        match=r"transformer\.h\.1\.mlp\.c_fc\.weight has shape \(16, 32\), this model needs \(16, "
        r"64\)",
    ):
        load_gpt2_weights(state, model=_tied_model())


@probe(
    "interop",
    "clear error",
    "importing GPT-2 weights missing a tensor",
    "ValueError naming the Hugging Face tensor",
)
def gpt2_import_missing_tensor(env: Env) -> None:
    state = sydsgpt_to_gpt2_state_dict(_tied_model())
    del state["transformer.h.0.ln_2.bias"]
    with pytest.raises(ValueError, match="GPT-2 state dict has no tensor 'h.0.ln_2.bias'"):
        load_gpt2_weights(state, model=_tied_model())


@probe(
    "interop",
    "recovered",
    "exporting a model with an untied head (tie_weights=False)",
    "exported with tie_word_embeddings false and its own lm_head.weight (logits checked in "
    "transformers by test_gpt2_weights)",
)
def gpt2_export_untied(env: Env) -> None:
    from safetensors.torch import load_file

    model = train_model()  # tie_weights=False
    export_gpt2_weights(model, env.tmp / "hf")
    assert json.loads((env.tmp / "hf" / "config.json").read_text())["tie_word_embeddings"] is False
    tensors = load_file(str(env.tmp / "hf" / "model.safetensors"))
    assert torch.equal(tensors["lm_head.weight"], model.output_projection.weight)


# -------------------------------------------------------- silent results, hangs, unnamed files
# The cases of issue 26 (each failed before: a silent wrong result, a hang, or an error that
# did not say where). Rows about training and finetuning sit with their areas above.


@probe(
    "cli",
    "clear error",
    "sydsgpt generate --top-k 5 at the default temperature (greedy)",
    "exit 2, one line: --top-k has no effect at temperature 0, set --temperature; nothing loaded",
)
def generate_top_k_while_greedy(env: Env) -> None:
    missing = str(env.tmp / "none.pt")
    env.cli_error(
        ["generate", "--checkpoint", missing, "--prompt", "Hi", "--top-k", "5"],
        2,
        "--top-k has no effect at temperature 0",
        "set --temperature above 0",
    )


@probe(
    "checker",
    "recovered",
    "sydsgpt check on a notebook whose answer cell never ends (a loop after a correct function)",
    "the cell is stopped at --time-limit, its exercise fails saying so; "
    "exit 1 in about a second instead of hanging",
)
def check_cell_never_ends(env: Env) -> None:
    cell = (
        "# exercise 2.1\ndef masked_softmax(scores, mask):\n    return scores\n"
        "while True:\n    pass\n"
    )
    path = env.tmp / "02_mine.ipynb"
    notebook = {"cells": [{"cell_type": "code", "source": cell}]}
    path.write_text(json.dumps(notebook), encoding="utf-8")
    start = time.monotonic()
    env.capsys.readouterr()
    assert main(["check", str(path), "--time-limit", "0.3"]) == 1
    assert time.monotonic() - start < 10
    assert "the answer cell was still running after 0.3 s" in env.capsys.readouterr().out


@probe(
    "checker",
    "clear error",
    "an exercise 6.1 answer with > where min-p asks for >= (at least)",
    "the case exactly on the threshold fails, naming the likely mistake (every case passed it)",
)
def min_p_strictly_above(env: Env) -> None:
    from sydsgpt.exercises.checker import explain_mistakes, get_exercise

    def min_p(logits: Any, p: float) -> Any:
        probs = torch.softmax(logits, dim=-1)
        threshold = p * probs.max(dim=-1, keepdim=True).values
        return logits.masked_fill(probs <= threshold, float("-inf"))

    exercise = get_exercise("6.1")
    report = explain_mistakes(exercise, run_checks(exercise, min_p))
    assert [r.name for r in report.results if not r.passed] == [
        "exactly on the threshold: 'at least' keeps it"
    ]
    assert "a token exactly at min_p times the top" in report.summary()


EOT_TEXT = "<|endoftext|>"
STORIES = "".join(
    f"Story {i}: a cat sat on the mat and looked around.{EOT_TEXT}\n" for i in range(60)
)
"""Documents separated by <|endoftext|>, as in CS336's tinystories_sample.txt."""


@probe(
    "tokenizer",
    "clear error",
    "encode_iterable on a text with <|endoftext|> separators (as encode)",
    "ValueError saying how to allow it; with allowed_special='all' exactly tiktoken's ids "
    "(it used to encode the separator's spelling silently)",
)
def streaming_special_tokens(env: Env) -> None:
    from sydsgpt.tokenizer import encode_iterable

    gpt2 = get_gpt2_tokenizer()
    chunks = [STORIES[i : i + 5] for i in range(0, len(STORIES), 5)]
    with pytest.raises(ValueError, match="pass allowed_special="):
        list(encode_iterable(gpt2, chunks))
    streamed = list(encode_iterable(gpt2, chunks, allowed_special="all"))
    assert streamed == gpt2.encode(STORIES, allowed_special="all")


def _prepare_args(env: Env, *inputs: Path, out: str = "prepared") -> list[str]:
    return [
        "prepare",
        *map(str, inputs),
        "--out",
        str(env.tmp / out),
        "--val-tokens",
        "100",
        "--shard-tokens",
        "200",
        "--quiet",
    ]


@probe(
    "data",
    "clear error",
    "sydsgpt prepare on documents separated by <|endoftext|>, without --separator",
    "exit 2, one line naming the file and --separator '<|endoftext|>'; with it "
    "the separators are document boundaries, the ids tiktoken's",
)
def prepare_separator(env: Env) -> None:
    from sydsgpt.shards import read_manifest

    path = env.tmp / "stories.txt"
    path.write_text(STORIES, encoding="utf-8")
    env.cli_error(
        _prepare_args(env, path),
        2,
        f"{path} contains '<|endoftext|>'",
        "pass --separator '<|endoftext|>'",
    )
    assert env.cli(*_prepare_args(env, path), "--separator", EOT_TEXT)[0] == 0
    out = env.tmp / "prepared"
    shards = read_manifest(out)["shards"]
    ids = [int(i) for s in shards for i in np.fromfile(out / s["name"], dtype=np.uint16)]
    assert ids == get_gpt2_tokenizer().encode(STORIES, allowed_special="all") + [50256]


@probe(
    "data",
    "recovered",
    "sydsgpt prepare fails on a bad input, which is then fixed",
    "the same command starts over and completes (it used to be refused: inputs differ)",
)
def prepare_after_failure(env: Env) -> None:
    good, bad = env.tmp / "good.txt", env.tmp / "bad.txt"
    good.write_text(TINY_TEXT * 3, encoding="utf-8")
    bad.write_bytes("caf\u00e9".encode("latin-1"))
    env.cli_error(_prepare_args(env, good, bad), 2, f"{bad}:1: not UTF-8 text")
    bad.write_text("caf\u00e9", encoding="utf-8")
    assert env.cli(*_prepare_args(env, good, bad))[0] == 0


@probe(
    "data",
    "refused",
    "sydsgpt prepare --out a folder full of unrelated files",
    "exit 2, one line naming the folder and some of its files; nothing written there",
)
def prepare_into_other_files(env: Env) -> None:
    text = env.tmp / "good.txt"
    text.write_text(TINY_TEXT * 3, encoding="utf-8")
    home = env.tmp / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("mine")
    env.cli_error(
        _prepare_args(env, text, out="home"),
        2,
        f"--out {home} is a folder of other files (thesis.tex), not a prepared dataset",
    )
    assert [p.name for p in home.iterdir()] == ["thesis.tex"]


def _damaged_input(kind: str, path: Path) -> str:
    """Write a damaged input of ``kind`` at ``path``; the error must start like the result."""
    if kind == "latin-1 .txt":
        path.write_bytes("ok\ncaf\u00e9\n".encode("latin-1"))
        return f"{path}:2: not UTF-8 text (byte 0xe9 at column 4)"
    if kind == "malformed .jsonl line":
        path.write_text('{"text": "fine"}\n{text: 1}\n', encoding="utf-8")
        return f"{path}:2: not a line of JSON (Expecting property name enclosed in double quotes"
    if kind == "truncated .jsonl.gz":
        line = json.dumps({"text": TINY_TEXT}) + "\n"
        whole = gzip.compress((line * 50).encode())
        path.write_bytes(whole[: len(whole) // 2])
        return f"{path}: the gzip file is truncated or damaged after line"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [TINY_TEXT] * 20}), path)
    data = path.read_bytes()
    path.write_bytes(data[:4] + b"\0" * (len(data) - 12) + data[-8:])
    return f"{path}: not a readable Parquet file"


def _damaged_input_probe(kind: str, name: str) -> Callable[[Env], None]:
    def run(env: Env) -> None:
        good = env.tmp / "good.txt"
        good.write_text(TINY_TEXT * 3, encoding="utf-8")
        message = _damaged_input(kind, env.tmp / name)
        env.cli_error(_prepare_args(env, good, env.tmp / name, good), 2, message)

    return run


for _kind, _name in [
    ("latin-1 .txt", "latin1.txt"),
    ("malformed .jsonl line", "bad.jsonl"),
    ("truncated .jsonl.gz", "cut.jsonl.gz"),
    ("corrupt Parquet file", "bad.parquet"),
]:
    PROBES.append(
        Probe(
            f"data: prepare with a {_kind} among other inputs",
            "data",
            "clear error",
            f"sydsgpt prepare good.txt {_name} good.txt, {_name} a {_kind}",
            "exit 2, one line naming the file (and the line where there is one)",
            _damaged_input_probe(_kind, _name),
        )
    )


@probe(
    "data",
    "recovered",
    "a lone surrogate escape (\\ud83d) in a .jsonl document",
    "prepared like tiktoken encodes it (U+FFFD), bytes counted (it used to crash the count)",
)
def prepare_lone_surrogate(env: Env) -> None:
    path = env.tmp / "emoji.jsonl"
    path.write_text(json.dumps({"text": "half an emoji \ud83d. " + TINY_TEXT * 3}) + "\n")
    assert env.cli(*_prepare_args(env, path))[0] == 0


@probe(
    "cli",
    "clear error",
    "sydsgpt bench --what train --batch-size 0",
    "exit 2, one line: --batch-size must be a positive integer; nothing run or written "
    "(0 used to mean the default)",
)
def bench_batch_size_zero(env: Env) -> None:
    out = env.tmp / "bench"
    argv = ["bench", "--what", "train", "--batch-size", "0", "--quick", "--out", str(out)]
    env.cli_error(argv, 2, "--batch-size must be a positive integer, got 0")
    assert not out.exists()


# ---------------------------------------------------------------------------- running the table


@pytest.mark.parametrize(
    "row", [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.slow else []) for p in PROBES]
)
def test_probe(
    row: Probe, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    row.run(Env(tmp_path, capsys, monkeypatch))


def test_the_table() -> None:
    assert len({p.name for p in PROBES}) == len(PROBES), "probe names must be unique"
    assert len(PROBES) >= 50
    counts = Counter(p.outcome for p in PROBES)
    assert set(counts) == set(OUTCOMES)
    areas = {p.area for p in PROBES}
    assert {
        "config",
        "data",
        "cli",
        "checkpoint",
        "tokenizer",
        "signals",
        "disk",
        "concurrency",
        "checker",
        "interop",
    } <= areas
    print(
        "\nfault probes by outcome: "
        + ", ".join(f"{o}: {counts[o]}" for o in OUTCOMES)
        + f" (total {len(PROBES)})"
    )
    for p in PROBES:
        print(f"  [{p.outcome}] {p.area}: {p.fault} -> {p.expected}")


# ----------------------------------------------------------------- what --help and the docs promise


@pytest.mark.parametrize("command", ["train", "generate", "bench"])
def test_help_documents_debug_and_exit_status(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "--debug show the full traceback of an error instead of one line (or set SYDSGPT_DEBUG=1)"
        in text
    )
    assert (
        "exit status: 0 done; 1 the run failed" in text
        and "2 bad usage" in text
        and "130 Ctrl-C, 143 SIGTERM" in text
    )


def test_resume_rules_are_documented_where_they_are_applied(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sydsgpt.cli.options import field_docs
    from sydsgpt.resume import RESUME_FIXED

    docs = field_docs(TrainConfig)
    fixed = [
        name for name, doc in docs.items() if "Fixed for a run (resume refuses a change)." in doc
    ]
    assert fixed == list(RESUME_FIXED)
    assert fixed == ["batch_size", "seq_len", "grad_accum_steps", "optimizer", "seed"]
    assert "may change and applies from the next step" in " ".join(
        (TrainConfig.__doc__ or "").split()
    )
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "a changed training option applies from the next step and is recorded in log.jsonl and "
        "run.json, except --batch-size, --seq-len, --grad-accum-steps, --optimizer, --seed (fixed "
        "for a run: "
        "resume refuses a change)"
    ) in text
