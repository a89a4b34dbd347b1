"""Verifiable tasks for learning from rewards (chapter 10):
questions whose answers a program can check.

Learning from rewards (DPO's preference pairs, GRPO's groups of sampled answers) needs a
reward that is cheap, exact and impossible to argue with. This module makes tasks with such
a reward, parses a model's free-form reply, and scores it:

- :class:`Task` and :func:`make_tasks`: seeded, deterministic task sets of each kind in
  :data:`KINDS`, with a difficulty knob (see :func:`difficulty_range`, :func:`count_tasks`);
- :data:`ANSWER_INSTRUCTION` and :func:`ask`: the question as the model reads it, asking it
  to end with ``Answer: <answer>``;
- :func:`extract_answer`: the model's final answer (rules in its docstring), or ``None``;
- :func:`evaluate_expression`: a tiny safe parser for countdown answers (never ``eval``);
- :func:`reward`: 1.0 for a correct final answer, else 0.0; :func:`format_reward`, a separate
  and optional signal for replies that end with an ``Answer:`` line at all.

Every function here takes any string a model can write (empty, megabytes long, random
unicode) and answers in linear time without raising.
"""

from __future__ import annotations

import itertools
import math
import operator
import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable

from .validation import check_choice, check_int

# ---------------------------------------------------------------------------- the tasks

KINDS = ("add", "sub", "mul", "countdown", "count")
"""The task kinds: three arithmetic ones, a countdown puzzle, counting a letter in a word."""

ANSWER_INSTRUCTION = 'End your reply with a last line of the form "Answer: <your answer>".'
"""What :func:`ask` appends to every task's prompt: the format :func:`extract_answer` reads."""

MAX_DIGITS = 18
"""The largest arithmetic difficulty: operands of this many digits."""

COUNTDOWN_NUMBERS = (2, 6)
"""How many numbers a countdown puzzle gives (its difficulty), least and most."""

COUNTDOWN_LARGEST = 20
"""A countdown puzzle's numbers are drawn from 1 to this (repeats allowed)."""

COUNTDOWN_TARGET_MAX = 999
"""A countdown target is in ``1 .. COUNTDOWN_TARGET_MAX`` and is none of the given numbers."""

COUNT_LETTERS = "abcdefgh"
"""The letters of a counting task's word (a small alphabet, so that counts are not all 0)."""

MAX_WORD = 40
"""The longest word of a counting task (its difficulty is the word's length)."""


@dataclass(frozen=True)
class Task:
    """One question with a checkable answer."""

    prompt: str
    """The question as a user would ask it, e.g. ``"What is 47 + 38?"``."""
    answer: str
    """The canonical answer: an integer written plainly (``"-12"``), or for a countdown
    puzzle one expression that solves it (any other correct one scores the same)."""
    kind: str
    """One of :data:`KINDS`."""
    difficulty: int
    """Digits per operand (arithmetic), numbers given (countdown), word length (count)."""
    numbers: tuple[int, ...] = ()
    """Countdown only: the numbers an answer may use, each at most as often as listed."""
    target: int | None = None
    """Countdown only: the value the expression must reach."""


@dataclass(frozen=True)
class _Kind:
    """How one kind of task is drawn: its difficulties, its task space and its builder."""

    difficulties: tuple[int, int]
    meaning: str  # what the difficulty counts
    total: Callable[[int], int]  # difficulty -> number of distinct tasks
    keys: Callable[[int], Iterable[Hashable]]  # difficulty -> every task's key, in order
    draw: Callable[[random.Random, int], Hashable]  # one random key
    build: Callable[[Hashable, int, random.Random], Task]  # key -> the task


def _operands(digits: int) -> range:
    """The operands of an arithmetic task: 0-9 for one digit, else exactly ``digits`` digits."""
    return range(10) if digits == 1 else range(10 ** (digits - 1), 10**digits)


def _arithmetic(kind: str, symbol: str, op: Callable[[int, int], int]) -> _Kind:
    def build(key: Any, digits: int, rng: random.Random) -> Task:
        a, b = key
        return Task(f"What is {a} {symbol} {b}?", str(op(a, b)), kind, digits)

    return _Kind(
        difficulties=(1, MAX_DIGITS),
        meaning="digits per operand",
        total=lambda d: len(_operands(d)) ** 2,
        keys=lambda d: itertools.product(_operands(d), repeat=2),
        draw=lambda rng, d: (rng.choice(_operands(d)), rng.choice(_operands(d))),
        build=build,
    )


