"""DDP under torchrun: two CPU processes (gloo), each with half of every global batch, follow
the same loss trajectory as one process with the same global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.distributed as dist
from helpers import cli_args, finish, logged, start_cli, write_cli_inputs

from sydsgpt.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="needs torch.distributed with gloo",
)


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    text, model_cfg = write_cli_inputs(tmp_path)
    # batch 4 = 2 rows per process; gradient accumulation on top (no_sync on the first micro-batch)
    common = ["--max-steps", "6", "--grad-accum-steps", "2", "--eval-interval", "3", "--lr", "3e-3"]
    single, double = tmp_path / "single", tmp_path / "ddp"
    ddp = start_cli(
        cli_args(text, model_cfg, double, *common),
        launcher=["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
    )
    single_run = start_cli(cli_args(text, model_cfg, single, *common))
    finish(single_run)
    finish(ddp)

    assert (
        len(load_checkpoint(double / "checkpoint.pt")["rng"]) == 2
    )  # one RNG snapshot per process
    ddp_losses, single_losses = logged(double, "train_loss"), logged(single, "train_loss")
    assert list(ddp_losses) == list(range(1, 7))
    assert list(ddp_losses.values()) == pytest.approx(list(single_losses.values()), rel=1e-4)
    assert single_losses[6] < single_losses[1]  # it trained
    assert list(logged(double, "val_loss").values()) == pytest.approx(
        list(logged(single, "val_loss").values()), rel=1e-4
    )
    assert logged(double, "tokens_seen") == logged(single, "tokens_seen")
