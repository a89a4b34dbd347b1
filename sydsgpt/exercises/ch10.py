"""Chapter 10 exercises: ideas around learning from rewards that the chapter does not build
(three estimators of the KL penalty, a length penalty, leave-one-out advantages, and the IPO
preference loss).

Difficulty: ★ a short formula, ★★ a few careful lines, ★★★ a step that needs the
chapter's shapes and conventions.
"""

from __future__ import annotations

import math

import torch

from .checker import Case, Exercise, expect_close, expect_equal, register

# --------------------------------------------------------------- 10.1 three KL estimators


def _solution_kl_estimators(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    log_ratio = logprobs - ref_logprobs  # log p / q at each sampled token
    k1 = log_ratio
    k2 = 0.5 * log_ratio**2
    k3 = torch.exp(-log_ratio) - 1 + log_ratio  # q / p - 1 - log(q / p)
    return k1, k2, k3


def _wrong_kl_sign(logprobs, ref_logprobs):
    """Takes log q / p for k1: the estimator of KL(p || q) is the mean of log p / q over
    tokens sampled from p."""
    log_ratio = ref_logprobs - logprobs
    return log_ratio, 0.5 * log_ratio**2, torch.exp(-log_ratio) - 1 + log_ratio


def _wrong_kl_k3_ratio_up(logprobs, ref_logprobs):
    """Uses p / q inside k3: k3 is (q / p) - 1 - log(q / p), which has mean KL(p || q)
    under p; with p / q it is no longer unbiased."""
    log_ratio = logprobs - ref_logprobs
    return log_ratio, 0.5 * log_ratio**2, torch.exp(log_ratio) - 1 - log_ratio


def _wrong_kl_no_half(logprobs, ref_logprobs):
    """Forgets the 1/2 of k2 = (log p / q)^2 / 2."""
    log_ratio = logprobs - ref_logprobs
    return log_ratio, log_ratio**2, torch.exp(-log_ratio) - 1 + log_ratio


def _run_kl_by_hand(candidate) -> None:
    p, q = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    k1, k2, k3 = candidate(p, q)
    expect_close(k1, torch.tensor([math.log(2)]), "p = 0.5, q = 0.25: k1 = log(p / q) = log 2")
    expect_close(k2, torch.tensor([0.5 * math.log(2) ** 2]), "k2 = (log 2)^2 / 2")
    expect_close(k3, torch.tensor([0.5 - 1 + math.log(2)]), "k3 = q/p - 1 - log(q/p) = 0.19315")


def _run_kl_unbiased(candidate) -> None:
    """Sampled from p, the means of k1 and k3 estimate KL(p || q); k3 is never negative."""
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.3, 0.3, 0.4])
    exact = float((p * (p / q).log()).sum())
    # every outcome weighted by its probability: the exact expectation under p
    k1, k2, k3 = candidate(p.log(), q.log())
    expect_close(
        torch.tensor(float((p * k1).sum())), torch.tensor(exact), "E_p[k1] = KL(p || q)", atol=1e-6
    )
    expect_close(
        torch.tensor(float((p * k3).sum())), torch.tensor(exact), "E_p[k3] = KL(p || q)", atol=1e-6
    )
    expect_equal(bool((k3 >= 0).all()), True, "k3 >= 0 at every token")
    expect_equal(bool((k2 >= 0).all()), True, "k2 >= 0 at every token")


register(
    Exercise(
        key="10.1",
        title="kl_estimators(logprobs, ref_logprobs): the k1, k2 and k3 estimates of "
        "KL(policy || reference) at sampled tokens",
        cases=[
            Case("one token by hand", _run_kl_by_hand),
            Case("expectations under p", _run_kl_unbiased),
        ],
        solution=_solution_kl_estimators,
        wrong_answers=[_wrong_kl_sign, _wrong_kl_k3_ratio_up, _wrong_kl_no_half],
        hint="With r = q / p at a token sampled from p: k1 = -log r, k2 = (log r)^2 / 2, "
        "k3 = r - 1 - log r. The chapter's kl_estimate is k3.",
        difficulty=1,
    )
)

# --------------------------------------------------------------- 10.2 a length penalty


def _solution_length_penalty(
    rewards: torch.Tensor, lengths: torch.Tensor, limit: int, penalty: float
) -> torch.Tensor:
    over = (lengths - limit).clamp(min=0).to(rewards.dtype)  # tokens beyond the limit
    return rewards - penalty * over


def _wrong_penalty_every_token(rewards, lengths, limit, penalty):
    """Charges every token, not only those beyond the limit."""
    return rewards - penalty * lengths.to(rewards.dtype)


def _wrong_penalty_rewards_short(rewards, lengths, limit, penalty):
    """Lets a short answer earn a bonus (limit - length is negative for long ones only):
    the penalty must be 0 up to the limit."""
    return rewards - penalty * (lengths - limit).to(rewards.dtype)


def _run_penalty_by_hand(candidate) -> None:
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0])
    lengths = torch.tensor([10, 24, 40, 20])
    got = candidate(rewards, lengths, 20, 0.01)
    expect_close(
        got, torch.tensor([1.0, 0.96, -0.2, 1.0]), "limit 20, 0.01 per token beyond it", atol=1e-6
    )


def _run_penalty_shapes(candidate) -> None:
    rewards = torch.ones(3, 4)
    lengths = torch.full((3, 4), 5)
    got = candidate(rewards, lengths, 8, 0.5)
    expect_equal(tuple(got.shape), (3, 4), "a (groups, answers) batch keeps its shape")
    expect_close(got, rewards, "answers within the limit keep their reward")


