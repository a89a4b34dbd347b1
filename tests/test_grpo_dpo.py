"""GRPO and DPO (chapter 10): every term against a hand computation, the batching, the
training loop's exact resume, and the pieces around them (rollouts, pairs, reference)."""

from __future__ import annotations

import math

import pytest
import torch

from sydsgpt.bench.instruct import _quick_chat_base
from sydsgpt.dpo import DPOObjective, dpo_loss, pair_batches, preference_pairs
from sydsgpt.grpo import (
    ADVANTAGE_EPS,
    GRPOObjective,
    clipped_surrogate,
    group_advantages,
    grpo_batches,
    kl_estimate,
)
from sydsgpt.instruct import end_token_id
from sydsgpt.lora import LoRAConfig, apply_lora
from sydsgpt.reward_training import RewardConfig, sft_records, train_with_rewards
from sydsgpt.rewards import Task, make_tasks
from sydsgpt.train_config import Session
from sydsgpt.rollouts import (
    Rollout,
    accuracy,
    adapters_off,
    pad_answers,
    reference_logprobs,
    sample_answers,
    token_logprobs,
)


@pytest.fixture(scope="module")
def chat_base():
    model, tokenizer, _ = _quick_chat_base()
    return model, tokenizer


def _policy(chat_base, seed: int = 0):
    import copy

    model = copy.deepcopy(chat_base[0])
    torch.manual_seed(seed)
    apply_lora(model, LoRAConfig(rank=2, alpha=4))
    with torch.no_grad():  # B = 0 would make the policy equal the reference: move it
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.1)
    return model


# ------------------------------------------------------------------- hand computations


def test_group_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    got = group_advantages(rewards)
    # group 1: mean 0.5, population std 0.5
    a = 0.5 / (0.5 + ADVANTAGE_EPS)
    assert torch.allclose(got[0], torch.tensor([a, -a, -a, a]))
    assert torch.equal(got[1], torch.zeros(4))  # all equal: nothing to learn
    # group 3: mean 0.25, std sqrt(0.25 * 0.75) = 0.4330
    std = math.sqrt(0.25 * 0.75)
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25]) / (std + ADVANTAGE_EPS)
    assert torch.allclose(got[2], expected)
    assert abs(float(got[2].sum())) < 1e-5  # advantages of a group sum to zero


@pytest.mark.parametrize(
    "ratio, advantage, expected",
    [
        (1.5, 1.0, 1.2),  # helped too much already: capped at 1 + 0.2
        (1.5, -1.0, -1.5),  # a bad answer made more likely: the full penalty
        (0.5, 1.0, 0.5),  # a good answer made less likely: the full (small) credit
        (0.5, -1.0, -0.8),  # a bad answer pushed down enough: capped at 1 - 0.2
        (1.1, 2.0, 2.2),  # inside the clip range: ratio * A
    ],
)
def test_clipped_surrogate_by_hand(ratio, advantage, expected):
    logprobs = torch.tensor([[math.log(ratio)]])
    got = clipped_surrogate(logprobs, torch.zeros(1, 1), torch.tensor([[advantage]]), 0.2)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_kl_estimate_by_hand():
    # policy 0.5, reference 0.25: exp(log 0.5) - log 0.5 - 1 = 0.5 + 0.6931 - 1
    got = kl_estimate(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)]))
    assert got.item() == pytest.approx(0.5 + math.log(2) - 1, rel=1e-6)
    same = kl_estimate(torch.tensor([-1.3]), torch.tensor([-1.3]))
    assert same.item() == 0.0
    many = kl_estimate(torch.randn(1000), torch.randn(1000))
    assert bool((many >= 0).all())