def _countdown_solution(numbers: tuple[int, ...], rng: random.Random) -> tuple[int, str]:
    """A random expression over all of ``numbers`` whose value is a fair target, and that value.

    Pairs are combined at random (a subtraction takes the larger first, so no value is
    negative) until one is left; a draw whose value is out of range is drawn again, and the
    sum (always in range) is the last resort.
    """
    for _ in range(100):
        items = [(n, str(n)) for n in numbers]
        while len(items) > 1:
            a, text_a = items.pop(rng.randrange(len(items)))
            b, text_b = items.pop(rng.randrange(len(items)))
            symbol = rng.choice("+-*")
            if symbol == "-" and a < b:
                (a, text_a), (b, text_b) = (b, text_b), (a, text_a)
            value = {"+": a + b, "-": a - b, "*": a * b}[symbol]
            wrap_a = f"({text_a})" if " " in text_a else text_a
            wrap_b = f"({text_b})" if " " in text_b else text_b
            items.append((value, f"{wrap_a} {symbol} {wrap_b}"))
        value, text = items[0]
        if 1 <= value <= COUNTDOWN_TARGET_MAX and value not in numbers:
            return value, text
    return sum(numbers), " + ".join(map(str, numbers))


def _build_countdown(key: Any, size: int, rng: random.Random) -> Task:
    numbers = tuple(key)
    target, solution = _countdown_solution(numbers, rng)
    listed = ", ".join(map(str, numbers))
    prompt = (
        f"Use the numbers {listed} to make {target}. You may use +, -, * and parentheses, "
        "and each number at most once. Write the expression."
    )
    return Task(prompt, solution, "countdown", size, numbers, target)


def _build_count(key: Any, length: int, rng: random.Random) -> Task:
    word, letter = key
    prompt = f'How many times does the letter "{letter}" occur in "{word}"?'
    return Task(prompt, str(word.count(letter)), "count", length)


_KINDS: dict[str, _Kind] = {
    "add": _arithmetic("add", "+", operator.add),
    "sub": _arithmetic("sub", "-", operator.sub),
    "mul": _arithmetic("mul", "*", operator.mul),
    "countdown": _Kind(
        difficulties=COUNTDOWN_NUMBERS,
        meaning="numbers given",
        total=lambda k: math.comb(COUNTDOWN_LARGEST + k - 1, k),
        keys=lambda k: itertools.combinations_with_replacement(range(1, COUNTDOWN_LARGEST + 1), k),
        draw=lambda rng, k: tuple(sorted(rng.randint(1, COUNTDOWN_LARGEST) for _ in range(k))),
        build=_build_countdown,
    ),
    "count": _Kind(
        difficulties=(1, MAX_WORD),
        meaning="letters in the word",
        total=lambda n: len(COUNT_LETTERS) ** (n + 1),
        keys=lambda n: (
            ("".join(word), letter)
            for word in itertools.product(COUNT_LETTERS, repeat=n)
            for letter in COUNT_LETTERS
        ),
        draw=lambda rng, n: (
            "".join(rng.choice(COUNT_LETTERS) for _ in range(n)),
            rng.choice(COUNT_LETTERS),
        ),
        build=_build_count,
    ),
}


def difficulty_range(kind: str) -> tuple[int, int]:
    """The least and greatest difficulty of ``kind`` (both allowed)."""
    check_choice(kind, "kind", KINDS)
    return _KINDS[kind].difficulties


def count_tasks(kind: str, difficulty: int) -> int:
    """How many distinct tasks of ``kind`` exist at ``difficulty``.

    A countdown puzzle is identified by its numbers (a list holds at most one puzzle per
    set of numbers), so this is the number of multisets of its numbers.
    """
    low, high = difficulty_range(kind)
    check_int(difficulty, "difficulty")
    if not low <= difficulty <= high:
        raise ValueError(
            f"difficulty of {kind!r} tasks ({_KINDS[kind].meaning}) must be in [{low}, {high}], "
            f"got {difficulty}"
        )
    return _KINDS[kind].total(difficulty)


def make_tasks(kind: str, n: int, difficulty: int = 1, seed: int = 0) -> list[Task]:
    """``n`` distinct tasks of ``kind`` at ``difficulty``, the same for the same ``seed``.

    Difficulty: the digits of each operand (``add``, ``sub``, ``mul``; 1 digit means 0-9),
    how many numbers a countdown puzzle gives, the length of a counting task's word.

    Raises:
        ValueError: an unknown kind, a difficulty out of range, or ``n`` larger than
            :func:`count_tasks` (there are not that many distinct tasks).
    """
    total = count_tasks(kind, difficulty)
    check_int(n, "n", minimum=0)
    check_int(seed, "seed")
    if n > total:
        raise ValueError(
            f"asked for {n} distinct {kind!r} tasks at difficulty {difficulty}, but only {total} "
            "exist; ask for fewer or raise the difficulty"
        )
    # the kind is part of the seed, so add/sub/mul of one seed do not share their operands
    spec, rng = _KINDS[kind], random.Random(f"{kind}:{difficulty}:{seed}")
    if 2 * n > total:  # a large share of a small space: sample it whole
        keys: list[Hashable] = rng.sample(list(spec.keys(difficulty)), n)
    else:  # a small share: draw until n distinct (expected under 2 draws per task)
        seen: dict[Hashable, None] = {}
        while len(seen) < n:
            seen.setdefault(spec.draw(rng, difficulty))
        keys = list(seen)
    return [spec.build(key, difficulty, rng) for key in keys]


