"""sydsgpt.rewards: verifiable tasks, the answer parser and the reward, pinned by hand-checked
cases and a seeded fuzz run (random and adversarial replies, none may raise or hang)."""

from __future__ import annotations

import random
import time

import pytest

from sydsgpt.rewards import (
    ANSWER_INSTRUCTION,
    KINDS,
    MAX_DEPTH,
    Task,
    ask,
    count_tasks,
    difficulty_range,
    evaluate_expression,
    extract_answer,
    format_reward,
    make_tasks,
    reward,
)

ADD = Task("What is 47 + 38?", "85", "add", 2)
ADD_BIG = Task("What is 617 + 617?", "1234", "add", 3)
SUB = Task("What is 12 - 24?", "-12", "sub", 2)
MUL = Task("What is 999 * 999?", "998001", "mul", 3)
COUNT = Task('How many times does the letter "r" occur in "strawberry"?', "3", "count", 10)
COUNTDOWN = Task(
    "Use the numbers 3, 4, 6, 25 to make 34.", "25 + 6 + 3", "countdown", 4, (3, 4, 6, 25), 34
)

# Written and checked by hand (not computed by the code under test): reply, task, reward.
HAND_CHECKED = [
    ("Answer: 85", ADD, 1.0),
    ("answer: 85", ADD, 1.0),
    ("ANSWER: 85", ADD, 1.0),
    ("final answer: 85", ADD, 1.0),
    ("47 + 38 = 85\nAnswer: 85.", ADD, 1.0),
    ("**Answer:** 85", ADD, 1.0),
    ("**Answer**: **85**", ADD, 1.0),
    ("Answer: +85", ADD, 1.0),
    ("Answer: 85 apples", ADD, 1.0),
    ("Answer: 85 (47 + 38)", ADD, 1.0),
    ("Answer: 47 + 38 = 85", ADD, 1.0),
    ("Answer:\n\n85", ADD, 1.0),
    ("<answer>85</answer>", ADD, 1.0),
    ("<answer><answer>85</answer>", ADD, 1.0),
    ("Ａｎｓｗｅｒ：８５", ADD, 1.0),  # full-width letters, colon and digits
    ("The sum is 85.", ADD, 1.0),  # no Answer: line, so the last number
    ("The answer is 85", ADD, 1.0),
    ("Answer: 84\nAnswer: 85", ADD, 1.0),
    ("Answer: 84", ADD, 0.0),
    ("Answer: 85\nAnswer: 84", ADD, 0.0),  # the last answer counts
    ("Answer: 85\nAnswer:", ADD, 0.0),  # ... even an empty one
    ("Answer: 5\nActually the answer is 85", ADD, 0.0),  # an Answer: line beats loose numbers
    ("85 is wrong, it is 86", ADD, 0.0),
    ("", ADD, 0.0),
    ("Answer:", ADD, 0.0),
    ("Answer: 85.5", ADD, 0.0),
    ("Answer: eighty-five", ADD, 0.0),
    ("Answer: 1,234", ADD_BIG, 1.0),
    ("Answer: 1 234", ADD_BIG, 1.0),
    ("Answer: 1.234", ADD_BIG, 0.0),
    ("Answer: 12, 34", ADD_BIG, 0.0),
    ("Answer: -12", SUB, 1.0),
    ("Answer: \u221212", SUB, 1.0),  # the unicode minus sign
    ("Answer: 12", SUB, 0.0),
    ("Answer: 998,001", MUL, 1.0),
    ("Answer: 998 001", MUL, 1.0),
    ("Answer: 0998001", MUL, 1.0),
    ("Answer: 998001.0", MUL, 0.0),
    ("Answer: 998.001", MUL, 0.0),
    ("Answer: 3", COUNT, 1.0),
    ("There are 3 r's in strawberry.\nAnswer: 2", COUNT, 0.0),
    ("Answer: 25 + 6 + 3", COUNTDOWN, 1.0),
    ("Answer: 25+6+3 = 34", COUNTDOWN, 1.0),
    ("Answer: ((25)) + (6 + 3)", COUNTDOWN, 1.0),
    ("Answer: `(25 + 3) + 6`.", COUNTDOWN, 1.0),
    ("<answer>6 + 25 + 3</answer>", COUNTDOWN, 1.0),
    ("Answer: 25 + 6 + 3 = 35", COUNTDOWN, 0.0),  # a false claim after "="
    ("Answer: 3 * 6 + 4 * 4", COUNTDOWN, 0.0),  # 34, but 4 is used twice
    ("Answer: 25 + 9", COUNTDOWN, 0.0),  # 9 is not given
    ("Answer: 34", COUNTDOWN, 0.0),
    ("Answer: (25 + 6 + 3", COUNTDOWN, 0.0),
    ("Answer: 25 + 6 + 4", COUNTDOWN, 0.0),
    ("25 + 6 + 3", COUNTDOWN, 0.0),  # no Answer: line: no fallback for an expression
]


