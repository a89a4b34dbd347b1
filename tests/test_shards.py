"""sydsgpt.shards: the memory-mapped windows over prepared shards, and `sydsgpt train DIR`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CLI_MODEL, TINY_TEXT

from sydsgpt.checkpoint import load_checkpoint
from sydsgpt.data import ResumableBatches
from sydsgpt.prepare import PrepareConfig, prepare
from sydsgpt.shards import (
    FORMAT,
    VERSION,
    ShardDataset,
    ShardWriter,
    open_shards,
    prepared_loaders,
    token_dtype,
    write_manifest,
)


def test_token_dtype_is_uint16_while_the_vocabulary_fits() -> None:
    assert token_dtype(50257) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32 and token_dtype(151_936) == np.uint32


def positional_dataset(
    folder: Path, sizes: list[int], seq_len: int
) -> tuple[list[dict], ShardDataset]:
    """Shards whose token at stream position p is p
    (uint32), so a window names where it came from."""
    entries, start = [], 0
    for index, n in enumerate(sizes):
        writer = ShardWriter(folder, "train", index, np.dtype("<u4"))
        writer.write(np.arange(start, start + n))
        entries.append(writer.finish(end=[index, 0]))
        start += n
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "complete": True,
        "dtype": "uint32",
        "shards": entries,
        "tokenizer": {"name": "positions", "n_vocab": 2**20, "eot": 0, "spec": "none"},
    }
    write_manifest(folder, manifest)
    return entries, ShardDataset(open_shards(folder, "train"), seq_len)


def test_windows_are_shifted_pairs_that_never_cross_a_shard(tmp_path: Path) -> None:
    _, data = positional_dataset(tmp_path, [35, 20], seq_len=8)
    assert len(data) == 34 // 8 + 19 // 8 == 6
    starts = [int(data[i][0][0]) for i in range(len(data))]
    assert starts == [0, 8, 16, 24, 35, 43]  # the second shard starts at stream position 35
    x, y = data[5]
    assert x.dtype == torch.long and x.shape == (8,) and torch.equal(y, x + 1)


def test_ranks_get_disjoint_windows_that_together_are_the_global_batch(tmp_path: Path) -> None:
    _, data = positional_dataset(tmp_path, [400, 333], seq_len=8)
    single = ResumableBatches(data, 4, seed=3)
    ranks = [ResumableBatches(data, 4, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(len(data) // 4 + 3):  # into the second epoch
        whole = next(single)[0]
        halves = [next(r)[0] for r in ranks]
        first_tokens = [set(h[:, 0].tolist()) for h in halves]
        assert not first_tokens[0] & first_tokens[1]
        assert torch.equal(torch.cat(halves), whole)


def test_the_order_is_fixed_by_the_seed_and_resumes_bit_exactly(tmp_path: Path) -> None:
    _, data = positional_dataset(tmp_path, [500], seq_len=8)
    run = ResumableBatches(data, 4, seed=5)
    seen = [next(run)[0] for _ in range(7)]
    state = run.state_dict()
    after = [next(run)[0] for _ in range(20)]
    resumed = ResumableBatches(data, 4, seed=5)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(after, [next(resumed)[0] for _ in range(20)]))
    again = ResumableBatches(data, 4, seed=5)
    assert all(torch.equal(a, next(again)[0]) for a in seen)
    other = ResumableBatches(data, 4, seed=6)
    assert not all(torch.equal(a, next(other)[0]) for a in seen)


def test_a_damaged_or_unfinished_dataset_is_refused(tmp_path: Path) -> None:
    entries, _ = positional_dataset(tmp_path, [40], seq_len=8)
    shard = tmp_path / entries[0]["name"]
    data = bytearray(shard.read_bytes())
    data[0] ^= 1
    shard.write_bytes(bytes(data))
    open_shards(tmp_path, "train")  # same size: only the hash shows it
    with pytest.raises(ValueError, match="sha256"):
        open_shards(tmp_path, "train", verify=True)
    shard.write_bytes(bytes(data[:-4]))
    with pytest.raises(ValueError, match="should hold 160 bytes"):
        open_shards(tmp_path, "train")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    write_manifest(tmp_path, {**manifest, "complete": False})
    with pytest.raises(ValueError, match="unfinished"):
        open_shards(tmp_path, "train")


def test_train_and_validation_windows_come_from_disjoint_tokens(tmp_path: Path) -> None:
    """Validation windows lie in the stream's first val_tokens ids, training windows after them."""
    from sydsgpt.tokenizer import get_gpt2_tokenizer

    (tmp_path / "a.txt").write_text(TINY_TEXT)
    prepare(
        [tmp_path / "a.txt"],
        tmp_path / "data",
        PrepareConfig(shard_tokens=700, val_tokens=300, chunk_size=512),
        show_progress=False,
    )
    stream = torch.tensor([*get_gpt2_tokenizer().encode_ordinary(TINY_TEXT), 50256])
    train, val = prepared_loaders(tmp_path / "data", seq_len=16, batch_size=4)
    assert len(val.dataset) == 299 // 16
    for k in range(len(val.dataset)):
        assert torch.equal(val.dataset[k][0], stream[16 * k : 16 * k + 16])
    shard_starts = np.cumsum([300] + [len(s) for s in train.dataset.shards])
    for k in range(len(train.dataset)):
        shard, start = train.dataset.locate(k)
        at = int(shard_starts[shard]) + start
        assert at >= 300 and torch.equal(train.dataset[k][0], stream[at : at + 16])


