"""Pretraining pieces: loss and perplexity, the warm-up + cosine schedule, AdamW groups, the
resumable data order and its shards, one step with accumulation, the loop and its log, NaN
detection, and the GPU switches (bf16 autocast, torch.compile, fused AdamW) run on CPU."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader
from helpers import SEQ, VOCAB, config, datasets, patterned_ids, train_model

from sydsgpt.checkpoint import load_checkpoint
from sydsgpt.data import ResumableBatches
from sydsgpt.logs import plot_losses, read_log
from sydsgpt.losses import batch_loss, cross_entropy_loss, loader_loss, perplexity
from sydsgpt.objectives import Objective, ObjectiveOutput
from sydsgpt.optim import build_optimizer, lr_at_step, make_scheduler
from sydsgpt.train import Session, StepOptions, TrainConfig, TrainingDiverged, train, train_step


# ------------------------------------------------------------------ loss


def test_cross_entropy_by_hand() -> None:
    # Two positions, three-token vocabulary. Position 0: logits (0, 0, 0) -> p = 1/3 each,
    # loss -ln(1/3) = ln 3. Position 1: logits (ln 4, 0, 0) -> p(target 0) = 4/6, loss ln 1.5.
    logits = torch.tensor([[[0.0, 0.0, 0.0], [math.log(4.0), 0.0, 0.0]]])
    targets = torch.tensor([[2, 0]])
    expected = (math.log(3.0) + math.log(1.5)) / 2
    assert cross_entropy_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    assert perplexity(expected) == pytest.approx(math.sqrt(3.0 * 1.5))


def test_untrained_model_is_near_uniform_and_loader_loss_weights_tokens() -> None:
    model = train_model().eval()
    _, val = datasets()
    loss = loader_loss(model, val)
    assert abs(loss - math.log(VOCAB)) < 0.3  # random init ~ uniform over the vocabulary
    assert not model.training  # the mode is restored
    # per-token mean over all batches (the last one is smaller)
    sums = [(batch_loss(model, x, y).item() * y.numel(), y.numel()) for x, y in val]
    model.train()
    assert loader_loss(model, val) == pytest.approx(
        sum(s for s, _ in sums) / sum(n for _, n in sums), rel=1e-6
    )
    assert model.training
    assert loader_loss(model, val, num_batches=1) == pytest.approx(
        sums[0][0] / sums[0][1], rel=1e-6
    )
    with pytest.raises(ValueError, match="no batches"):
        loader_loss(model, [])


# ------------------------------------------------------------------ schedule and optimizer


def test_lr_warmup_then_cosine() -> None:
    peak, floor = 1e-3, 1e-4
    lrs = [lr_at_step(s, peak, 4, 14, floor) for s in range(16)]
    assert lrs[:4] == pytest.approx([peak / 4, peak / 2, 3 * peak / 4, peak])  # linear warm-up
    assert lrs[4] == pytest.approx(peak)  # decay starts at the peak
    assert lrs[9] == pytest.approx((peak + floor) / 2)  # half-way through the cosine
    assert lrs[14] == pytest.approx(floor) and lrs[15] == pytest.approx(floor)  # then the floor
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert lr_at_step(0, peak, 0, 10) == pytest.approx(peak)  # no warm-up


def test_scheduler_follows_lr_at_step() -> None:
    model = train_model()
    optimizer = build_optimizer(model, config(lr=2e-3))
    scheduler = make_scheduler(optimizer, total_steps=10, warmup_steps=3, min_lr_ratio=0.1)
    for step in range(12):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr_at_step(step, 2e-3, 3, 10, 2e-4))
        optimizer.step()
        scheduler.step()


def test_weight_decay_groups_and_fused_switch() -> None:
    model = train_model(tie_weights=True)
    optimizer = build_optimizer(model, config(weight_decay=0.1))
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(
        p.dim() < 2 for p in no_decay["params"]
    )
    assert len(decay["params"]) + len(no_decay["params"]) == len(
        list(model.parameters())
    )  # tied head counted once
    assert not decay["fused"]  # default off on CPU
    assert build_optimizer(model, config(fused_adamw=True)).param_groups[0]["fused"]


def test_config_validation_and_lengths() -> None:
    cfg = TrainConfig(epochs=3, grad_accum_steps=2)
    assert cfg.total_steps(batches_per_epoch=10) == 15
    assert TrainConfig(max_steps=7).total_steps(10) == 7
    assert cfg.warmup_for(200) == 10 and TrainConfig(warmup_steps=0).warmup_for(200) == 0
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="dtype"):
        TrainConfig(dtype="float16")
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 1e-3})


# ------------------------------------------------------------------ data order


def test_resumable_batches_order_state_and_epochs() -> None:
    data, _ = datasets()
    n = len(data)
    a = ResumableBatches(data, 4, seed=1)
    first = [next(a) for _ in range(3)]
    state = a.state_dict()
    rest = [next(a) for _ in range(a.batches_per_epoch)]  # crosses into epoch 1
    assert a.epoch == 1
    b = ResumableBatches(data, 4, seed=1)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(first, [next(b) for _ in range(3)]))
    c = ResumableBatches(data, 4, seed=1)
    c.load_state_dict(state)
    assert all(
        torch.equal(x, y) for (x, _), (y, _) in zip(rest, [next(c) for _ in range(len(rest))])
    )
    # one epoch visits every window once (minus the dropped incomplete batch)
    d, seen = ResumableBatches(data, 4, seed=1), []
    for _ in range(d.batches_per_epoch):
        seen.append(d.global_batch_indices())
        next(d)
    seen = torch.cat(seen)
    assert len(set(seen.tolist())) == len(seen) == n - n % 4
    assert not torch.equal(d.epoch_order(0), d.epoch_order(1))  # each epoch reshuffles
    with pytest.raises(ValueError, match="checkpoint's batch_size is 4"):
        ResumableBatches(data, 2, seed=1).load_state_dict(state)


def test_each_rank_gets_a_disjoint_shard_of_the_global_batch() -> None:
    data, _ = datasets()
    whole = ResumableBatches(data, 4, seed=3)
    ranks = [ResumableBatches(data, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(5):
        x, _ = next(whole)
        parts = [next(r)[0] for r in ranks]
        assert all(p.shape == (2, x.shape[1]) for p in parts)
        assert torch.equal(torch.cat(parts), x)
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        ResumableBatches(data, 3, world_size=2)


# ------------------------------------------------------------------ one step


def test_gradient_accumulation_matches_one_big_batch() -> None:
    data, _ = datasets()
    x, y = (torch.stack(t) for t in zip(*(data[i] for i in range(4))))
    grads = []
    for micro in ([(x, y)], [(x[:2], y[:2]), (x[2:], y[2:])]):
        model = train_model(dropout=0.0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        loss, _ = train_step(model, micro, optimizer, options=StepOptions(grad_clip=None))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_bf16_autocast_on_cpu_is_close_to_float32() -> None:
    data, _ = datasets()
    x, y = (torch.stack(t) for t in zip(*(data[i] for i in range(4))))
    model = train_model(dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    loss32, _ = train_step(model, [(x, y)], optimizer)
    loss16, _ = train_step(
        model, [(x, y)], optimizer, options=StepOptions(amp_dtype=torch.bfloat16)
    )
    assert loss16 != loss32 and abs(loss16 - loss32) < 0.05


@pytest.mark.slow
def test_compiled_training_matches_eager() -> None:
    train_data, _ = datasets()
    runs = [
        train(
            train_model(dropout=0.0),
            train_data,
            None,
            config(max_steps=3, eval_interval=0, compile=c, compile_backend="aot_eager"),
            session=Session(show_progress=False),
        )
        for c in (False, True)
    ]
    losses = [[r["train_loss"] for r in history] for history in runs]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


# ------------------------------------------------------------------ the loop


def test_training_lowers_the_loss_and_logs_every_step(tmp_path: Path) -> None:
    train_data, val = datasets()
    history = train(
        train_model(),
        train_data,
        val,
        config(max_steps=40, eval_interval=20),
        session=Session(out_dir=tmp_path, show_progress=False),
    )
    log = read_log(tmp_path / "log.jsonl")
    assert log == history
    assert [r["step"] for r in log] == list(range(41))
    assert set(log[5]) == {
        "step",
        "epoch",
        "tokens_seen",
        "lr",
        "train_loss",
        "grad_norm",
        "tokens_per_s",
    }
    assert [r["step"] for r in log if "val_loss" in r] == [0, 20, 40]
    assert log[40]["tokens_seen"] == 40 * 4 * 8
    assert log[40]["val_loss"] < log[0]["val_loss"] - 0.5, "the loss did not drop"
    ax = plot_losses(tmp_path / "log.jsonl")
    assert [line.get_label() for line in ax.get_lines()] == ["train (each step)", "validation"]
    assert len(ax.get_lines()[1].get_xdata()) == 3


def test_evaluations_do_not_change_the_run() -> None:
    """Starting the validation DataLoader draws from torch's global generator, the one
    dropout draws its masks from; the weights must not depend on how often the run is
    evaluated (the speedrun's runner, which never evaluates, and sydsgpt train agree)."""
    train_data, val = datasets()

    def weights(**overrides: Any) -> torch.Tensor:
        model = train_model(dropout=0.2)
        train(model, train_data, val, config(**overrides), session=Session(show_progress=False))
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    never = weights(eval_interval=0, eval_at_start=False)
    assert torch.equal(weights(eval_interval=3), never)
    assert torch.equal(weights(eval_interval=5, eval_at_start=False), never)


def test_dataloader_batch_size_must_match(tmp_path: Path) -> None:
    train_data, val = datasets()
    loader = DataLoader(train_data, batch_size=2)
    with pytest.raises(
        ValueError, match="DataLoader has batch_size=2 but TrainConfig.batch_size is 4"
    ):
        train(train_model(), loader, val, config(), session=Session(show_progress=False))


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    model = train_model()
    calls = {"n": 0}

    def poison_after_five_steps(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] > 5 else output

    train_data, val = datasets()
    cfg = config(max_steps=10, eval_interval=0, checkpoint_interval=2)
    model.register_forward_hook(poison_after_five_steps)
    with pytest.raises(
        TrainingDiverged, match=r"at step 6: loss is nan.*last good checkpoint is .*checkpoint\.pt"
    ):
        train(model, train_data, val, cfg, session=Session(out_dir=tmp_path, show_progress=False))
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert saved["step"] == 4
    assert all(torch.isfinite(t).all() for t in saved["model"].values())
    assert torch.isfinite(model.token_embedding.weight).all(), (
        "the NaN step must not reach the weights"
    )


def test_trainconfig_from_dict_refuses_unknown_keys() -> None:
    assert TrainConfig.from_dict(TrainConfig(seq_len=64).to_dict()) == TrainConfig(seq_len=64)
    for key in ("lr_max", "context_length"):  # context_length: seq_len's name before 0.x
        with pytest.raises(ValueError, match=rf"unknown training option\(s\) \['{key}'\]"):
            TrainConfig.from_dict({key: 1.0})


def test_a_huge_learning_rate_stops_before_a_checkpoint_holds_exploded_weights(
    tmp_path: Path,
) -> None:
    # lr=1e6: step 1's loss is normal, its update throws the weights to ~1e6, step 2's loss is
    # NaN. The checkpoint of step 1 must not be saved (and named as good) with those weights.
    train_data, val = datasets()
    cfg = config(max_steps=4, lr=1e6, warmup_steps=0, eval_interval=0, checkpoint_interval=1)
    with pytest.raises(TrainingDiverged) as info:
        train(
            train_model(),
            train_data,
            val,
            cfg,
            session=Session(out_dir=tmp_path, show_progress=False),
        )
    assert info.value.step == 1 and "a weight reached" in str(info.value)
    assert "No checkpoint was written yet" in str(info.value)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_loss_spike_stops_and_names_the_last_sane_checkpoint(tmp_path: Path) -> None:
    # A finite loss far above its recent level is divergence too (before it turns into NaN).
    model = train_model()
    calls = {"n": 0}

    def blow_up_after_eight_steps(module, inputs, output):
        calls["n"] += 1
        return output * 1000.0 if calls["n"] > 8 else output

    train_data, val = datasets()
    model.register_forward_hook(blow_up_after_eight_steps)
    cfg = config(max_steps=12, eval_interval=0, checkpoint_interval=2)
    with pytest.raises(
        TrainingDiverged,
        match=r"at step 9: the loss .* is far above its recent level"
        r".*last good checkpoint is .*checkpoint\.pt",
    ) as info:
        train(model, train_data, val, cfg, session=Session(out_dir=tmp_path, show_progress=False))
    assert math.isfinite(info.value.loss)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 8


def test_bits_per_byte_from_a_loss() -> None:
    from sydsgpt.losses import bits_per_byte

    # ln(2) nats per token, one token per byte: exactly 1 bit per byte; 4 bytes per token: a quarter
    assert bits_per_byte(math.log(2), 100, 100) == pytest.approx(1.0)
    assert bits_per_byte(math.log(2), 25, 100) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="num_bytes >= 1"):
        bits_per_byte(1.0, 10, 0)


