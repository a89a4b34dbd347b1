"""Every option of every ``sydsgpt`` subcommand explains itself: its own help text, not its
name again (a misplaced docstring once gave ``--fsdp`` the help "fsdp"), and no two options
of one command with the same text."""

from __future__ import annotations

import argparse
import re

import pytest

from sydsgpt.cli import _leaf_parsers, build_parser


def _commands() -> dict[str, argparse.ArgumentParser]:
    top = build_parser()
    subcommands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    commands = {}
    for name, parser in subcommands.choices.items():
        for leaf in _leaf_parsers(parser):
            commands[leaf.prog.removeprefix("sydsgpt ")] = leaf
    return commands


COMMANDS = _commands()


def test_every_subcommand_is_checked() -> None:
    assert {
        "train",
        "generate",
        "finetune classify",
        "finetune instruct",
        "prepare",
        "bench",
        "check",
    } <= set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_has_its_own_help_text(command: str) -> None:
    seen: dict[str, str] = {}
    for action in COMMANDS[command]._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        text = re.sub(r"\s*\(default: [^()]*\)$", "", action.help or "").strip().rstrip(".").lower()
        assert text and action.help != argparse.SUPPRESS, (
            f"sydsgpt {command} {name} has no help text"
        )
        trivial = {
            action.dest.lower(),
            action.dest.replace("_", " ").lower(),
            *(flag.lstrip("-").replace("-", " ").lower() for flag in action.option_strings),
        }
        assert text not in trivial and len(text.split()) >= 2, (
            f"sydsgpt {command} {name}: help {action.help!r}"
        )
        assert text not in seen, (
            f"sydsgpt {command}: {name} and {seen.get(text)} share the help {action.help!r}"
        )
        seen[text] = name


def test_debug_is_there_once_for_every_command() -> None:
    for command, parser in COMMANDS.items():
        flags = [f for action in parser._actions for f in action.option_strings]
        assert flags.count("--debug") == 1, command
