"""What many test files share: the one tiny-model factory, seeded inputs, and the tiny
data, configs and commands of the chapter-5 tests (training, checkpoints, resume, DDP, CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader

from sydsgpt.data import GPTDataset
from sydsgpt.files import file_sha256
from sydsgpt.model import SydsGPT
from sydsgpt.presets import PRESETS, RUNS, RunPreset
from sydsgpt.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

TINY: dict[str, Any] = {
    "vocab_size": 61,
    "embedding_dim": 16,
    "context_length": 12,
    "num_layers": 2,
    "num_heads": 4,
    "dropout": 0.0,
    "qkv_bias": True,
}
"""The tiny model most unit tests build: every field
can be overridden through :func:`tiny_config`."""


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A copy of :data:`TINY` with ``overrides`` applied."""
    return {**TINY, **overrides}


def tiny_model(seed: int = 0, **overrides: Any) -> SydsGPT:
    """A :class:`SydsGPT` of :func:`tiny_config` ``(**overrides)``, seeded, in eval mode."""
    torch.manual_seed(seed)
    return SydsGPT(tiny_config(**overrides)).eval()


def peaked_model(scale: float, seed: int = 0, **overrides: Any) -> SydsGPT:
    """A tiny model whose output head is scaled up by ``scale``: peaked next-token
    distributions, so greedy text is not one token repeated and penalties change choices."""
    model = tiny_model(seed, **overrides)
    with torch.no_grad():
        model.output_projection.weight.mul_(scale)
    return model


def hf_logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """A Hugging Face ``transformers`` model's logits for ``ids`` (no gradients)."""
    with torch.no_grad():
        return model(ids).logits


def seeded_randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``torch.randn(*shape)`` from its own generator: the same numbers whatever ran before."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------------- training (chapter 5)

VOCAB = 23
SEQ = 8
TRAIN_TINY = tiny_config(
    vocab_size=VOCAB, context_length=SEQ, num_heads=2, dropout=0.1, qkv_bias=False
)
"""The model the training tests train (dropout on, so
its randomness is part of what resumes exactly)."""

# A small text with structure a tiny model picks up in a few dozen steps.
TINY_TEXT = "".join(
    f"line {i % 7}: the {w} cat sat on the {w} mat.\n"
    for i, w in enumerate(["red", "blue", "green"] * 60)
)

# Model config for the command-line tests (vocab_size is replaced by the tokenizer's size).
CLI_MODEL = tiny_config(vocab_size=1, context_length=16, num_layers=1, num_heads=2, qkv_bias=False)


def train_model(seed: int = 0, **overrides: Any) -> SydsGPT:
    """The training tests' model (:data:`TRAIN_TINY`), seeded, in training mode."""
    torch.manual_seed(seed)
    return SydsGPT({**TRAIN_TINY, **overrides})