# ------------------------------------------------------------------ other objectives


class PairwiseObjective:
    """A toy preference loss: batches of ``(chosen, rejected)`` sequences ``(B, T)``; the loss is
    ``-log sigmoid(log p(chosen) - log p(rejected))`` (sums of next-token log-probabilities)."""

    metric_names = ("accuracy",)

    def __call__(self, model, batch, device=None):
        chosen, rejected = (t.to(device) if device is not None else t for t in batch["pair"])
        both = torch.cat([chosen, rejected])  # (2B, T)
        logp = model(both[:, :-1]).log_softmax(-1).gather(-1, both[:, 1:, None]).squeeze(-1).sum(-1)
        margin = logp[: len(chosen)] - logp[len(chosen) :]  # (B,)
        return ObjectiveOutput(
            -torch.nn.functional.logsigmoid(margin).mean(),
            count=len(chosen),
            metrics={"accuracy": (margin > 0).float().mean()},
        )

    def tokens(self, batch) -> int:
        return batch["pair"][0].numel() * 2


class Pairs(torch.utils.data.Dataset):
    """Dict items: a patterned sequence is preferred to a shuffled copy of it."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.chosen = patterned_ids(n * (SEQ + 1), seed).view(n, SEQ + 1)
        self.rejected = torch.stack(
            [row[torch.randperm(SEQ + 1, generator=g)] for row in self.chosen]
        )

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, i: int) -> dict:
        return {"pair": (self.chosen[i], self.rejected[i])}


def test_a_pairwise_objective_trains_through_the_same_loop_and_resumes_exactly(
    tmp_path: Path,
) -> None:
    objective = PairwiseObjective()
    assert isinstance(objective, Objective)
    val = DataLoader(Pairs(16, 1), batch_size=4)
    cfg = config(max_steps=30, eval_interval=10, grad_accum_steps=2, lr=1e-2)
    history = train(
        train_model(),
        Pairs(64, 0),
        val,
        cfg,
        objective=objective,
        session=Session(out_dir=tmp_path / "a", show_progress=False),
    )
    assert history[-1]["val_loss"] < history[0]["val_loss"] - 0.3
    assert history[-1]["val_accuracy"] > history[0]["val_accuracy"]
    assert "train_accuracy" in history[5] and history[30]["tokens_seen"] == 30 * 2 * 4 * 2 * (
        SEQ + 1
    )
    # stopped at step 13 and resumed: the same weights as the straight run
    model = train_model()
    train(
        model,
        Pairs(64, 0),
        val,
        cfg,
        objective=objective,
        session=Session(out_dir=tmp_path / "b", stop_after=13, show_progress=False),
    )
    model = train_model()
    train(
        model,
        Pairs(64, 0),
        val,
        cfg,
        objective=objective,
        session=Session(out_dir=tmp_path / "b", resume=True, show_progress=False),
    )
    straight = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    assert all(torch.equal(straight[k], v) for k, v in model.state_dict().items())
