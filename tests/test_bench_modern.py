"""The GPT-2-vs-modern-blocks benchmark: its quick mode end to end, equal parameter counts,
bits per byte by hand, and the committed result's shape."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sydsgpt.bench import modern
from sydsgpt.cli import main
from sydsgpt.model import count_parameters
from sydsgpt.presets import get_preset


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_match_parameter_count_picks_the_closest_width() -> None:
    base = get_preset("book-ch05")
    target = count_parameters(base)
    for _, changes in modern.CHANGES[1:]:
        config = modern.match_parameter_count({**base, **changes}, target)
        h = config["ffn_hidden_dim"]
        assert h % 8 == 0
        gap = abs(count_parameters(config) - target)
        for other in (h - 8, h + 8):
            assert gap <= abs(count_parameters({**config, "ffn_hidden_dim": other}) - target)
        assert gap / target < 0.01


class _Bytes:
    """A tokenizer whose ids are bytes (one byte per token)."""

    def decode(self, ids):
        return bytes(ids).decode("latin-1")


def test_bits_per_byte_of_a_uniform_model() -> None:
    class Uniform(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, ids):
            return torch.zeros(*ids.shape, 256) + self.p

    batches = [
        (torch.zeros(2, 5, dtype=torch.long), torch.randint(0, 128, (2, 5)))
    ]  # ASCII: one byte per token
    loss, bpb = modern.held_out_bits_per_byte(Uniform(), batches, _Bytes())
    assert loss == pytest.approx(math.log(256)) and bpb == pytest.approx(
        8.0
    )  # 256 equally likely bytes: 8 bits


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_quick_run_writes_every_row(tmp_path) -> None:
    assert main(["bench", "--what", "modern", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "modern_cpu.json").read_text())
    assert [r["setup"] for r in result["rows"]] == [name for name, _ in modern.CHANGES] + [
        f"GPT-2 blocks, seed {modern.REPEAT_SEED}"
    ]
    assert result["rows"][-1]["params"] == result["rows"][0]["params"]
    assert (
        result["rows"][-1]["val_bpb"] != result["rows"][0]["val_bpb"]
    )  # another seed, another model
    assert len(result["loadavg_before"]) == 3 and len(result["loadavg_after"]) == 3
    params = [r["params"] for r in result["rows"]]
    assert max(params) - min(params) < 0.05 * params[0]
    assert len({r["tokens"] for r in result["rows"]}) == 1  # the same token budget for every row
    for row in result["rows"]:
        assert row["tokens_per_s"] > 0 and 0 < row["val_bpb"] < 10
