"""``sydsgpt finetune grpo|dpo`` (chapter 10) end to end on a tiny checkpoint, resume, the run
folder, one-line errors; ``sydsgpt bench --what rewards`` quick; the committed result."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import saved_tiny_checkpoint

from sydsgpt.bench import rewards as rewards_bench
from sydsgpt.cli import main
from sydsgpt.instruct import format_prompt
from sydsgpt.reward_training import task_split
from sydsgpt.rewards import ask, make_tasks


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A tiny checkpoint whose BPE tokenizer (no end token) has seen arithmetic prompts."""
    tasks = make_tasks("add", 50, 1, seed=2)
    text = "".join(format_prompt({"instruction": ask(t)}) + t.answer + "\n" for t in tasks)
    return saved_tiny_checkpoint(tmp_path / "base", text, 320, "sums", context_length=256)


FAST = [
    "--task",
    "add",
    "--train-tasks",
    "12",
    "--held-out",
    "4",
    "--steps",
    "4",
    "--tasks-per-step",
    "3",
    "--group-size",
    "4",
    "--eval-every",
    "2",
    "--temperature",
    "1.5",
    "--quiet",
]


def _odd_length_is_right(task, text):
    """A stand-in reward a random model earns about half the time."""
    return float(len(text) % 2)


def finetune(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["finetune", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("method", ["grpo", "dpo"])
def test_runs_end_to_end_and_resumes_exactly(method, base, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sydsgpt.rollouts.reward", _odd_length_is_right)
    straight = tmp_path / "straight"
    code, _, err = finetune(capsys, method, "--base", str(base), *FAST, "--out", str(straight))
    assert code == 0, err
    for name in ("log.jsonl", "state.pt", "run.json", "rewards.png", "adapter.safetensors"):
        assert (straight / name).exists(), name
    summary = json.loads((straight / "run.json").read_text())
    assert sorted(summary["accuracy"], key=int) == ["0", "2", "4"]
    assert "held-out accuracy" in err and "done: step 4" in err
    stopped = tmp_path / "stopped"
    code, _, err = finetune(
        capsys, method, "--base", str(base), *FAST, "--out", str(stopped), "--stop-after", "2"
    )
    assert code == 0, err
    code, _, err = finetune(
        capsys, method, "--base", str(base), *FAST, "--out", str(stopped), "--resume"
    )
    assert code == 0, err
    a = torch.load(straight / "state.pt", weights_only=False)["trainable"]
    b = torch.load(stopped / "state.pt", weights_only=False)["trainable"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    logs = [
        [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()]
        for d in (straight, stopped)
    ]
    assert [r.get("loss") for r in logs[0]] == [r.get("loss") for r in logs[1]]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "add,divide"], "--task add,divide: unknown kind"),
        (["--difficulty", "40"], "--difficulty 40: add tasks take 1 to 18"),
        (["--train-tasks", "250"], "only 300 distinct add,sub,mul questions"),
        (["--steps", "0"], "--steps"),
        (["--temperature", "0"], "--temperature"),
        (["--resume"], "there is no"),
        (["--base", "no-such-model.pt"], "no-such-model.pt"),
    ],
)
def test_bad_options_are_one_line_errors(args, message, tmp_path, capsys):
    code, _, err = finetune(capsys, "grpo", *args, "--out", str(tmp_path / "run"))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "run").exists()  # checked before anything is written


