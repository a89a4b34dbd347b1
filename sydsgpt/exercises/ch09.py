"""Chapter 9 exercises: finetuning ideas the chapter does not build (rank-stabilised LoRA
scaling, a per-example masked loss, masking a multi-turn chat, and extracting a LoRA
adapter from a full finetune with the SVD).

Difficulty: ★ a short formula, ★★ a few careful lines, ★★★ a step that needs the
chapter's shapes and conventions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .checker import Case, Exercise, expect_close, expect_equal, register

IGNORE = -100


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------- 9.1 LoRA's update, rank-stabilised


def _solution_lora_delta(
    A: torch.Tensor, B: torch.Tensor, alpha: float, rank_stabilized: bool = False
) -> torch.Tensor:
    rank = A.shape[0]
    scaling = alpha / math.sqrt(rank) if rank_stabilized else alpha / rank
    return scaling * (B @ A)  # (d_out, d_in)


def _wrong_delta_always_over_r(A, B, alpha, rank_stabilized=False):
    """Divides by r also when rank_stabilized: rsLoRA divides alpha by sqrt(r)."""
    return (alpha / A.shape[0]) * (B @ A)


def _wrong_delta_no_scaling(A, B, alpha, rank_stabilized=False):
    """Forgets the scaling: the update is (alpha / r) B A, or (alpha / sqrt(r)) B A."""
    return B @ A


def _wrong_delta_rank_from_B(A, B, alpha, rank_stabilized=False):
    """Takes the rank from B.shape[0]: that is d_out; the rank is A.shape[0] (or B.shape[1])."""
    rank = B.shape[0]
    return (alpha / math.sqrt(rank) if rank_stabilized else alpha / rank) * (B @ A)


def _run_delta_by_hand(candidate) -> None:
    A = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])  # r = 2, d_in = 3
    B = torch.tensor([[1.0, 1.0], [0.0, 2.0], [3.0, 0.0], [1.0, -1.0]])  # d_out = 4
    product = B @ A
    expect_close(
        candidate(A, B, 4.0), 2.0 * product, "r = 2, alpha = 4: the LoRA paper's alpha / r = 2"
    )
    expect_close(
        candidate(A, B, 4.0, rank_stabilized=True),
        (4.0 / math.sqrt(2)) * product,
        "r = 2, alpha = 4, rank_stabilized: alpha / sqrt(r)",
    )


def _run_delta_shapes(candidate) -> None:
    A, B = _randn(8, 16, seed=1), _randn(24, 8, seed=2)
    out = candidate(A, B, 16.0, rank_stabilized=True)
    expect_equal(
        tuple(out.shape),
        (24, 16),
        "the update for d_in = 16, d_out = 24, r = 8 has W's shape (d_out, d_in)",
    )
    expect_close(
        out, (16.0 / math.sqrt(8)) * (B @ A), "r = 8, alpha = 16, rank_stabilized", atol=1e-4
    )


register(
    Exercise(
        key="9.1",
        title="lora_delta(A, B, alpha, rank_stabilized=False): LoRA's weight update, with the "
        "rsLoRA scaling as an option",
        cases=[
            Case("r = 2 by hand", _run_delta_by_hand),
            Case("shapes of a rank-8 update", _run_delta_shapes),
        ],
        solution=_solution_lora_delta,
        wrong_answers=[
            _wrong_delta_always_over_r,
            _wrong_delta_no_scaling,
            _wrong_delta_rank_from_B,
        ],
        hint="A is (r, d_in) and B is (d_out, r), so B @ A has the frozen weight's shape. The LoRA "
        "paper scales it by alpha / r; rank-stabilised LoRA by alpha / sqrt(r), so that a larger "
        "rank does not shrink the update.",
        difficulty=1,
    )
)

# ---------------------------------------------------------------- 9.2 the loss per example


def _solution_per_example_loss(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    losses = F.cross_entropy(
        logits.transpose(1, 2), targets, ignore_index=ignore_index, reduction="none"
    )  # (B, T)
    graded = (targets != ignore_index).float()
    per_example = (losses * graded).sum(dim=1) / graded.sum(
        dim=1
    )  # mean over each row's graded tokens
    return per_example.mean()


def _wrong_loss_token_mean(logits, targets, ignore_index=-100):
    """Averages over all graded tokens of the batch (the
    chapter's loss): long answers then weigh more."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=ignore_index)


def _wrong_loss_divides_by_T(logits, targets, ignore_index=-100):
    """Divides each row's sum by T, the padded length:
    count only the graded (not ignored) tokens."""
    losses = F.cross_entropy(
        logits.transpose(1, 2), targets, ignore_index=ignore_index, reduction="none"
    )
    return (losses.sum(dim=1) / targets.shape[1]).mean()


def _wrong_loss_row_sum(logits, targets, ignore_index=-100):
    """Sums each row's token losses without dividing: each
    example's loss is the mean of its graded tokens."""
    losses = F.cross_entropy(
        logits.transpose(1, 2), targets, ignore_index=ignore_index, reduction="none"
    )
    return losses.sum(dim=1).mean()


def _run_loss_by_hand(candidate) -> None:
    # Uniform logits over 4 ids: every graded token
    # costs ln 4. Row 0 grades 1 token, row 1 grades 3.
    logits = torch.zeros(2, 4, 4)
    logits[1, 1, 2] = math.log(9.0)  # token 2 gets probability 9/12 at row 1, position 1
    targets = torch.tensor([[IGNORE, IGNORE, IGNORE, 1], [IGNORE, 2, 0, 3]])
    uniform, cheap = math.log(4.0), -math.log(9.0 / 12.0)
    expected = (uniform + (cheap + 2 * uniform) / 3) / 2
    expect_close(candidate(logits, targets), expected, "two rows, 1 and 3 graded tokens (by hand)")


def _run_loss_equal_lengths(candidate) -> None:
    logits, targets = (
        _randn(3, 5, 7, seed=3),
        torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(4)),
    )
    targets[:, :2] = IGNORE  # every row grades 3 tokens: then both averages agree
    expect_close(
        candidate(logits, targets),
        _wrong_loss_token_mean(logits, targets),
        "rows with equally many graded tokens",
    )


