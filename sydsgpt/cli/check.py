"""Check your own exercise answers with the same cases as the book's tests.

Give a chapter notebook (its answer cells are the code cells whose first line is
`# exercise N.M`) or a .py file that defines the exercises' functions. Prints one row
per coding exercise: passed, failed (with the first failing case) or not attempted.
Exits with status 1 when an attempted exercise fails.

Examples:
  sydsgpt check book/02_attention.ipynb
  sydsgpt check my_answers.py
  sydsgpt check my_answers.py --chapter 2 --chapter 3
  sydsgpt check book/02_attention.ipynb --verbose     # every case of every attempted exercise
"""

from __future__ import annotations

import argparse
import sys

from ..exercises.answers import AnswersError, NOT_ATTEMPTED, any_failed, check_answers, table


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``sydsgpt check`` arguments."""
    parser.add_argument("path", help="a chapter notebook (.ipynb) or a .py file of answers")
    parser.add_argument("--chapter", type=int, action="append", default=None, metavar="N",
                        help="report these chapters' exercises (default: the chapters the file answers)")
    parser.add_argument("--verbose", action="store_true", help="also print the full feedback of each attempted exercise")


def run(args: argparse.Namespace) -> int:
    """Print the table; 1 when an attempted exercise fails, 2 when the file cannot be read."""
    try:
        results = check_answers(args.path, args.chapter)
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
