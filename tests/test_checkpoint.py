"""Checkpoints: the original project's keys plus the new ones, RNG snapshots, and clear errors
for a checkpoint of another model or tokenizer.

The faults (a crash or a full disk mid-write, a damaged or truncated file, a malicious pickle,
resuming with another model) are rows of the fault table, tests/test_faults.py, and only there."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TRAIN_TINY, assert_same_parameters, config, datasets, train_model

from sydsgpt.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    RunState,
    capture_rng_state,
    check_compatible,
    load_checkpoint,
    load_model,
    restore_rng_state,
    save_checkpoint,
    tokenizer_identity,
    unwrap_model,
)
from sydsgpt.optim import build_optimizer, make_scheduler
from sydsgpt.train import train_step


TOKENIZER = {"name": "toy", "n_vocab": TRAIN_TINY["vocab_size"]}


def trained_state(steps: int = 2):
    """A tiny model, its AdamW and scheduler after a few steps (so the optimizer has state)."""
    model = train_model()
    optimizer = build_optimizer(model, config())
    scheduler = make_scheduler(optimizer, total_steps=10, warmup_steps=2)
    data, _ = datasets()
    for i in range(steps):
        batch = tuple(torch.stack(t) for t in zip(*(data[j] for j in range(4 * i, 4 * i + 4))))
        train_step(model, [batch], optimizer, scheduler=scheduler)
    return model, optimizer, scheduler


def test_keys_roundtrip_and_weights_only(tmp_path: Path) -> None:
    model, optimizer, scheduler = trained_state()
    run = RunState(
        step=2, tokens_seen=64, train_config=config().to_dict(), data={"epoch": 0, "position": 2}
    )
    path = save_checkpoint(
        tmp_path / "ck.pt", model, optimizer, scheduler, tokenizer=TOKENIZER, run=run
    )
    raw = torch.load(path, weights_only=True)  # loads without unpickling any Python object
    assert {"model", "optimizer", "config"} <= raw.keys()  # the original project's keys
    assert {
        "scheduler",
        "step",
        "tokens_seen",
        "train_config",
        "tokenizer",
        "rng",
        "data",
    } <= raw.keys()
    assert raw["config"] == model.config and raw["tokenizer"] == TOKENIZER
    assert raw["step"] == 2 and raw["tokens_seen"] == 64 and raw["train_config"]["batch_size"] == 4
    assert raw["scheduler"]["last_epoch"] == 2
    assert set(raw["rng"][0]) == {"torch", "cuda", "python", "numpy"}

    restored = load_model(path)
    assert_same_parameters(restored, model)
    assert not restored.training
    optimizer2 = build_optimizer(restored, config())
    optimizer2.load_state_dict(load_checkpoint(path)["optimizer"])
    for a, b in zip(optimizer.state.values(), optimizer2.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(
            a["exp_avg_sq"], b["exp_avg_sq"]
        )


def test_not_a_checkpoint_and_missing_file(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="expected a dict with 'model' and 'config'"):
        load_checkpoint(tmp_path / "w.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_snapshot_restores_every_generator() -> None:
    state = capture_rng_state()
    first = (torch.rand(3), random.random(), np.random.rand())
    restore_rng_state(state)
    second = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]


def test_mismatched_config_or_tokenizer_is_a_clear_error(tmp_path: Path) -> None:
    model, optimizer, _ = trained_state(0)
    path = save_checkpoint(tmp_path / "ck.pt", model, optimizer, tokenizer=TOKENIZER)
    ck = load_checkpoint(path)
    check_compatible(ck, model.config, TOKENIZER)  # the same: no error
    with pytest.raises(
        CheckpointMismatchError, match=r"'embedding_dim': checkpoint has 16, this run has 32"
    ):
        check_compatible(ck, {**model.config, "embedding_dim": 32})
    with pytest.raises(CheckpointMismatchError, match="tokenizer: checkpoint was trained with"):
        check_compatible(ck, tokenizer={"name": "gpt2", "n_vocab": 50257})


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_unwrap_and_identity() -> None:
    model = train_model()
    assert unwrap_model(torch.compile(model)) is model
    assert tokenizer_identity(None) is None
    assert tokenizer_identity(TOKENIZER) == TOKENIZER
