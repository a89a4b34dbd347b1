"""The speedrun harness (appendix: Making it fast): a recipe trained with several seeds to one
budget, and its held-out bits per byte as a mean and a 95% interval.

A change to a recipe counts only when it beats the current record by more than the seeds'
noise, so every number here comes with its spread:

- :class:`Recipe`: a book run (chapter 5's by default: its corpus, tokenizer and
  :class:`~sydsgpt.train.TrainConfig`) with some model and training fields changed;
  :data:`RECIPES` names the ones chapter 7's experiment compares;
- :func:`run_recipe`: trains the recipe once per seed (the seed decides the weights'
  start and the batch order; the data and the budget are the same), and reports each
  seed's held-out bits per byte over the **whole** held-out split, its speed (the median
  step's tokens/s) and its wall time, then the mean and the 95% interval
  (:func:`~sydsgpt.bench.common.interval`);
- :func:`check_quiet`: a result measured on a busy machine is not a result. The harness
  refuses to start when the load average is at or above ``max_load`` (1 by default), unless
  told to go on anyway, and then marks the result ``"quiet": false``.

- :data:`SEARCH` (two-minute budgets) and :data:`FULL_LENGTH` (changes only a full-length
  run can judge) are the speedrun's rounds, each recipe with its baseline; :func:`compare`
  gives the verdict; :func:`add_seeds` extends a committed series with more seeds;
  :func:`confirm` trains a record's run in full, as ``sydsgpt train`` does.

Run it with ``sydsgpt bench --what speedrun --recipe chapter5 --seeds 3`` (``--quick``:
seconds, a tiny model).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from ..model import count_parameters
from ..presets import RUNS, get_preset
from .common import interval
from .modern import CHANGES, match_parameter_count, quick_setup, train_row

QUIET_LOAD = 1.0
"""The highest 1-minute load average at which a measurement may start."""
SEEDS = (123, 124, 125)
"""The default seeds: chapter 5's and the next two."""


@dataclass(frozen=True)
class Recipe:
    """What is trained: a book run with some fields changed."""

    run: str = "book-ch05"
    """The book run (:data:`sydsgpt.presets.RUNS`) whose corpus, tokenizer, model preset and
    training config the recipe starts from."""
    model: Mapping[str, Any] = field(default_factory=dict)
    """Model config fields changed (e.g. ``{"norm": "rmsnorm"}``)."""
    train: Mapping[str, Any] = field(default_factory=dict)
    """:class:`~sydsgpt.train.TrainConfig` fields changed (e.g. ``{"max_steps": 1200}``)."""
    match_parameters: bool = False
    """Choose the feed-forward width so the parameter count is the run's model's (a change
    that adds or removes parameters is then compared at equal size)."""
    tokenizer: str | None = None
    """Another tokenizer for the run (``bpe:N``); ``None``: the run's."""
    budget_s: float | None = None
    """Train for this many seconds of training steps instead of the run's ``max_steps``: a
    short calibration run measures this recipe's speed here, which gives the steps (the same
    for every seed), and the warm-up keeps the run's share of them. ``None``: the run's
    steps."""

    def __post_init__(self) -> None:
        if self.run not in RUNS:
            raise ValueError(f"unknown run {self.run!r}; known: {', '.join(sorted(RUNS))}")
        if self.budget_s is not None and not self.budget_s > 0:
            raise ValueError(f"budget_s must be > 0 seconds, got {self.budget_s}")


RECIPES: dict[str, Recipe] = {
    "chapter5": Recipe(),
    **{
        name.split(" (")[0].lstrip("+").lower().replace(" ", "-"): Recipe(
            model=changes, match_parameters=True
        )
        for name, changes in CHANGES[1:]
    },
}
"""Chapter 7's experiment as recipes: chapter 5's run, each modern part on its own
(``rmsnorm``, ``swiglu``, ``rope``, ``gqa``, ``qk-norm``) and all of them (``modern-blocks``),
each at chapter 5's parameter count; then the speedrun's search (:data:`SEARCH`)."""

SEARCH_BUDGET_S = 120.0
"""The search's budget per seed: two minutes of training steps."""
MODERN_PARTS = {
    key: value
    for key, value in dict(CHANGES)["modern blocks"].items()
    if key not in ("num_kv_heads", "qk_norm")
}
"""Chapter 7's parts whose intervals did not come out worse than GPT-2 blocks' (QK-norm did;
GQA saves memory, not loss, at this size)."""