def ask(task: Task) -> str:
    """The text the model reads: the task's prompt, then :data:`ANSWER_INSTRUCTION`."""
    return f"{task.prompt}\n{ANSWER_INSTRUCTION}"


# ---------------------------------------------------------------------------- the parser

# "answer" (any case, not inside a word, not a closing tag), then ":" (markdown emphasis and
# spaces allowed before it: "**Answer**:") or ">" (a tag: "<answer>").
_MARKER = re.compile(r"(?<![a-z0-9/])answer(?:[ \t*_]*:|>)", re.IGNORECASE | re.ASCII)
_SKIP = re.compile(r"[\s*_`]*")
_CLOSE = re.compile(r"</answer", re.IGNORECASE)
# A run of digits joined by single "," or " " (split into numbers by _integers), a sign only
# where it cannot be a minus between two operands, and a decimal part if any. No part of it
# can fail after matching, so it never backtracks over a run.
_NUMBERS = re.compile(r"(?<![\w.)])([+-]?)(\d+(?:[, ]\d+)*)(\.\d+)?", re.ASCII)
_GROUPED = re.compile(r"\d{1,3}(?:,\d{3})+|\d{1,3}(?: \d{3})+", re.ASCII)
_WRAPPING = " \t*_`$\"'"
_TRAILING = _WRAPPING + ".!?,;:"


def _normalize(text: str) -> str:
    """NFKC (full-width digits and colons become ASCII, no-break spaces plain spaces), and the
    unicode minus sign as ``-``."""
    return unicodedata.normalize("NFKC", text).replace("\u2212", "-")


def _answer_line(text: str) -> str | None:
    """The text after the last answer marker of normalized ``text``: the first non-blank line
    after it, up to a closing ``</answer>``, stripped of markdown and trailing punctuation
    (``None`` without a marker)."""
    last = None
    for last in _MARKER.finditer(text):
        pass
    if last is None:
        return None
    start = _SKIP.match(text, last.end()).end()
    end = text.find("\n", start)
    line = text[start : end if end >= 0 else len(text)]
    close = _CLOSE.search(line)
    if close:
        line = line[: close.start()]
    return line.strip().strip(_WRAPPING).rstrip(_TRAILING)


def _integers(match: re.Match[str]) -> list[str | None]:
    """The canonical integers of a :data:`_NUMBERS` match, ``None`` for a decimal.

    ``1,234`` and ``1 234`` (thousands groups) are one number; any other run (``1,2,3``) is
    several, its sign going to the first and its decimal part to the last.
    """
    sign, run, decimals = match.groups()
    pieces = [run] if _GROUPED.fullmatch(run) else re.split("[, ]", run)
    numbers: list[str | None] = []
    for i, piece in enumerate(pieces):
        digits = piece.replace(",", "").replace(" ", "").lstrip("0") or "0"
        negative = i == 0 and sign == "-" and digits != "0"
        numbers.append(f"-{digits}" if negative else digits)
    if decimals:
        numbers[-1] = None
    return numbers


def extract_answer(text: Any, numeric: bool = True) -> str | None:
    """The final answer in a model's reply ``text``, or ``None`` if it gives none.

    The rules, in order:

    1. The text is NFKC-normalized (full-width ``４２`` reads as ``42``, ``：`` as ``:``) and
       ``−`` (U+2212) reads as ``-``. Only ASCII digits count after that.
    2. The **last** answer marker wins: ``Answer:`` in any case, also ``**Answer:**``,
       ``**Answer**:``, ``Final answer:``, or a tag ``<answer>``. Its answer is the first
       non-blank line after it, cut at ``</answer>``, without markdown (``*_`$``), quotes
       and trailing punctuation (``Answer: 42.`` is 42). A marker with nothing after it
       means no answer: the model's last word counts, not an earlier one.
    3. Numeric answers (``numeric=True``): after the last ``=`` of that line if any
       (``Answer: 47 + 38 = 85``), its first number: ``-12``, ``+7``, thousands separated by
       ``,`` or a space (``1,234`` and ``1 234`` are ``1234``), returned canonical (no
       separators, sign or leading zeros beyond a ``-``). A decimal (``1.5``, ``42.0``) is
       not an integer: ``None``.
    4. No marker: for numeric answers the last number of the whole text (same rules), for
       others (a countdown expression) ``None``.

    Linear in the text's length (no regex here can backtrack catastrophically); anything
    that is not a ``str`` gives ``None``.
    """
    if not isinstance(text, str):
        return None
    text = _normalize(text)
    line = _answer_line(text)
    if not numeric:
        return line or None
    if line is not None:
        match = _NUMBERS.search(line.rpartition("=")[2])
        return _integers(match)[0] if match else None
    last = None
    for last in _NUMBERS.finditer(text):
        pass
    return _integers(last)[-1] if last else None


