"""Every named model and every named run of the book, in one place.

* :data:`PRESETS`: model configs by name: the released GPT-2 sizes, ``gpt2-mini`` (GPT-2's
  vocabulary at a size a CPU trains) and ``book-ch05`` (the model chapter 5 trains, with a
  1,024-id tokenizer of its own). :func:`get_preset` returns a validated copy.
* :data:`RUNS`: the book's training runs by name: corpus, tokenizer, model preset and
  :class:`~sydsgpt.train.TrainConfig`. :meth:`RunPreset.command` is the one ``sydsgpt
  train`` line that reproduces a run, and :mod:`sydsgpt.book` trains (or loads) it from
  Python.

A name works everywhere a preset does: ``SydsGPT(get_preset("book-ch05"))``,
``sydsgpt train --preset book-ch05``, the benchmarks' ``--preset``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from typing import Any

from .config import SydsGPTConfig
from .flags import option_flag
from .train_config import TrainConfig

_GPT2_COMMON = {
    "vocab_size": 50257,
    "context_length": 1024,
    "dropout": 0.1,
    "qkv_bias": True,
    "tie_weights": True,
}

PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-small": {**_GPT2_COMMON, "embedding_dim": 768, "num_layers": 12, "num_heads": 12},
    "gpt2-medium": {**_GPT2_COMMON, "embedding_dim": 1024, "num_layers": 24, "num_heads": 16},
    "gpt2-large": {**_GPT2_COMMON, "embedding_dim": 1280, "num_layers": 36, "num_heads": 20},
    "gpt2-xl": {**_GPT2_COMMON, "embedding_dim": 1600, "num_layers": 48, "num_heads": 25},
    # GPT-2's tokenizer and vocabulary at a size that trains on a CPU (16M parameters, most
    # of them the 50,257-row embedding): chapter 4's example and the CPU benchmarks' model.
    "gpt2-mini": {
        "vocab_size": 50257,
        "embedding_dim": 256,
        "context_length": 256,
        "num_layers": 4,
        "num_heads": 4,
        "dropout": 0.1,
        "qkv_bias": False,
        "tie_weights": True,
    },
    # Chapter 5's model: a 1,024-id BPE tokenizer trained on Tiny Shakespeare (0.93M parameters).
    # A short context and no dropout: for a two-minute run, many short sequences per step
    # and no regularisation reach the lowest held-out loss (sydsgpt bench --what quality).
    "book-ch05": {
        "vocab_size": 1024,
        "embedding_dim": 128,
        "context_length": 64,
        "num_layers": 4,
        "num_heads": 4,
        "dropout": 0.0,
        "qkv_bias": False,
        "tie_weights": True,
    },
    # The speedrun's record 0, the first book checkpoint: chapter 5's recipe, larger and
    # trained about 12x longer (3.7M parameters; appendix "Making it fast").
    "record-0": {
        "vocab_size": 2048,
        "embedding_dim": 256,
        "context_length": 256,
        "num_layers": 4,
        "num_heads": 4,
        "dropout": 0.1,
        "qkv_bias": False,
        "tie_weights": True,
    },
}
"""Named model configs. GPT-2 sizes follow the released checkpoints (124M, 355M, 774M, 1558M)."""
# Chapter 7: modern architectures. The real shapes follow the released checkpoints'
# config.json (sydsgpt.hf_weights reads those); "book-modern" is gpt2-mini with every
# modern part, small enough to train on a CPU.
MODERN_PARTS = {
    "norm": "rmsnorm",
    "ffn": "swiglu",
    "positions": "rope",
    "linear_bias": False,
    "qkv_bias": False,
}
# The speedrun's records (appendix "Making it fast"). Record 1: record 0's width, depth,
# vocabulary and dropout with chapter 7's parts (SwiGLU at equal parameters) and a context of
# 128 tokens. Record 2, the current record and so the book checkpoint (its weights ship with
# the package, sydsgpt/weights/book-checkpoint): record 1 with twice the dropout. Listed
# after record 0, before the released models.
PRESETS["record-1"] = {
    **PRESETS["record-0"],
    **MODERN_PARTS,
    "norm_eps": 1e-6,
    "ffn_hidden_dim": 704,
    "context_length": 128,
}
PRESETS["speedrun-record"] = {**PRESETS["record-1"], "dropout": 0.2}
MODERN_PRESETS: dict[str, dict[str, Any]] = {
    "llama3.2-1b": {
        **MODERN_PARTS,
        "vocab_size": 128256,
        "embedding_dim": 2048,
        "context_length": 131072,
        "num_layers": 16,
        "num_heads": 32,
        "num_kv_heads": 8,
        "head_dim": 64,
        "ffn_hidden_dim": 8192,
        "dropout": 0.0,
        "tie_weights": True,
        "norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_context_length": 8192,
        },
    },
    "qwen3-0.6b": {
        **MODERN_PARTS,
        "vocab_size": 151936,
        "embedding_dim": 1024,
        "context_length": 40960,
        "num_layers": 28,
        "num_heads": 16,
        "num_kv_heads": 8,
        "head_dim": 128,
        "ffn_hidden_dim": 3072,
        "dropout": 0.0,
        "tie_weights": True,
        "norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "qk_norm": True,
    },
    # SmolLM2-135M-Instruct (sydsgpt.smollm2 loads its weights from a GGUF file, chapter 8).
    "smollm2-135m-instruct": {
        **MODERN_PARTS,
        "vocab_size": 49152,
        "embedding_dim": 576,
        "context_length": 8192,
        "num_layers": 30,
        "num_heads": 9,
        "num_kv_heads": 3,
        "head_dim": 64,
        "ffn_hidden_dim": 1536,
        "dropout": 0.0,
        "tie_weights": True,
        "norm_eps": 1e-5,
        "rope_theta": 100000.0,
    },
    "book-modern": {
        **MODERN_PARTS,
        "vocab_size": 50257,
        "embedding_dim": 256,
        "context_length": 256,
        "num_layers": 4,
        "num_heads": 4,
        "num_kv_heads": 2,
        "dropout": 0.1,
        "tie_weights": True,
        "norm_eps": 1e-6,
        "qk_norm": True,
    },
}
"""Modern presets: Llama 3.2 1B, Qwen3 0.6B, and the book's CPU-sized modern model."""
PRESETS.update(MODERN_PRESETS)