def test_an_existing_run_needs_resume(base, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sydsgpt.rollouts.reward", _odd_length_is_right)
    out = tmp_path / "run"
    assert (
        finetune(
            capsys, "grpo", "--base", str(base), *FAST, "--out", str(out), "--stop-after", "1"
        )[0]
        == 0
    )
    code, _, err = finetune(capsys, "grpo", "--base", str(base), *FAST, "--out", str(out))
    assert code != 0 and "add --resume" in err


def test_dpo_without_pairs_says_what_to_change(base, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sydsgpt.rollouts.reward", lambda task, text: 0.0)
    code, _, err = finetune(
        capsys, "dpo", "--base", str(base), *FAST, "--out", str(tmp_path / "run")
    )
    *said, error = err.strip().splitlines()
    assert code == 2 and "no preference pairs" in error
    assert not any("no preference pairs" in line for line in said)  # the error is one line


def test_help_lists_the_reward_commands(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = capsys.readouterr().out
    assert "grpo" in text and "dpo" in text
    with pytest.raises(SystemExit):
        main(["finetune", "grpo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("--group-size N", "--kl X", "--clip X", "--resume", "examples:"):
        assert expected in text, expected


# ------------------------------------------------------------------- the benchmark


def test_task_split_is_the_benchmarks_and_disjoint():
    train, held = task_split(("add", "sub", "mul"), 1, 200, 100, seed=0)
    assert (train, held) == rewards_bench.split_tasks()
    assert not {t.prompt for t in train} & {t.prompt for t in held}
    assert len({t.prompt for t in train + held}) == 300


def test_interval_by_hand():
    mean, half = rewards_bench.interval([0.6, 0.7, 0.8])
    assert mean == pytest.approx(0.7)
    assert half == pytest.approx(4.303 * 0.1 / math.sqrt(3), rel=1e-4)
    assert math.isnan(rewards_bench.interval([0.5])[1])


def test_quick_benchmark_writes_every_row(tmp_path, capsys):
    code = main(["bench", "--what", "rewards", "--quick", "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "rewards_cpu.json").read_text())
    methods = [row["method"] for row in result["rows"]]
    assert methods[0] == "start" and "grpo" in methods and "sft" in methods
    assert "load_before" in result and result["threads"] == rewards_bench.THREADS


def test_committed_result_is_complete_and_quiet():
    result = rewards_bench.committed()
    assert result["load_before"] < 1, "the committed result was measured on a busy machine"
    rows = {row["method"]: row for row in result["rows"]}
    assert set(rows) == {"start", *rewards_bench.METHODS}
    train, held = rewards_bench.split_tasks()
    assert result["held_out"] == len(held) == 100
    start = rows["start"]
    assert [a["question"] for a in start["answers"]] == [t.prompt for t in held[:6]]
    assert start["accuracy"] == pytest.approx(sum(start["correct"]) / len(held))
    for name in rewards_bench.METHODS:
        row = rows[name]
        assert [s["seed"] for s in row["per_seed"]] == list(rewards_bench.SEEDS)
        accs = [s["accuracy"] for s in row["per_seed"]]
        mean, half = rewards_bench.interval(accs)
        assert row["accuracy"] == pytest.approx(mean) and row["interval"] == pytest.approx(half)
        for s in row["per_seed"]:
            assert s["accuracy"] == pytest.approx(sum(s["correct"]) / len(held))
            assert s["curve"][-1]["step"] == result["steps"]
            assert s["curve"][-1]["accuracy"] == pytest.approx(s["accuracy"])


def test_committed_probe_covers_the_kinds_quietly():
    from sydsgpt.bench.common import RESULTS_DIR

    probe = json.loads((RESULTS_DIR / "rewards_probe_cpu.json").read_text())
    assert probe["load_before"] < 1
    kinds = [(r["kind"], r["difficulty"]) for r in probe["rows"]]
    assert kinds == list(rewards_bench.PROBE_KINDS)
    sampled = [r for r in probe["rows"] if "mixed_groups" in r]
    assert [(r["kind"], r["difficulty"]) for r in sampled] == list(rewards_bench.PROBE_SAMPLED)
    assert all(0 <= r["mixed_groups"] <= r["groups"] for r in sampled)


def test_every_documented_example_passes_the_option_checks(tmp_path, monkeypatch):
    """The help's examples (also in the README and chapter 10) are valid runs: every option
    passes the checks made before anything is loaded."""
    import shlex
    from pathlib import Path as _Path

    from sydsgpt.cli import build_parser
    from sydsgpt.cli.rewards import EXAMPLES, _check

    monkeypatch.chdir(tmp_path)
    commands = [line.strip() for line in EXAMPLES.splitlines() if "sydsgpt finetune" in line]
    assert len(commands) == 3
    readme = (_Path(__file__).resolve().parents[1] / "README.md").read_text()
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])
        kinds, config, out = _check(args)
        assert config.method == args._method and not out.exists()
        if "countdown" not in command:
            assert command in readme, command
