"""sydsgpt.validation: the one vocabulary of checks every config and entry point uses."""

from __future__ import annotations

import pytest
import torch

from sydsgpt.train_config import TrainConfig
from sydsgpt.validation import (
    check_choice,
    check_input_ids,
    check_keys,
    check_positive_int,
    check_real,
    check_str,
)


def test_check_keys_names_unknown_and_missing_keys() -> None:
    with pytest.raises(
        ValueError, match=r"unknown widget option\(s\) \['colour'\]; known: \['color', 'size'\]"
    ):
        check_keys({"colour": 1}, ["size", "color"], "widget option")
    with pytest.raises(TypeError, match=r"missing required widget option\(s\) \['size'\]"):
        check_keys(
            {"color": 1}, ["size", "color"], "widget option", required=["size"], error=TypeError
        )
    check_keys({"size": 1}, ["size", "color"], "widget option", required=["size"])


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "3", None])
def test_check_positive_int_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="n must be a positive integer"):
        check_positive_int(value, "n")


def test_check_positive_int_accepts() -> None:
    check_positive_int(3, "n")
    check_positive_int(None, "n", allow_none=True)


@pytest.mark.parametrize(
    ("ids", "error", "match"),
    [
        ([[1, 2]], TypeError, "make one with torch.tensor"),
        (
            torch.tensor([1, 2]),
            ValueError,
            r"got shape \(2,\); for a single sequence use input_ids.unsqueeze\(0\)",
        ),
        (
            torch.tensor([[1.0, 2.0]]),
            TypeError,
            "integer tensor of token ids, got dtype torch.float32",
        ),
        (torch.zeros(1, 0, dtype=torch.long), ValueError, "has no tokens"),
    ],
)
def test_check_input_ids(ids: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        check_input_ids(ids)


def test_check_real_choice_and_str() -> None:
    check_real(0.5, "p", low=0, high=1, high_open=True)
    for bad in (1.0, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match=r"p must be a finite number in \[0, 1\)"):
            check_real(bad, "p", low=0, high=1, high_open=True)
    check_choice("mean", "pooling", ("last", "mean"))
    with pytest.raises(ValueError, match=r"pooling must be one of \('last', 'mean'\), got 'max'"):
        check_choice("max", "pooling", ("last", "mean"))
    check_str("", "prompt")
    with pytest.raises(ValueError, match="prompt must be a non-empty str, got ''"):
        check_str("", "prompt", allow_empty=False)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("dtype", "float16", "TrainConfig.dtype must be one of"),
        ("device", 3, "TrainConfig.device must be a str"),
        ("fsdp", "yes", "TrainConfig.fsdp must be True or False"),
    ],
)
def test_trainconfig_uses_the_shared_checks(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})
