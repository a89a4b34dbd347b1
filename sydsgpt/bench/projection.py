"""The GPU recipe for GPT-2 small on FineWeb-Edu: its commands, and *projected* speed and wall time.

Nothing here is measured. A projection is the MFU model run backwards:

    tokens/s = MFU * peak FLOP/s * GPUs / flops_per_token      wall time = tokens / (tokens/s)

with ``flops_per_token`` from :func:`sydsgpt.model.flops_per_token` and the peak from
:data:`sydsgpt.bench.peaks.GPU_BF16_PEAKS`. The MFU is an *assumption* (:data:`ASSUMED_MFU`):
the issue's target of 55% and a more cautious 40%; scaling to 8 GPUs assumes each keeps
that MFU (DDP's gradient all-reduce overlapping the backward pass). Replace them with
measured numbers once ``sydsgpt bench --what ablation --device cuda`` has run on the GPU.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..model import flops_per_token
from ..presets import get_preset
from .peaks import gpu_peak_flops

ASSUMED_MFU: tuple[float, ...] = (0.40, 0.55)
"""Model FLOPs utilisations the projections assume (not measured)."""

FINEWEB_EDU_TOKENS = 10_000_000_000
"""FineWeb-Edu's ``sample-10BT``: about 10 billion GPT-2 tokens (one pass of the recipe)."""

TOKENS_PER_STEP = 512 * 1024
"""GPT-2's batch: 512 sequences of 1,024 tokens (524,288 tokens) per optimizer step."""

DATA_DIR = "data/fineweb-edu-10B"
COMMON_TRAIN = (
    "--preset gpt2-small --dropout 0 --seq-len 1024 --max-steps "
    f"{FINEWEB_EDU_TOKENS // TOKENS_PER_STEP} --lr 6e-4 --warmup-steps 700 --eval-interval 250 "
    "--eval-batches 40 --device cuda --dtype bfloat16 --compile --fused-adamw"
)

COMMANDS: dict[str, str] = {
    "download": (
        'pip install huggingface_hub && python -c "from huggingface_hub import snapshot_download; '
        "snapshot_download('HuggingFaceFW/fineweb-edu', repo_type='dataset', "
        "allow_patterns='sample/10BT/*', local_dir='fineweb-edu')\""
    ),
    "prepare": f"sydsgpt prepare fineweb-edu/sample/10BT --out {DATA_DIR} -j 16 --val-tokens "
    "10000000",
    "train, 1 GPU": f"sydsgpt train {DATA_DIR} {COMMON_TRAIN} --batch-size 32 --grad-accum-steps "
    "16 --out runs/gpt2-small-fwe",
    "train, 8 GPUs": (
        f"torchrun --standalone --nproc_per_node=8 -m sydsgpt.cli train {DATA_DIR} {COMMON_TRAIN} "
        "--batch-size 256 --grad-accum-steps 2 --out runs/gpt2-small-fwe"
    ),
    "train, 2 nodes x 8 GPUs": (
        f"torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=NODE0:29500 "
        f"--rdzv-id=gpt2-fwe -m sydsgpt.cli train {DATA_DIR} {COMMON_TRAIN} --batch-size 512 "
        "--grad-accum-steps 1 --out runs/gpt2-small-fwe"
    ),
    "train GPT-2 XL, 8 GPUs, FSDP2": (
        f"torchrun --standalone --nproc_per_node=8 -m sydsgpt.cli train {DATA_DIR} "
        f"{COMMON_TRAIN.replace('gpt2-small', 'gpt2-xl')} --batch-size 128 --grad-accum-steps 4 "
        "--fsdp --out runs/gpt2-xl-fwe"
    ),
    "evaluate": (
        "python -c \"from sydsgpt.logs import read_log; print([r['val_loss'] for r in "
        "read_log('runs/gpt2-small-fwe/log.jsonl') if 'val_loss' in r][-1])\""
    ),
    "sample": "sydsgpt generate --checkpoint runs/gpt2-small-fwe/checkpoint.pt --prompt 'The "
    "theory of evolution' --max-new-tokens 60",
}
"""The recipe, step by step (``--batch-size`` is global:
``batch * grad_accum * 1024`` = 524,288 tokens per step)."""


def project(
    preset: str = "gpt2-small",
    seq_len: int = 1024,
    gpu: str = "H100",
    gpus: int = 1,
    mfu: float = 0.40,
    tokens: int = FINEWEB_EDU_TOKENS,
) -> dict[str, Any]:
    """One projected row: tokens/s and hours to train
    on ``tokens`` with ``gpus`` GPUs at ``mfu``."""
    peak = gpu_peak_flops(gpu)
    if peak is None:
        raise ValueError(
            f"no datasheet peak for GPU {gpu!r}; add it to sydsgpt.bench.peaks.GPU_BF16_PEAKS"
        )
    per_token = flops_per_token(get_preset(preset), seq_len)
    tokens_per_s = mfu * peak * gpus / per_token
    return {
        "gpu": gpu,
        "gpus": gpus,
        "assumed_mfu": mfu,
        "flops_per_token": per_token,
        "tokens_per_s": tokens_per_s,
        "hours": tokens / tokens_per_s / 3600,
        "measured": False,
    }


def recipe_table(
    gpu: str = "H100",
    gpu_counts: Sequence[int] = (1, 8),
    mfus: Sequence[float] = ASSUMED_MFU,
    tokens: int = FINEWEB_EDU_TOKENS,
) -> list[dict[str, Any]]:
    """The projections of the recipe: every GPU count
    at every assumed MFU (all ``measured: False``)."""
    return [project(gpu=gpu, gpus=n, mfu=m, tokens=tokens) for n in gpu_counts for m in mfus]
