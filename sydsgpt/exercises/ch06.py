"""Chapter 6 exercises: min-p, frequency and presence
penalties, a softmax that does not overflow, beam search."""

from __future__ import annotations

import math

import torch

from .checker import Case, Exercise, expect_close, expect_equal, register

INF = float("inf")


def _as_list(t: torch.Tensor) -> list:
    return t.tolist()


def _check_untouched(original: torch.Tensor, given: torch.Tensor) -> None:
    if not torch.equal(original, given):
        raise AssertionError(
            "the input logits were modified; return a new tensor (e.g. logits.masked_fill(...), "
            "not masked_fill_)"
        )


def _check_filtered(result: torch.Tensor, expected: list, what: str) -> None:
    if not isinstance(result, torch.Tensor):
        raise AssertionError(f"{what}: expected a tensor, got {type(result).__name__}")
    expect_equal(tuple(result.shape), tuple(torch.tensor(expected).shape), f"{what}: shape")
    got = _as_list(result)
    if got != expected:
        zeros = bool(((result == 0) & (torch.tensor(expected) == -INF)).any())
        note = (
            " (a removed token must get -inf, not 0: exp(0) = 1 is still a real probability)"
            if zeros
            else ""
        )
        raise AssertionError(f"{what}: expected {_rounded(expected)}, got {_rounded(got)}{note}")


def _rounded(values: list) -> list:
    """Values rounded to 4 decimals, for messages."""
    return [_rounded(v) if isinstance(v, list) else round(v, 4) for v in values]


# ---------------------------------------------------------------- 6.1 min-p


def _solution_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    probs = torch.softmax(logits, dim=-1)
    threshold = (
        min_p * probs.max(dim=-1, keepdim=True).values
    )  # scaled by the top token's probability
    return logits.masked_fill(probs < threshold, -INF)


