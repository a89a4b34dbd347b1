"""FSDP2 (sydsgpt.fsdp) on CPU with gloo: two processes, each storing half of every parameter,
end a few steps with the weights of one process training on the whole global batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers import ROOT, subprocess_env, train_model

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")

SCRIPT = Path(__file__).with_name("fsdp_steps.py")


def two_processes(out: Path) -> dict:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**subprocess_env(), "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    done = subprocess.run([sys.executable, *launcher, str(SCRIPT), str(out)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return torch.load(out, weights_only=True)


@pytest.mark.slow
def test_two_fsdp2_processes_match_one_process(tmp_path: Path, one_thread: None) -> None:
    import fsdp_steps

    fsdp_steps.main(str(tmp_path / "one.pt"))  # here, one process: no sharding
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = two_processes(tmp_path / "two.pt")
    assert two["world_size"] == 2 and two["local_fraction"] == pytest.approx(0.5, abs=0.02)  # each stores half
    assert one["local_fraction"] == 1.0
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert one["losses"][-1] < one["losses"][0]  # it trained
    assert one["model"].keys() == two["model"].keys()
    start = train_model(seed=0, dropout=0.0).state_dict()
    for key, value in one["model"].items():
        assert torch.allclose(two["model"][key], value, rtol=1e-5, atol=1e-6), key
        if value.is_floating_point() and value.dim() >= 2:
            assert not torch.equal(value, start[key]), f"{key} did not change: the comparison would be empty"
