"""Chapter 5 exercises: a language model as a compressor, AMSGrad on top of AdamW, label smoothing,
and a loss over the real (unpadded) targets only."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .checker import Case, Exercise, expect_close, expect_equal, register


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -------------------------------------------------- 5.1 a language model is a compressor


def _solution_compressed_bytes(loss: float, num_tokens: int) -> int:
    bits = loss * num_tokens / math.log(2)  # the whole text's cost: nats -> bits
    return math.ceil(bits / 8)  # an arithmetic coder needs whole bytes


def _wrong_compressed_nats(loss: float, num_tokens: int) -> int:
    """Counts nats as bits: the loss uses the natural log, and a bit is ln 2 nats. Divide the
    total by math.log(2) before turning bits into bytes."""
    return math.ceil(loss * num_tokens / 8)


def _wrong_compressed_floor(loss: float, num_tokens: int) -> int:
    """Rounds down: 9 bits do not fit in 1 byte. A file holds whole bytes, so round up."""
    return math.floor(loss * num_tokens / math.log(2) / 8)


def _wrong_compressed_per_token(loss: float, num_tokens: int) -> int:
    """Uses the mean loss as if it were the whole text's: the loss is per TOKEN, so multiply
    by the number of tokens first."""
    return math.ceil(loss / math.log(2) / 8)


def _compressed_case(name: str, loss: float, num_tokens: int, expected: int) -> Case:
    def run(candidate):
        expect_equal(
            int(candidate(loss, num_tokens)),
            expected,
            f"compressed_bytes(loss={loss:.6f}, num_tokens={num_tokens})",
        )

    return Case(name, run)


register(
    Exercise(
        key="5.1",
        title="compressed_bytes(loss, num_tokens): the size in bytes of a text of num_tokens "
        "tokens, coded with a model of mean loss `loss` (nats per token)",
        cases=[
            _compressed_case("one bit per token, 16 tokens: 2 bytes", math.log(2), 16, 2),
            _compressed_case("two bits per token, 12 tokens: 3 bytes", 2 * math.log(2), 12, 3),
            _compressed_case("9 bits need 2 whole bytes", math.log(2), 9, 2),
            _compressed_case(
                "a uniform guess over 256 values costs a byte per token", math.log(256), 1000, 1000
            ),
        ],
        solution=_solution_compressed_bytes,
        wrong_answers=[
            _wrong_compressed_nats,
            _wrong_compressed_floor,
            _wrong_compressed_per_token,
        ],
        hint="An arithmetic coder spends -log2 p bits on a token the model gave probability p: "
        "the whole text costs loss * num_tokens nats, that is loss * num_tokens / ln 2 bits.",
        difficulty=1,
    )
)

# ---------------------------------------------------------------- 5.2 AMSGrad
# The chapter writes AdamW out by hand; AMSGrad (Reddi et al., 2018) changes one thing: the
# denominator uses the largest second moment seen so far, so a coordinate whose gradients
# shrink keeps a small step instead of a growing one.


def _solution_amsgrad_step(
    param, grad, state, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01
):
    beta1, beta2 = betas
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    max_exp_avg_sq = state["max_exp_avg_sq"]
    param.mul_(1 - lr * weight_decay)  # decoupled weight decay, as in AdamW
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    torch.maximum(
        max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq
    )  # the new idea: never let v shrink
    m_hat = exp_avg / (1 - beta1**step)
    v_hat = max_exp_avg_sq / (1 - beta2**step)
    param.add_(-lr * m_hat / (v_hat.sqrt() + eps))


def _wrong_amsgrad_plain_adamw(
    param, grad, state, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01
):
    """Plain AdamW: divides by the current second moment; AMSGrad divides by the largest one so far
    (keep it in state["max_exp_avg_sq"], updated in place)."""
    beta1, beta2 = betas
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    param.mul_(1 - lr * weight_decay)
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    state["max_exp_avg_sq"].copy_(exp_avg_sq)
    v_hat = exp_avg_sq / (1 - beta2**step)
    param.add_(-lr * (exp_avg / (1 - beta1**step)) / (v_hat.sqrt() + eps))


def _wrong_amsgrad_max_before_update(
    param, grad, state, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01
):
    """Takes the maximum with the *previous* second moment: update exp_avg_sq with this step's
    gradient first, then max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq)."""
    beta1, beta2 = betas
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    max_exp_avg_sq = state["max_exp_avg_sq"]
    param.mul_(1 - lr * weight_decay)
    torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    v_hat = max_exp_avg_sq / (1 - beta2**step)
    param.add_(-lr * (exp_avg / (1 - beta1**step)) / (v_hat.sqrt() + eps))


def _wrong_amsgrad_max_of_corrected(
    param, grad, state, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01
):
    """Keeps the maximum of the bias-*corrected* v_hat: PyTorch keeps the maximum of the raw moment
    and corrects it at each step (early, corrected values are large, so their maximum would freeze
    the step)."""
    beta1, beta2 = betas
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    max_exp_avg_sq = state["max_exp_avg_sq"]
    param.mul_(1 - lr * weight_decay)
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    torch.maximum(max_exp_avg_sq, exp_avg_sq / (1 - beta2**step), out=max_exp_avg_sq)
    param.add_(-lr * (exp_avg / (1 - beta1**step)) / (max_exp_avg_sq.sqrt() + eps))


def _amsgrad_case(
    name: str, steps: int, lr: float, weight_decay: float, decay: float, seed: int
) -> Case:
    """``decay`` < 1 shrinks the gradients step by step:
    there the maximum is what differs from AdamW."""

    def run(candidate) -> None:
        start = _randn(4, 3, seed=seed)
        grads = [_randn(4, 3, seed=seed + 1 + s) * decay**s for s in range(steps)]
        reference = torch.nn.Parameter(start.clone())
        optimizer = torch.optim.AdamW(
            [reference], lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay, amsgrad=True
        )
        param = start.clone()
        state = {key: torch.zeros(4, 3) for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")}
        for s, grad in enumerate(grads, start=1):
            reference.grad = grad.clone()
            optimizer.step()
            candidate(
                param,
                grad.clone(),
                state,
                s,
                lr=lr,
                betas=(0.9, 0.95),
                eps=1e-8,
                weight_decay=weight_decay,
            )
        what = (
            f"the weights after {steps} step(s) (lr={lr}, weight_decay={weight_decay}, gradients "
            f"x{decay} per step) vs torch.optim.AdamW(amsgrad=True)"
        )
        expect_close(param, reference.detach(), what, atol=1e-6, rtol=1e-5)
        expected = optimizer.state[reference]
        expect_close(
            state["max_exp_avg_sq"],
            expected["max_exp_avg_sq"],
            'state["max_exp_avg_sq"] (the largest raw second moment so far)',
            atol=1e-9,
        )

    return Case(name, run)


register(
    Exercise(
        key="5.2",
        in_place=True,
        title="amsgrad_step(param, grad, state, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, "
        "weight_decay=0.01): one AdamW update with AMSGrad's maximum, param and state's "
        "exp_avg, exp_avg_sq, max_exp_avg_sq updated in place",
        cases=[
            _amsgrad_case("one step: the maximum is the moment itself", 1, 1e-2, 0.0, 1.0, 0),
            _amsgrad_case("shrinking gradients, where the maximum matters", 6, 1e-2, 0.0, 0.3, 10),
            _amsgrad_case("shrinking gradients with weight decay 0.1", 5, 1e-2, 0.1, 0.5, 20),
        ],
        solution=_solution_amsgrad_step,
        wrong_answers=[
            _wrong_amsgrad_plain_adamw,
            _wrong_amsgrad_max_before_update,
            _wrong_amsgrad_max_of_corrected,
        ],
        hint="Start from the chapter's AdamW step, with the moments read from state. After "
        "updating "
        'state["exp_avg_sq"], set state["max_exp_avg_sq"] to the elementwise maximum of itself and '
        "exp_avg_sq (in place: torch.maximum(a, b, out=a)); then divide by "
        "sqrt(max_exp_avg_sq / (1 - beta2 ** step)) + eps instead of the current moment.",
        difficulty=2,
    )
)

# ---------------------------------------------------------------- 5.3 label smoothing


def _solution_smoothed_loss(
    logits: torch.Tensor, targets: torch.Tensor, smoothing: float
) -> torch.Tensor:
    log_probs = torch.log_softmax(logits, dim=-1)  # (N, V)
    nll = -log_probs.gather(-1, targets[:, None]).squeeze(-1)  # the usual loss, (N,)
    uniform = -log_probs.mean(dim=-1)  # the loss against a uniform target, (N,)
    return ((1 - smoothing) * nll + smoothing * uniform).mean()


def _wrong_smoothing_others_only(logits, targets, smoothing):
    """Spreads the smoothing over the V - 1 wrong classes only: PyTorch's (and the original) label
    smoothing spreads smoothing / V over ALL V classes, the right one included."""
    log_probs = torch.log_softmax(logits, dim=-1)
    v = logits.shape[-1]
    target = torch.full_like(log_probs, smoothing / (v - 1)).scatter(
        -1, targets[:, None], 1 - smoothing
    )
    return -(target * log_probs).sum(-1).mean()


def _wrong_smoothing_on_probabilities(logits, targets, smoothing):
    """Smooths the predicted probabilities instead of the target:
    the target distribution is mixed with the uniform one."""
    probs = torch.softmax(logits, dim=-1) * (1 - smoothing) + smoothing / logits.shape[-1]
    return -probs.log().gather(-1, targets[:, None]).mean()


def _smoothing_case(name: str, n: int, v: int, smoothing: float, seed: int) -> Case:
    def run(candidate):
        logits, targets = (
            _randn(n, v, seed=seed) * 2,
            torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(seed)),
        )
        expected = F.cross_entropy(logits, targets, label_smoothing=smoothing)
        got = candidate(logits.clone(), targets.clone(), smoothing)
        expect_close(
            got,
            expected,
            f"smoothed_loss of {n} rows of {v} logits, smoothing={smoothing}, vs "
            "F.cross_entropy(label_smoothing=...)",
        )

    return Case(name, run)


def _run_smoothing_by_hand(candidate) -> None:
    # Uniform logits over 4 classes: every log-probability is -ln 4, smoothed or not.
    expect_close(
        candidate(torch.zeros(2, 4), torch.tensor([0, 3]), 0.2),
        torch.tensor(math.log(4)),
        "smoothed_loss of uniform logits (ln 4 whatever the smoothing)",
    )


register(
    Exercise(
        key="5.3",
        title="smoothed_loss(logits, targets, smoothing): cross-entropy of (N, V) logits against "
        "targets with label smoothing",
        cases=[
            Case("uniform logits by hand", _run_smoothing_by_hand),
            _smoothing_case("smoothing 0 is the plain cross-entropy", 5, 7, 0.0, 1),
            _smoothing_case("smoothing 0.1", 6, 5, 0.1, 2),
            _smoothing_case("smoothing 0.5 over 3 classes", 4, 3, 0.5, 3),
        ],
        solution=_solution_smoothed_loss,
        wrong_answers=[_wrong_smoothing_others_only, _wrong_smoothing_on_probabilities],
        hint="The target is (1 - smoothing) on the right class plus smoothing / V on every class. "
        "With log_probs = log_softmax(logits): loss = (1 - smoothing) * (-log_probs[target]) + "
        "smoothing * (-log_probs.mean(-1)), averaged over the rows.",
        difficulty=2,
    )
)

# --------------------------------------------------------------- 5.4 the loss over real tokens only


def _solution_masked_loss(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(
        targets.shape
    )  # (B, T)
    mask = mask.float()
    return (losses * mask).sum() / mask.sum()  # mean over the real targets of the whole batch


def _wrong_masked_loss_all(logits, targets, mask):
    """Divides by every position, padding included: the mean
    must be over the real targets only (mask.sum())."""
    losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(
        targets.shape
    )
    return (losses * mask.float()).mean()


def _wrong_masked_loss_per_row(logits, targets, mask):
    """Averages each sequence first, then the sequences: a short sequence's tokens then weigh more
    than a long one's. Average over all real tokens of the batch at once."""
    losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(
        targets.shape
    )
    mask = mask.float()
    return ((losses * mask).sum(-1) / mask.sum(-1)).mean()