def _wrong_min_p_absolute(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Uses min_p as an absolute probability threshold: min-p scales it by the most likely token's
    probability, so the cut adapts to how confident the model is."""
    return logits.masked_fill(torch.softmax(logits, dim=-1) < min_p, -INF)


def _wrong_min_p_on_logits(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Compares logits with min_p times the largest logit:
    the rule is about probabilities (softmax first)."""
    return logits.masked_fill(logits < min_p * logits.max(dim=-1, keepdim=True).values, -INF)


def _wrong_min_p_strict(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keeps only the tokens ABOVE the threshold (>): a token exactly at min_p times the top
    probability is kept ("at least"), and so is the top token itself when min_p = 1."""
    probs = torch.softmax(logits, dim=-1)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probs <= threshold, -INF)


def _wrong_min_p_zero(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Sets the removed logits to 0: exp(0) = 1 is still a real probability; use -inf."""
    kept = _solution_min_p(logits, min_p)
    return torch.where(kept == -INF, torch.zeros_like(logits), logits)


def _min_p_case(name: str, probs: list, min_p: float, kept: list) -> Case:
    def run(candidate):
        logits = torch.tensor(probs).log()
        given = logits.clone()
        result = candidate(given, min_p)
        _check_untouched(logits, given)
        rows = kept if isinstance(kept[0], list) else [kept]
        flat = logits.tolist() if isinstance(kept[0], list) else [logits.tolist()]
        expected = [[v if k else -INF for v, k in zip(r, m)] for r, m in zip(flat, rows)]
        _check_filtered(
            result,
            expected if isinstance(kept[0], list) else expected[0],
            f"min_p(log({probs}), min_p={min_p})",
        )

    return Case(name, run)


register(
    Exercise(
        key="6.1",
        title="min_p(logits, min_p): keep the tokens whose probability is at least min_p times the "
        "top token's; -inf for the rest",
        cases=[
            _min_p_case(
                "a confident model keeps few tokens",
                [0.8, 0.1, 0.07, 0.03],
                0.1,
                [True, True, False, False],
            ),
            _min_p_case(
                "an unsure model keeps many", [0.3, 0.25, 0.25, 0.2], 0.1, [True, True, True, True]
            ),
            _min_p_case(
                "each row against its own top token",
                [[0.5, 0.38, 0.12], [0.9, 0.06, 0.04]],
                0.2,
                [[True, True, True], [True, False, False]],
            ),
            # exactly on the threshold: min_p = 1 keeps the top token and the tokens tied with it
            _min_p_case(
                "exactly on the threshold: 'at least' keeps it",
                [[0.4, 0.4, 0.2], [1.0, 0.0, 0.0]],
                1.0,
                [[True, True, False], [True, False, False]],
            ),
        ],
        solution=_solution_min_p,
        wrong_answers=[
            _wrong_min_p_absolute,
            _wrong_min_p_on_logits,
            _wrong_min_p_zero,
            _wrong_min_p_strict,
        ],
        hint="probs = softmax(logits); the threshold is min_p * probs.max(dim=-1, "
        "keepdim=True).values; return logits.masked_fill(probs < threshold, float('-inf')) (a new "
        "tensor, the input unchanged).",
        difficulty=1,
    )
)

# ------------------------------------------------------------- 6.2 frequency and presence penalties


def _solution_freq_presence(
    logits: torch.Tensor,
    generated_ids: list[int],
    frequency_penalty: float,
    presence_penalty: float,
) -> torch.Tensor:
    counts = torch.bincount(
        torch.tensor(generated_ids, dtype=torch.long), minlength=logits.shape[-1]
    ).to(logits.dtype)
    return logits - frequency_penalty * counts - presence_penalty * (counts > 0).to(logits.dtype)


def _wrong_freq_presence_once(logits, generated_ids, frequency_penalty, presence_penalty):
    """Charges the frequency penalty once per distinct token: it grows with the COUNT (a token seen
    three times loses 3 * frequency_penalty); only the presence penalty is charged once."""
    out = logits.clone()
    for token in set(generated_ids):
        out[token] -= frequency_penalty + presence_penalty
    return out


def _wrong_freq_presence_every_time(logits, generated_ids, frequency_penalty, presence_penalty):
    """Charges the presence penalty on every occurrence:
    it is a one-off for any token that appeared at all."""
    out = logits.clone()
    for token in generated_ids:
        out[token] -= frequency_penalty + presence_penalty
    return out


def _wrong_freq_presence_multiplies(logits, generated_ids, frequency_penalty, presence_penalty):
    """Divides the logits like the repetition penalty: these penalties SUBTRACT from the logit."""
    out = logits.clone()
    for token in set(generated_ids):
        n = generated_ids.count(token)
        out[token] = out[token] / (1 + frequency_penalty * n + presence_penalty)
    return out


def _freq_case(
    name: str, logits: list, ids: list, freq: float, pres: float, expected: list
) -> Case:
    def run(candidate):
        given = torch.tensor(logits)
        result = candidate(given, list(ids), freq, pres)
        _check_untouched(torch.tensor(logits), given)
        expect_close(
            result,
            expected,
            f"penalize_counts({logits}, {ids}, frequency_penalty={freq}, presence_penalty={pres})",
        )

    return Case(name, run)


register(
    Exercise(
        key="6.2",
        title="penalize_counts(logits, generated_ids, frequency_penalty, presence_penalty): "
        "OpenAI-style penalties on a (V,) logits vector",
        cases=[
            _freq_case(
                "frequency only: minus count x penalty",
                [1.0, 2.0, 3.0],
                [0, 2, 2, 2],
                0.5,
                0.0,
                [0.5, 2.0, 1.5],
            ),
            _freq_case(
                "presence only: minus the penalty once",
                [1.0, 2.0, 3.0],
                [0, 2, 2, 2],
                0.0,
                0.5,
                [0.5, 2.0, 2.5],
            ),
            _freq_case(
                "both, and a negative logit goes further down",
                [-1.0, 0.0, 2.0, 4.0],
                [0, 0, 3],
                0.25,
                1.0,
                [-2.5, 0.0, 2.0, 2.75],
            ),
            _freq_case("nothing generated yet", [1.0, -1.0], [], 1.0, 1.0, [1.0, -1.0]),
        ],
        solution=_solution_freq_presence,
        wrong_answers=[
            _wrong_freq_presence_once,
            _wrong_freq_presence_every_time,
            _wrong_freq_presence_multiplies,
        ],
        hint="Count each token's occurrences (torch.bincount(..., minlength=V)); subtract "
        "frequency_penalty * count, and presence_penalty where count > 0. Subtraction lowers a "
        "logit whatever its sign, unlike chapter 6's division.",
        difficulty=2,
    )
)

# ---------------------------------------------------------------- 6.3 softmax with temperature


def _solution_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    scaled = logits / temperature
    scaled = scaled - scaled.max(dim=-1, keepdim=True).values  # exp of large numbers overflows
    weights = scaled.exp()
    return weights / weights.sum(dim=-1, keepdim=True)


def _wrong_temperature_multiplies(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Multiplies by the temperature: softmax(logits /
    T) divides, so T < 1 sharpens and T > 1 flattens."""
    return torch.softmax(logits * temperature, dim=-1)


def _wrong_temperature_overflows(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Exponentiates the raw scaled logits: exp(2000) overflows to inf and inf / inf = nan. Subtract
    each row's max first (softmax does not change)."""
    weights = (logits / temperature).exp()  # inf / inf = nan for large logits
    return weights / weights.sum(dim=-1, keepdim=True)


def _temperature_case(name: str, logits: list, temperature: float) -> Case:
    # Expected values written from the formula exp(z_i
    # / T) / sum_j exp(z_j / T), shifted by the max.
    def expected_row(row: list) -> list:
        top = max(row)
        weights = [math.exp((z - top) / temperature) for z in row]
        return [w / sum(weights) for w in weights]

    expected = (
        [expected_row(r) for r in logits] if isinstance(logits[0], list) else expected_row(logits)
    )

    def run(candidate):
        result = candidate(torch.tensor(logits, dtype=torch.float32), temperature)
        if isinstance(result, torch.Tensor) and torch.isnan(result).any():
            raise AssertionError(
                f"probabilities for logits {logits} contain nan: exp overflowed. Subtract the max "
                "first."
            )
        expect_close(result, expected, f"softmax_with_temperature({logits}, T={temperature})")

    return Case(name, run)


register(
    Exercise(
        key="6.3",
        title="softmax_with_temperature(logits, temperature): probabilities softmax(logits / T) "
        "over the last dimension",
        cases=[
            _temperature_case("T = 1 is the plain softmax", [2.0, 1.0, 0.0], 1.0),
            _temperature_case("T = 0.5 sharpens", [2.0, 1.0, 0.0], 0.5),
            _temperature_case("T = 2 flattens", [2.0, 1.0, 0.0, -1.0], 2.0),
            _temperature_case("large logits do not overflow", [1000.0, 999.0, 990.0], 0.5),
            _temperature_case(
                "a batch: softmax along the last dimension", [[1.0, 2.0], [3.0, 0.0]], 1.5
            ),
        ],
        solution=_solution_temperature,
        wrong_answers=[_wrong_temperature_multiplies, _wrong_temperature_overflows],
        hint="Divide by the temperature, subtract each row's max (softmax does not change), "
        "exponentiate, normalise.",
        difficulty=1,
    )
)

# ---------------------------------------------------------------- 6.4 beam search


def _solution_beam_search(
    next_log_probs, prompt: list[int], beam_width: int, num_steps: int
) -> list[int]:
    beams = [(0.0, list(prompt))]  # (total log-probability of the new tokens, sequence)
    for _ in range(num_steps):
        candidates = []
        for score, seq in beams:
            log_probs = next_log_probs(seq)  # (V,)
            for token in range(log_probs.shape[-1]):
                candidates.append((score + float(log_probs[token]), seq + [token]))
        candidates.sort(
            key=lambda c: c[0], reverse=True
        )  # sorted() is stable: ties keep the lower token id first
        beams = candidates[:beam_width]
    return beams[0][1]


def _wrong_beam_greedy(next_log_probs, prompt, beam_width, num_steps):
    """Keeps only the best token at each step (that is greedy decoding, a beam of width 1): beam
    search keeps the beam_width best SEQUENCES, so a weak first token with a strong follow-up can
    win."""
    return _solution_beam_search(next_log_probs, prompt, 1, num_steps)


def _wrong_beam_last_step_score(next_log_probs, prompt, beam_width, num_steps):
    """Ranks the candidates by the last token's log-probability alone: a sequence's score is the SUM
    of the log-probabilities of all its new tokens."""
    beams = [(0.0, list(prompt))]
    for _ in range(num_steps):
        candidates = []
        for _, seq in beams:
            log_probs = next_log_probs(seq)
            candidates += [(float(log_probs[t]), seq + [t]) for t in range(log_probs.shape[-1])]
        candidates.sort(key=lambda c: c[0], reverse=True)
        beams = candidates[:beam_width]
    return beams[0][1]


def _wrong_beam_drops_prompt(next_log_probs, prompt, beam_width, num_steps):
    """Returns only the new tokens: the result is the whole
    sequence, prompt included, as generate() returns it."""
    return _solution_beam_search(next_log_probs, prompt, beam_width, num_steps)[len(prompt) :]


def _table_model(table: dict[tuple[int, ...], list[float]], vocab: int):
    """A stand-in model: the next-token probabilities after
    each sequence (after the prompt), else uniform."""

    def next_log_probs(seq: list[int]) -> torch.Tensor:
        probs = table.get(tuple(seq[1:]), [1.0 / vocab] * vocab)
        return torch.tensor(probs).log()

    return next_log_probs


def _beam_case(
    name: str, table: dict, vocab: int, beam_width: int, num_steps: int, expected: list[int]
) -> Case:
    def run(candidate):
        got = list(candidate(_table_model(table, vocab), [0], beam_width, num_steps))
        if got != expected:
            raise AssertionError(
                f"beam_search(prompt [0], beam_width={beam_width}, num_steps={num_steps}): "
                f"expected {expected}, got {got}"
            )

    return Case(name, run)


# After prompt [0]: token 1 is likely (0.6) but leads
# nowhere sure; token 2 (0.4) is followed by 2 with 0.9.
_GARDEN = {(): [0.0, 0.6, 0.4], (1,): [0.0, 0.5, 0.5], (2,): [0.0, 0.1, 0.9]}


def _run_beam_more_steps(candidate) -> None:
    torch.manual_seed(0)
    vocab = 4
    logits = torch.randn(50, vocab, generator=torch.Generator().manual_seed(6))

    def next_log_probs(seq: list[int]) -> torch.Tensor:
        return torch.log_softmax(logits[(sum(seq) * 7 + len(seq)) % 50], -1)

    expected = _solution_beam_search(next_log_probs, [1], 3, 4)
    got = list(candidate(next_log_probs, [1], 3, 4))
    if got != expected:
        raise AssertionError(
            "beam_search with width 3 for 4 steps on a hashed stand-in model: expected "
            f"{expected}, got {got}"
        )


register(
    Exercise(
        key="6.4",
        title="beam_search(next_log_probs, prompt, beam_width, num_steps): the most likely "
        "continuation found by keeping beam_width sequences",
        cases=[
            _beam_case("width 1 is greedy", _GARDEN, 3, 1, 2, [0, 1, 1]),
            _beam_case(
                "width 2 finds the better pair behind a weaker first token",
                _GARDEN,
                3,
                2,
                2,
                [0, 2, 2],
            ),
            Case("width 3, four steps", _run_beam_more_steps),
        ],
        solution=_solution_beam_search,
        wrong_answers=[_wrong_beam_greedy, _wrong_beam_last_step_score, _wrong_beam_drops_prompt],
        hint="Keep a list of (score, sequence), starting with (0, prompt). Each step, extend every "
        "beam by every token (score + log-probability), pool all the candidates, sort by score "
        "(descending; sorted is stable, so ties keep the lower token id first) and keep the best "
        "beam_width. Return the best sequence, prompt included.",
        difficulty=3,
    )
)
