"""Resume continues exactly: a run stopped after N steps and resumed ends with weights
bit-identical to an uninterrupted run, in-process and after a real SIGKILL."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    assert_same_parameters,
    cli_args,
    config,
    datasets,
    finish,
    logged,
    start_cli,
    train_model,
    write_cli_inputs,
)

from sydsgpt.checkpoint import load_checkpoint
from sydsgpt.logs import read_log
from sydsgpt.train import Session, train


def test_stop_and_resume_in_process_is_bit_identical(tmp_path: Path) -> None:
    train_data, val = datasets()
    # dropout (RNG), gradient accumulation, and 14 steps
    # x 2 micro-batches cross an epoch (21 batches)
    cfg = config(max_steps=14, grad_accum_steps=2, eval_interval=5, checkpoint_interval=3)
    whole = train_model()
    train(
        whole,
        train_data,
        val,
        cfg,
        session=Session(out_dir=tmp_path / "whole", show_progress=False),
    )

    interrupted = train_model()
    train(
        interrupted,
        train_data,
        val,
        cfg,
        session=Session(out_dir=tmp_path / "parts", stop_after=6, show_progress=False),
    )
    assert load_checkpoint(tmp_path / "parts" / "checkpoint.pt")["step"] == 6
    resumed = train_model(seed=99)  # a different init: everything must come from the checkpoint
    history = train(
        resumed,
        train_data,
        val,
        cfg,
        session=Session(out_dir=tmp_path / "parts", resume=True, show_progress=False),
    )

    assert_same_parameters(resumed, whole)
    assert [r["step"] for r in history] == list(range(15))  # the log continues, no step twice
    assert logged(tmp_path / "parts", "train_loss") == logged(tmp_path / "whole", "train_loss")
    assert logged(tmp_path / "parts", "val_loss") == logged(tmp_path / "whole", "val_loss")


@pytest.mark.slow
def test_sigkilled_cli_run_resumes_bit_identically(tmp_path: Path) -> None:
    text, model_cfg = write_cli_inputs(tmp_path)
    steps = 60
    common = [
        "--max-steps",
        str(steps),
        "--eval-interval",
        "25",
        "--checkpoint-interval",
        "1",
        "--dropout",
        "0.1",
    ]
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    checkpoint = killed / "checkpoint.pt"
    with open(tmp_path / "killed.err", "w") as err:
        proc = start_cli(cli_args(text, model_cfg, killed, *common), output=err)
        deadline = time.monotonic() + 60
        while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f"the run ended before it was killed:\n{(tmp_path / 'killed.err').read_text()[-2000:]}"
    )
    stopped_at = load_checkpoint(checkpoint)["step"]  # always a complete file (atomic writes)
    assert 1 <= stopped_at < steps

    # the resumed run and an uninterrupted reference, side by side
    runs = [
        start_cli(cli_args(text, model_cfg, killed, *common, "--resume")),
        start_cli(cli_args(text, model_cfg, reference, *common)),
    ]
    for proc in runs:
        finish(proc)

    resumed, uninterrupted = (
        load_checkpoint(checkpoint),
        load_checkpoint(reference / "checkpoint.pt"),
    )
    assert resumed["step"] == uninterrupted["step"] == steps
    for name, tensor in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][name], tensor), (
            f"{name} differs (stopped at step {stopped_at})"
        )
    for a, b in zip(
        resumed["optimizer"]["state"].values(), uninterrupted["optimizer"]["state"].values()
    ):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert [r["step"] for r in read_log(killed / "log.jsonl")] == list(range(steps + 1))
    assert logged(killed, "train_loss") == logged(reference, "train_loss")
