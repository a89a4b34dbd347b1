"""``sydsgpt train --preset book-modern`` and ``sydsgpt generate`` with a modern (RoPE, GQA,
RMSNorm, SwiGLU, QK-norm) model: a couple of steps end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import TINY_TEXT

from sydsgpt.checkpoint import load_checkpoint
from sydsgpt.cli import main
from sydsgpt.generate import generate
from sydsgpt.model import SydsGPT


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_train_modern_preset_then_generate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "tiny.txt"
    text.write_text(TINY_TEXT)
    out = tmp_path / "run"
    code = main(
        [
            "train",
            str(text),
            "--preset",
            "book-modern",
            "--tokenizer",
            "bpe:280",
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
            "--eval-interval",
            "0",
            "--sample-tokens",
            "0",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    config = checkpoint["config"]
    assert checkpoint["step"] == 2 and config["vocab_size"] == 280
    assert (
        config["positions"],
        config["norm"],
        config["ffn"],
        config["num_kv_heads"],
        config["qk_norm"],
    ) == ("rope", "rmsnorm", "swiglu", 2, True)

    code = main(
        [
            "generate",
            "--checkpoint",
            str(out / "checkpoint.pt"),
            "--prompt",
            "line 1: the",
            "--max-new-tokens",
            "6",
            "--ignore-eos",
            "--device",
            "cpu",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("line 1: the") and len(captured.out) > len("line 1: the")

    model = SydsGPT(config)
    model.load_state_dict(checkpoint["model"])
    prompt = torch.tensor([[5, 6, 7]])
    assert torch.equal(
        generate(model.eval(), prompt, 6, use_cache=True),
        generate(model, prompt, 6, use_cache=False),
    )