def _search(model: Mapping[str, Any] | None = None, **fields: Any) -> Recipe:
    """A search recipe: record 0's run (the first book checkpoint) for
    :data:`SEARCH_BUDGET_S` seconds."""
    return Recipe(
        run="record-0",
        model=dict(model or {}),
        budget_s=SEARCH_BUDGET_S,
        match_parameters=bool(model),
        **fields,
    )


MUON = {"optimizer": "muon"}
SEARCH: dict[str, Recipe] = {
    # round 1: one change at a time on record 0 (the first book checkpoint's recipe)
    "sr-base": _search(),
    "sr-muon": _search(train=MUON),
    "sr-modern": _search(MODERN_PARTS),
    "sr-modern-muon": _search(MODERN_PARTS, train=MUON),
    # round 2: one change at a time on round 1's record (modern parts and Muon)
    "sr-mm-seq128": _search(
        {**MODERN_PARTS, "context_length": 128}, train={**MUON, "seq_len": 128, "batch_size": 32}
    ),
    "sr-mm-bpe1024": _search(MODERN_PARTS, train=MUON, tokenizer="bpe:1024"),
    "sr-mm-deep": _search(
        {**MODERN_PARTS, "embedding_dim": 192, "num_layers": 6, "num_heads": 3}, train=MUON
    ),
}
"""The speedrun's search, each recipe trained for :data:`SEARCH_BUDGET_S` seconds per seed.
Round 1: record 0's recipe (``sr-base``, the first book checkpoint), Muon, chapter 7's parts,
both. Round 2, on round 1's record (``sr-modern-muon``): a shorter context with more
sequences per step (the same tokens), a 1,024-id BPE, a deeper and narrower model (at equal
parameters)."""

SEARCH_BASELINES: dict[str, str] = {
    "sr-muon": "sr-base",
    "sr-modern": "sr-base",
    "sr-modern-muon": "sr-muon",
    "sr-mm-seq128": "sr-modern-muon",
    "sr-mm-bpe1024": "sr-modern-muon",
    "sr-mm-deep": "sr-modern-muon",
}
"""Each search recipe's baseline: the recipe it changes one thing of."""


FULL_LENGTH: dict[str, Recipe] = {
    # round 3, at full length on record 1: regularize, and spend the time it saves
    "rec1-dropout0.2-x1.5": Recipe(
        run="record-1", model={"dropout": 0.2}, train={"max_steps": 1350}
    ),
}
"""Changes to the record that only a full-length run can judge: twice the dropout of record 1
(0.2 against 0.1) and half as many steps again (1,350 against 900, about 18 minutes), so
that the regularization has time to pay (record 1 stopped after 900 steps because its
validation loss was about to turn up). Compared with the record's own seeds
(``speedrun_record1_cpu.json``). Round 3's recipe became record 2, the run
``speedrun-record`` (the runner measured it when record 1 was that run's name, which its
result file still says)."""

FULL_LENGTH_BASELINES: dict[str, str] = {name: "record-1" for name in FULL_LENGTH}
"""Each full-length recipe's baseline: a run of :data:`sydsgpt.presets.RUNS` whose committed
record it must beat."""


def _bounds(result: Mapping[str, Any]) -> tuple[float, float]:
    """The ends of a result's 95% interval of bits per byte."""
    mean, half = result["val_bpb"], result["val_bpb_interval"]
    return mean - half, mean + half


def compare(result: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    """``"lower"`` or ``"higher"`` when ``result``'s 95% interval of bits per byte lies wholly
    below or above ``baseline``'s (a change that beats it beyond the seeds' noise, or loses),
    else ``"cannot tell"``."""
    (low, high), (base_low, base_high) = _bounds(result), _bounds(baseline)
    if high < base_low:
        return "lower"
    if low > base_high:
        return "higher"
    return "cannot tell"


def recipe_named(name: str) -> Recipe:
    """The recipe of :data:`RECIPES`, :data:`SEARCH` or :data:`FULL_LENGTH` with this name
    (``ValueError`` naming the known ones otherwise)."""
    known = {**RECIPES, **SEARCH, **FULL_LENGTH}
    if name not in known:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(known)}")
    return known[name]


