"""Command-line options derived from the config dataclasses, so each is written once.

A dataclass field becomes an option: its name gives the flag (``max_steps`` ->
``--max-steps``), its annotation the type (``int | None`` also takes ``none``; ``bool``
gives ``--flag`` / ``--no-flag``; a ``Literal`` gives the choices), its default the
default, and its docstring (or its line in the class docstring's ``Attributes:``
section) the help text. :func:`config_from_args` builds the dataclass back from the
parsed arguments. How a field is spelled as a flag (:func:`~sydsgpt.flags.flag_name`,
:func:`~sydsgpt.flags.option_flag`) lives in :mod:`sydsgpt.flags`, which the presets
also use to print the command line that reproduces a run.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import re
import textwrap
import typing
from typing import Any, Callable, Iterable, Literal, Mapping

from ..flags import escape, flag_name, option_flag, unescape, unwrap_optional

__all__ = [
    "add_config_options",
    "config_from_args",
    "field_docs",
    "flag_name",
    "option_flag",
    "unescape",
]


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Each field's documentation: the string literal after it in the class body, else its
    entry in the class docstring's ``Attributes:`` section."""
    docs: dict[str, str] = {}
    doc = inspect.getdoc(cls) or ""
    if "Attributes:" in doc:
        section = doc.split("Attributes:", 1)[1]
        current = None
        for line in section.splitlines():
            match = re.match(r"^\s{4}(\w+): (.*)$", line)
            if match:
                current = match.group(1)
                docs[current] = match.group(2).strip()
            elif current and line.startswith("        "):
                docs[current] += " " + line.strip()
            elif line.strip() and not line.startswith(" "):
                break
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # pragma: no cover - no source (frozen app)
        return docs
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if (
                isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _plain(text: str) -> str:
    """Docstring markup to terminal text:
    ````x```` -> ``x``, roles dropped, ``%`` escaped for argparse."""
    text = re.sub(r":\w+:`~?([^`]+)`", lambda m: m.group(1).split(".")[-1], text)
    return text.replace("``", "").replace("%", "%%")


def _parser_for(kind: Any, nullable: bool, name: str) -> Callable[[str], Any]:
    base = {int: int, float: float, str: unescape}.get(kind, str)

    def parse(text: str) -> Any:
        if nullable and text.lower() == "none":
            return None
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a valid {getattr(kind, '__name__', kind)}"
                + (" (or none)" if nullable else "")
            ) from None

    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names the type in its errors
    return parse


def add_config_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    skip: Iterable[str] = (),
    aliases: Mapping[str, Iterable[str]] | None = None,
    defaults: Any = None,
) -> list[str]:
    """Add one option per field of dataclass ``cls`` (except ``skip``); returns the field names.

    Args:
        aliases: extra (older) flags per field, e.g. ``{"max_steps": ["--steps"]}``.
        defaults: an instance whose values are the defaults (default: the class's own).
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    aliases = aliases or {}
    added = []
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        default = getattr(defaults, f.name) if defaults is not None else f.default
        if default is dataclasses.MISSING:
            continue
        kind, nullable = unwrap_optional(hints[f.name])
        flags = [flag_name(f.name), *aliases.get(f.name, ())]
        if f.name not in docs:
            raise TypeError(
                f"{cls.__name__}.{f.name} has no docstring: it is the option's --help "
                "text; write one"
            )
        help_text = _plain(docs[f.name])
        shown = (
            "auto" if default is None and kind is bool else ("none" if default is None else default)
        )
        literal = isinstance(shown, str) and f.name not in ("device", "dtype")
        help_text += f" (default: {escape(shown) if literal else shown})"
        options: dict[str, Any] = {"dest": f.name, "default": default, "help": help_text}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is Literal:
            options["choices"] = list(typing.get_args(kind))
        else:
            options["type"] = _parser_for(kind, nullable, f.name)
            options["metavar"] = {int: "N", float: "X"}.get(kind, "TEXT")
        parser.add_argument(*flags, **options)
        added.append(f.name)
    return added


def config_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """An instance of ``cls`` from the parsed options :func:`add_config_options` added."""
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)
    }
    try:
        return cls(**{**values, **overrides})
    except ValueError as exc:  # name the option as the user typed it: TrainConfig.lr -> --lr
        text = str(exc)
        for f in dataclasses.fields(cls):
            text = re.sub(rf"\b{cls.__name__}\.{f.name}\b", flag_name(f.name), text)
        raise ValueError(text) from None