def test_dpo_loss_by_hand():
    # margin = (-1 - -2) - (-3 - -2) = 2, beta 0.5: -log sigmoid(1) = log(1 + e^-1)
    got = dpo_loss(
        torch.tensor([-1.0]),
        torch.tensor([-3.0]),
        torch.tensor([-2.0]),
        torch.tensor([-2.0]),
        beta=0.5,
    )
    assert got.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    # policy equal to the reference: no preference yet, loss log 2
    zero = dpo_loss(
        torch.tensor([-4.0]),
        torch.tensor([-1.0]),
        torch.tensor([-4.0]),
        torch.tensor([-1.0]),
        beta=0.1,
    )
    assert zero.item() == pytest.approx(math.log(2), rel=1e-6)


# ------------------------------------------------------------------- objectives on a model


def _rollout(chat_base, model, group_size=4, n_tasks=3, seed=0):
    tasks = make_tasks("add", n_tasks, 1, seed=seed)
    return sample_answers(
        model,
        chat_base[1],
        tasks,
        group_size,
        temperature=1.0,
        max_new_tokens=5,
        generator=torch.Generator().manual_seed(seed),
    )


def _with_rewards(rollout: Rollout, rewards: list[float]) -> Rollout:
    rollout.rewards = torch.tensor(rewards)
    return rollout


def test_grpo_objective_equals_hand_computed_loss_and_gradient(chat_base):
    model = _policy(chat_base)
    rollout = _with_rewards(_rollout(chat_base, model), [1, 0, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1])
    batches = grpo_batches(rollout, micro_batch_size=100)
    assert len(batches) == 1 and len(batches[0]["ids"]) == 8  # the all-correct group is left out
    out = GRPOObjective(clip=0.2)(model, batches[0], "cpu")
    # ratio 1 at the first update: loss = -(sum of A_i over answer tokens) / answer tokens
    adv = group_advantages(rollout.groups())
    keep = torch.cat([adv[0], adv[2]])
    mask = torch.cat([rollout.answer_mask[:4], rollout.answer_mask[8:]])
    by_hand = -(mask.sum(1) * keep).sum() / mask.sum()
    assert out.loss.item() == pytest.approx(by_hand.item(), abs=1e-6)
    # its gradient is the policy gradient: -(1/N) sum_i A_i * sum_t grad log p
    out.loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    ids = torch.cat([rollout.ids[:4], rollout.ids[8:]])
    logp = token_logprobs(model, ids)
    (-(logp * mask * keep[:, None]).sum() / mask.sum()).backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(got[n], p.grad, atol=1e-6), n


def test_grpo_token_normalization_is_over_the_whole_step(chat_base):
    """Split into micro-batches, train_step's mean of their losses is still the mean over
    every answer token of the step (not a mean of per-batch means)."""
    model = _policy(chat_base)
    rollout = _with_rewards(_rollout(chat_base, model), [1, 0, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0])
    objective = GRPOObjective()
    whole = objective(model, grpo_batches(rollout, 100)[0], "cpu").loss.item()
    parts = grpo_batches(rollout, 3)
    assert len(parts) == 4
    mean = sum(objective(model, b, "cpu").loss.item() for b in parts) / len(parts)
    assert mean == pytest.approx(whole, abs=1e-6)


def test_grpo_clip_and_kl_terms(chat_base):
    model = _policy(chat_base)
    rollout = _with_rewards(_rollout(chat_base, model), [1, 0, 0, 0] * 3)
    old = token_logprobs(model, rollout.ids).detach() - math.log(2)  # the policy now: ratio 2
    batch = grpo_batches(rollout, 100, model=model, kl=0.5, old_logprobs=old)[0]
    out = GRPOObjective(clip=0.2, kl=0.5)(model, batch, "cpu")
    mask = batch["token_weights"] > 0
    adv = batch["advantages"][:, None].expand_as(mask)
    surrogate = torch.where(adv > 0, 1.2 * adv, 2.0 * adv)  # min(2A, 1.2A)
    with adapters_off(model):
        ref = token_logprobs(model, rollout.ids).detach()
    logp = token_logprobs(model, rollout.ids).detach()
    kl = kl_estimate(logp, ref)
    by_hand = -((surrogate - 0.5 * kl) * batch["token_weights"]).sum()
    assert out.loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert out.metrics["clipped"].item() == pytest.approx(1.0)  # every ratio is 2
    assert out.metrics["kl"].item() == pytest.approx(
        (kl * mask).sum().item() / mask.sum().item(), rel=1e-5
    )