def _wrong_masked_loss_unmasked(logits, targets, mask):
    """Ignores the mask: the padding targets are not text and must not count."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def _run_masked_loss_by_hand(candidate) -> None:
    # Uniform logits over 4 (loss ln 4 each) except the
    # padding positions, which are made very wrong.
    logits = torch.zeros(1, 3, 4)
    logits[0, 2] = torch.tensor([-50.0, 50.0, 0.0, 0.0])
    targets = torch.tensor([[0, 1, 0]])
    mask = torch.tensor([[True, True, False]])
    expect_close(
        candidate(logits, targets, mask),
        torch.tensor(math.log(4)),
        "masked_loss with the last (padding) position very wrong",
    )


def _run_masked_loss_batch(candidate) -> None:
    logits = _randn(3, 5, 6, seed=4)
    targets = torch.randint(0, 6, (3, 5), generator=torch.Generator().manual_seed(5))
    lengths = torch.tensor([5, 2, 4])
    mask = torch.arange(5)[None, :] < lengths[:, None]
    expected = F.cross_entropy(logits[mask], targets[mask])  # the real targets, all in one list
    expect_close(
        candidate(logits, targets, mask),
        expected,
        "masked_loss of 3 sequences with 5, 2 and 4 real targets",
    )


register(
    Exercise(
        key="5.4",
        title="masked_loss(logits, targets, mask): the mean cross-entropy over the targets where "
        "mask is True, (B, T, V) logits",
        cases=[
            Case("padding positions do not count", _run_masked_loss_by_hand),
            Case(
                "sequences of different lengths: every real token weighs the same",
                _run_masked_loss_batch,
            ),
        ],
        solution=_solution_masked_loss,
        wrong_answers=[
            _wrong_masked_loss_all,
            _wrong_masked_loss_per_row,
            _wrong_masked_loss_unmasked,
        ],
        hint="F.cross_entropy(..., reduction='none') gives one loss per position; multiply by the "
        "mask (as floats) and divide the sum by mask.sum(), the number of real targets in the "
        "whole batch.",
        difficulty=2,
    )
)