register(
    Exercise(
        key="9.2",
        title="per_example_loss(logits, targets, ignore_index=-100): mean over each example's "
        "graded tokens, then over the batch",
        cases=[
            Case("two rows by hand", _run_loss_by_hand),
            Case("equal lengths: the token mean", _run_loss_equal_lengths),
        ],
        solution=_solution_per_example_loss,
        wrong_answers=[_wrong_loss_token_mean, _wrong_loss_divides_by_T, _wrong_loss_row_sum],
        hint="F.cross_entropy(..., reduction='none') gives one loss per position (it wants the "
        "classes in dimension 1, so transpose (B, T, V) to (B, V, T)); ignored positions come back "
        "as 0. Count each row's graded tokens with (targets != ignore_index).",
        difficulty=2,
    )
)

# ---------------------------------------------------------------- 9.3 masking a chat


def _solution_chat_targets(
    turns: list[tuple[str, list[int]]], ignore_index: int = -100
) -> tuple[torch.Tensor, torch.Tensor]:
    ids = [i for _, part in turns for i in part]
    graded = [role == "assistant" for role, part in turns for _ in part]
    targets = [
        t if g else ignore_index for t, g in zip(ids[1:], graded[1:])
    ]  # position t predicts ids[t + 1]
    return torch.tensor(ids[:-1]), torch.tensor(targets)


def _wrong_chat_last_answer_only(turns, ignore_index=-100):
    """Grades only the last assistant turn: every
    assistant turn of a chat is a response to learn."""
    last = max(i for i, (role, _) in enumerate(turns) if role == "assistant")
    relabelled = [("assistant" if i == last else "user", part) for i, (_, part) in enumerate(turns)]
    return _solution_chat_targets(relabelled, ignore_index)


def _wrong_chat_not_shifted(turns, ignore_index=-100):
    """Masks by the role of the input token, not of the target: position t predicts token t + 1."""
    ids = [i for _, part in turns for i in part]
    graded = [role == "assistant" for role, part in turns for _ in part]
    return torch.tensor(ids[:-1]), torch.tensor(
        [t if g else ignore_index for t, g in zip(ids[1:], graded[:-1])]
    )


def _wrong_chat_grades_everything(turns, ignore_index=-100):
    """Grades the user's turns too: only what the assistant says is graded."""
    ids = [i for _, part in turns for i in part]
    return torch.tensor(ids[:-1]), torch.tensor(ids[1:])


def _check_pair(result, inputs: list[int], targets: list[int], what: str) -> None:
    if not (isinstance(result, tuple) and len(result) == 2):
        raise AssertionError(
            f"{what}: expected a pair (input_ids, target_ids), got {type(result).__name__}"
        )
    expect_equal(torch.as_tensor(result[0]).tolist(), inputs, f"{what}: input_ids")
    expect_equal(torch.as_tensor(result[1]).tolist(), targets, f"{what}: target_ids")


def _run_chat_by_hand(candidate) -> None:
    turns = [("user", [1, 2]), ("assistant", [3, 4]), ("user", [5]), ("assistant", [6, 9])]
    _check_pair(
        candidate(turns),
        [1, 2, 3, 4, 5, 6],
        [IGNORE, 3, 4, IGNORE, 6, 9],
        "user, assistant, user, assistant",
    )