def test_adapters_off_is_the_base_model(chat_base):
    model = _policy(chat_base)
    ids = torch.tensor([[1, 2, 3, 4]])
    with adapters_off(model):
        off = token_logprobs(model, ids)
    assert torch.allclose(off, token_logprobs(chat_base[0], ids), atol=1e-6)
    assert not torch.allclose(token_logprobs(model, ids), off)  # back on after the block
    with pytest.raises(ValueError, match="no LoRA adapters"):
        with adapters_off(chat_base[0]):
            pass


def test_dpo_objective_by_hand(chat_base):
    model = _policy(chat_base)
    rollout = _with_rewards(_rollout(chat_base, model), [1, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1])
    pairs = preference_pairs(rollout, end_token_id(chat_base[1]), pairs_per_task=2)
    # group 1: two pairs (0, 1), (2, 3); group 2: none; group 3: one (11, 8)
    assert len(pairs.chosen) == 3

    def answer(ids, mask):
        return ids[1:][mask.bool()].tolist()

    assert answer(pairs.chosen[2], pairs.chosen_mask[2]) == answer(
        rollout.ids[11], rollout.answer_mask[11]
    )
    assert answer(pairs.rejected[2], pairs.rejected_mask[2]) == answer(
        rollout.ids[8], rollout.answer_mask[8]
    )
    batch = pair_batches(model, pairs, batch_size=8)[0]
    out = DPOObjective(beta=0.5)(model, batch, "cpu")
    lc = (token_logprobs(model, pairs.chosen) * pairs.chosen_mask).sum(1)
    lr = (token_logprobs(model, pairs.rejected) * pairs.rejected_mask).sum(1)
    with adapters_off(model):
        rc = (token_logprobs(model, pairs.chosen) * pairs.chosen_mask).sum(1)
        rr = (token_logprobs(model, pairs.rejected) * pairs.rejected_mask).sum(1)
    margin = 0.5 * ((lc - rc) - (lr - rr))
    by_hand = torch.log1p(torch.exp(-margin)).mean()
    assert out.loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert out.metrics["reward_accuracy"].item() == pytest.approx(
        (margin > 0).float().mean().item()
    )


def test_mixed_groups_are_those_with_two_rewards(chat_base):
    rollout = _with_rewards(
        _rollout(chat_base, _policy(chat_base)), [1, 0, 0, 0] + [1] * 4 + [0] * 4
    )
    assert rollout.mixed_groups().tolist() == [True, False, False]


def test_rollout_layout(chat_base):
    model = _policy(chat_base)
    rollout = _rollout(chat_base, model, group_size=2, n_tasks=2)
    assert rollout.ids.shape[0] == 4 and rollout.groups().shape == (2, 2)
    end = end_token_id(chat_base[1])
    for row, mask in zip(rollout.ids, rollout.answer_mask):
        answer = row[1:][mask.bool()].tolist()
        assert 1 <= len(answer) <= 5
        assert end not in answer[:-1]  # the end token, if any, ends the answer
    # same generator seed, same samples
    again = _rollout(chat_base, model, group_size=2, n_tasks=2)
    assert torch.equal(again.ids, rollout.ids)


def test_pad_answers_mask():
    ids, mask = pad_answers([[5, 6, 7], [5, 6]], [[8, 9], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 8, 9], [5, 6, 8, 0, 0]]
    assert mask.tolist() == [[0, 0, 1, 1], [0, 1, 0, 0]]


def test_reference_logprobs_batches_equal_one_pass(chat_base):
    model = _policy(chat_base)
    ids = torch.randint(0, 200, (5, 7))
    with adapters_off(model):
        whole = token_logprobs(model, ids)
    assert torch.allclose(reference_logprobs(model, ids, batch_size=2), whole, atol=1e-6)


