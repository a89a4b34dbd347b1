"""Benchmark: chapter 9's classification experiments, on a real pretrained model and on ours.

Every row builds an SMS spam classifier and is scored on the held-out **test** split of a
:func:`sydsgpt.classify.balanced_split` (as many ham as spam, so guessing scores 50%). Each row
runs with :data:`SEEDS`: seed ``s`` draws its own split (``SPLIT_SEED + s``), its own new head
and adapters and its own batch order, so the spread covers the data as well as the training.

Rows (:data:`ROWS`), two bases and the baselines they must beat:

* ``majority class``; ``bag of words``: word presence + logistic regression;
* **SmolLM2-135M-Instruct** (:mod:`sydsgpt.smollm2`): the head only (frozen features at each
  text's last token, computed once and cached, then a logistic regression:
  :func:`sydsgpt.classify.last_token_features`), the last 4 blocks, LoRA at ranks 1, 4 and 16
  (``alpha = 2 r`` on every linear layer of the blocks) and all weights;
* **the same architecture from random init**, all trained for the same steps;
* **the book checkpoint** (3.7M parameters, Shakespeare only): head only, all, and its
  architecture from random init, the small-model, wrong-domain contrast.

Learning rates: each row lists candidates; seed 0 trains once per candidate and the one with
the best *validation* accuracy (ties: the first) is the row's rate for seeds 1 and 2 (seed 0
keeps its run at that rate). Every candidate's validation accuracy is in the result.

**A learning curve** (:data:`CURVE_SIZES`): the rows of :data:`CURVE_ROWS` again on balanced
subsets of each seed's training split, scored on the same test split (both from-scratch
models on it).

**Where the memory goes** (:func:`memory_breakdown`): one training step of SmolLM2 with every
weight trained, with LoRA r=16 and with the head only, split into weights, gradients, AdamW's
state and the activations saved for the backward pass (tensors, counted exactly), and the peak
RSS of the step.

How it is sized (50 minutes on this project's 2 quiet cores, 2026-12-07): texts cut to
:data:`MAX_LENGTH` tokens (the median SMS is 36 SmolLM2 tokens; the start of a message carries
most of its spam cues), batches of 16, one epoch over the training split (65 full batches) and
at least :data:`MIN_STEPS` steps on the learning curve's small subsets; two learning-rate
candidates for the rows that train SmolLM2's blocks, two to four for the cheap ones. Timings
are wall clock with :data:`THREADS` threads; run it on a quiet machine (the result records the
load average before and after).

Run it with ``sydsgpt bench --what finetune`` (``--quick``: seconds, tiny random models in
place of both bases; the rows and the JSON are the same).
"""

from __future__ import annotations

import copy
import json
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..classify import (
    ClassificationDataset,
    ClassifierConfig,
    Record,
    bag_of_words_baseline,
    balanced_split,
    class_labels,
    classifier_train_config,
    finetune_classifier,
    fit_logistic_regression,
    last_token_features,
    majority_baseline,
)
from ..corpora import SMS_LABELS, load_sms_spam
from ..lora import LoRAConfig, count_trainable_parameters
from ..model import SydsGPT
from ..runtime import seed_everything
from ..train_config import Session
from .common import RESULTS_DIR, machine_info, report, torch_threads
from .memory import PeakMemory

SPLIT_SEED = 123
"""Seed ``s`` of a row splits the data with ``balanced_split(seed=SPLIT_SEED + s)``."""
SEEDS = (0, 1, 2)
MAX_LENGTH = {"smollm2": 32, "book": 64}
"""Tokens per message for each base (the book's 1,024-id tokenizer needs about twice as many)."""
BATCH_SIZE = 16
MIN_STEPS = 30
"""A training set smaller than ``MIN_STEPS`` batches is repeated (whole epochs) up to it."""
HEAD_STEPS = 300
"""Full-batch Adam steps of the logistic regressions (bag of words, cached-feature heads)."""
THREADS = 2
CURVE_SIZES = (16, 64, 256)
"""Training examples (half spam) on the learning curve; the full split is the main table."""


