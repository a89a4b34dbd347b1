"""Chapter 5: pretraining.

The training loop a practitioner would use, and the one config that controls it:

- :class:`TrainConfig` (defined in :mod:`sydsgpt.train_config`): every knob of a run, stored
  in every checkpoint; the command line's ``sydsgpt train`` options are derived from its fields;
  beside it :class:`Session` (where a call writes, resume, stop, progress) and
  :class:`StepOptions` (clipping, autocast, device of a step);
- :func:`train_step`: one optimizer step on any :class:`~sydsgpt.objectives.Objective`
  (gradient accumulation, bf16 autocast, clipping,
  a :class:`TrainingDiverged` error on a NaN/inf loss);
- :func:`train`: the loop (periodic evaluation and samples, a tqdm bar, a JSON-lines log
  of every step, atomic checkpoints, exact resume, DDP under ``torchrun``).

Its parts live in their own modules: the loss in :mod:`sydsgpt.losses`, AdamW and the
schedule in :mod:`sydsgpt.optim`, the data order in :mod:`sydsgpt.data`, the log in
:mod:`sydsgpt.logs`, checkpoints in :mod:`sydsgpt.checkpoint`, devices and precision in
:mod:`sydsgpt.runtime`, and the book's own runs in :mod:`sydsgpt.book`.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import sys
import time
from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .checkpoint import (
    CheckpointMismatchError,
    RunState,
    capture_rng_state,
    check_compatible,
    load_checkpoint,
    load_weights,
    restore_rng_state,
    save_checkpoint,
    tokenizer_identity,
    unwrap_model,
)
from .data import Batch, ResumableBatches, as_dataset
from .divergence import DivergenceGuard, TrainingDiverged
from .distributed import (
    DistributedContext,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    current_context,
    gather_objects,
)
from .files import (
    CHECKPOINT_NAME,
    LOG_NAME,
    RUN_INFO_NAME,
    LockedRunFolder,
    atomic_write,
    lock_run_folder,
)
from .interrupts import StopRequests, TrainingInterrupted
from .logs import truncate_log
from .losses import NextTokenObjective, loader_loss
from .model import generate_simple
from .objectives import Objective
from .optim import apply_hyperparameters, build_optimizer, make_scheduler
from .resume import record_changes, resume_changes
from .runtime import (
    autocast,
    configure_threads,
    configure_tf32,
    resolve_device,
    resolve_fast_paths,
    seed_everything,
)
from .train_config import Session, StepOptions, TrainConfig
from .validation import check_token_range

# ---------------------------------------------------------------------------- one step


def _ddp_inside(model: nn.Module) -> nn.parallel.DistributedDataParallel | None:
    inner = getattr(model, "_orig_mod", model)
    return inner if isinstance(inner, nn.parallel.DistributedDataParallel) else None


def gradient_sync(model: nn.Module, last: bool) -> AbstractContextManager[Any]:
    """Under DDP, ``model.no_sync()`` except for the ``last`` micro-batch of a step (so the
    gradients are averaged across processes once per step); without DDP, nothing."""
    ddp = _ddp_inside(model)
    return nullcontext() if ddp is None or last else ddp.no_sync()


def train_step(
    model: nn.Module,
    micro_batches: Sequence[Any],
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: Any = None,
    options: StepOptions = StepOptions(),
    objective: Objective | None = None,
    step: int | None = None,
    metrics: dict[str, float] | None = None,
) -> tuple[float, float]:
    """One optimizer step on ``micro_batches`` (gradient accumulation over them).

    ``objective`` (default :class:`~sydsgpt.losses.NextTokenObjective`: ``(input_ids,
    target_ids)`` batches) turns each micro-batch into a loss. Each loss is divided by the
    number of micro-batches before ``backward()``, so the accumulated gradient is that of
    their mean loss. ``options`` (:class:`StepOptions`) sets the clipping, the autocast
    dtype and the device; ``scheduler``, if given, steps after the optimizer; ``step``
    names the step in a :class:`TrainingDiverged` error. Under DDP (or FSDP, any
    initialised process group) the gradients are averaged across processes on the last
    micro-batch only (:func:`gradient_sync`). ``metrics``, if given, is filled with the
    objective's other metrics (means over micro-batches and processes).

    Returns:
        ``(loss, grad_norm)``: the mean loss (over micro-batches and processes) and the
        gradient norm before clipping.
    Raises:
        TrainingDiverged: the loss or gradient norm is NaN/inf (the optimizer step is skipped).
    """
    ctx = current_context()
    grad_clip, amp_dtype = options.grad_clip, options.amp_dtype
    device = torch.device(options.device or next(model.parameters()).device)
    objective = objective or NextTokenObjective()
    optimizer.zero_grad(set_to_none=True)
    n = len(micro_batches)
    loss_sum = torch.zeros((), device=device)
    # later: the objective's other metrics for the log (chapter 9)
    batch_metrics = []
    # endlater
    for i, batch in enumerate(micro_batches):
        with gradient_sync(model, last=i == n - 1):  # DDP: sync once per step
            with autocast(device, amp_dtype):
                out = objective(model, batch, device)
            (out.loss / n).backward()
        loss_sum += out.loss.detach().float()
        # later: the objective's other metrics for the log (chapter 9)
        batch_metrics.append(out.metrics)
        # endlater
    mean_loss = all_reduce_mean(loss_sum / n, ctx)
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip else math.inf)
    loss_value, norm_value = mean_loss.item(), grad_norm.item()
    if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
        optimizer.zero_grad(set_to_none=True)
        raise TrainingDiverged(step, loss_value, norm_value)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    # later: the objective's other metrics for the log (chapter 9)
    if metrics is not None:
        metrics.update(_mean_metrics(objective.metric_names, batch_metrics, device, ctx))
    # endlater
    return loss_value, norm_value


def _mean_metrics(
    names: Sequence[str],
    batch_metrics: Sequence[Mapping[str, Any]],
    device: torch.device,
    ctx: DistributedContext,
) -> dict[str, float]:
    """Each metric of ``names``, averaged over micro-batches and processes."""
    if not names:
        return {}
    sums = torch.zeros(len(names), device=device)
    for values in batch_metrics:
        sums += torch.stack([torch.as_tensor(values[k], device=device).float() for k in names])
    return dict(zip(names, all_reduce_mean(sums / len(batch_metrics), ctx).tolist()))


def data_fingerprint(dataset: Any, sample: int = 1 << 20) -> str | None:
    """A short sha256 of a :class:`~sydsgpt.data.GPTDataset`'s token ids (their number, the first
    and last ``sample`` of them), stored in checkpoints so a resume on other data is refused;
    ``None`` for other datasets."""
    ids = getattr(dataset, "token_ids", None)
    if not isinstance(ids, torch.Tensor):
        return None
    ids = ids.reshape(-1).to(torch.int64)
    digest = hashlib.sha256(str(ids.numel()).encode())
    for part in (ids[:sample], ids[-sample:]):
        digest.update(part.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def stop_requested(stop: StopRequests, ctx: DistributedContext, device: torch.device) -> bool:
    """Whether a SIGINT/SIGTERM asked the run to stop
    (under DDP: any process's, so all stop at one step)."""
    flag = stop.signum is not None
    if ctx.enabled:
        flag = all_reduce_sum(torch.tensor(float(flag), device=device), ctx).item() > 0
    return flag


def sample_text(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int,
    device: torch.device | str | None = None,
) -> str:
    """Greedy continuation of ``prompt`` (eval mode; the model's mode is restored)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    context = unwrap_model(model).config.context_length
    was_training = model.training
    model.eval()
    ids = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)
    out = generate_simple(model, ids, max_new_tokens, context)
    model.train(was_training)
    return tokenizer.decode(out[0].tolist())


def train(
    model: nn.Module,
    train_data: DataLoader | Dataset,
    val_data: Iterable[Batch] | None,
    cfg: TrainConfig,
    *,
    tokenizer: Any = None,
    session: Session = Session(),
    objective: Objective | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` and return the log records (one dict per step, plus step 0).

    Args:
        model: a :class:`~sydsgpt.model.SydsGPT` (seed before building it for a reproducible init).
        train_data: a map-style dataset of ``(input_ids, target_ids)`` pairs, or a DataLoader
            over one (its dataset is used, in :class:`ResumableBatches` order).
        val_data: validation batches (e.g. a DataLoader without shuffling), or ``None``.
        cfg: the :class:`TrainConfig`.
        tokenizer: for the samples printed at each evaluation, and recorded in checkpoints.
        session: this call's :class:`Session`: ``out_dir`` (where ``log.jsonl``,
            ``checkpoint.pt`` and ``run.json`` go; nothing is written without one),
            ``resume``, ``stop_after``, ``show_progress`` and ``progress_interval``.
        objective: what turns a batch into a loss (default
            :class:`~sydsgpt.losses.NextTokenObjective`); ``train_data`` and ``val_data``
            hold its batches. Its metrics are logged as ``train_<name>`` / ``val_<name>``.

    Each record has ``step``, ``epoch``, ``tokens_seen``, ``lr``, ``train_loss``,
    ``grad_norm``, ``tokens_per_s``, and ``val_loss`` (and ``sample``) when evaluated.
    Under ``torchrun`` the model is wrapped in DDP; every process must call :func:`train`.

    While it runs, ``session.out_dir`` is locked (:func:`sydsgpt.files.lock_run_folder`, unless the
    caller holds its lock already: a second run on it is refused; a dead run's lock and
    temporary files are cleaned up), and the first
    SIGINT (Ctrl-C) or SIGTERM ends the current step, checkpoints it and raises
    :class:`~sydsgpt.interrupts.TrainingInterrupted`.

    Raises:
        TrainingDiverged: a NaN/inf loss or a loss spike, or before a save a NaN/inf or
            absurdly large weight (:mod:`sydsgpt.divergence`); the last checkpoint on disk is
            left intact and passed the same checks.
        TrainingInterrupted: SIGINT/SIGTERM; the current step was checkpointed (if ``out_dir``).
        RunFolderLocked: another running process uses ``session.out_dir``.
        CheckpointMismatchError: resuming from a checkpoint of another model/tokenizer, or with
            a changed option of :data:`sydsgpt.resume.RESUME_FIXED`.
    """
    out_dir = session.out_dir
    held = isinstance(out_dir, LockedRunFolder)
    out = out_dir.path if isinstance(out_dir, LockedRunFolder) else out_dir and Path(out_dir)
    with ExitStack() as guards:
        if out is not None and not held and current_context().is_main:
            guards.enter_context(lock_run_folder(out))
        stop = guards.enter_context(StopRequests())
        data = (train_data, val_data)
        return _train(
            model, data, cfg, tokenizer, session, out, stop, objective or NextTokenObjective()
        )


def _train(
    model: nn.Module,
    data: tuple[DataLoader | Dataset, Iterable[Batch] | None],
    cfg: TrainConfig,
    tokenizer: Any,
    session: Session,
    out: Path | None,
    stop: StopRequests,
    objective: Objective,
) -> list[dict[str, Any]]:
    """:func:`train`'s body, run while the output folder ``out`` (``session.out_dir``'s
    path) is locked and signals are caught; ``data`` is ``(train_data, val_data)``."""
    train_data, val_data = data
    resume, stop_after = session.resume, session.stop_after
    show_progress, progress_interval = session.show_progress, session.progress_interval
    ctx = current_context()
    device = resolve_device(cfg.device, ctx.local_rank)
    amp_dtype = resolve_fast_paths(device.type, cfg.dtype).amp_dtype
    configure_tf32(cfg.tf32, device)
    configure_threads(cfg.threads)
    raw = unwrap_model(model).to(device)
    raw.train()
    dataset = as_dataset(train_data, cfg.batch_size)
    for what, data in (
        ("the training data", dataset),
        ("the validation data", getattr(val_data, "dataset", None)),
    ):
        if isinstance(
            getattr(data, "token_ids", None), torch.Tensor
        ):  # a GPTDataset: check every id once
            check_token_range(data.token_ids, raw.config.vocab_size, what)
    sharded = cfg.fsdp and ctx.enabled
    if sharded:  # FSDP2: before the optimizer is built, which must see the sharded parameters
        from .fsdp import full_state_views, load_full_state, shard_model

        shard_model(raw)
    batches = ResumableBatches(
        dataset, cfg.batch_size, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size
    )
    fingerprint = data_fingerprint(dataset)
    total_steps = cfg.total_steps(batches.batches_per_epoch)
    optimizer = build_optimizer(raw, cfg, device)
    scheduler = make_scheduler(
        optimizer, total_steps, cfg.warmup_for(total_steps), cfg.min_lr_ratio
    )
    seed_everything(cfg.seed + ctx.rank)

    checkpoint_path = out / CHECKPOINT_NAME if out is not None else None
    log_path = out / LOG_NAME if out is not None and ctx.is_main else None
    if out is not None and ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    step, tokens_seen, history = 0, 0, []
    changes: dict[str, tuple[Any, Any]] = {}
    last_checkpoint: str | None = None  # named in the TrainingDiverged message
    if resume:
        path = Path(resume) if not isinstance(resume, bool) else checkpoint_path
        assert path is not None  # Session refuses resume=True without out_dir
        state = load_checkpoint(path)
        check_compatible(state, raw.config, tokenizer)
        changes = resume_changes(state.get("train_config"), cfg)
        if total_steps < int(state["step"]):
            raise CheckpointMismatchError(
                f"the checkpoint {path} is at step {state['step']}, past the {total_steps} steps "
                "this run asks for; give a larger --max-steps to continue it"
            )
        if sharded:
            load_full_state(raw, optimizer, state["model"], state["optimizer"])
        else:
            load_weights(raw, state["model"], path)
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        apply_hyperparameters(optimizer, scheduler, cfg, device)
        batches.load_state_dict(state["data"])
        if (
            state.get("data_fingerprint")
            and fingerprint
            and state["data_fingerprint"] != fingerprint
        ):
            raise CheckpointMismatchError(
                f"the training data differs from the one {path} was trained on (as many sequences, "
                "other tokens); resume with the same DATA, --val-fraction and tokenizer, or start "
                "a new run in another output directory"
            )
        rng_states = state["rng"]
        restore_rng_state(rng_states[ctx.rank % len(rng_states)])
        step, tokens_seen, last_checkpoint = (
            int(state["step"]),
            int(state["tokens_seen"]),
            str(path),
        )
        if log_path is not None:
            history = truncate_log(log_path, step)
    elif log_path is not None:
        log_path.write_text("")
    if changes and ctx.is_main:
        print(
            f"resuming at step {step} with changed training options, applied from step {step + 1}: "
            + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items()),
            file=sys.stderr,
        )
    if out is not None and ctx.is_main:
        run_info = {
            "model": raw.config.to_dict(),
            "train": cfg.to_dict(),
            "tokenizer": tokenizer_identity(tokenizer),
            "world_size": ctx.world_size,
            "changes": record_changes(out / RUN_INFO_NAME, step + 1, changes) if resume else [],
        }
        atomic_write(out / RUN_INFO_NAME, json.dumps(run_info, indent=2) + "\n")

    step_model: nn.Module = raw
    if ctx.enabled and not sharded:
        step_model = nn.parallel.DistributedDataParallel(
            raw, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        step_model = torch.compile(step_model, backend=cfg.compile_backend)

    log_file = log_path.open("a") if log_path is not None else None
    step_options = StepOptions(cfg.grad_clip, amp_dtype, device)
    checkpoint_every = cfg.checkpoint_interval or cfg.eval_interval or None

    def evaluate(record: dict[str, Any]) -> None:
        # An evaluation must not change the run: starting a DataLoader's iterator draws a
        # number from torch's global generator, the one dropout draws its masks from, so
        # it runs on a copy of the generator (the same weights whatever eval_interval).
        with torch.random.fork_rng(devices=[]):
            if val_data is not None:
                metrics: dict[str, float] = {}
                record["val_loss"] = loader_loss(
                    raw,
                    val_data,
                    cfg.eval_batches,
                    device,
                    amp_dtype,
                    ctx,
                    objective=objective,
                    metrics=metrics,
                )
                record.update({f"val_{name}": value for name, value in metrics.items()})
            if (
                tokenizer is not None and cfg.sample_tokens and (ctx.is_main or sharded)
            ):  # FSDP: every process runs the model
                with autocast(device, amp_dtype):
                    sample = sample_text(
                        raw, tokenizer, cfg.sample_prompt, cfg.sample_tokens, device
                    )
                if ctx.is_main:
                    record["sample"] = sample

    def emit(record: dict[str, Any]) -> None:
        history.append(record)
        if log_file is not None:
            try:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            except OSError as exc:  # a full disk: name the file (the last checkpoint is intact)
                raise OSError(exc.errno, exc.strerror or str(exc), str(log_path)) from exc

    def report(record: dict[str, Any]) -> None:
        if ctx.is_main and show_progress and ("val_loss" in record or "sample" in record):
            parts = [f"step {record['step']}"]
            if "train_loss" in record:
                parts.append(f"train loss {record['train_loss']:.3f}")
            if "val_loss" in record:
                parts.append(f"val loss {record['val_loss']:.3f}")
            tqdm.write(
                ", ".join(parts) + (f" | {record['sample']!r}" if "sample" in record else ""),
                file=sys.stderr,
            )

    if step == 0 and cfg.eval_at_start and cfg.eval_interval:
        record = {"step": 0, "epoch": 0.0, "tokens_seen": 0}
        evaluate(record)
        emit(record)
        report(record)

    end = total_steps if stop_after is None else min(total_steps, stop_after)
    bar = tqdm(
        total=total_steps,
        initial=step,
        desc="training",
        unit="step",
        mininterval=progress_interval,
        disable=not (show_progress and ctx.is_main),
        file=sys.stderr,
    )
    smoothed_tps = None
    guard = DivergenceGuard(raw, ctx, device)
    try:
        while step < end:
            start = time.perf_counter()
            micro_batches = [next(batches) for _ in range(cfg.grad_accum_steps)]
            step_metrics: dict[str, float] = {}
            lr = optimizer.param_groups[0]["lr"]
            try:
                loss, grad_norm = train_step(
                    step_model,
                    micro_batches,
                    optimizer,
                    scheduler=scheduler,
                    options=step_options,
                    objective=objective,
                    step=step + 1,
                    metrics=step_metrics,
                )
                guard.after_step(step + 1, loss, grad_norm)
            except TrainingDiverged as exc:
                raise exc.naming(last_checkpoint) from None
            step += 1
            n_tokens = sum(objective.tokens(b) for b in micro_batches) * ctx.world_size
            tokens_seen += n_tokens
            tps = n_tokens / max(time.perf_counter() - start, 1e-9)
            smoothed_tps = tps if smoothed_tps is None else 0.9 * smoothed_tps + 0.1 * tps
            record = {
                "step": step,
                "epoch": round(batches.progress, 4),
                "tokens_seen": tokens_seen,
                "lr": lr,
                "train_loss": loss,
                "grad_norm": grad_norm,
                "tokens_per_s": round(tps, 1),
                **{f"train_{name}": value for name, value in step_metrics.items()},
            }
            if changes:  # the first step of a resumed session that changed options
                record["changed"] = {k: [a, b] for k, (a, b) in changes.items()}
                changes = {}
            if cfg.eval_interval and (step % cfg.eval_interval == 0 or step == total_steps):
                evaluate(record)
            emit(record)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{smoothed_tps:,.0f}", refresh=False)
            report(record)
            interrupted = stop_requested(stop, ctx, device)
            if step == end or (checkpoint_every and step % checkpoint_every == 0) or interrupted:
                try:
                    guard.before_save(step, loss, grad_norm, raw, optimizer)
                except TrainingDiverged as exc:
                    raise exc.naming(last_checkpoint) from None
            if checkpoint_path is not None and (
                step == end or (checkpoint_every and step % checkpoint_every == 0) or interrupted
            ):
                rng_states = gather_objects(capture_rng_state(), ctx)
                saved_model, saved_optimizer = (
                    full_state_views(raw, optimizer) if sharded else (raw, optimizer)
                )
                if ctx.is_main:
                    run = RunState(
                        step=step,
                        tokens_seen=tokens_seen,
                        train_config=cfg.to_dict(),
                        rng=rng_states,
                        data=batches.state_dict(),
                        data_fingerprint=fingerprint,
                    )
                    save_checkpoint(
                        checkpoint_path,
                        saved_model,
                        saved_optimizer,
                        scheduler,
                        tokenizer=tokenizer,
                        run=run,
                    )
                last_checkpoint = str(checkpoint_path)
                barrier(ctx)
            if interrupted:
                raise TrainingInterrupted(
                    stop.signum or signal.SIGTERM,
                    step,
                    last_checkpoint if checkpoint_path else None,
                )
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
    return history