@pytest.mark.parametrize(("text", "task", "expected"), HAND_CHECKED)
def test_reward_on_hand_checked_replies(text: str, task: Task, expected: float) -> None:
    assert reward(task, text) == expected


def test_the_table_is_large_and_balanced() -> None:
    assert len(HAND_CHECKED) >= 25
    assert {task.kind for _, task, _ in HAND_CHECKED} == set(KINDS)
    assert 15 <= sum(expected for _, _, expected in HAND_CHECKED) <= len(HAND_CHECKED) - 15


@pytest.mark.parametrize(
    ("text", "numeric", "expected"),
    [
        ("Answer: 42.", True, "42"),
        ("Answer: -0", True, "0"),
        ("no digits at all", True, None),
        ("Answer: 1,2,3", True, "1"),
        ("the list 1,2,3", True, "3"),
        ("10-12", True, "12"),  # a minus between operands is not a sign
        ("x = -7", True, "-7"),
        ("Answer: (3 + 5) * 3.", False, "(3 + 5) * 3"),
        ("**Answer:** `2 * 21`", False, "2 * 21"),
        ("Answer:   \n", False, None),
        ("the answer is 2 * 21", False, None),
    ],
)
def test_extract_answer(text: str, numeric: bool, expected: str | None) -> None:
    assert extract_answer(text, numeric=numeric) == expected


@pytest.mark.parametrize("text", [None, b"Answer: 85", 85, ["Answer: 85"]])
def test_anything_but_a_string_scores_zero(text: object) -> None:
    assert extract_answer(text) is None
    assert reward(ADD, text) == 0.0 and reward(COUNTDOWN, text) == 0.0
    assert format_reward(text) == 0.0


def test_format_reward_is_separate_from_correctness() -> None:
    assert format_reward("Answer: 84") == 1.0 and reward(ADD, "Answer: 84") == 0.0
    assert format_reward("The sum is 85.") == 0.0 and reward(ADD, "The sum is 85.") == 1.0
    assert format_reward("Answer:") == 0.0