@dataclass(frozen=True)
class Row:
    """One way of building the classifier."""

    name: str
    kind: str
    """``"majority"``, ``"bow"``, ``"features"`` (head on cached features) or a
    :func:`~sydsgpt.classify.set_trainable` choice (``"last-block"``, ``"lora"``, ``"all"``)."""
    base: str = ""
    """``"smollm2"`` or ``"book"`` (empty for the baselines)."""
    lrs: tuple[float, ...] = ()
    pretrained: bool = True
    rank: int = 0
    last_blocks: int = 1


ROWS = (
    Row("majority class", "majority"),
    Row("bag of words", "bow", lrs=(0.01, 0.05)),
    Row("SmolLM2 size, random init, all trained", "all", "smollm2", (3e-4, 1e-3), False),
    Row(
        "SmolLM2, head only (cached features)",
        "features",
        "smollm2",
        (1e-3, 3e-3, 1e-2, 3e-2),
    ),
    Row("SmolLM2, last 4 blocks", "last-block", "smollm2", (1e-4, 3e-4), last_blocks=4),
    Row("SmolLM2, LoRA r=1", "lora", "smollm2", (1e-3, 3e-3), rank=1),
    Row("SmolLM2, LoRA r=4", "lora", "smollm2", (1e-3, 3e-3), rank=4),
    Row("SmolLM2, LoRA r=16", "lora", "smollm2", (1e-3, 3e-3), rank=16),
    Row("SmolLM2, all", "all", "smollm2", (3e-5, 1e-4)),
    Row("book size, random init, all trained", "all", "book", (1e-3, 3e-3), False),
    Row(
        "book, head only (cached features)",
        "features",
        "book",
        (1e-3, 3e-3, 1e-2, 3e-2),
    ),
    Row("book, all", "all", "book", (3e-4, 1e-3, 3e-3)),
)
"""The main table, in order."""
CURVE_ROWS = (
    "bag of words",
    "book size, random init, all trained",
    "SmolLM2 size, random init, all trained",
    "SmolLM2, head only (cached features)",
    "SmolLM2, LoRA r=4",
)
"""The rows on the learning curve (each at the learning rate it chose on the full split)."""
FIRST = ("majority class", *CURVE_ROWS, "book, head only (cached features)", "book, all")
"""Measured first, then the learning curve and the memory split, then the expensive rows (an
interrupted run keeps the rows, the curve and the split it finished)."""
SETUPS = tuple(row.name for row in ROWS)
COLUMNS = ("setup", "accuracy", "spread", "lr", "trainable_params", "train_s", "peak_mem_mb")


@dataclass
class Base:
    """A pretrained model to finetune, with its tokenizer and where it came from."""

    model: nn.Module
    tokenizer: Any
    source: str
    max_length: int


def load_bases(quick: bool) -> dict[str, Base]:
    """SmolLM2 and the book checkpoint (``quick``: two tiny random models on raw bytes)."""
    if quick:
        from ..bpe import BPETokenizer

        bases = {}
        for name, width in (("smollm2", 32), ("book", 16)):
            seed_everything(0)
            model = SydsGPT(
                {
                    "vocab_size": 256,
                    "embedding_dim": width,
                    "context_length": 16,
                    "num_layers": 4,
                    "num_heads": 2,
                    "dropout": 0.0,
                }
            )
            tokenizer = BPETokenizer(name="bytes")
            bases[name] = Base(
                model.eval(), tokenizer, f"a tiny random model ({name}, --quick)", 16
            )
        return bases
    from ..models import load_model

    smollm2, smollm2_tokenizer = load_model("smollm2-135m-instruct", MAX_LENGTH["smollm2"])
    return {
        "smollm2": Base(
            smollm2.eval(), smollm2_tokenizer, "SmolLM2-135M-Instruct", MAX_LENGTH["smollm2"]
        ),
        "book": Base(*book_base_model(), MAX_LENGTH["book"]),
    }


