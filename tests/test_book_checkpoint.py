"""The book checkpoint: the committed weights, their sha256, and the run that made them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sydsgpt import presets
from sydsgpt.book import (
    BOOK_CHECKPOINT,
    BOOK_CHECKPOINT_DIR,
    INFO_NAME,
    WEIGHTS_NAME,
    book_tokenizer,
    held_out,
    load_book_checkpoint,
    publish_book_checkpoint,
    train_book_model,
)
from sydsgpt.checkpoint import CheckpointError
from sydsgpt.files import file_sha256
from sydsgpt.presets import get_preset
from sydsgpt.train_config import TrainConfig

from helpers import committed_result, register_tiny_run

INFO = json.loads((BOOK_CHECKPOINT_DIR / INFO_NAME).read_text())


def test_committed_weights_hash_to_the_recorded_sha256_and_fit_the_budget() -> None:
    weights = BOOK_CHECKPOINT_DIR / WEIGHTS_NAME
    assert file_sha256(weights) == INFO["sha256"]
    assert weights.stat().st_size <= 20 * 2**20, "the book checkpoint must stay <= 20 MB"


def test_the_recorded_command_is_the_runs_one_line() -> None:
    spec = presets.RUNS[BOOK_CHECKPOINT]
    assert INFO["command"] == spec.command(f"runs/{BOOK_CHECKPOINT}")
    assert TrainConfig.from_dict(INFO["train"]) == spec.train
    assert INFO["steps"] == spec.train.max_steps
    assert "--threads " in INFO["command"], "bit-reproducible only with a pinned thread count"


def test_the_checkpoint_loads_as_its_preset() -> None:
    book = load_book_checkpoint()
    preset = get_preset(presets.RUNS[BOOK_CHECKPOINT].preset)
    assert dict(book.model.config) == {**preset, **dict(book.model.config)}
    assert book.model.config.vocab_size == book.tokenizer.n_vocab == 2048
    assert sum(p.numel() for p in book.model.parameters()) == INFO["parameters"]
    assert not book.model.training


def test_the_checkpoint_is_the_speedrun_records_first_seed() -> None:
    """The issue's rule: the record run's first seed is the book checkpoint."""
    record = committed_result("speedrun_record_cpu.json")
    assert presets.RUNS[BOOK_CHECKPOINT].train == presets.RUNS[record["run"]].train
    assert record["rows"][0]["seed"] == INFO["train"]["seed"]
    assert record["rows"][0]["val_bpb"] == pytest.approx(INFO["val_bpb"], abs=1e-4)


def test_the_checkpoint_is_round_3s_first_seed_too() -> None:
    """Evaluations do not change a run (test_train), so the checkpoint's one line, with its
    evaluation every 100 steps, trains what the speedrun's runner (which never evaluates)
    trained for the same seed in round 3: the same held-out loss and bits per byte."""
    (round3,) = committed_result("speedrun_full_length_cpu.json")["results"]
    (same,) = [s for s in round3["seeds"] if s["seed"] == INFO["train"]["seed"]]
    assert same["steps"] == INFO["steps"]
    assert same["val_loss"] == pytest.approx(INFO["val_loss"], abs=1e-4)
    assert same["val_bpb"] == pytest.approx(INFO["val_bpb"], abs=1e-4)


@pytest.mark.parametrize(
    "name, where",
    [
        ("finetune_cpu.json", lambda r: r["bases"]["book"]["source"]),
        ("instruct_cpu.json", lambda r: r["base_model"]),
    ],
)
def test_committed_results_that_finetune_the_checkpoint_name_todays(name, where) -> None:
    result = committed_result(name)
    assert where(result).endswith(f"sha256 {INFO['sha256']}")


@pytest.mark.parametrize(
    "name, rows",
    [
        ("quality_cpu.json", lambda r: [x for x in r["rows"] if x["run"] == BOOK_CHECKPOINT]),
        ("quantization_cpu.json", lambda r: [x for x in r["rows"] if x["scheme"] == "fp32"][:1]),
        (
            "real_model_cpu.json",
            lambda r: [x for x in r["quality"] if x["model"] == BOOK_CHECKPOINT][:1],
        ),
    ],
)
def test_committed_results_that_measure_the_checkpoint_measured_todays(name, rows) -> None:
    """Each reports the checkpoint's held-out bits per byte (the whole split at its context
    length), which must be the one its info.json records."""
    (row,) = rows(committed_result(name))
    assert row["val_bpb"] == pytest.approx(INFO["val_bpb"], abs=1e-4)


def test_a_damaged_weights_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(BOOK_CHECKPOINT_DIR, folder)
    data = bytearray((folder / WEIGHTS_NAME).read_bytes())
    data[-1] ^= 0xFF
    (folder / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 .* the file is damaged or was replaced"):
        load_book_checkpoint(folder)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(BOOK_CHECKPOINT_DIR, folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="lacks tokenizer.json"):
        load_book_checkpoint(folder)


@pytest.mark.slow
def test_the_committed_tokenizer_is_the_one_the_run_trains() -> None:
    rebuilt = book_tokenizer(None, BOOK_CHECKPOINT)
    assert rebuilt.merges == load_book_checkpoint().tokenizer.merges


@pytest.mark.slow
def test_the_recorded_bits_per_byte_are_reproduced() -> None:
    book = load_book_checkpoint()
    loss, bpb = held_out(book.model, book.tokenizer, BOOK_CHECKPOINT)
    assert round(bpb, 4) == pytest.approx(INFO["val_bpb"], abs=2e-4)
    assert round(loss, 4) == pytest.approx(INFO["val_loss"], abs=2e-4)


def test_publish_then_load_gives_the_trained_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same publish/load path on a seconds-long run (a tiny model on the-verdict)."""
    register_tiny_run(monkeypatch, max_steps=3, threads=1)
    threads = torch.get_num_threads()
    try:
        trained = train_book_model(tmp_path / "run", run="tiny-book", show_progress=False)
        assert torch.get_num_threads() == 1, "TrainConfig.threads applies during the run"
    finally:
        torch.set_num_threads(threads)
    info = publish_book_checkpoint(tmp_path / "run", tmp_path / "published", run="tiny-book")
    assert info["sha256"] == file_sha256(tmp_path / "published" / WEIGHTS_NAME)
    assert info["steps"] == 3 and info["train_seconds"] > 0
    again = publish_book_checkpoint(tmp_path / "run", tmp_path / "again", run="tiny-book")
    assert again["sha256"] == info["sha256"], (
        "publishing is deterministic: the same run gives the same bytes"
    )
    loaded = load_book_checkpoint(tmp_path / "published")
    ids = torch.tensor([trained.tokenizer.encode("I had always thought")[:16]])
    torch.testing.assert_close(loaded.model(ids), trained.model(ids), rtol=0, atol=0)
    assert loaded.tokenizer.merges == trained.tokenizer.merges


def test_an_unfinished_run_is_not_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_tiny_run(monkeypatch, max_steps=4)
    train_book_model(tmp_path / "run", run="tiny-book", stop_after=2, show_progress=False)
    with pytest.raises(
        CheckpointError,
        match="is not the finished 'tiny-book' run; train it with: sydsgpt train the-verdict",
    ):
        publish_book_checkpoint(tmp_path / "run", tmp_path / "published", run="tiny-book")


def test_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="threads"):
        TrainConfig(threads=0)