@pytest.mark.parametrize(
    ("text", "numbers", "expected"),
    [
        ("2 + 3 * 4", None, 14),
        ("(2 + 3) * 4", None, 20),
        ("10 - 4 - 3", None, 3),
        ("7 × 6", None, 42),
        ("2 - 5", None, -3),
        ("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH, None, 1),
        ("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), None, None),
        ("(" * 10_000 + "1" + ")" * 10_000, None, None),
        ("-3 + 5", None, None),  # no unary minus
        ("3 / 1", None, None),
        ("2 ** 3", None, None),
        ("²", None, None),
        ("", None, None),
        ("(1 + 2", None, None),
        ("1 + 2)", None, None),
        ("1 2", None, None),
        ("3 * 8", (3, 8), 24),
        ("3 * 3", (3, 8), None),
        ("3 * 3", (3, 3, 8), 9),
        ("4 * 6", (3, 8), None),
    ],
)
def test_evaluate_expression(text: str, numbers: tuple[int, ...] | None, expected: int) -> None:
    assert evaluate_expression(text, numbers) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_make_tasks_is_seeded_and_each_canonical_answer_scores_one(kind: str) -> None:
    difficulty = difficulty_range(kind)[0] + 1
    tasks = make_tasks(kind, 30, difficulty, seed=7)
    assert tasks == make_tasks(kind, 30, difficulty, seed=7)
    assert tasks != make_tasks(kind, 30, difficulty, seed=8)
    assert len({t.prompt for t in tasks}) == 30
    for task in tasks:
        assert (task.kind, task.difficulty) == (kind, difficulty)
        assert reward(task, f"Some thinking.\nAnswer: {task.answer}") == 1.0
        assert ask(task) == f"{task.prompt}\n{ANSWER_INSTRUCTION}"


def test_the_tasks_mean_what_their_prompts_say() -> None:
    (add,) = make_tasks("add", 1, 3, seed=0)
    a, b = (int(x) for x in add.prompt.removeprefix("What is ").rstrip("?").split(" + "))
    assert 100 <= a <= 999 and 100 <= b <= 999 and add.answer == str(a + b)
    for task in make_tasks("countdown", 20, 5, seed=0):
        assert len(task.numbers) == 5 and all(1 <= n <= 20 for n in task.numbers)
        assert task.target not in task.numbers and 1 <= task.target <= 999
        assert evaluate_expression(task.answer, task.numbers) == task.target
    for task in make_tasks("count", 20, 6, seed=0):
        letter, word = task.prompt.split('"')[1::2]
        assert len(word) == 6 and task.answer == str(word.count(letter))


def test_a_whole_small_space_can_be_asked_for_but_no_more() -> None:
    assert count_tasks("add", 1) == 100  # 0-9 + 0-9
    assert len({t.prompt for t in make_tasks("add", 100, 1, seed=3)}) == 100
    with pytest.raises(ValueError, match=r"asked for 101 distinct 'add' tasks .* only 100 exist"):
        make_tasks("add", 101, 1, seed=3)
    assert count_tasks("countdown", 2) == 210  # pairs from 1-20, repeats allowed
    assert count_tasks("count", 1) == 64  # one of 8 letters, asked about one of 8
    assert make_tasks("mul", 0, 4) == []


@pytest.mark.parametrize(
    ("kind", "difficulty", "message"),
    [
        ("div", 1, r"kind must be one of \('add'"),
        ("add", 0, r"difficulty of 'add' tasks \(digits per operand\) must be in \[1, 18\], got 0"),
        ("countdown", 7, r"must be in \[2, 6\], got 7"),
        ("count", 1.5, "difficulty must be an integer"),
    ],
)
def test_make_tasks_refuses_bad_arguments(kind: str, difficulty: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_tasks(kind, 1, difficulty)  # type: ignore[arg-type]


MEGABYTE = 1_000_000
HUGE = {
    "answer markers": "Answer:" * (MEGABYTE // 7),
    "answer words": "answer " * (MEGABYTE // 7),
    "markers with spaces": ("answer" + " " * 1000) * (MEGABYTE // 1006),
    "a digit run": "9" * MEGABYTE,
    "thousands groups with a bad end": "1" + ",234" * (MEGABYTE // 4) + "5",
    "spaced groups with a bad end": "1" + " 234" * (MEGABYTE // 4) + "5",
    "parentheses": "Answer: " + "(" * MEGABYTE,
    "full-width digits": "８" * MEGABYTE,
    "long answer line": "Answer: " + "x" * MEGABYTE + " 85",
}


@pytest.mark.parametrize("name", HUGE)
def test_megabyte_replies_take_linear_time(name: str) -> None:
    # a quadratic path would take hours on a megabyte; linear is well under a second
    start = time.perf_counter()
    for task in (ADD, COUNTDOWN):
        assert reward(task, HUGE[name]) in (0.0, 1.0)
    assert time.perf_counter() - start < 5.0, f"{name}: too slow for linear time"


def _fuzz_replies(rng: random.Random, count: int) -> list[str]:
    """Random and adversarial replies: unicode, decoded random bytes, digit runs, markers,
    nested parentheses, and near-misses of correct answers."""
    pieces = ["Answer:", "answer", "<answer>", "</answer>", "**", "=", ",", " ", "\n", "-", "."]
    pieces += ["(", ")", "*", "+", "×", "\u2212", "１", "٣", "²", "25", "6", "3", "85", "1,234"]
    replies = []
    for i in range(count):
        form = i % 8
        if form == 0:
            text = "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(200)))
        elif form == 1:
            text = rng.randbytes(rng.randrange(300)).decode("utf-8", errors="replace")
        elif form == 2:
            text = "Answer: " + "".join(rng.choice("0123456789, .") for _ in range(5000))
        elif form == 3:
            text = "".join(rng.choice(pieces) for _ in range(rng.randrange(60)))
        elif form == 4:
            depth = rng.randrange(200)
            text = "Answer: " + "(" * depth + "25 + 6 + 3" + ")" * rng.randrange(depth + 2)
        elif form == 5:
            text = "Answer: " + "".join(rng.choice("()+-*34625 ") for _ in range(rng.randrange(80)))
        else:
            base = rng.choice(["Answer: 85", "Answer: 25 + 6 + 3", "<answer>-12</answer>"])
            cut = rng.randrange(len(base) + 1)
            text = base[:cut] + rng.choice(pieces) + base[cut:]
        replies.append(text)
    replies += ["Answer:" * (MEGABYTE // 7), "9" * MEGABYTE, "(" * MEGABYTE + ")" * MEGABYTE]
    return replies


def test_fuzz_reward_is_always_a_float_in_0_1_and_fast() -> None:
    rng = random.Random(2026)
    replies = _fuzz_replies(rng, 4000)
    tasks = [ADD, SUB, MUL, COUNT, COUNTDOWN, *make_tasks("countdown", 5, 6, seed=1)]
    start = time.perf_counter()
    scores = []
    for text in replies:
        for task in tasks:
            score = reward(task, text)
            assert isinstance(score, float) and 0.0 <= score <= 1.0, (task, text[:200])
            scores.append(score)
        assert format_reward(text) in (0.0, 1.0)
    elapsed = time.perf_counter() - start
    assert len(scores) == len(replies) * len(tasks) > 40_000
    assert 0 < sum(scores) < len(scores)  # the near-misses find both outcomes
    assert elapsed < 20.0, f"the fuzz run took {elapsed:.1f} s"
