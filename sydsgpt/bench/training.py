"""Benchmark: training throughput (tokens/s), model FLOPs utilisation and peak memory.

Each *setup* is a model config plus the training switches of :class:`sydsgpt.train.TrainConfig`
(``dtype``, ``tf32``, ``compile``, ``fused_adamw``). Every setup starts from the same
weights and trains on the same random token batches with :func:`sydsgpt.train.train_step`,
so their losses can be compared as well as their speeds.

How the numbers are taken:

* The setups run *interleaved*: after each one's warm-up, rounds of a few steps go to each
  setup in turn, so a burst of load from other programs hits them all alike. Compare
  setups measured in one run (ratios), not across runs.
* Warm-up steps are not timed. The first step (where ``torch.compile`` compiles) is
  reported as ``first_step_s``; for compiled setups ``compile_s`` = first step minus a
  typical step.
* ``step_s`` is the fastest timed step (the one least disturbed by other programs),
  ``tokens_per_s = batch_size * seq_len / step_s``; ``step_s_median`` is reported too.
* ``torch.compile`` starts from an empty compiler cache (a temporary
  ``TORCHINDUCTOR_CACHE_DIR``), so ``compile_s`` is a cold compile.
* ``mfu`` = ``tokens_per_s * flops_per_token / peak`` with ``flops_per_token`` from
  :func:`sydsgpt.model.flops_per_token` of the *unpadded* model (padding does no useful
  work), and ``peak`` from :mod:`sydsgpt.bench.peaks` (GPU datasheet bf16, or a measured
  float32 matmul peak on a CPU).
* Memory: ``state_mib`` = parameters + optimizer moments, counted from the tensors;
  ``step_mib`` = the measured peak of one training step above that (gradients,
  activations, temporaries; method in :mod:`sydsgpt.bench.memory`);
  ``peak_mib`` = their sum.

The setups compared are :mod:`sydsgpt.bench.setups`. Run it with ``sydsgpt bench --what train``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..generate import use_decoding_layout
from ..config import Kernels
from ..model import SydsGPT, flops_per_token
from ..optim import build_optimizer
from ..presets import get_preset
from ..runtime import configure_tf32, resolve_device, resolve_fast_paths
from ..validation import check_positive_int
from ..train import StepOptions, TrainConfig, train_step
from .common import report
from .memory import PeakMemory, memory_method
from .peaks import Peak, mfu, peak_flops
from .setups import (
    DEVICE_DEFAULTS,
    MODEL_SWITCHES,
    PLAIN_MODEL,
    TINY_MODEL,
    TRAIN_SWITCHES,
    Setup,
    default_setups,
)

MIB = 2**20


def transfer_weights(source: nn.Module, target: SydsGPT) -> None:
    """Copy ``source``'s weights into ``target``, a model with the same architecture except
    possibly its kernels' ``pad_vocab_multiple`` (extra vocabulary rows are set to zero)."""
    state = {}
    target_state = target.state_dict()
    for name, value in source.state_dict().items():
        if name not in target_state:
            raise KeyError(
                f"{name} of the source model is missing from the target model: not the same "
                "architecture"
            )
        wanted = target_state[name].shape
        if value.shape != wanted:
            if value.dim() != 2 or value.shape[1:] != wanted[1:] or value.shape[0] > wanted[0]:
                raise ValueError(
                    f"cannot copy {name} of shape {tuple(value.shape)} into shape {tuple(wanted)}"
                )
            value = torch.cat(
                [value, value.new_zeros(wanted[0] - value.shape[0], *value.shape[1:])]
            )
        state[name] = value
    target.load_state_dict(state)


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes held between steps: the parameters (a tied
    one once) plus the optimizer's state tensors."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    for per_param in optimizer.state.values():
        for value in per_param.values():
            if torch.is_tensor(value):
                total += value.numel() * value.element_size()
    return total


