"""The speedrun harness: seeds and intervals, the quiet-machine guard, the recipes, the CLI."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from sydsgpt.bench import speedrun
from sydsgpt.bench.common import interval
from sydsgpt.cli import main
from sydsgpt.model import count_parameters
from sydsgpt.presets import get_preset


def _load(value: float):
    return lambda: (value, value, value)


def test_interval_by_hand():
    values = [2.30, 2.34, 2.29, 2.33, 2.31]
    mean, half = interval(values)
    assert mean == pytest.approx(2.314)
    # five values: t(4 degrees of freedom) = 2.776
    assert half == pytest.approx(2.776 * statistics.stdev(values) / math.sqrt(5))
    assert math.isnan(interval([2.3])[1])


def test_busy_machine_is_refused_or_marked(monkeypatch):
    monkeypatch.setattr("os.getloadavg", _load(2.5))
    with pytest.raises(RuntimeError, match="busy .*load average 2.50"):
        speedrun.check_quiet()
    assert speedrun.check_quiet(allow_busy=True) == (2.5, False)
    monkeypatch.setattr("os.getloadavg", _load(0.4))
    assert speedrun.check_quiet() == (0.4, True)


def test_recipes_are_chapter_7s_rows_at_chapter_5s_size():
    assert list(speedrun.RECIPES) == [
        "chapter5",
        "rmsnorm",
        "swiglu",
        "rope",
        "gqa",
        "qk-norm",
        "modern-blocks",
    ]
    base = get_preset("book-ch05")
    target = count_parameters(base)
    for name, recipe in speedrun.RECIPES.items():
        assert recipe.run == "book-ch05"
        if name == "chapter5":
            assert not recipe.model and not recipe.match_parameters
            continue
        from sydsgpt.bench.modern import match_parameter_count

        config = match_parameter_count({**base, **recipe.model}, target)
        assert abs(count_parameters(config) - target) / target < 0.01, name


def test_run_recipe_trains_each_seed_and_summarizes(monkeypatch):
    monkeypatch.setattr("os.getloadavg", _load(0.2))
    result = speedrun.run_recipe(speedrun.RECIPES["chapter5"], [1, 2, 3], quick=True, log=None)
    bpb = [row["val_bpb"] for row in result["seeds"]]
    assert [row["seed"] for row in result["seeds"]] == [1, 2, 3]
    assert len(set(bpb)) == 3  # the seed changes the run
    mean, half = interval(bpb)
    assert result["val_bpb"] == pytest.approx(round(mean, 4))
    assert result["val_bpb_interval"] == pytest.approx(round(half, 4))
    assert result["quiet"] is True and result["load_before"] == 0.2
    assert result["train"]["max_steps"] == 4 and all(r["steps"] == 4 for r in result["seeds"])
    again = speedrun.run_recipe(speedrun.RECIPES["chapter5"], [2], quick=True, log=None)
    assert again["seeds"][0]["val_bpb"] == result["seeds"][1]["val_bpb"]  # reproducible


def test_unknown_recipe_and_no_seeds_are_errors():
    with pytest.raises(ValueError, match="known: chapter5"):
        speedrun.run(["chapter6"], quick=True)
    with pytest.raises(ValueError, match="at least one seed"):
        speedrun.run_recipe(speedrun.RECIPES["chapter5"], [], quick=True)
    with pytest.raises(ValueError, match="unknown run"):
        speedrun.Recipe(run="no-such-run")


def test_a_series_checks_the_load_once_before_it_starts(tmp_path, monkeypatch):
    """After a recipe's own training the load average is high: that must not stop the next."""
    loads = iter([0.3] + [2.0] * 50)
    monkeypatch.setattr("os.getloadavg", lambda: (next(loads),) * 3)
    result = speedrun.run(["chapter5", "rope"], [1], quick=True, out=tmp_path / "r.json")
    assert [row["recipe"] for row in result["rows"]] == ["chapter5", "rope"]
    assert result["quiet"] is True and result["load_at_start"] == 0.3
    assert all(r["quiet"] for r in result["results"])


def test_cli_quick_run_and_busy_refusal(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("os.getloadavg", _load(0.1))
    args = ["bench", "--what", "speedrun", "--quick", "--seeds", "2", "--out", str(tmp_path)]
    assert main([*args, "--recipe", "rope"]) == 0
    result = json.loads((tmp_path / "speedrun_cpu.json").read_text())
    assert [row["recipe"] for row in result["rows"]] == ["rope"]
    assert result["results"][0]["model"]["positions"] == "rope"
    capsys.readouterr()
    monkeypatch.setattr("os.getloadavg", _load(3.0))
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "busy" in err[0] and "--allow-busy" in err[0]


def test_committed_chapter_7_run_is_quiet_complete_and_consistent():
    from sydsgpt.bench.common import RESULTS_DIR
    from sydsgpt.presets import RUNS

    result = json.loads((RESULTS_DIR / "speedrun_ch7_cpu.json").read_text())
    assert result["quiet"] is True and result["load_at_start"] < 1
    runs = {r["name"]: r for r in result["results"]}
    assert list(runs) == list(speedrun.RECIPES)
    for name, r in runs.items():
        assert not r["quick"] and [s["seed"] for s in r["seeds"]] == list(speedrun.SEEDS)
        assert r["train"]["max_steps"] == RUNS["book-ch05"].train.max_steps  # chapter 5's budget
        assert all(s["steps"] == r["train"]["max_steps"] for s in r["seeds"])
        mean, half = interval([s["val_bpb"] for s in r["seeds"]])
        assert r["val_bpb"] == pytest.approx(mean, abs=1e-4), name
        assert r["val_bpb_interval"] == pytest.approx(half, abs=1e-4), name
        assert r["model"] | dict(speedrun.RECIPES[name].model) == r["model"]