def test_accuracy_scores_greedy_answers(chat_base):
    tasks = [Task("What is 1 + 1?", "2", "add", 1)]
    result = accuracy(chat_base[0], chat_base[1], tasks, max_new_tokens=3)
    assert result.correct == [result.accuracy == 1.0] and len(result.texts) == 1


# ------------------------------------------------------------------- the loop


def _odd_length_is_right(task, text):
    """A stand-in reward a random model earns about half the time (its answers are noise)."""
    return float(len(text) % 2)


@pytest.mark.parametrize("method", ["grpo", "dpo", "sft"])
def test_resume_is_bit_exact(chat_base, method, tmp_path, monkeypatch):
    monkeypatch.setattr("sydsgpt.rollouts.reward", _odd_length_is_right)
    tasks = make_tasks("add", 12, 1, seed=3)
    cfg = RewardConfig(
        method=method,
        steps=4,
        tasks_per_step=3,
        group_size=4,
        max_new_tokens=4,
        temperature=1.5,
        micro_batch_size=4,
        eval_every=2,
        checkpoint_every=2,
        kl=0.1 if method == "grpo" else 0.0,
        lr=1e-2,
    )
    straight = _policy(chat_base)
    full = train_with_rewards(
        straight,
        chat_base[1],
        tasks,
        tasks[:2],
        cfg,
        Session(out_dir=tmp_path / "a", show_progress=False),
    )
    assert [r["step"] for r in full] == [0, 1, 2, 3, 4]
    assert "accuracy" in full[0] and "accuracy" in full[2] and "accuracy" in full[4]
    stopped = _policy(chat_base)
    train_with_rewards(
        stopped,
        chat_base[1],
        tasks,
        tasks[:2],
        cfg,
        Session(out_dir=tmp_path / "b", show_progress=False, stop_after=2),
    )
    resumed = _policy(chat_base)
    again = train_with_rewards(
        resumed,
        chat_base[1],
        tasks,
        tasks[:2],
        cfg,
        Session(out_dir=tmp_path / "b", resume=True, show_progress=False),
    )
    for (n, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), n
    assert [r.get("loss") for r in again] == [r.get("loss") for r in full]
    assert (tmp_path / "b" / "adapter.safetensors").exists()
    moved = any(
        not torch.equal(a, b)
        for a, b in zip(straight.parameters(), _policy(chat_base).parameters())
    )
    assert moved  # the run trained something


def test_resume_refuses_another_config(chat_base, tmp_path):
    tasks = make_tasks("add", 6, 1, seed=3)
    cfg = RewardConfig(method="sft", steps=2, tasks_per_step=2, checkpoint_every=1)
    train_with_rewards(
        _policy(chat_base),
        chat_base[1],
        tasks,
        [],
        cfg,
        Session(out_dir=tmp_path, show_progress=False, stop_after=1),
    )
    other = RewardConfig(method="sft", steps=2, tasks_per_step=2, checkpoint_every=1, lr=1e-3)
    with pytest.raises(ValueError, match="another config"):
        train_with_rewards(
            _policy(chat_base),
            chat_base[1],
            tasks,
            [],
            other,
            Session(out_dir=tmp_path, resume=True, show_progress=False),
        )
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_with_rewards(
            _policy(chat_base),
            chat_base[1],
            tasks,
            [],
            cfg,
            Session(out_dir=tmp_path / "empty", resume=True, show_progress=False),
        )


def test_loop_needs_adapters_and_valid_options(chat_base):
    with pytest.raises(ValueError, match="apply_lora"):
        train_with_rewards(chat_base[0], chat_base[1], make_tasks("add", 2), [], RewardConfig())
    with pytest.raises(ValueError, match="method"):
        RewardConfig(method="ppo")
    with pytest.raises(ValueError, match="lr"):
        RewardConfig(lr=0)


def test_sft_records_end_with_the_answer_line():
    records = sft_records(make_tasks("mul", 2, 1, seed=1))
    assert all(r["output"].startswith("Answer: ") for r in records)