def random_batches(
    vocab_size: int, batch_size: int, seq_len: int, count: int, seed: int, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` batches of ``(input_ids, target_ids)``,
    each ``(batch_size, seq_len)``, shifted by one."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size, (count, batch_size, seq_len + 1), generator=generator)
    return [(t[:, :-1].to(device), t[:, 1:].to(device)) for t in tokens]


class _Runner:
    """A model, its optimizer and its switches, ready to take training steps."""

    def __init__(
        self,
        setup: Setup,
        base_model: Mapping[str, Any],
        init: nn.Module,
        device: torch.device,
        lr: float,
    ) -> None:
        self.setup = setup
        self.switches = setup.switches(base_model)
        kernels = Kernels(**{k: self.switches[k] for k in MODEL_SWITCHES})
        self.model = SydsGPT(base_model, kernels).to(device)
        transfer_weights(init, self.model)
        if setup.decoding_layout:
            use_decoding_layout(self.model)
        self.model.train()
        train_options = {k: self.switches[k] for k in TRAIN_SWITCHES}
        self.cfg = TrainConfig(lr=lr, device=str(device), **train_options)
        self.device = device
        self.optimizer = build_optimizer(self.model, self.cfg, device)
        fast = resolve_fast_paths(
            device.type, self.cfg.dtype, self.cfg.tf32, self.cfg.fused_adamw, self.cfg.compile
        )
        self.amp_dtype = fast.amp_dtype
        self.step_model: nn.Module = (
            torch.compile(self.model, backend=self.cfg.compile_backend)
            if self.cfg.compile
            else self.model
        )
        # What "auto" / None resolved to on this device, as the rows report it.
        self.switches.update(
            dtype=fast.dtype_name,
            tf32=configure_tf32(self.cfg.tf32, device),
            fused_adamw=bool(self.optimizer.defaults.get("fused")),
            decoding_layout=setup.decoding_layout,
        )
        self.losses: list[float] = []
        self.times: list[float] = []
        self.first_step_s = 0.0
        self.step_bytes = 0

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        """One optimizer step; returns its wall-clock
        seconds (``train_step`` syncs via ``.item()``)."""
        configure_tf32(self.cfg.tf32, self.device)  # process-wide: set it for this setup each time
        start = time.perf_counter()
        options = StepOptions(self.cfg.grad_clip, self.amp_dtype, self.device)
        loss, _ = train_step(self.step_model, [batch], self.optimizer, options=options)
        seconds = time.perf_counter() - start
        self.losses.append(loss)
        return seconds


@dataclass(frozen=True)
class Schedule:
    """How many steps each setup takes: ``warmup`` untimed (the first one compiles), one
    for the memory measurement, then ``rounds`` interleaved rounds of ``steps_per_round``
    timed steps."""

    warmup: int = 2
    """Untimed steps per setup before timing (the first one compiles)."""
    rounds: int = 4
    """Interleaved timing rounds: each setup in turn, so a burst of load hits all alike."""
    steps_per_round: int = 2
    """Timed steps per setup in each round."""

    def __post_init__(self) -> None:
        for name in ("warmup", "rounds", "steps_per_round"):
            if getattr(self, name) < 1:
                raise ValueError(f"Schedule.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def total_steps(self) -> int:
        return self.warmup + 1 + self.rounds * self.steps_per_round


QUICK_SCHEDULE = Schedule(warmup=1, rounds=1, steps_per_round=1)


@dataclass(frozen=True)
class Workload:
    """What every measured step trains: a model config, a batch shape, a learning rate, a seed."""

    model: Mapping[str, Any]
    """The model config (each setup adds its kernels)."""
    batch_size: int = 4
    seq_len: int = 256
    """Each step sees ``batch_size * seq_len`` tokens (``seq_len <= model["context_length"]``)."""
    lr: float = 4e-4
    seed: int = 0
    """Seeds the shared initial weights and the random batches."""
    preset: str = "custom"
    """The preset ``model`` came from, for the result (:func:`preset_workload`)."""

    def __post_init__(self) -> None:
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.seq_len, "seq_len")
        if self.seq_len > self.model["context_length"]:
            raise ValueError(
                f"seq_len={self.seq_len} is longer than the model's "
                f"context_length={self.model['context_length']}; use a shorter --seq-len or a "
                f"model with a longer context"
            )

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


def measure(
    setups: Sequence[Setup],
    workload: Workload,
    *,
    device: str | torch.device = "cpu",
    schedule: Schedule = Schedule(),
    peak: Peak | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Measure the training speed, MFU, memory and losses of each setup (one row each).

    Args:
        setups: what to compare; the first is the baseline of ``speedup``.
        workload: the model, batch shape, learning rate and seed every setup trains.
        schedule: warm-up and timed steps.
        peak: the peak FLOP/s for MFU (default :func:`peak_flops` of the device).
        log: progress messages (``None``: quiet).
    """
    device = resolve_device(str(device))
    say = log or (lambda _msg: None)
    peak = peak or peak_flops(device)
    torch.manual_seed(workload.seed)
    init = SydsGPT(workload.model, Kernels(**PLAIN_MODEL))
    batches = random_batches(
        workload.model["vocab_size"],
        workload.batch_size,
        workload.seq_len,
        4,
        workload.seed,
        device,
    )
    compiles = any(setup.switches(workload.model)["compile"] for setup in setups)
    with _empty_compiler_cache() if compiles else nullcontext():
        return _measure_runners(setups, workload, init, batches, device, schedule, peak, say)


@contextmanager
def _empty_compiler_cache() -> Iterator[None]:
    """Compile from scratch: forget compiled graphs,
    point inductor's disk cache at an empty folder."""
    torch.compiler.reset()
    names = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
    before = {name: os.environ.get(name) for name in names}
    with tempfile.TemporaryDirectory(prefix="sydsgpt-bench-compile-") as folder:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
        os.environ["TRITON_CACHE_DIR"] = os.path.join(folder, "triton")
        try:
            yield
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            torch.compiler.reset()


def _measure_runners(
    setups: Sequence[Setup],
    workload: Workload,
    init: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    schedule: Schedule,
    peak: Peak,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The body of :func:`measure`: warm up each setup, time them interleaved, make the rows."""
    tokens_per_step = workload.tokens_per_step
    useful_flops = flops_per_token(workload.model, workload.seq_len, training=True)

    def batch(index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return batches[index % len(batches)]

    runners: list[_Runner] = []
    for setup in setups:
        runner = _Runner(setup, workload.model, init, device, workload.lr)
        runner.first_step_s = runner.step(batch(0))
        for i in range(1, schedule.warmup):
            runner.step(batch(i))
        with PeakMemory(device) as memory:
            runner.step(batch(schedule.warmup))
        runner.step_bytes = memory.peak_bytes
        runners.append(runner)
        say(f"  warmed up {setup.name!r}: first step {runner.first_step_s:.2f} s")
    for r in range(schedule.rounds):
        for runner in runners:
            for i in range(schedule.steps_per_round):
                runner.times.append(
                    runner.step(batch(schedule.warmup + 1 + r * schedule.steps_per_round + i))
                )
        say(f"  round {r + 1}/{schedule.rounds} done")

    rows = []
    for runner in runners:
        step_s = min(runner.times)
        tokens_per_s = tokens_per_step / step_s
        held = state_bytes(runner.model, runner.optimizer)
        rows.append(
            {
                "setup": runner.setup.name,
                **runner.switches,
                "measured": True,
                "tokens_per_s": tokens_per_s,
                "speedup": min(runners[0].times) / step_s,
                "mfu": mfu(tokens_per_s, useful_flops, peak.flops),
                "step_s": step_s,
                "step_s_median": statistics.median(runner.times),
                "first_step_s": runner.first_step_s,
                "compile_s": max(0.0, runner.first_step_s - statistics.median(runner.times))
                if runner.switches["compile"]
                else None,
                "state_mib": held / MIB,
                "step_mib": runner.step_bytes / MIB,
                "peak_mib": (held + runner.step_bytes) / MIB,
                "first_loss": runner.losses[0],
                "final_loss": runner.losses[-1],
                "steps": schedule.total_steps,
                "note": runner.setup.note,
            }
        )
    return rows


def settings(
    workload: Workload, device: torch.device, peak: Peak, schedule: Schedule
) -> dict[str, Any]:
    """The JSON fields that say how the rows were measured."""
    model = dict(workload.model)
    return {
        "model": model,
        "batch_size": workload.batch_size,
        "seq_len": workload.seq_len,
        "tokens_per_step": workload.tokens_per_step,
        "device": str(device),
        "schedule": asdict(schedule),
        "flops_per_token": flops_per_token(model, workload.seq_len, training=True),
        "peak": peak.to_dict(),
        "mfu_definition": "mfu = tokens_per_s * flops_per_token / peak.flops, flops_per_token = 6N "
        "+ 12 L T d (sydsgpt.model.flops_per_token of the unpadded model, forward + backward)",
        "memory": "state_mib: parameters + optimizer state counted from the tensors; step_mib: "
        f"{memory_method(device)} during one training step; peak_mib = state_mib + step_mib",
        "timing": "step_s = fastest timed step (step_s_median: the median); setups interleaved "
        "round by round; warm-up (and compile) steps excluded; compile_s = first step - median "
        "step, from an empty compiler cache; a later compiled setup may reuse kernels compiled for "
        "an earlier one, so its compile_s is smaller",
    }


COLUMNS = [
    "setup",
    "tokens_per_s",
    "speedup",
    "mfu",
    "step_s",
    "compile_s",
    "peak_mib",
    "first_loss",
    "final_loss",
]


def run(
    workload: Workload | None = None,
    device: str = "cpu",
    *,
    setups: Sequence[Setup] | None = None,
    schedule: Schedule = Schedule(),
    quick: bool = False,
    out: str | Path | None = None,
    name: str = "training",
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Measure ``setups`` (default :func:`default_setups`) on ``workload`` (default: the
    preset :data:`DEVICE_DEFAULTS` names for the device), print a table and write the JSON
    result to ``out`` (if given). Returns the JSON payload.

    ``quick=True`` uses a tiny model, a batch of at most 2 x 32 tokens and one timed step (and
    the default setups without ``torch.compile``): a smoke test of the whole benchmark in seconds.
    """
    dev = resolve_device(device)
    workload = workload or preset_workload(DEVICE_DEFAULTS[dev.type][0], dev.type)
    preset = workload.preset
    if quick:
        workload = Workload(
            dict(TINY_MODEL),
            min(workload.batch_size, 2),
            min(workload.seq_len, TINY_MODEL["context_length"]),
        )
        schedule = QUICK_SCHEDULE
    peak = peak_flops(dev, matmul_size=1024 if quick else 2048)
    setups = list(setups or default_setups(compile=not quick))
    if log:
        log(
            f"{name}: {'tiny model' if quick else preset}, batch {workload.batch_size} x "
            f"{workload.seq_len} tokens, {dev}, {torch.get_num_threads()} threads; peak "
            f"{peak.flops / 1e12:.3g} TFLOP/s ({peak.description})"
        )
    rows = measure(setups, workload, device=dev, schedule=schedule, peak=peak, log=log)
    extra = {
        "preset": "tiny (--quick)" if quick else preset,
        **settings(workload, dev, peak, schedule),
    }
    return report(rows, COLUMNS, out, name, log, **extra)


def preset_workload(
    preset: str, device_kind: str = "cpu", batch_size: int | None = None, seq_len: int | None = None
) -> Workload:
    """A named preset (dropout off) at the device's default batch shape, unless given."""
    _, default_batch, default_seq = DEVICE_DEFAULTS["cuda" if device_kind == "cuda" else "cpu"]
    model = get_preset(preset, dropout=0.0)
    return Workload(model, batch_size or default_batch, seq_len or default_seq, preset=preset)