def check_quiet(max_load: float = QUIET_LOAD, allow_busy: bool = False) -> tuple[float, bool]:
    """``(load, quiet)``: the 1-minute load average now, and whether it is below ``max_load``.

    Raises:
        RuntimeError: the machine is busy and ``allow_busy`` is false.
    """
    load = os.getloadavg()[0]
    quiet = load < max_load
    if not quiet and not allow_busy:
        raise RuntimeError(
            f"the machine is busy (load average {load:.2f}, at least {max_load}): timings and "
            "budgets measured now are not results; wait until it is quiet, or pass --allow-busy "
            "to run anyway with the result marked quiet: false"
        )
    return load, quiet


def _setup(recipe: Recipe, quick: bool) -> tuple[dict[str, Any], Any, Any, Any]:
    """``(model config, train config, (train, held-out) loaders, tokenizer)`` of a recipe."""
    from ..book import book_tokenizer
    from ..corpora import load_corpus
    from ..data import make_loaders

    spec = RUNS[recipe.run]
    if recipe.tokenizer is not None:
        spec = replace(spec, tokenizer=recipe.tokenizer)
    if quick:
        text, tokenizer, base = quick_setup(spec.preset)
        cfg = replace(spec.train, max_steps=4, batch_size=4, seq_len=32, warmup_steps=1)
    else:
        text = load_corpus(spec.corpus)
        tokenizer = book_tokenizer(run=spec)
        base = get_preset(spec.preset)
        cfg = spec.train
    base = {**base, "vocab_size": tokenizer.n_vocab}
    config = {**base, **recipe.model}
    if recipe.match_parameters:
        config = match_parameter_count(config, count_parameters(base))
    cfg = replace(cfg, eval_interval=0, sample_tokens=0, eval_at_start=False, **recipe.train)
    cfg = replace(cfg, seq_len=cfg.seq_len or config["context_length"])
    loaders = make_loaders(text, tokenizer, cfg.seq_len, cfg.batch_size, spec.val_fraction)
    return config, cfg, loaders, tokenizer


CALIBRATION_STEPS = 10
"""Steps of the calibration run that measures a recipe's speed (its second half counts)."""


