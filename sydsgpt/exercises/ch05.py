"""Chapter 5 exercises: perplexity, the warm-up + cosine learning rate, gradient accumulation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..model import SydsGPT
from ..losses import batch_loss
from ..optim import lr_at_step
from .checker import Case, Exercise, expect_close, register


def _logits_for(probabilities: list[list[float]]) -> torch.Tensor:
    """Logits whose softmax is ``probabilities`` (log-probabilities are valid logits)."""
    return torch.tensor(probabilities).log().unsqueeze(0)  # (1, T, V)


# ---------------------------------------------------------------- 5.1 perplexity


def _solution_perplexity(logits: torch.Tensor, targets: torch.Tensor) -> float:
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # mean over all B*T tokens
    return math.exp(loss.item())


def _wrong_perplexity_exp_of_sum(logits: torch.Tensor, targets: torch.Tensor) -> float:
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
    return math.exp(loss.item())  # grows with the number of tokens


def _wrong_perplexity_mean_of_exps(logits: torch.Tensor, targets: torch.Tensor) -> float:
    losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    return losses.exp().mean().item()  # an arithmetic mean of per-token perplexities


def _wrong_perplexity_no_softmax(logits: torch.Tensor, targets: torch.Tensor) -> float:
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return math.exp(-picked.mean().item())  # raw logits are not log-probabilities


def _run_uniform(candidate) -> None:
    # Equal logits over 8 tokens: every target has probability 1/8, perplexity 8.
    expect_close(float(candidate(torch.zeros(2, 3, 8), torch.tensor([[0, 1, 2], [3, 4, 5]]))), 8.0, "perplexity of uniform logits over 8 tokens")


def _run_by_hand(candidate) -> None:
    # The targets get probabilities 1/2 and 1/8: mean loss (ln 2 + ln 8) / 2 = ln 4, perplexity 4.
    logits = _logits_for([[0.5, 0.25, 0.25, 1e-9], [0.125, 0.875, 1e-9, 1e-9]])
    expect_close(float(candidate(logits, torch.tensor([[0, 0]]))), 4.0, "perplexity when the targets get p = 1/2 and 1/8", rtol=1e-4)


def _run_shifted_logits(candidate) -> None:
    # Adding a constant to every logit changes nothing after the softmax.
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(1))
    expected = math.exp(F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item())
    expect_close(float(candidate(logits + 3.0, targets)), expected, "perplexity of a (2, 5, 7) batch of logits shifted by +3")


register(
    Exercise(
        key="5.1",
        title="perplexity(logits, targets): exp of the mean cross-entropy of (B, T, V) logits against (B, T) targets",
        cases=[
            Case("uniform logits over 8 tokens give perplexity 8", _run_uniform),
            Case("targets with probabilities 1/2 and 1/8 give perplexity 4", _run_by_hand),
            Case("a batch of random logits (shifted by a constant) matches exp(F.cross_entropy)", _run_shifted_logits),
        ],
        solution=_solution_perplexity,
        wrong_answers=[_wrong_perplexity_exp_of_sum, _wrong_perplexity_mean_of_exps, _wrong_perplexity_no_softmax],
        hint="Flatten to (B*T, V) and (B*T,), take F.cross_entropy (it applies log-softmax and averages "
        "over tokens), then exp of that mean. exp of a sum grows with the number of tokens.",
    )
)

# ---------------------------------------------------------------- 5.2 learning-rate schedule


def _wrong_lr_no_warmup(step: int, peak_lr: float, warmup_steps: int, total_steps: int, min_lr: float) -> float:
    return lr_at_step(step, peak_lr, 0, total_steps, min_lr)


def _wrong_lr_cosine_from_zero(step: int, peak_lr: float, warmup_steps: int, total_steps: int, min_lr: float) -> float:
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(1.0, step / total_steps)  # the cosine should start at the end of the warm-up
    return min_lr + 0.5 * (peak_lr - min_lr) * (1 + math.cos(math.pi * progress))


def _wrong_lr_decays_to_zero(step: int, peak_lr: float, warmup_steps: int, total_steps: int, min_lr: float) -> float:
    return lr_at_step(step, peak_lr, warmup_steps, total_steps, 0.0)


def _run_warmup(candidate) -> None:
    got = [candidate(s, 1e-3, 4, 20, 1e-4) for s in range(4)]
    expect_close(got, [2.5e-4, 5e-4, 7.5e-4, 1e-3], "lr at steps 0..3 with a 4-step warm-up to 1e-3", rtol=1e-6, atol=1e-12)


def _run_cosine_landmarks(candidate) -> None:
    # warm-up 4, total 20: the cosine spans steps 4..20; half-way (step 12) is (peak + min) / 2.
    got = [candidate(s, 1e-3, 4, 20, 1e-4) for s in (4, 12, 20, 25)]
    expect_close(got, [1e-3, 5.5e-4, 1e-4, 1e-4], "lr at steps 4 (peak), 12 (half-way), 20 and 25 (floor)", rtol=1e-6, atol=1e-12)


def _run_whole_schedule(candidate) -> None:
    got = [candidate(s, 3e-4, 10, 100, 3e-5) for s in range(110)]
    expect_close(got, [lr_at_step(s, 3e-4, 10, 100, 3e-5) for s in range(110)], "lr at steps 0..109 (warm-up 10, total 100)", rtol=1e-6, atol=1e-12)


register(
    Exercise(
        key="5.2",
        title="lr_at_step(step, peak_lr, warmup_steps, total_steps, min_lr): linear warm-up, then cosine decay to min_lr",
        cases=[
            Case("the warm-up rises linearly: peak * (step + 1) / warmup_steps", _run_warmup),
            Case("the cosine runs from the peak at warmup_steps to min_lr at total_steps, then stays", _run_cosine_landmarks),
            Case("matches the package's schedule at every step", _run_whole_schedule),
        ],
        solution=lr_at_step,
        wrong_answers=[_wrong_lr_no_warmup, _wrong_lr_cosine_from_zero, _wrong_lr_decays_to_zero],
        hint="progress = (step - warmup_steps) / (total_steps - warmup_steps), clamped to 1; "
        "lr = min_lr + 0.5 * (peak_lr - min_lr) * (1 + cos(pi * progress)).",
    )
)

# ---------------------------------------------------------------- 5.3 gradient accumulation

_TINY = {"vocab_size": 11, "embedding_dim": 8, "context_length": 6, "num_layers": 1, "num_heads": 2, "dropout": 0.0}


def _solution_accumulate(model: torch.nn.Module, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.zero_grad(set_to_none=True)
    total = 0.0
    for input_ids, target_ids in micro_batches:
        loss = batch_loss(model, input_ids, target_ids)
        (loss / len(micro_batches)).backward()
        total += loss.item()
    return total / len(micro_batches)


def _wrong_accumulate_unscaled(model, micro_batches) -> float:
    model.zero_grad(set_to_none=True)
    losses = []
    for input_ids, target_ids in micro_batches:
        loss = batch_loss(model, input_ids, target_ids)
        loss.backward()  # gradients add up: N times too large
        losses.append(loss.item())
    return sum(losses) / len(losses)


def _wrong_accumulate_zero_inside(model, micro_batches) -> float:
    losses = []
    for input_ids, target_ids in micro_batches:
        model.zero_grad(set_to_none=True)  # throws away the previous micro-batches
        loss = batch_loss(model, input_ids, target_ids)
        (loss / len(micro_batches)).backward()
        losses.append(loss.item())
    return sum(losses) / len(losses)


def _wrong_accumulate_stale(model, micro_batches) -> float:
    losses = []
    for input_ids, target_ids in micro_batches:  # never zeroes: adds to last step's gradients
        loss = batch_loss(model, input_ids, target_ids)
        (loss / len(micro_batches)).backward()
        losses.append(loss.item())
    return sum(losses) / len(losses)


def _setup(seed: int, n_micro: int, rows: int) -> tuple[SydsGPT, torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(seed)
    model = SydsGPT(_TINY)
    ids = torch.randint(0, 11, (n_micro * rows, 7), generator=torch.Generator().manual_seed(seed))
    x, y = ids[:, :-1], ids[:, 1:]
    return model, x, y, [(x[i : i + rows], y[i : i + rows]) for i in range(0, n_micro * rows, rows)]


def _full_batch_grads(model: SydsGPT, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    model.zero_grad(set_to_none=True)
    loss = batch_loss(model, x, y)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    return grads, loss.item()


def _grads(model: SydsGPT) -> torch.Tensor:
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    if missing:
        raise AssertionError(f"no gradient on {missing[:3]}...: call backward() on the losses")
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _run_gradients(candidate) -> None:
    model, x, y, micro = _setup(0, 4, 2)
    expected, _ = _full_batch_grads(model, x, y)
    candidate(model, micro)
    expect_close(_grads(model), expected, "gradients after 4 micro-batches of 2 rows vs one batch of 8", atol=1e-6)


def _run_loss(candidate) -> None:
    model, x, y, micro = _setup(1, 3, 2)
    _, expected = _full_batch_grads(model, x, y)
    expect_close(float(candidate(model, micro)), expected, "the returned loss (the mean over the whole batch)")


def _run_starts_from_zero(candidate) -> None:
    model, x, y, micro = _setup(2, 2, 3)
    expected, _ = _full_batch_grads(model, x, y)
    batch_loss(model, x, y).backward()  # gradients left over from a previous step
    candidate(model, micro)
    expect_close(_grads(model), expected, "gradients when the model still held the previous step's gradients", atol=1e-6)


register(
    Exercise(
        key="5.3",
        title="accumulate_gradients(model, micro_batches): gradients of the mean loss over all micro-batches; return that loss",
        cases=[
            Case("the gradients equal those of one big batch", _run_gradients),
            Case("the returned loss is the mean loss of the big batch", _run_loss),
            Case("gradients from a previous step are cleared first", _run_starts_from_zero),
        ],
        solution=_solution_accumulate,
        wrong_answers=[_wrong_accumulate_unscaled, _wrong_accumulate_zero_inside, _wrong_accumulate_stale],
        hint="model.zero_grad() once before the loop; in the loop, loss = batch_loss(model, x, y) and "
        "(loss / len(micro_batches)).backward(), so the gradients add up to those of the mean loss.",
    )
)
