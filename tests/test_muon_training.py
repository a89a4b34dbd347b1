"""Muon in training runs: ``TrainConfig.optimizer = "muon"`` builds one
:class:`~sydsgpt.muon.MuonWithAdamW` (Muon for the blocks' matrices, AdamW for the rest) that
the schedule, clipping, checkpoints and resume treat like AdamW."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sydsgpt.checkpoint import CheckpointMismatchError, load_checkpoint
from sydsgpt.muon import Muon, MuonWithAdamW, split_muon_params
from sydsgpt.optim import build_optimizer, make_scheduler
from sydsgpt.train import Session, TrainConfig, train

from helpers import assert_same_parameters, config, datasets, train_model


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.randn(6, 4), torch.randn(4)


def _loss(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    return (matrix.sum(0) * vector).pow(2).sum() + matrix.pow(3).sum()


def test_adamw_groups_step_exactly_like_torch_adamw() -> None:
    a, b = (t.requires_grad_() for t in _pair())
    a2, b2 = (t.detach().clone().requires_grad_() for t in (a, b))
    ours = MuonWithAdamW(
        [{"params": [a], "lr": 1e-2, "weight_decay": 0.1}, {"params": [b], "lr": 1e-2}]
    )
    torch_adamw = torch.optim.AdamW(
        [{"params": [a2], "weight_decay": 0.1}, {"params": [b2], "weight_decay": 0.0}],
        lr=1e-2,
        betas=(0.9, 0.95),
    )
    for _ in range(5):
        for optimizer, (m, v) in ((ours, (a, b)), (torch_adamw, (a2, b2))):
            optimizer.zero_grad()
            _loss(m, v).backward()
            optimizer.step()
    assert torch.allclose(a, a2, atol=1e-7) and torch.allclose(b, b2, atol=1e-7)
    assert not torch.equal(a, _pair()[0])  # it moved


def test_a_muon_group_steps_exactly_like_muon() -> None:
    a = _pair()[0].requires_grad_()
    a2 = a.detach().clone().requires_grad_()
    ours = MuonWithAdamW([{"params": [a], "muon": True, "lr": 0.02, "weight_decay": 0.1}])
    muon = Muon([a2], lr=0.02, weight_decay=0.1)
    vector = _pair(1)[1]
    for _ in range(4):
        for optimizer, m in ((ours, a), (muon, a2)):
            optimizer.zero_grad()
            _loss(m, vector).backward()
            optimizer.step()
    assert torch.equal(a, a2)


def test_a_muon_group_needs_its_lr_and_matrices_only() -> None:
    with pytest.raises(ValueError, match="needs its own lr"):
        MuonWithAdamW([{"params": [torch.zeros(3, 3, requires_grad=True)], "muon": True}])
    with pytest.raises(ValueError, match="only takes 2-D .* shape \\(3,\\)"):
        MuonWithAdamW([{"params": [torch.zeros(3, requires_grad=True)], "muon": True, "lr": 0.02}])
    with pytest.raises(ValueError, match="momentum"):
        MuonWithAdamW(
            [
                {
                    "params": [torch.zeros(3, 3, requires_grad=True)],
                    "muon": True,
                    "lr": 0.02,
                    "momentum": 1.0,
                }
            ]
        )


def test_build_optimizer_gives_the_blocks_matrices_to_muon() -> None:
    model = train_model()
    optimizer = build_optimizer(model, config(optimizer="muon", lr=1e-3, muon_lr=0.05), "cpu")
    assert isinstance(optimizer, MuonWithAdamW)
    decay, no_decay, muon = optimizer.param_groups
    expected_muon = {id(p) for p in split_muon_params(model)[0]}
    assert {id(p) for p in muon["params"]} == expected_muon and muon["muon"]
    assert muon["lr"] == 0.05 and decay["lr"] == no_decay["lr"] == 1e-3
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert model.token_embedding.weight in decay["params"]
    assert all(p.dim() < 2 for p in no_decay["params"])
    everything = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(everything) == len(list(model.parameters()))


def test_the_schedule_scales_each_group_from_its_own_peak() -> None:
    optimizer = build_optimizer(train_model(), config(optimizer="muon", lr=1e-3), "cpu")
    scheduler = make_scheduler(optimizer, total_steps=10, warmup_steps=4)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    lrs = [group["lr"] for group in optimizer.param_groups]
    assert lrs == pytest.approx([1e-3 * 3 / 4, 1e-3 * 3 / 4, 0.02 * 3 / 4])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("optimizer", "sgd", "TrainConfig.optimizer"),
        ("muon_lr", 0.0, "TrainConfig.muon_lr"),
        ("muon_momentum", 1.0, "TrainConfig.muon_momentum"),
    ],
)
def test_bad_muon_settings_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_a_muon_run_learns_and_resumes_bit_exactly(tmp_path: Path) -> None:
    train_data, val = datasets()
    cfg = config(optimizer="muon", max_steps=12, eval_interval=4, muon_lr=0.02)
    history = train(
        train_model(),
        train_data,
        val,
        cfg,
        session=Session(out_dir=tmp_path / "a", show_progress=False),
    )
    assert history[-1]["val_loss"] < history[0]["val_loss"] - 0.2
    train(
        train_model(),
        train_data,
        val,
        cfg,
        session=Session(out_dir=tmp_path / "b", stop_after=5, show_progress=False),
    )
    resumed = train_model()
    train(
        resumed,
        train_data,
        val,
        cfg,
        session=Session(out_dir=tmp_path / "b", resume=True, show_progress=False),
    )
    straight = train_model()
    straight.load_state_dict(load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"])
    assert_same_parameters(resumed, straight)


def test_resume_refuses_another_optimizer(tmp_path: Path) -> None:
    train_data, val = datasets()
    cfg = config(max_steps=6)
    train(
        train_model(),
        train_data,
        val,
        cfg,
        session=Session(out_dir=tmp_path, stop_after=3, show_progress=False),
    )
    with pytest.raises(CheckpointMismatchError, match="optimizer"):
        train(
            train_model(),
            train_data,
            val,
            config(max_steps=6, optimizer="muon"),
            session=Session(out_dir=tmp_path, resume=True, show_progress=False),
        )