def budget_steps(
    config: Mapping[str, Any],
    cfg: Any,
    loaders: tuple[Any, Any],
    tokenizer: Any,
    budget_s: float,
    quick: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """``(cfg with max_steps and warmup_steps for budget_s, calibration row)``.

    A short run (:data:`CALIBRATION_STEPS` steps) measures the recipe's tokens/s over its
    second half; the budget's steps are ``budget_s`` times that speed over the tokens of one
    step (at least 10; ``quick``: 4). The warm-up keeps the run's share of its steps."""
    calibration = train_row(
        config,
        replace(cfg, max_steps=2 if quick else CALIBRATION_STEPS, warmup_steps=1),
        loaders,
        tokenizer,
    )
    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum_steps
    steps = (
        4
        if quick
        else max(10, round(budget_s * calibration["late_tokens_per_s"] / tokens_per_step))
    )
    share = cfg.warmup_for(cfg.max_steps) / cfg.max_steps if cfg.max_steps else 0.05
    return replace(cfg, max_steps=steps, warmup_steps=max(1, round(share * steps))), calibration


def _seed_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A recipe's summary over its seeds' rows: held-out bits per byte as a mean and the half
    width of its 95% interval, and the median tokens/s."""
    mean, half = interval([row["val_bpb"] for row in rows])
    return {
        "val_bpb": round(mean, 4),
        "val_bpb_interval": round(half, 4),
        "tokens_per_s": statistics.median(row["tokens_per_s"] for row in rows),
    }


def run_recipe(
    recipe: Recipe,
    seeds: Sequence[int] = SEEDS,
    *,
    quick: bool = False,
    allow_busy: bool = False,
    log: Any = print,
    quiet: bool | None = None,
) -> dict[str, Any]:
    """Train ``recipe`` once per seed and summarize held-out bits per byte (mean, 95% interval).

    ``quiet``: whether the machine was quiet when the caller's series of runs started (the
    load average right after a run is the run's own, so :func:`run` checks once, before the
    first recipe); ``None``: check now (:func:`check_quiet`).

    Returns ``{"recipe", "model", "train", "seeds": [per-seed rows], "val_bpb",
    "val_bpb_interval", "tokens_per_s", "load_before", "load_after", "quiet"}``.
    """
    if not seeds:
        raise ValueError("give at least one seed (three or more for an interval)")
    if quiet is None:
        load_before, quiet = check_quiet(allow_busy=allow_busy)
    else:
        load_before = os.getloadavg()[0]
    config, cfg, loaders, tokenizer = _setup(recipe, quick)
    calibration = None
    if recipe.budget_s is not None:
        cfg, calibration = budget_steps(config, cfg, loaders, tokenizer, recipe.budget_s, quick)
        if log:
            log(
                f"budget {recipe.budget_s:.0f} s: {cfg.max_steps} steps at "
                f"{calibration['late_tokens_per_s']:,.0f} tokens/s (calibration)"
            )
    rows = []
    for seed in seeds:
        row = {"seed": seed, **train_row(config, replace(cfg, seed=seed), loaders, tokenizer)}
        rows.append(row)
        if log:
            log(
                f"seed {seed}: {row['val_bpb']:.4f} bits/byte, {row['tokens_per_s']:,.0f} "
                f"tokens/s, {row['train_s']:.0f} s"
            )
    load_after = os.getloadavg()[0]
    return {
        "recipe": {
            "run": recipe.run,
            "model": dict(recipe.model),
            "train": dict(recipe.train),
            "match_parameters": recipe.match_parameters,
            "tokenizer": recipe.tokenizer,
            "budget_s": recipe.budget_s,
        },
        "model": config,
        "train": cfg.to_dict(),
        "seeds": rows,
        **_seed_summary(rows),
        "calibration": calibration,
        "load_before": round(load_before, 2),
        "load_after": round(load_after, 2),
        "quiet": quiet,
        "quick": quick,
    }


def _summary_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One table row per recipe of a series' results."""
    return [
        {
            "recipe": r["name"],
            "val_bpb": r["val_bpb"],
            "interval": r["val_bpb_interval"],
            "seeds": len(r["seeds"]),
            "tokens_per_s": r["tokens_per_s"],
            "quiet": r["quiet"],
        }
        for r in results
    ]


