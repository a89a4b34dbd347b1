"""The package's shape: short signatures, layers built from the config.

A function that needs more than eight arguments is a function that wants a config object;
the layers a chapter shows take the arguments that chapter teaches (the rest comes from
:meth:`from_config`)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator

import pytest

import sydsgpt
from sydsgpt.attention import MultiHeadAttention
from sydsgpt.blocks import TransformerBlock

MAX_ARGUMENTS = 8
EXEMPT = {"sydsgpt.data.create_dataloader"}
"""The original SydsGPT-Pretraining project's ``create_dataloader`` keeps its arguments."""


def _functions() -> Iterator[tuple[str, Callable]]:
    for info in pkgutil.walk_packages(sydsgpt.__path__, "sydsgpt."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj
            elif inspect.isclass(obj) and not dataclasses.is_dataclass(obj):
                for attr, member in vars(obj).items():
                    function = getattr(member, "__func__", member)
                    if inspect.isfunction(function):
                        yield f"{module.__name__}.{name}.{attr}", function


def _arguments(function: Callable) -> list[str]:
    return [p for p in inspect.signature(function).parameters if p not in ("self", "cls")]


def test_the_scan_sees_the_package() -> None:
    names = {name for name, _ in _functions()}
    assert {
        "sydsgpt.model.count_parameters",
        "sydsgpt.attention.MultiHeadAttention.from_config",
    } <= names
    assert len(names) > 300


def test_no_function_takes_more_than_eight_arguments() -> None:
    long = {
        name: len(_arguments(f))
        for name, f in _functions()
        if name not in EXEMPT and len(_arguments(f)) > MAX_ARGUMENTS
    }
    assert long == {}, "group these arguments into a config (a dataclass) or split the function"


@pytest.mark.parametrize("layer", [MultiHeadAttention, TransformerBlock])
def test_the_layers_the_chapters_show_take_at_most_six_arguments(layer: type) -> None:
    assert len(_arguments(layer.__init__)) <= 6