def _run_chat_one_turn(candidate) -> None:
    turns = [("system", [7]), ("user", [1, 2, 3]), ("assistant", [8, 9])]
    _check_pair(
        candidate(turns),
        [7, 1, 2, 3, 8],
        [IGNORE, IGNORE, IGNORE, 8, 9],
        "a system prompt and one exchange",
    )


register(
    Exercise(
        key="9.3",
        title="chat_targets(turns, ignore_index=-100): (input_ids, target_ids) of a chat, grading "
        "every assistant turn only",
        cases=[
            Case("two exchanges by hand", _run_chat_by_hand),
            Case("system, user, assistant", _run_chat_one_turn),
        ],
        solution=_solution_chat_targets,
        wrong_answers=[
            _wrong_chat_last_answer_only,
            _wrong_chat_not_shifted,
            _wrong_chat_grades_everything,
        ],
        hint="Concatenate the turns' ids and remember each token's role. Inputs are ids[:-1] and "
        "targets ids[1:]; a target is kept when the token it names (ids[t + 1]) belongs to an "
        "assistant turn.",
        difficulty=2,
    )
)

# ---------------------------------------------------------- 9.4 a LoRA adapter from a full finetune


def _solution_extract_lora(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    U, S, Vh = torch.linalg.svd(
        delta, full_matrices=False
    )  # delta = U diag(S) Vh, S in decreasing order
    B = U[:, :rank] * S[:rank]  # (d_out, r)
    A = Vh[:rank]  # (r, d_in)
    return A, B


def _wrong_extract_no_singular_values(delta, rank):
    """Drops the singular values: B must be U[:, :r]
    scaled by S[:r] (or split S between A and B)."""
    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    return Vh[:rank], U[:, :rank]


def _wrong_extract_smallest(delta, rank):
    """Keeps the r smallest singular values: the best rank-r approximation keeps the largest."""
    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    return Vh[-rank:], U[:, -rank:] * S[-rank:]


def _wrong_extract_swapped(delta, rank):
    """Returns (B, A): the pair is (A, B) with A (r, d_in) and B (d_out, r), as in LoRALinear."""
    A, B = _solution_extract_lora(delta, rank)
    return B, A


def _check_adapter(
    result, delta: torch.Tensor, rank: int, expected: torch.Tensor, what: str, atol: float = 1e-4
) -> None:
    if not (isinstance(result, tuple) and len(result) == 2):
        raise AssertionError(f"{what}: expected a pair (A, B), got {type(result).__name__}")
    A, B = result
    d_out, d_in = delta.shape
    expect_equal(
        (tuple(A.shape), tuple(B.shape)), ((rank, d_in), (d_out, rank)), f"{what}: shapes of (A, B)"
    )
    expect_close(B @ A, expected, f"{what}: B @ A", atol=atol)


def _run_extract_exact(candidate) -> None:
    delta = _randn(6, 2, seed=5) @ _randn(2, 9, seed=6)  # a rank-2 update (d_out = 6, d_in = 9)
    _check_adapter(
        candidate(delta, 2), delta, 2, delta, "a rank-2 update, rank 2: recovered exactly"
    )


def _run_extract_by_hand(candidate) -> None:
    delta = torch.diag(torch.tensor([5.0, 3.0, 1.0]))
    _check_adapter(
        candidate(delta, 1),
        delta,
        1,
        torch.diag(torch.tensor([5.0, 0.0, 0.0])),
        "diag(5, 3, 1) at rank 1: keeps the largest direction",
    )


def _run_extract_best(candidate) -> None:
    delta = _randn(12, 10, seed=7)
    A, B = candidate(delta, 3)
    error = torch.linalg.matrix_norm(delta - B @ A).item()
    best = torch.linalg.svdvals(delta)[3:].square().sum().sqrt().item()
    if not math.isclose(error, best, rel_tol=1e-4, abs_tol=1e-4):
        raise AssertionError(
            f"a random (12, 10) delta at rank 3: the error |delta - B A| is {error:.4f}, but the "
            f"best rank-3 approximation's is {best:.4f} (the norm of the dropped singular values)"
        )


register(
    Exercise(
        key="9.4",
        title="extract_lora(delta, rank): the (A, B) whose B @ A best approximates a full "
        "finetune's change delta = W_new - W",
        cases=[
            Case("an update of rank 2", _run_extract_exact),
            Case("a diagonal update by hand", _run_extract_by_hand),
            Case("the best rank-3 approximation", _run_extract_best),
        ],
        solution=_solution_extract_lora,
        wrong_answers=[
            _wrong_extract_no_singular_values,
            _wrong_extract_smallest,
            _wrong_extract_swapped,
        ],
        hint="torch.linalg.svd(delta, full_matrices=False) gives U, S, Vh with delta = U diag(S) "
        "Vh and S sorted from the largest. Keeping the first r terms is the best rank-r "
        "approximation (Eckart-Young); put S into B (or A).",
        difficulty=3,
    )
)
