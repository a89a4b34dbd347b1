"""Chapter 6 exercises: top-k, top-p, temperature and the repetition penalty, on logits vectors."""

from __future__ import annotations

import math

import torch

from .checker import Case, Exercise, expect_close, expect_equal, register

INF = float("inf")


def _as_list(t: torch.Tensor) -> list:
    return t.tolist()


def _check_untouched(original: torch.Tensor, given: torch.Tensor) -> None:
    if not torch.equal(original, given):
        raise AssertionError("the input logits were modified; return a new tensor (e.g. logits.masked_fill(...), not masked_fill_)")


def _check_filtered(result: torch.Tensor, expected: list, what: str) -> None:
    if not isinstance(result, torch.Tensor):
        raise AssertionError(f"{what}: expected a tensor, got {type(result).__name__}")
    expect_equal(tuple(result.shape), tuple(torch.tensor(expected).shape), f"{what}: shape")
    got = _as_list(result)
    if got != expected:
        zeros = bool(((result == 0) & (torch.tensor(expected) == -INF)).any())
        note = " (a removed token must get -inf, not 0: exp(0) = 1 is still a real probability)" if zeros else ""
        raise AssertionError(f"{what}: expected {_rounded(expected)}, got {_rounded(got)}{note}")


def _rounded(values: list) -> list:
    """Values rounded to 4 decimals, for messages."""
    return [_rounded(v) if isinstance(v, list) else round(v, 4) for v in values]


# ---------------------------------------------------------------- 6.1 top-k


def _solution_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k >= logits.shape[-1]:
        return logits.clone()
    kept = torch.topk(logits, k, dim=-1).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, kept, True)
    return logits.masked_fill(~keep, -INF)


def _wrong_top_k_threshold(logits: torch.Tensor, k: int) -> torch.Tensor:
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, -INF)  # keeps every token tied with the k-th


def _wrong_top_k_zero(logits: torch.Tensor, k: int) -> torch.Tensor:
    return torch.where(_solution_top_k(logits, k) == -INF, torch.zeros_like(logits), logits)  # 0 is not "removed"


def _top_k_case(name: str, logits: list, k: int, expected: list) -> Case:
    def run(candidate):
        given = torch.tensor(logits)
        result = candidate(given, k)
        _check_untouched(torch.tensor(logits), given)
        _check_filtered(result, expected, f"top_k({logits}, k={k})")

    return Case(name, run)


def _run_top_k_ties(candidate) -> None:
    logits = [2.0, 5.0, 2.0, 1.0, 2.0]
    result = candidate(torch.tensor(logits), 2)
    kept = sorted(v for v in _as_list(result) if v != -INF)
    if kept == [2.0, 2.0, 2.0, 5.0]:
        raise AssertionError(
            f"top_k({logits}, k=2) kept 4 tokens: every token tied with the 2nd largest survived. Keep exactly k."
        )
    expect_equal(kept, [2.0, 5.0], f"the values kept by top_k({logits}, k=2)")
    expect_equal(sum(v == -INF for v in _as_list(result)), 3, f"number of -inf in top_k({logits}, k=2)")


register(
    Exercise(
        key="6.1",
        title="top_k(logits, k): keep the k largest logits of the last dimension, set the rest to -inf",
        cases=[
            _top_k_case("distinct logits", [1.0, 4.0, 2.0, 3.0], 2, [-INF, 4.0, -INF, 3.0]),
            Case("ties: exactly k tokens survive", _run_top_k_ties),
            _top_k_case("k as large as the vocabulary keeps everything", [0.5, -1.0, 2.0], 3, [0.5, -1.0, 2.0]),
            _top_k_case("a batch: each row on its own", [[1.0, 3.0, 2.0], [9.0, 7.0, 8.0]], 1,
                        [[-INF, 3.0, -INF], [9.0, -INF, -INF]]),
        ],
        solution=_solution_top_k,
        wrong_answers=[_wrong_top_k_threshold, _wrong_top_k_zero],
        hint="torch.topk(logits, k, dim=-1).indices names the survivors; build a boolean mask from them "
        "(scatter) and fill everything else with float('-inf').",
    )
)

# ---------------------------------------------------------------- 6.2 top-p


def _solution_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
    remove_sorted = before >= p
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, -INF)


def _wrong_top_p_drops_crossing(logits: torch.Tensor, p: float) -> torch.Tensor:
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    remove_sorted = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1) > p  # loses the token that reaches p
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, -INF)


def _wrong_top_p_sorted_order(logits: torch.Tensor, p: float) -> torch.Tensor:
    sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    return sorted_logits.masked_fill(probs.cumsum(dim=-1) - probs >= p, -INF)  # forgets to undo the sort


def _top_p_case(name: str, probs: list, p: float, kept: list) -> Case:
    """``probs`` given as logits ``log(probs)``; ``kept`` flags which must survive (unchanged)."""

    def run(candidate):
        logits = torch.tensor(probs).log()
        result = candidate(logits.clone(), p)
        expected = [v if keep else -INF for v, keep in zip(_as_list(logits), kept)]
        _check_filtered(result, expected, f"top_p(log({probs}), p={p})")

    return Case(name, run)


