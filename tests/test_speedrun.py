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
from sydsgpt.presets import RUNS, get_preset

from helpers import committed_result, register_tiny_run


def _assert_summarizes(result, values, label: str = "") -> None:
    """``result``'s bits per byte are the mean and 95% interval of ``values`` (4 decimals)."""
    mean, half = interval(values)
    assert result["val_bpb"] == pytest.approx(mean, abs=1e-4), label
    assert result["val_bpb_interval"] == pytest.approx(half, abs=1e-4), label


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
    from sydsgpt.presets import RUNS

    result = committed_result("speedrun_ch7_cpu.json")
    assert result["quiet"] is True and result["load_at_start"] < 1
    runs = {r["name"]: r for r in result["results"]}
    assert list(runs) == list(speedrun.RECIPES)
    for name, r in runs.items():
        assert not r["quick"] and [s["seed"] for s in r["seeds"]] == list(speedrun.SEEDS)
        assert r["train"]["max_steps"] == RUNS["book-ch05"].train.max_steps  # chapter 5's budget
        assert all(s["steps"] == r["train"]["max_steps"] for s in r["seeds"])
        _assert_summarizes(r, [s["val_bpb"] for s in r["seeds"]], name)
        assert r["model"] | dict(speedrun.RECIPES[name].model) == r["model"]


def test_a_budget_sets_the_steps_from_the_measured_speed(monkeypatch):
    """The steps are the budget times the calibration's speed over one step's tokens; the
    warm-up keeps the run's share (record-0: 100 of 1200 steps)."""
    from sydsgpt.presets import RUNS

    seen = {}

    def fake_row(config, cfg, loaders, tokenizer):
        seen["calibration_steps"] = cfg.max_steps
        return {"late_tokens_per_s": 4096.0}

    monkeypatch.setattr(speedrun, "train_row", fake_row)
    cfg = RUNS["record-0"].train  # 16 x 256 = 4,096 tokens per step
    budgeted, calibration = speedrun.budget_steps({}, cfg, (None, None), None, 120.0)
    assert seen["calibration_steps"] == speedrun.CALIBRATION_STEPS
    assert calibration == {"late_tokens_per_s": 4096.0}
    assert budgeted.max_steps == 120  # 120 s x 4,096 tokens/s / 4,096 tokens per step
    assert budgeted.warmup_steps == 10  # 100 / 1200 of 120
    assert budgeted.seq_len == cfg.seq_len and budgeted.lr == cfg.lr
    with pytest.raises(ValueError, match="budget_s must be > 0"):
        speedrun.Recipe(budget_s=0)


def test_search_recipes_change_one_thing_each_at_the_book_checkpoints_size():
    base_config, base_cfg, _, _ = speedrun._setup(speedrun.SEARCH["sr-base"], quick=False)
    target = count_parameters(base_config)
    for name, recipe in speedrun.SEARCH.items():
        assert recipe.run == "record-0" and recipe.budget_s == speedrun.SEARCH_BUDGET_S
        config, cfg, _, tokenizer = speedrun._setup(recipe, quick=False)
        tokens_per_step = cfg.batch_size * cfg.seq_len
        assert tokens_per_step == base_cfg.batch_size * base_cfg.seq_len, name
        if recipe.match_parameters and recipe.tokenizer is None:
            assert abs(count_parameters(config) - target) / target < 0.01, name
        if name.startswith("sr-mm-"):  # round 2 starts from round 1's record
            record = speedrun.SEARCH["sr-modern-muon"]
            assert recipe.model | dict(record.model) == {**record.model, **recipe.model}
            assert dict(recipe.train) | dict(record.train) == dict(recipe.train), name
    bpe1024 = speedrun._setup(speedrun.SEARCH["sr-mm-bpe1024"], quick=False)
    assert bpe1024[3].n_vocab == 1024 and bpe1024[0]["vocab_size"] == 1024
    assert speedrun._setup(speedrun.SEARCH["sr-muon"], quick=True)[1].optimizer == "muon"
    assert speedrun.recipe_named("sr-muon") is speedrun.SEARCH["sr-muon"]
    with pytest.raises(ValueError, match="known: chapter5.*sr-base"):
        speedrun.recipe_named("sr-nothing")


def test_confirm_trains_the_run_per_seed_as_sydsgpt_train_does(tmp_path, monkeypatch):
    from sydsgpt.book import publish_book_checkpoint

    monkeypatch.setattr("os.getloadavg", _load(0.4))
    register_tiny_run(
        monkeypatch,
        max_steps=4,
        lr=1e-2,
        warmup_steps=1,
        eval_interval=2,
        eval_batches=1,
        seed=123,
        threads=1,
    )
    train = RUNS["tiny-book"].train
    result = speedrun.confirm(
        "tiny-book", [123, 124], runs_dir=tmp_path, out=tmp_path / "r.json", log=None
    )
    rows = result["rows"]
    assert [row["seed"] for row in rows] == [123, 124]
    assert rows[0]["val_bpb"] != rows[1]["val_bpb"]  # the seed changes the run
    _assert_summarizes(result, [row["val_bpb"] for row in rows])
    assert result["quiet"] is True and result["train"] == train.to_dict()
    assert [step for step, _ in result["val_curves"]["123"]] == [0, 2, 4]
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["rows"] == rows and "sydsgpt train the-verdict" in written["command"]
    # the first seed's folder is the run itself: it publishes as the book's checkpoints do
    info = publish_book_checkpoint(tmp_path / "tiny-book-seed123", tmp_path / "pub", "tiny-book")
    assert info["val_bpb"] == rows[0]["val_bpb"]