# ---------------------------------------------------------------------------- expressions

MAX_EXPRESSION_CHARS = 500
"""The longest expression :func:`evaluate_expression` reads."""

MAX_DEPTH = 32
"""How deeply :func:`evaluate_expression` lets parentheses nest."""

_TOKEN = re.compile(r"\d+|\S", re.ASCII)


class _Refused(Exception):
    """An expression :func:`evaluate_expression` will not evaluate."""


class _Expression:
    """Recursive descent over ``expr := term (("+" | "-") term)*``,
    ``term := factor ("*" factor)*``, ``factor := integer | "(" expr ")"``."""

    def __init__(self, tokens: list[str], allowed: Counter[int] | None) -> None:
        self.tokens, self.at, self.allowed = tokens, 0, allowed

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise _Refused("the expression ends too early")
        self.at += 1
        return token

    def expr(self, depth: int) -> int:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            sign = 1 if self.take() == "+" else -1
            value += sign * self.term(depth)
        return value

    def term(self, depth: int) -> int:
        value = self.factor(depth)
        while self.peek() == "*":
            self.take()
            value *= self.factor(depth)
        return value

    def factor(self, depth: int) -> int:
        token = self.take()
        if token == "(":
            if depth >= MAX_DEPTH:
                raise _Refused("parentheses nest too deeply")
            value = self.expr(depth + 1)
            if self.take() != ")":
                raise _Refused("a parenthesis is not closed")
            return value
        if not (token.isascii() and token.isdigit()):
            raise _Refused(f"unexpected {token!r}")
        value = int(token)
        if self.allowed is not None:
            if self.allowed[value] <= 0:
                raise _Refused(f"{value} is not one of the numbers left")
            self.allowed[value] -= 1
        return value


def evaluate_expression(text: str, numbers: Iterable[int] | None = None) -> int | None:
    """The value of an integer expression of ``+``, ``-``, ``*`` and parentheses, else ``None``.

    ``×`` and ``·`` read as ``*``. There is no unary minus and no other operator or
    character. ``None`` too for: an empty or malformed expression, more than
    :data:`MAX_EXPRESSION_CHARS` characters, parentheses nested deeper than
    :data:`MAX_DEPTH`, and (when ``numbers`` is given) a number that is not among
    ``numbers`` or is used more often than it is listed there.
    """
    if not isinstance(text, str) or len(text) > MAX_EXPRESSION_CHARS:
        return None
    tokens = _TOKEN.findall(text.replace("×", "*").replace("·", "*"))
    allowed = None if numbers is None else Counter(numbers)
    parser = _Expression(tokens, allowed)
    try:
        value = parser.expr(0)
    except _Refused:
        return None
    return value if tokens and parser.peek() is None else None


def _solves(task: Task, answer: str | None) -> bool:
    """Whether ``answer`` is a countdown expression of ``task``'s numbers worth its target.

    ``(3 + 5) * 3 = 24`` is read too: every part after an ``=`` must also equal the target
    (those parts may use any number).
    """
    if answer is None or task.target is None:
        return False
    expression, *claims = answer.split("=")
    if evaluate_expression(expression, task.numbers) != task.target:
        return False
    return all(evaluate_expression(claim) == task.target for claim in claims)


# ---------------------------------------------------------------------------- the reward


def reward(task: Task, text: Any) -> float:
    """1.0 if ``text``'s final answer (:func:`extract_answer`) solves ``task``, else 0.0.

    Numeric tasks compare the canonical integer with ``task.answer``; a countdown answer is
    any expression that uses only the given numbers, each at most once, and evaluates
    exactly to the target. Never raises on any ``text`` (a non-string scores 0.0).
    """
    if task.kind == "countdown":
        return 1.0 if _solves(task, extract_answer(text, numeric=False)) else 0.0
    return 1.0 if extract_answer(text) == task.answer else 0.0


def format_reward(text: Any) -> float:
    """1.0 if ``text``'s last answer marker (``Answer:``, ``<answer>``) has an answer after it,
    else 0.0: an optional shaping signal, kept apart from :func:`reward` (which ignores format).

    Mix it in explicitly, e.g. ``0.9 * reward(task, text) + 0.1 * format_reward(text)``.
    """
    if not isinstance(text, str):
        return 0.0
    return 1.0 if _answer_line(_normalize(text)) else 0.0
