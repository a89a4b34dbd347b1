"""The GPU recipe's commands parse, its projections
follow the MFU model, and the prepare benchmark runs."""

from __future__ import annotations

import shlex

import pytest

from sydsgpt.bench import prepare as prepare_bench
from sydsgpt.bench.projection import (
    COMMANDS,
    FINEWEB_EDU_TOKENS,
    TOKENS_PER_STEP,
    project,
    recipe_table,
)
from sydsgpt.cli import build_parser


@pytest.mark.parametrize(
    "name", [n for n, c in COMMANDS.items() if "sydsgpt" in c.split()[:1] or "sydsgpt.cli" in c]
)
def test_every_recipe_command_is_accepted_by_the_cli(name: str) -> None:
    words = shlex.split(COMMANDS[name])
    argv = words[words.index("sydsgpt.cli") + 1 :] if "sydsgpt.cli" in words else words[1:]
    args = build_parser().parse_args(argv)
    if args.command == "train":
        per_step = args.batch_size * args.grad_accum_steps * args.seq_len
        assert per_step == TOKENS_PER_STEP == 524_288, name
        assert args.max_steps * per_step <= FINEWEB_EDU_TOKENS < (args.max_steps + 1) * per_step


def test_a_projection_is_the_mfu_model_run_backwards() -> None:
    row = project(gpu="H100", gpus=8, mfu=0.5, tokens=10**9)
    # GPT-2 small, T = 1024: 6 N + 12 L T d with N = 12 L
    # d^2 + V d (tied head counted once in the matmuls)
    n, layers, d = 12 * 12 * 768**2 + 50257 * 768, 12, 768
    per_token = 6 * n + 12 * layers * 1024 * d
    assert row["flops_per_token"] == per_token
    assert row["tokens_per_s"] == pytest.approx(0.5 * 989e12 * 8 / per_token)
    assert row["hours"] == pytest.approx(1e9 / row["tokens_per_s"] / 3600)
    assert row["measured"] is False
    assert [(r["gpus"], r["assumed_mfu"]) for r in recipe_table()] == [
        (1, 0.40),
        (1, 0.55),
        (8, 0.40),
        (8, 0.55),
    ]
    with pytest.raises(ValueError, match="no datasheet peak"):
        project(gpu="TPU v9")


def test_the_prepare_benchmark_checks_ids_and_records_the_load() -> None:
    rows, extra = prepare_bench.run(copies=1, jobs=(1,))
    assert [r["task"] for r in rows] == ["tiktoken encode (one call)", "sydsgpt prepare"]
    assert (
        rows[1]["equal_ids"] is True and rows[1]["tokens"] == rows[0]["tokens"] + 1
    )  # + one end-of-text
    assert all(r["MB_per_s"] > 0 and r["cpu_seconds"] > 0 and r["load_before"] >= 0 for r in rows)
    assert extra["bytes"] == 1_115_394 and len(extra["loadavg_at_end"]) == 3


def test_bench_what_prepare_writes_prepare_json(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from sydsgpt.cli import main

    calls = []

    def fake_run(copies: int) -> tuple[list, dict]:
        calls.append(copies)
        return [{"task": "sydsgpt prepare", "jobs": 1, "MB_per_s": 1.0}], {"bytes": 1}

    monkeypatch.setattr(prepare_bench, "run", fake_run)
    assert main(["bench", "--what", "prepare", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "prepare.json").read_text())
    assert (
        calls == [2]
        and result["benchmark"] == "prepare"
        and result["rows"][0]["jobs"] == 1
        and result["bytes"] == 1
    )