def run(
    names: Sequence[str],
    seeds: Sequence[int] = SEEDS,
    *,
    quick: bool = False,
    allow_busy: bool = False,
    out: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run the named :data:`RECIPES` one after another; the JSON (``out``) is written after
    each."""
    from .common import report

    recipes = [recipe_named(name) for name in names]
    load_at_start, quiet = check_quiet(allow_busy=allow_busy)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    payload: dict[str, Any] = {}
    for name, recipe in zip(names, recipes):
        print(f"--- {name}", flush=True)
        results.append({"name": name, **run_recipe(recipe, seeds, quick=quick, quiet=quiet)})
        payload = report(
            _summary_rows(results),
            None,
            out,
            "speedrun",
            log=None,
            results=results,
            load_at_start=round(load_at_start, 2),
            quiet=quiet,
            wall_s=round(time.perf_counter() - started, 1),
        )
    from .common import format_table

    print(format_table(payload["rows"]), flush=True)
    return payload


def add_seeds(
    out: str | os.PathLike[str],
    name: str,
    seeds: Sequence[int],
    *,
    quick: bool = False,
    allow_busy: bool = False,
) -> dict[str, Any]:
    """Train recipe ``name`` of the result file ``out`` (written by :func:`run`) with more
    ``seeds`` and write it back with every seed's row, the mean and the interval recomputed
    over all of them; ``added_seeds`` says when each batch of seeds ran and the load then.

    Raises:
        ValueError: ``out`` has no such recipe, a seed is already in it, or the recipe's
            definition changed since it was measured.
    """
    from pathlib import Path

    from .common import report

    payload = json.loads(Path(out).read_text())
    results = {r["name"]: r for r in payload["results"]}
    if name not in results:
        raise ValueError(f"{out} has no recipe {name!r}; it has {', '.join(results)}")
    result = results[name]
    have = [row["seed"] for row in result["seeds"]]
    if set(have) & set(seeds):
        raise ValueError(f"{name} in {out} already has seed(s) {sorted(set(have) & set(seeds))}")
    fresh = run_recipe(recipe_named(name), seeds, quick=quick, allow_busy=allow_busy)

    def trained(r: Mapping[str, Any]) -> tuple[Any, Any]:  # whatever the seed or run name
        return r["model"], {**r["train"], "seed": None}

    if trained(fresh) != trained(result):
        raise ValueError(f"recipe {name!r} changed since {out} was measured; run it afresh")
    rows = [*result["seeds"], *fresh["seeds"]]
    result.update(seeds=rows, **_seed_summary(rows), quiet=result["quiet"] and fresh["quiet"])
    result.setdefault("added_seeds", []).append(
        {"seeds": list(seeds), "load_before": fresh["load_before"], "quiet": fresh["quiet"]}
    )
    extra = {k: v for k, v in payload.items() if k not in ("benchmark", "machine", "rows")}
    extra["quiet"] = payload["quiet"] and fresh["quiet"]
    return report(_summary_rows(payload["results"]), None, out, "speedrun", log=None, **extra)


def confirm(
    run: str = "speedrun-record",
    seeds: Sequence[int] = SEEDS[:2],
    *,
    runs_dir: str | os.PathLike[str] = "runs/speedrun",
    allow_busy: bool = False,
    out: str | os.PathLike[str] | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """A record's confirmation: the book run ``run`` (the speedrun's record recipe by default)
    trained in full, exactly as ``sydsgpt train`` trains it, once per seed
    (``runs_dir/<run>-seed<N>``; the first seed is the run's own, so its folder is a finished
    run that :func:`sydsgpt.book.publish_book_checkpoint` can publish), each scored on the
    whole held-out split.

    Returns :func:`~sydsgpt.bench.common.report`'s payload with ``"rows"`` (one per seed:
    ``"seed", "val_bpb", "val_loss", "train_s", "folder"``), ``"val_curves"`` (``[step,
    loss]`` per seed), ``"run", "command", "model", "train", "tokenizer", "val_bpb",
    "val_bpb_interval", "load_at_start", "load_after", "quiet", "wall_s"`` (written to ``out``
    when given). ``train_s`` is the time of the training steps
    (evaluations excluded), as the book checkpoint's ``info.json`` counts it.
    """
    from pathlib import Path

    from ..book import _run_seconds, held_out, train_book_model
    from .common import format_table, report

    if not seeds:
        raise ValueError("give at least one seed (two or more for an interval)")
    spec = RUNS[run]
    load_at_start, quiet = check_quiet(allow_busy=allow_busy)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    payload: dict[str, Any] = {}
    for seed in seeds:
        folder = Path(runs_dir) / f"{run}-seed{seed}"
        book_run = train_book_model(
            folder, run=spec, cfg=replace(spec.train, seed=seed), fresh=True, show_progress=False
        )
        loss, bpb = held_out(book_run.model, book_run.tokenizer, run)
        rows.append(
            {
                "seed": seed,
                "val_bpb": round(bpb, 4),
                "val_loss": round(loss, 4),
                "train_s": round(_run_seconds(book_run.history), 1),
                "val_curve": [
                    [r["step"], round(r["val_loss"], 4)]
                    for r in book_run.history
                    if "val_loss" in r
                ],
                "folder": str(folder),
            }
        )
        if log:
            log(f"seed {seed}: {bpb:.4f} bits/byte, {rows[-1]['train_s'] / 60:.1f} min")
        mean, half = interval([row["val_bpb"] for row in rows])
        payload = report(
            [{k: v for k, v in row.items() if k != "val_curve"} for row in rows],
            None,
            out,
            "speedrun-record",
            log=None,
            run=run,
            command=spec.command(f"runs/{run}"),
            model=get_preset(spec.preset),
            train=spec.train.to_dict(),
            tokenizer=spec.tokenizer,
            val_curves={str(row["seed"]): row["val_curve"] for row in rows},
            val_bpb=round(mean, 4),
            val_bpb_interval=None if math.isnan(half) else round(half, 4),
            load_at_start=round(load_at_start, 2),
            load_after=round(os.getloadavg()[0], 2),
            quiet=quiet,
            wall_s=round(time.perf_counter() - started, 1),
        )
    if log:
        log(format_table(payload["rows"]))
    return payload