register(
    Exercise(
        key="6.2",
        title="top_p(logits, p): keep the smallest set of most likely tokens whose probability reaches p; -inf for the rest",
        cases=[
            _top_p_case("the token that crosses p is kept", [0.5, 0.3, 0.15, 0.05], 0.75, [True, True, False, False]),
            _top_p_case("the most likely token is always kept", [0.6, 0.3, 0.1], 0.4, [True, False, False]),
            _top_p_case("tokens in any order", [0.15, 0.05, 0.5, 0.3], 0.75, [False, False, True, True]),
            _top_p_case("p = 1 keeps every token", [0.7, 0.2, 0.1], 1.0, [True, True, True]),
        ],
        solution=_solution_top_p,
        wrong_answers=[_wrong_top_p_drops_crossing, _wrong_top_p_sorted_order],
        hint="Sort descending, softmax, cumsum. Keep a token when the mass of the tokens BEFORE it "
        "(cumsum - its own probability) is still below p. Then put the mask back in token order (scatter).",
    )
)

# ---------------------------------------------------------------- 6.3 softmax with temperature


def _solution_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    scaled = logits / temperature
    scaled = scaled - scaled.max(dim=-1, keepdim=True).values  # exp of large numbers overflows
    weights = scaled.exp()
    return weights / weights.sum(dim=-1, keepdim=True)


def _wrong_temperature_multiplies(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits * temperature, dim=-1)


def _wrong_temperature_overflows(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    weights = (logits / temperature).exp()  # inf / inf = nan for large logits
    return weights / weights.sum(dim=-1, keepdim=True)


def _temperature_case(name: str, logits: list, temperature: float) -> Case:
    # Expected values written from the formula exp(z_i / T) / sum_j exp(z_j / T), shifted by the max.
    def expected_row(row: list) -> list:
        top = max(row)
        weights = [math.exp((z - top) / temperature) for z in row]
        return [w / sum(weights) for w in weights]

    expected = [expected_row(r) for r in logits] if isinstance(logits[0], list) else expected_row(logits)

    def run(candidate):
        result = candidate(torch.tensor(logits, dtype=torch.float32), temperature)
        if isinstance(result, torch.Tensor) and torch.isnan(result).any():
            raise AssertionError(f"probabilities for logits {logits} contain nan: exp overflowed. Subtract the max first.")
        expect_close(result, expected, f"softmax_with_temperature({logits}, T={temperature})")

    return Case(name, run)


register(
    Exercise(
        key="6.3",
        title="softmax_with_temperature(logits, temperature): probabilities softmax(logits / T) over the last dimension",
        cases=[
            _temperature_case("T = 1 is the plain softmax", [2.0, 1.0, 0.0], 1.0),
            _temperature_case("T = 0.5 sharpens", [2.0, 1.0, 0.0], 0.5),
            _temperature_case("T = 2 flattens", [2.0, 1.0, 0.0, -1.0], 2.0),
            _temperature_case("large logits do not overflow", [1000.0, 999.0, 990.0], 0.5),
            _temperature_case("a batch: softmax along the last dimension", [[1.0, 2.0], [3.0, 0.0]], 1.5),
        ],
        solution=_solution_temperature,
        wrong_answers=[_wrong_temperature_multiplies, _wrong_temperature_overflows],
        hint="Divide by the temperature, subtract each row's max (softmax does not change), exponentiate, normalise.",
    )
)

# ---------------------------------------------------------------- 6.4 repetition penalty


def _solution_penalty(logits: torch.Tensor, seen_ids: list[int], penalty: float) -> torch.Tensor:
    out = logits.clone()
    for token in set(seen_ids):
        value = out[token]
        out[token] = value / penalty if value > 0 else value * penalty
    return out


def _wrong_penalty_divides_all(logits: torch.Tensor, seen_ids: list[int], penalty: float) -> torch.Tensor:
    out = logits.clone()
    out[list(set(seen_ids))] /= penalty  # a negative logit divided by 2 goes UP: -1 -> -0.5
    return out


def _wrong_penalty_each_time(logits: torch.Tensor, seen_ids: list[int], penalty: float) -> torch.Tensor:
    out = logits.clone()
    for token in seen_ids:  # a token seen twice is penalised twice
        out[token] = out[token] / penalty if out[token] > 0 else out[token] * penalty
    return out


def _penalty_case(name: str, logits: list, seen: list, penalty: float, expected: list) -> Case:
    def run(candidate):
        given = torch.tensor(logits)
        result = candidate(given, list(seen), penalty)
        _check_untouched(torch.tensor(logits), given)
        expect_close(result, expected, f"penalize({logits}, seen_ids={seen}, penalty={penalty})")

    return Case(name, run)


register(
    Exercise(
        key="6.4",
        title="penalize(logits, seen_ids, penalty): CTRL's repetition penalty on a (V,) logits vector",
        cases=[
            _penalty_case("positive seen logits are divided", [2.0, 1.0, 3.0], [0, 2], 2.0, [1.0, 1.0, 1.5]),
            _penalty_case("negative seen logits are multiplied", [2.0, -1.0, 0.5, -3.0], [1, 3], 2.0, [2.0, -2.0, 0.5, -6.0]),
            _penalty_case("a token seen twice is penalised once", [4.0, -2.0], [0, 0, 1, 1], 2.0, [2.0, -4.0]),
            _penalty_case("penalty 1 changes nothing", [1.0, -1.0], [0, 1], 1.0, [1.0, -1.0]),
        ],
        solution=_solution_penalty,
        wrong_answers=[_wrong_penalty_divides_all, _wrong_penalty_each_time],
        hint="Visit each distinct seen token once (set(seen_ids)); divide if its logit is positive, "
        "multiply if negative, so the token always becomes less likely. Work on logits.clone().",
    )
)
