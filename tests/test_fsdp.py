"""FSDP2 on CPU with gloo: `sydsgpt train --fsdp` under torchrun with two processes (each storing
half of every weight), stopped and resumed, ends with the weights of one process trained
uninterrupted on the same global batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers import cli_args, finish, logged, start_cli, train_model, write_cli_inputs

from sydsgpt.checkpoint import load_checkpoint
from sydsgpt.fsdp import local_fraction

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="needs torch.distributed with gloo",
)

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


@pytest.mark.slow
def test_two_fsdp2_processes_stopped_and_resumed_match_one_process(tmp_path: Path) -> None:
    text, model_cfg = write_cli_inputs(tmp_path)
    common = [
        "--max-steps",
        "6",
        "--grad-accum-steps",
        "2",
        "--eval-interval",
        "3",
        "--lr",
        "3e-3",
        "--dropout",
        "0",
        "--sample-tokens",
        "4",
    ]
    single, sharded = tmp_path / "single", tmp_path / "fsdp"
    first = start_cli(
        cli_args(text, model_cfg, sharded, *common, "--fsdp", "--stop-after", "3"),
        launcher=TORCHRUN,
    )
    one = start_cli(cli_args(text, model_cfg, single, *common))
    finish(first)
    finish(
        start_cli(
            cli_args(text, model_cfg, sharded, *common, "--fsdp", "--resume"), launcher=TORCHRUN
        )
    )
    finish(one)

    a, b = load_checkpoint(single / "checkpoint.pt"), load_checkpoint(sharded / "checkpoint.pt")
    assert a["step"] == b["step"] == 6
    assert all(
        isinstance(k, str) for k in b["optimizer"]["state"]
    )  # written by the FSDP2 path (keyed by parameter name)
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.allclose(b["model"][key], value, rtol=1e-4, atol=1e-6), key
    losses, reference = logged(sharded, "train_loss"), logged(single, "train_loss")
    assert list(losses) == list(range(1, 7)) and list(losses.values()) == pytest.approx(
        list(reference.values()), rel=1e-4
    )
    assert reference[6] < reference[1]
    # the greedy samples at each evaluation: under FSDP2 every process runs the model, rank 0 logs
    assert (
        logged(sharded, "sample") == logged(single, "sample") and len(logged(single, "sample")) == 3
    )


def test_an_unsharded_model_stores_all_of_its_weights() -> None:
    assert local_fraction(train_model()) == 1.0