def preset_names() -> list[str]:
    """Every preset name, sorted."""
    return sorted(PRESETS)


def get_preset(name: str, **overrides: Any) -> dict[str, Any]:
    """A copy of preset ``name`` with ``overrides`` applied (validated)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    config = {**PRESETS[name], **overrides}
    SydsGPTConfig.from_dict(config)
    return config


@dataclass(frozen=True)
class RunPreset:
    """A training run of the book, fully determined: what ``sydsgpt train`` needs to repeat it."""

    corpus: str
    """A corpus name of :mod:`sydsgpt.corpora`."""
    tokenizer: str
    """``gpt2`` or ``bpe:N`` (an N-id BPE trained on the corpus's training split)."""
    preset: str
    """The model preset (its ``vocab_size`` is the tokenizer's)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    val_fraction: float = 0.1
    """The share of the corpus held out at its end for validation."""

    @property
    def model_config(self) -> dict[str, Any]:
        return get_preset(self.preset)

    def command(self, out: str, width: int | None = None) -> str:
        """The ``sydsgpt train`` command line for this run, writing into ``out``.

        Every training option that differs from :class:`TrainConfig`'s default is spelled
        out, so the line alone reproduces the run (tested bit for bit). ``width``: break the
        line (with `` \\`` continuations) before options, so no line passes ``width``
        characters and an option never parts from its value.
        """
        line = self._command(out)
        if width is None:
            return line
        words = shlex.split(line)
        groups: list[str] = []
        for word in words:
            quoted = shlex.quote(word)
            if (
                groups
                and not word.startswith("--")
                and groups[-1].startswith("--")
                and " " not in groups[-1]
            ):
                groups[-1] += " " + quoted
            else:
                groups.append(quoted)
        lines = [""]
        for group in groups:
            if lines[-1] and len(lines[-1]) + 1 + len(group) + 2 > width:
                lines.append("    ")
            lines[-1] += ("" if lines[-1].strip() == "" else " ") + group
        return " \\\n".join(lines)

    def _command(self, out: str) -> str:
        words = [
            "sydsgpt",
            "train",
            self.corpus,
            "--preset",
            self.preset,
            "--tokenizer",
            self.tokenizer,
        ]
        if self.val_fraction != 0.1:
            words += ["--val-fraction", str(self.val_fraction)]
        defaults = TrainConfig()
        for name, value in self.train.to_dict().items():
            if value != getattr(defaults, name):
                flag, text = option_flag(TrainConfig, name, value)
                words += [flag] if text is None else [flag, text]
        words += ["--out", out]
        return " ".join(shlex.quote(w) for w in words)


RUNS: dict[str, RunPreset] = {
    "book-ch05": RunPreset(
        corpus="tinyshakespeare",
        tokenizer="bpe:1024",
        preset="book-ch05",
        train=TrainConfig(
            max_steps=600,
            batch_size=32,
            seq_len=64,
            lr=3e-3,
            warmup_steps=30,
            min_lr_ratio=0.1,
            weight_decay=0.1,
            grad_clip=1.0,
            eval_interval=100,
            eval_batches=10,
            sample_prompt="JULIET:\nO",
            sample_tokens=24,
            seed=123,
            device="cpu",
        ),
    ),
    "record-0": RunPreset(
        corpus="tinyshakespeare",
        tokenizer="bpe:2048",
        preset="record-0",
        train=TrainConfig(
            max_steps=1200,
            batch_size=16,
            seq_len=256,
            lr=2e-3,
            warmup_steps=100,
            min_lr_ratio=0.1,
            weight_decay=0.1,
            grad_clip=1.0,
            eval_interval=100,
            eval_batches=20,
            sample_prompt="ROMEO:",
            sample_tokens=40,
            seed=123,
            device="cpu",
            threads=2,
        ),
    ),
}
"""The book's runs. ``book-ch05``: chapter 5's run, ~1.2M training tokens, about two minutes on a
laptop CPU;
``record-0``: the speedrun's record 0, the first book checkpoint (GPT-2 blocks, AdamW, 1,200
steps of 16 x 256 tokens, about 27 minutes on two CPU cores; appendix "Making it fast");
``record-1``: the speedrun's record 1, record 0 with the changes below (Muon, chapter 7's
parts, a context of 128): about 12 minutes of training steps on two CPU cores, about 11
epochs (the same recipe for 2,300 steps, 30 minutes, overfit: its validation loss turned up
after about 10 epochs);
``speedrun-record``: the speedrun's record (record 2): record 1 with twice the dropout (0.2)
and half as many steps again (1,350), about 18 minutes of training steps, about 16 epochs
(``sydsgpt bench --what speedrun --record`` trains it);
``book-checkpoint``: the book checkpoint (:mod:`sydsgpt.book`), the record's first seed: the
same run as ``speedrun-record``."""
RUNS["record-1"] = RunPreset(
    corpus="tinyshakespeare",
    tokenizer="bpe:2048",
    preset="record-1",
    train=replace(
        RUNS["record-0"].train,
        max_steps=900,
        batch_size=32,
        seq_len=128,
        warmup_steps=75,
        optimizer="muon",
    ),
)
RUNS["speedrun-record"] = replace(
    RUNS["record-1"],
    preset="speedrun-record",
    train=replace(RUNS["record-1"].train, max_steps=1350),
)
RUNS["book-checkpoint"] = RUNS["speedrun-record"]


def get_run(name: str) -> RunPreset:
    """The named run, or a ``ValueError`` listing the names."""
    if name not in RUNS:
        raise ValueError(f"unknown run {name!r}; choose one of {sorted(RUNS)}")
    return RUNS[name]
