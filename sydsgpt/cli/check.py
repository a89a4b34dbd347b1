"""Check your own exercise answers with the same cases as the book's tests.

Give a chapter notebook (its answer cells are the code cells whose first line is
`# exercise N.M`) or a .py file that defines the exercises' functions. Prints one row
per coding exercise: passed, failed (with the first failing case) or not attempted.
Exits with status 1 when an attempted exercise fails. Each answer cell may run
--time-limit seconds (an endless loop fails its exercise instead of hanging).

Examples:
  sydsgpt check book/02_attention.ipynb
  sydsgpt check my_answers.py
  sydsgpt check my_answers.py --chapter 2 --chapter 3
  sydsgpt check book/02_attention.ipynb --verbose     # every case of every attempted exercise
"""

from __future__ import annotations

import argparse
import math
import sys

from ..exercises.answers import (
    CELL_TIME_LIMIT,
    NOT_ATTEMPTED,
    AnswersError,
    any_failed,
    check_answers,
    table,
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``sydsgpt check`` arguments."""
    parser.add_argument("path", help="a chapter notebook (.ipynb) or a .py file of answers")
    parser.add_argument(
        "--chapter",
        type=int,
        action="append",
        default=None,
        metavar="N",
        help="report these chapters' exercises (default: the chapters the file answers)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also print the full feedback of each attempted exercise",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=CELL_TIME_LIMIT,
        metavar="SECONDS",
        help="seconds each answer cell may run before it is stopped and its "
        f"exercise fails (default: {CELL_TIME_LIMIT:g}; a .py file: the whole "
        "file)",
    )


def run(args: argparse.Namespace) -> int:
    """Print the table; 1 when an attempted exercise fails, 2 when the file cannot be read."""
    if not 0 < args.time_limit < math.inf:
        print(
            f"sydsgpt check: --time-limit must be a number of seconds > 0, got {args.time_limit}",
            file=sys.stderr,
        )
        return 2
    try:
        results = check_answers(args.path, args.chapter, args.time_limit)
    except AnswersError as exc:
        print(f"sydsgpt check: {exc}", file=sys.stderr)
        return 2
    print(table(results))
    if args.verbose:
        for result in results:
            if result.report is not None and result.status != NOT_ATTEMPTED:
                print()
                print(result.report.summary())
    return 1 if any_failed(results) else 0