register(
    Exercise(
        key="10.2",
        title="length_penalty(rewards, lengths, limit, penalty): take penalty off the reward "
        "for every token beyond limit",
        cases=[
            Case("four answers by hand", _run_penalty_by_hand),
            Case("a batch within the limit", _run_penalty_shapes),
        ],
        solution=_solution_length_penalty,
        wrong_answers=[_wrong_penalty_every_token, _wrong_penalty_rewards_short],
        hint="Only max(0, length - limit) tokens are charged.",
        difficulty=1,
    )
)

# --------------------------------------------------------------- 10.3 leave-one-out advantages


def _solution_rloo(rewards: torch.Tensor) -> torch.Tensor:
    k = rewards.shape[1]
    others = (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1)  # mean of the other K - 1
    return rewards - others


def _wrong_rloo_mean_with_self(rewards):
    """Subtracts the group mean including the answer itself (GRPO's baseline without the
    std): leave-one-out leaves the answer out of its own baseline."""
    return rewards - rewards.mean(dim=1, keepdim=True)


def _wrong_rloo_divides_by_k(rewards):
    """Divides the others' sum by K: there are K - 1 others."""
    k = rewards.shape[1]
    return rewards - (rewards.sum(dim=1, keepdim=True) - rewards) / k


def _wrong_rloo_whole_batch(rewards):
    """Takes the baseline over the whole batch: each group is one question, with its own
    baseline."""
    n = rewards.numel()
    return rewards - (rewards.sum() - rewards) / (n - 1)


def _run_rloo_by_hand(candidate) -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    expect_close(
        candidate(rewards),
        torch.tensor([[1 - 1 / 3, -2 / 3, -2 / 3, 1 - 1 / 3], [0.0, 0.0, 0.0, 0.0]]),
        "1 of 3 others right: baseline 1/3 for a right answer, 2/3 for a wrong one",
        atol=1e-6,
    )


def _run_rloo_scale(candidate) -> None:
    rewards = torch.tensor([[3.0, 1.0, 2.0]])
    # equals K / (K - 1) times the reward minus the group mean
    expect_close(candidate(rewards), 1.5 * (rewards - 2.0), "K / (K - 1) x (r - mean)", atol=1e-6)


register(
    Exercise(
        key="10.3",
        title="rloo_advantages(rewards): each answer's reward minus the mean reward of the "
        "other answers in its group",
        cases=[
            Case("two groups by hand", _run_rloo_by_hand),
            Case("a group of three", _run_rloo_scale),
        ],
        solution=_solution_rloo,
        wrong_answers=[
            _wrong_rloo_mean_with_self,
            _wrong_rloo_divides_by_k,
            _wrong_rloo_whole_batch,
        ],
        hint="rewards is (groups, K). The others' mean is (group sum - own reward) / (K - 1).",
        difficulty=2,
    )
)

# --------------------------------------------------------------- 10.4 IPO


def _solution_ipo(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    tau: float,
) -> torch.Tensor:
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    return ((margin - 1 / (2 * tau)) ** 2).mean()


def _wrong_ipo_no_reference(chosen, rejected, ref_chosen, ref_rejected, tau):
    """Leaves the reference out: IPO's margin, like DPO's, is measured against the reference."""
    return ((chosen - rejected - 1 / (2 * tau)) ** 2).mean()


def _wrong_ipo_target_tau(chosen, rejected, ref_chosen, ref_rejected, tau):
    """Aims the margin at tau: IPO's target margin is 1 / (2 tau)."""
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    return ((margin - tau) ** 2).mean()


def _wrong_ipo_sum(chosen, rejected, ref_chosen, ref_rejected, tau):
    """Sums over pairs: the loss is the mean over pairs (so it does not grow with the batch)."""
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    return ((margin - 1 / (2 * tau)) ** 2).sum()


def _run_ipo_by_hand(candidate) -> None:
    # margins 2 and -1; tau 0.25, target 2: losses 0 and 9, mean 4.5
    got = candidate(
        torch.tensor([-1.0, -5.0]),
        torch.tensor([-3.0, -2.0]),
        torch.tensor([-2.0, -4.0]),
        torch.tensor([-2.0, -2.0]),
        0.25,
    )
    expect_close(got, torch.tensor(4.5), "two pairs by hand", atol=1e-6)


def _run_ipo_at_reference(candidate) -> None:
    x = torch.tensor([-3.0, -7.0, -1.5])
    got = candidate(x, x + 1, x, x + 1, 0.1)
    expect_close(got, torch.tensor(25.0), "policy = reference: margin 0, (0 - 5)^2", atol=1e-5)


register(
    Exercise(
        key="10.4",
        title="ipo_loss(chosen, rejected, ref_chosen, ref_rejected, tau): the IPO preference "
        "loss, a squared distance to a fixed margin",
        cases=[
            Case("two pairs by hand", _run_ipo_by_hand),
            Case("the policy equal to the reference", _run_ipo_at_reference),
        ],
        solution=_solution_ipo,
        wrong_answers=[_wrong_ipo_no_reference, _wrong_ipo_target_tau, _wrong_ipo_sum],
        hint="The margin is DPO's, without beta: (chosen - ref_chosen) - (rejected - "
        "ref_rejected). IPO pulls it to 1 / (2 tau) and no further.",
        difficulty=2,
    )
)