@pytest.mark.parametrize(
    "a, b, verdict",
    [
        ((2.40, 0.01), (2.50, 0.01), "lower"),
        ((2.60, 0.01), (2.50, 0.01), "higher"),
        ((2.48, 0.03), (2.50, 0.01), "cannot tell"),  # the intervals overlap
        ((2.50, 0.00), (2.50, 0.00), "cannot tell"),
    ],
)
def test_compare_needs_intervals_apart(a, b, verdict):
    def result(mean_half):
        return {"val_bpb": mean_half[0], "val_bpb_interval": mean_half[1]}

    assert speedrun.compare(result(a), result(b)) == verdict


def test_every_search_recipe_but_the_first_has_a_baseline_one_change_away():
    assert set(speedrun.SEARCH_BASELINES) == set(speedrun.SEARCH) - {"sr-base"}
    for name, base in speedrun.SEARCH_BASELINES.items():
        recipe, baseline = speedrun.SEARCH[name], speedrun.SEARCH[base]
        model_changes = {k for k in recipe.model if recipe.model[k] != baseline.model.get(k)}
        train_changes = {k for k in recipe.train if recipe.train[k] != baseline.train.get(k)}
        changed = (
            bool(model_changes) + bool(train_changes) + (recipe.tokenizer != baseline.tokenizer)
        )
        assert changed >= 1, name
        assert set(baseline.model) <= set(recipe.model) and set(baseline.train) <= set(
            recipe.train
        ), f"{name} drops a change of {base}"


@pytest.mark.parametrize("name", ["speedrun_search_cpu.json", "speedrun_search2_cpu.json"])
def test_committed_search_rounds_are_quiet_and_describe_todays_recipes(name):
    result = committed_result(name)
    assert result["quiet"] is True and result["load_at_start"] < 1
    for r in result["results"]:
        recipe = speedrun.SEARCH[r["name"]]
        assert r["recipe"]["model"] == dict(recipe.model), r["name"]
        assert r["recipe"]["train"] == dict(recipe.train), r["name"]
        assert r["recipe"]["budget_s"] == recipe.budget_s == speedrun.SEARCH_BUDGET_S
        assert [s["seed"] for s in r["seeds"]] == list(speedrun.SEEDS) and not r["quick"]
        assert all(s["steps"] == r["train"]["max_steps"] for s in r["seeds"])
        _assert_summarizes(r, [s["val_bpb"] for s in r["seeds"]])


def test_committed_record_1_is_todays_record_1_run_and_the_long_run_its_twin():
    spec = RUNS["record-1"]
    record = committed_result("speedrun_record1_cpu.json")
    assert record["quiet"] is True and record["load_at_start"] < 1
    assert record["train"] == spec.train.to_dict()
    # measured when record 1 was the run speedrun-record: the line under the name it had then
    assert record["run"] == "speedrun-record"
    assert record["command"] == spec.command("runs/speedrun-record").replace(
        "--preset record-1", "--preset speedrun-record"
    )
    assert record["model"] == get_preset(spec.preset)
    assert [row["seed"] for row in record["rows"]] == [123, 124]
    assert all(row["train_s"] <= 30 * 60 for row in record["rows"])
    _assert_summarizes(record, [row["val_bpb"] for row in record["rows"]])
    long_run = committed_result("speedrun_long_cpu.json")
    assert long_run["quiet"] is True and long_run["load_at_start"] < 1
    differences = {k for k, v in long_run["train"].items() if record["train"][k] != v}
    assert differences == {"max_steps", "warmup_steps"}  # the same recipe, longer
    assert long_run["model"] == record["model"]


def test_committed_record_is_todays_record_run_within_30_minutes_and_round_3s_recipe():
    """Record 2 (the run speedrun-record) is round 3's full-length recipe exactly, trained
    with the book's periodic evaluations; its first seed is the book checkpoint."""
    spec = RUNS["speedrun-record"]
    record = committed_result("speedrun_record_cpu.json")
    assert record["quiet"] is True and record["load_at_start"] < 1
    assert record["run"] == "speedrun-record" and record["train"] == spec.train.to_dict()
    assert record["command"] == spec.command("runs/speedrun-record")
    assert record["model"] == get_preset(spec.preset)
    assert [row["seed"] for row in record["rows"]] == [spec.train.seed]
    assert all(row["train_s"] <= 30 * 60 for row in record["rows"])
    # the same line, trained before evaluations stopped shifting dropout's masks
    before = committed_result("speedrun_record_before_eval_fix_cpu.json")
    assert before["quiet"] is True and before["load_at_start"] < 1
    assert (before["train"], before["model"]) == (record["train"], record["model"])
    (round3,) = committed_result("speedrun_full_length_cpu.json")["results"]
    assert round3["model"] == record["model"]
    periodic = ("eval_interval", "eval_at_start", "sample_tokens", "seed")
    assert {k: v for k, v in round3["train"].items() if k not in periodic} == {
        k: v for k, v in record["train"].items() if k not in periodic
    }