@pytest.mark.slow
def test_train_on_a_prepared_folder_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """`sydsgpt train DIR`: stopped after 3 steps and resumed,
    it ends with the weights of an uninterrupted run."""
    from sydsgpt.cli import main

    from sydsgpt.bpe import BPETokenizer

    tok = BPETokenizer(name="bpe300").train(TINY_TEXT, 300, special_tokens=["<|endoftext|>"])
    tok.save(tmp_path / "tok.json")
    (tmp_path / "a.txt").write_text(TINY_TEXT * 2)
    prepare(
        [tmp_path / "a.txt"],
        tmp_path / "data",
        PrepareConfig(
            tokenizer=str(tmp_path / "tok.json"), shard_tokens=1000, val_tokens=400, chunk_size=512
        ),
        show_progress=False,
    )
    (tmp_path / "model.json").write_text(json.dumps(CLI_MODEL))
    common = [
        "train",
        str(tmp_path / "data"),
        "--config",
        str(tmp_path / "model.json"),
        "--batch-size",
        "4",
        "--max-steps",
        "6",
        "--eval-interval",
        "3",
        "--eval-batches",
        "2",
        "--sample-tokens",
        "0",
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main([*common, "--out", str(tmp_path / "full")]) == 0
    assert main([*common, "--out", str(tmp_path / "parts"), "--stop-after", "3"]) == 0
    assert main([*common, "--out", str(tmp_path / "parts"), "--resume"]) == 0
    a, b = (
        load_checkpoint(tmp_path / "full" / "checkpoint.pt"),
        load_checkpoint(tmp_path / "parts" / "checkpoint.pt"),
    )
    assert a["step"] == b["step"] == 6 and a["data"] == b["data"] and a["data"]["position"] > 0
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    run = json.loads((tmp_path / "full" / "run.json").read_text())
    assert run["tokenizer"] == {"name": "bpe300", "n_vocab": tok.n_vocab}
    assert (tmp_path / "full" / "tokenizer.json").read_text() == (
        tmp_path / "data" / "tokenizer.json"
    ).read_text()
    assert (
        main([*common, "--out", str(tmp_path / "bad"), "--tokenizer", "bpe:300"]) == 2
    )  # --tokenizer for a prepared dataset is bad usage
