"""How a config field is spelled on the command line, written once for the CLI and the presets.

A dataclass field ``max_steps`` is the flag ``--max-steps`` (:func:`flag_name`);
:func:`option_flag` writes a value as that flag and its text (a ``bool`` as ``--x`` /
``--no-x``, ``None`` as ``none``, a string with its escapes), so
:meth:`sydsgpt.presets.RunPreset.command` prints a command line that
:mod:`sydsgpt.cli.options` parses back to the same config.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Union


def unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None``, else ``(annotation, False)``."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def unescape(text: str) -> str:
    """``"\\n"`` typed on a command line means a newline."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def escape(text: str) -> str:
    """The inverse of :func:`unescape`: a newline is written ``\\n``."""
    return text.encode("unicode_escape").decode("latin-1")


def flag_name(name: str) -> str:
    """The flag of field ``name``: ``max_steps`` -> ``--max-steps``."""
    return "--" + name.replace("_", "-")


def option_flag(cls: type, name: str, value: Any) -> tuple[str, str | None]:
    """``(flag, text)`` that sets field ``name`` of ``cls`` to ``value`` (``text`` is None for a
    bare flag)."""
    kind, _ = unwrap_optional(typing.get_type_hints(cls)[name])
    flag = flag_name(name)
    if kind is bool and value is not None:
        return (flag if value else "--no-" + flag[2:]), None
    if value is None:
        return flag, "none"
    if isinstance(value, str):
        return flag, escape(value)
    return flag, str(value)
