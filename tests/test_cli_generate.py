"""``sydsgpt generate``: loads a checkpoint (original and chapter-5 formats) and streams text."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import peaked_model, tiny_config

from sydsgpt.checkpoint import save_checkpoint
from sydsgpt.cli import main
from sydsgpt.generate import generate_text, stream_text
from sydsgpt.model import SydsGPT
from sydsgpt.tokenizer import get_gpt2_tokenizer

# The original SydsGPT-Pretraining config keys only.
CONFIG = tiny_config(
    vocab_size=50257, context_length=24, num_layers=1, num_heads=2, dropout=0.1, qkv_bias=False
)
PROMPT = "Every effort moves"


@pytest.fixture(scope="module")
def model() -> SydsGPT:
    return peaked_model(
        30, **CONFIG
    )  # peaked predictions, so the greedy text is not one token repeated


@pytest.fixture(scope="module")
def original_checkpoint(model: SydsGPT, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint in the original project's format: three keys, causal-mask buffers included."""
    state = dict(model.state_dict())
    for i in range(CONFIG["num_layers"]):
        n = CONFIG["context_length"]
        state[f"transformer_blocks.{i}.attention.causal_mask"] = torch.triu(
            torch.ones(n, n), diagonal=1
        )
    path = tmp_path_factory.mktemp("ckpt") / "original.pt"
    torch.save({"model": state, "optimizer": {}, "config": dict(CONFIG)}, path)
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["generate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_original_checkpoint_greedy_text(model: SydsGPT, original_checkpoint: Path, capsys) -> None:
    code, out, _ = cli(
        capsys,
        "--checkpoint",
        str(original_checkpoint),
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "8",
        "--device",
        "cpu",
    )
    expected = generate_text(model, get_gpt2_tokenizer(), PROMPT, 8)
    assert code == 0
    assert len(expected) > 0
    assert out == PROMPT + expected + "\n"


def test_sampling_options_seed_and_no_cache(
    model: SydsGPT, original_checkpoint: Path, capsys
) -> None:
    opts = [
        "--temperature",
        "0.9",
        "--top-k",
        "20",
        "--top-p",
        "0.95",
        "--repetition-penalty",
        "1.2",
        "--no-repeat-ngram-size",
        "2",
        "--seed",
        "11",
        "--max-new-tokens",
        "10",
    ]
    base = ["--checkpoint", str(original_checkpoint), "--prompt", PROMPT, *opts]
    _, first, _ = cli(capsys, *base)
    _, again, _ = cli(capsys, *base, "--no-use-cache")
    expected = generate_text(
        model,
        get_gpt2_tokenizer(),
        PROMPT,
        10,
        temperature=0.9,
        top_k=20,
        top_p=0.95,
        repetition_penalty=1.2,
        no_repeat_ngram_size=2,
        seed=11,
    )
    assert first == again == PROMPT + expected + "\n"
    _, other_seed, _ = cli(capsys, *base[:-4], "--seed", "12", "--max-new-tokens", "10")
    assert other_seed != first


def test_stop_string_and_escapes(model: SydsGPT, original_checkpoint: Path, capsys) -> None:
    full = generate_text(model, get_gpt2_tokenizer(), PROMPT, 12, stop_at_eos=False)
    stop = full[3:6]
    expected = full[: full.find(stop)]
    _, out, _ = cli(
        capsys,
        "--checkpoint",
        str(original_checkpoint),
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "12",
        "--ignore-eos",
        "--stop",
        "never-there",
        stop,
    )
    assert out == PROMPT + expected + "\n"
    _, out, _ = cli(
        capsys,
        "--checkpoint",
        str(original_checkpoint),
        "--prompt",
        "a\\nb",
        "--max-new-tokens",
        "1",
    )
    assert out.startswith("a\nb")


def test_chapter5_checkpoint_loads(model: SydsGPT, tmp_path: Path, capsys) -> None:
    path = save_checkpoint(tmp_path / "checkpoint.pt", model, tokenizer=get_gpt2_tokenizer())
    code, out, _ = cli(
        capsys, "--checkpoint", str(path), "--prompt", PROMPT, "--max-new-tokens", "5"
    )
    assert (
        code == 0 and out == PROMPT + generate_text(model, get_gpt2_tokenizer(), PROMPT, 5) + "\n"
    )


@pytest.mark.parametrize(
    "args, match",
    [
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--top-p", "1.5"], r"top_p must be in \(0, 1\]"),
        (["--top-k", "0"], "top_k must be an integer >= 1"),
        (["--max-new-tokens", "0"], "max_new_tokens must be a positive integer"),
    ],
)
def test_bad_options_are_clear_errors(
    original_checkpoint: Path, capsys, args: list[str], match: str
) -> None:
    code, out, err = cli(
        capsys, "--checkpoint", str(original_checkpoint), "--prompt", PROMPT, *args
    )
    assert code == 2 and out == ""
    assert re.search(match, err), err


@pytest.mark.parametrize(
    "args, shown",
    [
        (["--top-k", "5"], "--top-k has no effect"),
        (["--top-p", "0.9", "--seed", "2"], "--top-p, --seed have no effect"),
        (["--temperature", "0", "--top-k", "5"], "--top-k has no effect"),
    ],
)
def test_sampling_options_without_temperature_are_refused(
    tmp_path: Path, capsys, args: list[str], shown: str
) -> None:
    """--top-k at the default temperature (0, greedy) would change nothing: refused in one line,
    before the checkpoint is even read (the path here does not exist)."""
    missing = str(tmp_path / "nope.pt")
    code, out, err = cli(capsys, "--checkpoint", missing, "--prompt", PROMPT, *args)
    assert code == 2 and out == "", err
    flags = shown.split(" ha")[0]
    assert err.splitlines() == [
        f"sydsgpt generate: error: {shown} at temperature 0, which is greedy decoding (always the "
        "most likely token); to sample, set --temperature above 0 (e.g. 0.8), "
        f"or leave {flags} out"
    ]


def test_missing_checkpoint_and_empty_prompt(
    original_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    code, _, err = cli(capsys, "--checkpoint", str(tmp_path / "nope.pt"), "--prompt", PROMPT)
    assert code == 2 and "no checkpoint at" in err
    code, _, err = cli(capsys, "--checkpoint", str(original_checkpoint), "--prompt", "")
    assert code == 2 and "the prompt is empty" in err


def test_help_has_examples(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    assert "Examples:" in out and "--repetition-penalty" in out and "--no-use-cache" in out


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_entry_point_streams_in_a_subprocess(model: SydsGPT, original_checkpoint: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sydsgpt.cli",
            "generate",
            "--checkpoint",
            str(original_checkpoint),
            "--prompt",
            PROMPT,
            "--max-new-tokens",
            "6",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == PROMPT + generate_text(model, get_gpt2_tokenizer(), PROMPT, 6) + "\n"


def test_bpe_tokenizer_beside_the_checkpoint_is_used(tmp_path: Path, capsys) -> None:
    from sydsgpt.bpe import BPETokenizer

    tokenizer = BPETokenizer(name="bpe-test").train(
        "to be or not to be, that is the question " * 20, 280
    )
    tokenizer.save(tmp_path / "tokenizer.json")
    torch.manual_seed(1)
    small = SydsGPT({**CONFIG, "vocab_size": tokenizer.n_vocab}).eval()
    path = save_checkpoint(tmp_path / "checkpoint.pt", small, tokenizer=tokenizer)
    code, out, err = cli(
        capsys, "--checkpoint", str(path), "--prompt", "to be", "--max-new-tokens", "6"
    )
    assert code == 0, err
    assert out == "to be" + generate_text(small, tokenizer, "to be", 6) + "\n"
    (tmp_path / "tokenizer.json").unlink()  # GPT-2's tokenizer is not the one it was trained with
    code, _, err = cli(capsys, "--checkpoint", str(path), "--prompt", "to be")
    assert code == 2 and "tokenizer" in err


def test_text_is_written_piece_by_piece(
    model: SydsGPT, original_checkpoint: Path, monkeypatch
) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.writes: list[str] = []

        def write(self, text: str) -> None:
            self.writes.append(text)

        def flush(self) -> None:
            pass

    out = Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(original_checkpoint),
                "--prompt",
                PROMPT,
                "--max-new-tokens",
                "6",
            ]
        )
        == 0
    )
    pieces = list(stream_text(model, get_gpt2_tokenizer(), PROMPT, 6))
    assert out.writes == [PROMPT, *pieces, "\n"] and len(pieces) > 1


def test_the_loaded_model_is_in_decoding_layout(model: SydsGPT, original_checkpoint: Path) -> None:
    from sydsgpt.cli.generate import load_for_generation

    loaded, _ = load_for_generation(str(original_checkpoint), "cpu")
    linears = [m for m in loaded.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(
        m.weight.t().is_contiguous() and not m.weight.is_contiguous() for m in linears
    )
    assert not loaded.training
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids), model(ids), rtol=1e-5, atol=1e-5)  # logits of size ~30