def patterned_ids(n: int = 700, seed: int = 0) -> torch.Tensor:
    """Token ids where most tokens follow from the previous one (learnable), with some noise."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.arange(n) * 5 % VOCAB
    noise = torch.rand(n, generator=g) < 0.1
    return torch.where(noise, torch.randint(0, VOCAB, (n,), generator=g), ids)


def datasets(seed: int = 0) -> tuple[GPTDataset, DataLoader]:
    """A training dataset and a validation loader of non-overlapping windows."""
    train = GPTDataset(patterned_ids(700, seed), SEQ, SEQ)
    val = DataLoader(
        GPTDataset(patterned_ids(200, seed + 1), SEQ, SEQ), batch_size=4, shuffle=False
    )
    return train, val


def config(**overrides: Any) -> TrainConfig:
    """A CPU training config for the tiny model (quiet: no samples)."""
    base = {
        "max_steps": 12,
        "batch_size": 4,
        "lr": 3e-3,
        "eval_interval": 4,
        "eval_batches": 2,
        "sample_tokens": 0,
        "device": "cpu",
        "seed": 7,
    }
    return TrainConfig(**{**base, **overrides})


def assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Every parameter bit-identical (``torch.equal``)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"parameters differ: {different}"


def write_cli_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """The tiny text file and model-config JSON the command-line tests train on."""
    text, cfg = tmp_path / "tiny.txt", tmp_path / "model.json"
    text.write_text(TINY_TEXT)
    cfg.write_text(json.dumps(CLI_MODEL))
    return text, cfg


def cli_args(text: Path, cfg: Path, out: Path, *extra: str) -> list[str]:
    """``sydsgpt train`` arguments for a tiny, fast, quiet run (a 280-id BPE tokenizer)."""
    return [
        str(text),
        "--config",
        str(cfg),
        "--tokenizer",
        "bpe:280",
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--eval-batches",
        "2",
        "--sample-tokens",
        "0",
        "--device",
        "cpu",
        "--quiet",
        *extra,
    ]


def subprocess_env() -> dict[str, str]:
    """The environment for child processes: one thread each (the test machine has 2 cores)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def start_cli(
    args: list[str], launcher: Sequence[str] = (), output: Any = subprocess.PIPE
) -> subprocess.Popen[str]:
    """Start ``python [LAUNCHER...] -m sydsgpt.cli train ARGS`` (e.g.
    ``-m torch.distributed.run ...``); its stdout and stderr go to ``output`` (a pipe by default,
    read by :func:`finish`)."""
    command = [sys.executable, *launcher, "-m", "sydsgpt.cli", "train", *args]
    return subprocess.Popen(
        command, env=subprocess_env(), cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    """Wait for a process from :func:`start_cli`; fail
    the test (with its output) on a non-zero exit."""
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (output or "")[-3000:]
    return output or ""


def logged(out: Path, key: str) -> dict[int, float]:
    """``step -> record[key]`` from a run's log."""
    from sydsgpt.logs import read_log

    return {r["step"]: r[key] for r in read_log(out / "log.jsonl") if key in r}


# -------------------------------------------------------------------- the Hugging Face Hub, offline


def fake_hub(
    monkeypatch: Any,
    source: Path,
    sha_override: dict[str, str] | None = None,
    fail: Exception | None = None,
) -> None:
    """A stand-in ``huggingface_hub`` that "downloads" from a local folder and publishes its real
    sizes and hashes (``sha_override``: other published hashes; ``fail``: what ``model_info``
    raises)."""
    hub = types.ModuleType("huggingface_hub")
    files = sorted(p.name for p in source.iterdir())

    class HfApi:
        def model_info(self, repo_id, revision=None, files_metadata=False):
            if fail is not None:
                raise fail
            siblings = [
                types.SimpleNamespace(
                    rfilename=n,
                    size=(source / n).stat().st_size,
                    lfs=types.SimpleNamespace(
                        sha256=(sha_override or {}).get(n, file_sha256(source / n))
                    ),
                )
                for n in files
            ]
            return types.SimpleNamespace(sha="0" * 40, siblings=siblings)

    def snapshot_download(repo_id, revision=None, allow_patterns=None, local_dir=None):
        import fnmatch
        import shutil
        import tempfile

        out = Path(local_dir) if local_dir is not None else Path(tempfile.mkdtemp())  # the cache
        out.mkdir(parents=True, exist_ok=True)
        for n in files:
            if any(fnmatch.fnmatch(n, p) for p in allow_patterns):
                shutil.copy(source / n, out / n)
        return str(out)

    hub.HfApi, hub.snapshot_download = HfApi, snapshot_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)


def saved_tiny_checkpoint(
    folder: Path, text: str, vocab_size: int, name: str, context_length: int
) -> Path:
    """A tiny pretrained-format checkpoint in ``folder`` (created), with a BPE tokenizer of
    ``vocab_size`` ids trained on ``text`` (no end token) saved beside it: the base that the
    finetune commands' tests start from. Returns the checkpoint's path."""
    from sydsgpt.bpe import BPETokenizer
    from sydsgpt.checkpoint import save_checkpoint

    tokenizer = BPETokenizer(name=name).train(text, vocab_size)
    torch.manual_seed(0)
    config = tiny_config(
        vocab_size=tokenizer.n_vocab, context_length=context_length, embedding_dim=16
    )
    folder.mkdir()
    tokenizer.save(folder / "tokenizer.json")
    return save_checkpoint(folder / "checkpoint.pt", SydsGPT(config), tokenizer=tokenizer)


def register_tiny_run(monkeypatch: Any, **train: Any) -> None:
    """A seconds-long named run ``tiny-book`` (a tiny model on the-verdict), registered for one
    test (``train``: its TrainConfig fields)."""
    tiny = {
        "vocab_size": 300,
        "embedding_dim": 16,
        "context_length": 16,
        "num_layers": 1,
        "num_heads": 2,
        "dropout": 0.0,
        "qkv_bias": False,
        "tie_weights": True,
    }
    settings = {"batch_size": 4, "eval_interval": 0, "sample_tokens": 0, "device": "cpu", **train}
    spec = RunPreset(
        corpus="the-verdict", tokenizer="bpe:300", preset="tiny-book", train=TrainConfig(**settings)
    )
    monkeypatch.setitem(PRESETS, "tiny-book", tiny)
    monkeypatch.setitem(RUNS, "tiny-book", spec)


def committed_result(name: str) -> dict[str, Any]:
    """A committed benchmark result of ``sydsgpt/bench/results`` by file name."""
    from sydsgpt.bench.common import RESULTS_DIR

    return json.loads((RESULTS_DIR / name).read_text())