def describe_bases(bases: dict[str, Base]) -> dict[str, dict[str, Any]]:
    """What the result records of each base: where it came from, its size and config."""
    return {
        name: {
            "source": b.source,
            "params": sum(p.numel() for p in b.model.parameters()),
            "config": b.model.config.to_dict(),
            "max_length": b.max_length,
        }
        for name, b in bases.items()
    }


def book_base_model() -> tuple[nn.Module, Any, str]:
    """``(model, tokenizer, description)`` of the book checkpoint (checked against its sha256)."""
    from ..book import load_book_checkpoint

    book = load_book_checkpoint()
    return book.model, book.tokenizer, f"the book checkpoint, sha256 {book.info['sha256']}"


@dataclass
class Split:
    """One seed's balanced train / validation / test records."""

    seed: int
    train: list[Record]
    val: list[Record]
    test: list[Record]


def subset(records: Sequence[Record], size: int) -> list[Record]:
    """The first ``size`` records with as many of each label as possible (records are shuffled)."""
    labels = class_labels(records)
    per_label = size // len(labels)
    chosen = [r for label in labels for r in [r for r in records if r[0] == label][:per_label]]
    return sorted(chosen, key=records.index)


class Runner:
    """Trains and scores one row on one split; caches features per base (they do not change)."""

    def __init__(self, bases: dict[str, Base], quick: bool) -> None:
        self.bases, self.quick = bases, quick
        self._features: dict[tuple[str, str], torch.Tensor] = {}

    def features(self, base: str, records: Sequence[Record]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each record's frozen last-token features (computed once per text) and label ids."""
        b = self.bases[base]
        labels = SMS_LABELS
        new = [text for _, text in records if (base, text) not in self._features]
        if new:
            data = ClassificationDataset(
                [(labels[0], t) for t in new], b.tokenizer, labels, b.max_length
            )
            for text, row in zip(new, last_token_features(b.model, data)):
                self._features[(base, text)] = row
        x = torch.stack([self._features[(base, text)] for _, text in records])
        y = torch.tensor([labels.index(label) for label, _ in records])
        return x, y

    def run(
        self,
        row: Row,
        train: Sequence[Record],
        scored: Sequence[Sequence[Record]],
        lr: float,
        seed: int,
    ) -> dict[str, Any]:
        """Train ``row`` on ``train`` at ``lr``; its accuracy on each list of ``scored`` records."""
        steps = HEAD_STEPS if not self.quick else 20
        if row.kind == "majority":
            return {"scores": [majority_baseline(train, s) for s in scored], "trainable_params": 0}
        if row.kind == "bow":
            fits = [bag_of_words_baseline(train, s, steps=steps, lr=lr, seed=seed) for s in scored]
            return {
                "scores": [f["accuracy"] for f in fits],
                "trainable_params": fits[0]["trainable_params"],
                "train_s": fits[0]["train_s"],
            }
        if row.kind == "features":
            x, y = self.features(row.base, train)
            fit = fit_logistic_regression(x, y, 2, steps=steps, lr=lr, seed=seed)
            return {
                "scores": [fit.accuracy(*self.features(row.base, s)) for s in scored],
                "trainable_params": count_trainable_parameters(fit.regression),
                "train_s": fit.train_s,
            }
        return self._finetune(row, train, scored, lr, seed)

    def _finetune(
        self,
        row: Row,
        train: Sequence[Record],
        scored: Sequence[Sequence[Record]],
        lr: float,
        seed: int,
    ) -> dict[str, Any]:
        base = self.bases[row.base]
        if row.pretrained:
            model = copy.deepcopy(base.model)
        else:
            seed_everything(seed)
            model = SydsGPT(base.model.config)
        epochs = max(1, math.ceil(MIN_STEPS * min(BATCH_SIZE, len(train)) / len(train)))
        cfg = classifier_train_config(
            epochs=epochs,
            batch_size=min(BATCH_SIZE, len(train)),
            lr=lr,
            eval_interval=0,
            seed=SPLIT_SEED + seed,
        )
        lora = LoRAConfig(rank=row.rank, alpha=2.0 * row.rank) if row.kind == "lora" else None
        spec = ClassifierConfig(
            labels=SMS_LABELS,
            trainable=row.kind,
            lora=lora,
            last_blocks=row.last_blocks,
            max_length=base.max_length,
        )
        with PeakMemory("cpu") as memory:
            result = finetune_classifier(
                model,
                base.tokenizer,
                train,
                None,
                classifier=spec,
                cfg=cfg,
                session=Session(show_progress=False),
            )
        return {
            "scores": [result.accuracy(s) for s in scored],
            "trainable_params": result.trainable_params,
            "train_s": result.train_s,
            "steps": result.history[-1]["step"],
            "peak_mem_mb": memory.peak_bytes / 2**20,
            "loss_curve": [
                [r["step"], round(r["train_loss"], 4)] for r in result.history if "train_loss" in r
            ],
        }


def _mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def measure_row(
    runner: Runner, row: Row, splits: Sequence[Split], log: Callable[[str], None] = print
) -> dict[str, Any]:
    """One row of the main table: seed 0 picks the rate on validation, every seed is tested."""
    first = splits[0]
    candidates: dict[float, dict[str, Any]] = {}
    for lr in row.lrs or (0.0,):
        candidates[lr] = runner.run(row, first.train, (first.val, first.test), lr, first.seed)
        log(f"  {row.name}: lr {lr:g} -> validation {candidates[lr]['scores'][0]:.3f}")
    lr = max(candidates, key=lambda c: candidates[c]["scores"][0])  # first of ties
    runs = [candidates[lr]]
    for split in splits[1:]:
        runs.append(runner.run(row, split.train, (split.val, split.test), lr, split.seed))
    tests = [r["scores"][1] for r in runs]
    mean, spread = _mean_spread(tests)
    result: dict[str, Any] = {
        "setup": row.name,
        "accuracy": round(mean, 4),
        "spread": round(spread, 4),
        "accuracies": [round(t, 4) for t in tests],
        "lr": lr if row.lrs else None,
        "val_by_lr": {f"{c:g}": round(r["scores"][0], 4) for c, r in candidates.items()}
        if row.lrs
        else None,
        "trainable_params": runs[0]["trainable_params"],
    }
    if "train_s" in runs[0]:
        result["train_s"] = round(statistics.median(r["train_s"] for r in runs), 2)
    if "steps" in runs[0]:
        result["steps"] = runs[0]["steps"]
        result["peak_mem_mb"] = round(statistics.median(r["peak_mem_mb"] for r in runs), 1)
        result["loss_curve"] = runs[0]["loss_curve"]  # seed 0's training loss, step by step
    log(f"{row.name}: test accuracy {mean:.3f} +- {spread:.3f} (lr {lr:g})")
    return result


def measure_curve(
    runner: Runner,
    rows: dict[str, dict[str, Any]],
    splits: Sequence[Split],
    sizes: Sequence[int],
    log: Callable[[str], None] = print,
    names: Sequence[str] = CURVE_ROWS,
) -> list[dict[str, Any]]:
    """The learning curve: each of :data:`CURVE_ROWS` on balanced subsets of every seed's
    training split, at the rate it chose on the full split; the full split's point is the
    main table's."""
    points = []
    by_name = {row.name: row for row in ROWS}
    for name in names:
        row, chosen = by_name[name], rows[name]
        for size in sizes:
            tests = [
                runner.run(row, subset(s.train, size), (s.test,), chosen["lr"] or 0.0, s.seed)[
                    "scores"
                ][0]
                for s in splits
            ]
            mean, spread = _mean_spread(tests)
            points.append(
                {
                    "setup": name,
                    "train_examples": size,
                    "accuracy": round(mean, 4),
                    "spread": round(spread, 4),
                    "accuracies": [round(t, 4) for t in tests],
                }
            )
            log(f"curve {name} n={size}: {mean:.3f} +- {spread:.3f}")
        points.append(
            {
                "setup": name,
                "train_examples": len(splits[0].train),
                "accuracy": chosen["accuracy"],
                "spread": chosen["spread"],
                "accuracies": chosen["accuracies"],
            }
        )
    return points


def _bytes(tensors: Sequence[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def memory_breakdown(
    model: nn.Module, input_ids: torch.Tensor, trainable: str, lora: LoRAConfig | None = None
) -> dict[str, float]:
    """MiB of one AdamW training step of ``model`` as a 2-class classifier (changed in place):
    ``weights`` (every parameter), ``gradients`` and ``optimizer`` (AdamW's two moments, only
    for trainable parameters), ``activations`` (tensors autograd saves for the backward pass,
    weights excluded), and ``peak_rss`` (the step's peak resident memory above its start)."""
    from ..classify import GPTClassifier, set_trainable

    classifier = GPTClassifier(model, 2)
    set_trainable(classifier, trainable, lora)
    params = [p for p in classifier.parameters()]
    weights = {p.untyped_storage().data_ptr() for p in params}
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in weights:
            saved.append(t)
        return t

    optimizer = torch.optim.AdamW([p for p in params if p.requires_grad], lr=1e-5)
    lengths = torch.full((len(input_ids),), input_ids.shape[1])
    with PeakMemory("cpu") as memory:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logits = classifier(input_ids)[torch.arange(len(input_ids)), lengths - 1]
        nn.functional.cross_entropy(
            logits, torch.zeros(len(input_ids), dtype=torch.long)
        ).backward()
        optimizer.step()
    grads = [p.grad for p in params if p.grad is not None]
    state = [t for s in optimizer.state.values() for t in s.values() if t.dim() > 0]
    mib = 2**20
    return {
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "weights": _bytes(params) / mib,
        "gradients": _bytes(grads) / mib,
        "optimizer": _bytes(state) / mib,
        "activations": _bytes(saved) / mib,
        "peak_rss": memory.peak_bytes / mib,
    }


MEMORY_SETUPS = (
    ("all weights", "all", None),
    ("LoRA r=16", "lora", LoRAConfig(rank=16, alpha=32.0)),
    ("head only", "head", None),
)


def run(
    out: str | os.PathLike[str] | None = RESULTS_DIR / "finetune_cpu.json",
    quick: bool = False,
    threads: int | None = THREADS,
    only: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure the rows (``only``: just these names of :data:`SETUPS`; the learning curve and
    the memory split run with the full table only), print the table and write the JSON ``out``
    after every row (an interrupted run keeps what it measured)."""
    unknown = sorted(set(only or ()) - set(SETUPS))
    if unknown:
        raise ValueError(
            f"unknown finetune benchmark row(s) {unknown}; the rows are {list(SETUPS)}"
        )
    with torch_threads(threads):
        return _run(out, quick, set(only or SETUPS), log)


def _run(
    out: str | os.PathLike[str] | None, quick: bool, only: set[str], log: Callable[[str], None]
) -> dict[str, Any]:
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    bases = load_bases(quick)
    splits = _splits(quick)
    runner = Runner(bases, quick)
    extra: dict[str, Any] = {
        "quick": quick,
        "data": "sms-spam",
        "bases": describe_bases(bases),
        "seeds": list(SEEDS),
        "split": {
            "seeds": [SPLIT_SEED + s for s in SEEDS],
            "train": len(splits[0].train),
            "val": len(splits[0].val),
            "test": len(splits[0].test),
        },
        "batch_size": BATCH_SIZE,
        "min_steps": MIN_STEPS,
        "head_steps": HEAD_STEPS if not quick else 20,
        "threads": torch.get_num_threads(),
        "load_before": round(load_before, 2),
    }
    rows: dict[str, dict[str, Any]] = {}

    def write() -> dict[str, Any]:
        return report(
            [rows[n] for n in SETUPS if n in rows],
            COLUMNS,
            out,
            "finetune",
            log=None,
            **extra,
            load_after=round(os.getloadavg()[0], 2),
            wall_s=round(time.perf_counter() - start, 1),
        )

    by_name = {row.name: row for row in ROWS}
    for name in (*FIRST, *(n for n in SETUPS if n not in FIRST)):
        if name not in only:
            continue
        rows[name] = measure_row(runner, by_name[name], splits, log)
        write()
        if only == set(SETUPS) and name == FIRST[-1]:
            sizes = CURVE_SIZES if not quick else (4, 16)
            extra["curve"] = measure_curve(runner, rows, splits, sizes, log)
            smollm2 = bases["smollm2"]
            torch.manual_seed(0)
            shape = (BATCH_SIZE, smollm2.max_length)
            ids = torch.randint(0, smollm2.model.config.vocab_size, shape)
            extra["memory"] = {
                "batch": list(ids.shape),
                "setups": {
                    name: memory_breakdown(copy.deepcopy(smollm2.model), ids, trainable, lora)
                    for name, trainable, lora in MEMORY_SETUPS
                },
            }
            write()
    payload = write()
    report(payload["rows"], COLUMNS, None, "finetune", log=log)
    return payload


def _splits(quick: bool) -> list[Split]:
    records = load_sms_spam()
    splits = []
    for seed in SEEDS:
        train, val, test = balanced_split(records, seed=SPLIT_SEED + seed)
        if quick:
            train, val, test = train[:48], val[:16], test[:32]
        splits.append(Split(seed, train, val, test))
    return splits


def refresh(
    names: Sequence[str],
    why: str,
    out: str | os.PathLike[str] = RESULTS_DIR / "finetune_cpu.json",
    *,
    curve: Sequence[str] = (),
    quick: bool = False,
    threads: int | None = THREADS,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure the rows ``names`` of the existing result ``out`` again, with :data:`ROWS`' current
    settings, and their learning-curve points, and the curve points of the rows ``curve`` (whose
    rows stay); each refreshed row keeps what it replaced (``before_refresh``) and the result
    says what was refreshed, ``why``, when, and the load average then. The description of
    each base a refreshed row or curve trains on (``bases``) is replaced by today's (a new
    book checkpoint, say); the others stay as measured."""
    payload = json.loads(Path(out).read_text())
    unknown = sorted(set(names) - {row["setup"] for row in payload["rows"]})
    if unknown:
        raise ValueError(f"{out} has no row(s) {unknown} to refresh")
    with torch_threads(threads):
        start, load_before = time.perf_counter(), os.getloadavg()[0]
        splits = _splits(quick)
        bases = load_bases(quick)
        runner = Runner(bases, quick)
        by_name = {row.name: row for row in ROWS}
        rows = {row["setup"]: row for row in payload["rows"]}
        for name in names:
            old = rows[name]
            rows[name] = measure_row(runner, by_name[name], splits, log)
            rows[name]["before_refresh"] = {
                k: old.get(k) for k in ("accuracy", "spread", "lr", "val_by_lr")
            }
        curve_names = [n for n in CURVE_ROWS if n in names or n in curve]
        if curve_names and "curve" in payload:
            sizes = sorted({p["train_examples"] for p in payload["curve"]})[:-1]
            fresh = measure_curve(runner, rows, splits, sizes, log, curve_names)
            kept = [p for p in payload["curve"] if p["setup"] not in curve_names]
            payload["curve"] = sorted(
                kept + fresh, key=lambda p: (CURVE_ROWS.index(p["setup"]), p["train_examples"])
            )
    extra = {k: v for k, v in payload.items() if k not in ("benchmark", "machine", "rows")}
    used = {by_name[n].base for n in (*names, *curve_names)} - {""}
    extra["bases"] = {
        **payload.get("bases", {}),
        **{k: v for k, v in describe_bases(bases).items() if k in used},
    }
    extra["refreshed"] = [
        *payload.get("refreshed", []),
        {
            "rows": list(names),
            "curve": curve_names,
            "why": why,
            "load_before": round(load_before, 2),
            "wall_s": round(time.perf_counter() - start, 1),
            "machine": machine_info(),
        },
    ]
    return report(
        [rows[n] for n in SETUPS if n in rows], COLUMNS, out, "finetune", log=log, **extra
    )