def test_committed_record_0_is_the_first_book_checkpoint_and_todays_record_0_recipe():
    from sydsgpt.config import SydsGPTConfig
    from sydsgpt.train import TrainConfig

    record0 = committed_result("speedrun_record0_cpu.json")
    spec = RUNS["record-0"]
    assert TrainConfig.from_dict(record0["train"]) == spec.train
    assert record0["steps"] == spec.train.max_steps
    assert dict(SydsGPTConfig.from_dict(record0["model"])) == dict(
        SydsGPTConfig.from_dict({**get_preset(spec.preset), "vocab_size": 2048})
    )
    # the line it was trained with, under the name the run had then
    assert record0["command"] == spec.command("runs/book-checkpoint").replace(
        "--preset record-0", "--preset book-checkpoint"
    )
    assert record0["val_bpb"] > committed_result("speedrun_record1_cpu.json")["val_bpb"]


def test_full_length_recipes_start_from_the_record_and_judge_at_full_length():
    assert set(speedrun.FULL_LENGTH_BASELINES) == set(speedrun.FULL_LENGTH)
    for name, recipe in speedrun.FULL_LENGTH.items():
        base = RUNS[speedrun.FULL_LENGTH_BASELINES[name]]
        assert recipe.run == speedrun.FULL_LENGTH_BASELINES[name]
        assert recipe.budget_s is None, "judged at full length, not on a short budget"
        assert speedrun.recipe_named(name) is recipe
        config, cfg, _, _ = speedrun._setup(recipe, quick=False)
        assert cfg.max_steps == recipe.train.get("max_steps", base.train.max_steps)
        assert {k: config[k] for k in recipe.model} == dict(recipe.model)
        assert cfg.optimizer == base.train.optimizer and cfg.seq_len == base.train.seq_len


def test_committed_full_length_round_is_quiet_and_describes_todays_recipes():
    result = committed_result("speedrun_full_length_cpu.json")
    assert result["quiet"] is True and result["load_at_start"] < 1
    for r in result["results"]:
        recipe = speedrun.FULL_LENGTH[r["name"]]
        assert r["recipe"]["budget_s"] is None
        assert r["recipe"]["model"] == dict(recipe.model)
        assert r["recipe"]["train"] == dict(recipe.train)
        # the run it changes was renamed (record-1) since: what it trained is today's recipe
        config, cfg, _, _ = speedrun._setup(recipe, quick=False)
        assert r["model"] == config
        assert r["train"] == {**cfg.to_dict(), "seed": r["train"]["seed"]}
        assert [s["seed"] for s in r["seeds"]] == [123, 124, 125] and not r["quick"]
        assert all(added["quiet"] and added["load_before"] < 1 for added in r["added_seeds"])
        assert all(s["steps"] == recipe.train["max_steps"] for s in r["seeds"])
        assert all(s["train_s"] <= 30 * 60 for s in r["seeds"]), "within the speedrun's budget"
        _assert_summarizes(r, [s["val_bpb"] for s in r["seeds"]])


def test_add_seeds_extends_a_committed_series_and_recomputes_its_interval(tmp_path):
    out = tmp_path / "series.json"
    speedrun.run(["chapter5"], (1,), quick=True, allow_busy=True, out=out)
    first = json.loads(out.read_text())["results"][0]["seeds"][0]["val_bpb"]
    payload = speedrun.add_seeds(out, "chapter5", [2, 3], quick=True, allow_busy=True)
    written = json.loads(out.read_text())
    (result,) = written["results"]
    values = [s["val_bpb"] for s in result["seeds"]]
    assert [s["seed"] for s in result["seeds"]] == [1, 2, 3] and values[0] == first
    _assert_summarizes(result, values)
    assert result["added_seeds"][0]["seeds"] == [2, 3] and payload["rows"][0]["seeds"] == 3
    with pytest.raises(ValueError, match="already has seed"):
        speedrun.add_seeds(out, "chapter5", [3], quick=True, allow_busy=True)
    with pytest.raises(ValueError, match="has no recipe"):
        speedrun.add_seeds(out, "sr-muon", [4], quick=True, allow_busy=True)
    written["results"][0]["model"]["dropout"] = 0.5  # measured with another recipe
    out.write_text(json.dumps(written))
    with pytest.raises(ValueError, match="changed since"):
        speedrun.add_seeds(out, "chapter5", [4], quick=True, allow_busy=True)
