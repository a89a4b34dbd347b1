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

Run it with ``sydsgpt bench --what speedrun --recipe chapter5 --seeds 3`` (``--quick``:
seconds, a tiny model).
"""

from __future__ import annotations

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

    def __post_init__(self) -> None:
        if self.run not in RUNS:
            raise ValueError(f"unknown run {self.run!r}; known: {', '.join(sorted(RUNS))}")


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
each at chapter 5's parameter count."""


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
    rows = []
    for seed in seeds:
        row = {"seed": seed, **train_row(config, replace(cfg, seed=seed), loaders, tokenizer)}
        rows.append(row)
        if log:
            log(
                f"seed {seed}: {row['val_bpb']:.4f} bits/byte, {row['tokens_per_s']:,.0f} "
                f"tokens/s, {row['train_s']:.0f} s"
            )
    mean, half = interval([row["val_bpb"] for row in rows])
    load_after = os.getloadavg()[0]
    return {
        "recipe": {
            "run": recipe.run,
            "model": dict(recipe.model),
            "train": dict(recipe.train),
            "match_parameters": recipe.match_parameters,
        },
        "model": config,
        "train": cfg.to_dict(),
        "seeds": rows,
        "val_bpb": round(mean, 4),
        "val_bpb_interval": round(half, 4),
        "tokens_per_s": statistics.median(row["tokens_per_s"] for row in rows),
        "load_before": round(load_before, 2),
        "load_after": round(load_after, 2),
        "quiet": quiet,
        "quick": quick,
    }


def run(
    names: Sequence[str],
    seeds: Sequence[int] = SEEDS,
    *,
    quick: bool = False,
    allow_busy: bool = False,
    out: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run the named :data:`RECIPES` one after another; the JSON is written after each."""
    from .common import report

    unknown = [name for name in names if name not in RECIPES]
    if unknown:
        raise ValueError(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
    load_at_start, quiet = check_quiet(allow_busy=allow_busy)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    payload: dict[str, Any] = {}
    for name in names:
        print(f"--- {name}", flush=True)
        results.append({"name": name, **run_recipe(RECIPES[name], seeds, quick=quick, quiet=quiet)})
        rows = [
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
        payload = report(
            rows,
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
