"""Token shards: a prepared dataset on disk, and the memory-mapped windows training reads from it.

``sydsgpt prepare`` (:mod:`sydsgpt.prepare`) writes a *prepared dataset folder*:

======================  =============================================================
``manifest.json``       format, token dtype, tokenizer identity, the settings, and per
                        shard its name, split, token count, sha256 and stream position
``val_000000.bin``      the held-out validation tokens: the corpus's first ``val_tokens``
``train_000000.bin``    training tokens, ``shard_tokens`` per shard (the last one fewer)
``tokenizer.json``      the BPE tokenizer, when the dataset was not made with GPT-2's
======================  =============================================================

A shard is the raw little-endian array of token ids, ``uint16`` when the vocabulary has at
most 65,536 ids (GPT-2's 50,257 do), else ``uint32``; one end-of-text id follows every
document. Nothing is loaded into memory: :class:`ShardDataset` memory-maps the shards and
cuts them into non-overlapping windows, which :class:`sydsgpt.data.ResumableBatches`
serves in an order fixed by the seed, resumable, and disjoint across DDP ranks.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .files import atomic_open, atomic_write, file_sha256
from .validation import check_positive_int

MANIFEST_NAME = "manifest.json"
DATASET_TOKENIZER_NAME = "tokenizer.json"
FORMAT = "sydsgpt-shards"
VERSION = 1
SPLITS = ("train", "val")


def token_dtype(n_vocab: int) -> np.dtype:
    """``uint16`` when every id fits (``n_vocab <= 65536``), else ``uint32``."""
    check_positive_int(n_vocab, "n_vocab")
    return np.dtype("<u2") if n_vocab <= 2**16 else np.dtype("<u4")


def shard_name(split: str, index: int) -> str:
    """``train_000003.bin``: the file of shard ``index`` of ``split``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return f"{split}_{index:06d}.bin"


class ShardWriter:
    """Write one shard piece by piece (O(piece) memory), counting and hashing as it goes.

    The file appears under its name only when :meth:`finish` succeeds (atomically);
    :meth:`abort` (or an exception) leaves nothing behind.
    """

    def __init__(
        self, folder: str | os.PathLike[str], split: str, index: int, dtype: np.dtype
    ) -> None:
        self.name, self.split, self.dtype = shard_name(split, index), split, np.dtype(dtype)
        self.tokens = 0
        self._hash = hashlib.sha256()
        self._context = atomic_open(Path(folder) / self.name)
        self._file = self._context.__enter__()

    def write(self, ids: np.ndarray) -> None:
        data = np.ascontiguousarray(ids, dtype=self.dtype).data
        self._file.write(data)
        self._hash.update(data)
        self.tokens += len(ids)

    def finish(self, **extra: Any) -> dict[str, Any]:
        """Close and publish the shard; its manifest entry
        ``{name, split, tokens, sha256, **extra}``."""
        self._context.__exit__(None, None, None)
        return {
            "name": self.name,
            "split": self.split,
            "tokens": self.tokens,
            "sha256": self._hash.hexdigest(),
            **extra,
        }

    def abort(self) -> None:
        """Drop the unfinished shard (its temporary file is deleted)."""
        error = RuntimeError(f"shard {self.name} aborted")
        self._context.__exit__(RuntimeError, error, None)


# ---------------------------------------------------------------------------- manifest


def is_prepared_dataset(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder with a ``manifest.json``
    (a prepared dataset, maybe unfinished)."""
    return (Path(path) / MANIFEST_NAME).is_file()


def write_manifest(folder: str | os.PathLike[str], manifest: Mapping[str, Any]) -> Path:
    return atomic_write(Path(folder) / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a prepared dataset folder.

    Raises:
        FileNotFoundError: no ``manifest.json`` there.
        ValueError: not this format or version.
    """
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a prepared dataset: it has no {MANIFEST_NAME} (make one with sydsgpt "
            "prepare)"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(
            f"{path} is not a {FORMAT} version {VERSION} manifest (format "
            f"{manifest.get('format')!r}, version {manifest.get('version')!r})"
        )
    return manifest


def open_shards(
    folder: str | os.PathLike[str], split: str, verify: bool = False
) -> list[np.memmap]:
    """Memory-map every shard of ``split`` (read-only), checking each file's size (and sha256 with
    ``verify``).

    Raises:
        ValueError: the dataset is unfinished, a shard is missing, truncated or (``verify``)
            altered.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if not manifest.get("complete"):
        raise ValueError(
            f"{folder} is an unfinished prepared dataset: run the same sydsgpt prepare command "
            "again to finish it"
        )
    dtype = np.dtype(manifest["dtype"])
    maps = []
    for entry in manifest["shards"]:
        if entry["split"] != split:
            continue
        path = folder / entry["name"]
        expected = entry["tokens"] * dtype.itemsize
        if not path.is_file() or path.stat().st_size != expected:
            found = path.stat().st_size if path.is_file() else "no file"
            raise ValueError(
                f"shard {path} should hold {expected} bytes ({entry['tokens']} tokens), found "
                f"{found}; the dataset is damaged: prepare it again"
            )
        if verify and file_sha256(path) != entry["sha256"]:
            raise ValueError(
                f"shard {path} does not match its sha256 in the manifest; the dataset is damaged: "
                "prepare it again"
            )
        maps.append(np.memmap(path, dtype=dtype, mode="r"))
    return maps


def dataset_tokenizer(folder: str | os.PathLike[str]) -> Any:
    """The tokenizer a prepared dataset was made with (GPT-2's, or its saved ``tokenizer.json``)."""
    from .bpe import BPETokenizer
    from .tokenizer import get_gpt2_tokenizer

    identity = read_manifest(folder)["tokenizer"]
    if identity["spec"] == "gpt2":
        tokenizer = get_gpt2_tokenizer()
    else:
        tokenizer = BPETokenizer.load(Path(folder) / DATASET_TOKENIZER_NAME)
    if tokenizer.name != identity["name"] or tokenizer.n_vocab != identity["n_vocab"]:
        raise ValueError(
            f"{folder} was prepared with tokenizer {identity['name']} ({identity['n_vocab']} ids) "
            f"but {tokenizer.name} ({tokenizer.n_vocab} ids) was found; prepare the dataset again"
        )
    return tokenizer


# ---------------------------------------------------------------------------- windows


class ShardDataset(Dataset):
    """Non-overlapping windows of ``seq_len + 1`` tokens over memory-mapped shards.

    Window ``i`` is the ``i``-th window in shard order (windows never cross a shard's end;
    the few tokens left at the end of each shard are not used). Items are
    ``(input_ids, target_ids)``, each a ``LongTensor`` of shape ``(seq_len,)``, the target
    shifted by one. Under :class:`~sydsgpt.data.ResumableBatches` the window order is a
    seeded random permutation: deterministic, resumable, and split disjointly across ranks.
    """

    def __init__(self, shards: list[np.ndarray], seq_len: int) -> None:
        check_positive_int(seq_len, "seq_len")
        self.shards, self.seq_len = shards, seq_len
        counts = [max(0, (len(s) - 1) // seq_len) for s in shards]
        self._ends = np.cumsum(counts, dtype=np.int64)
        if not counts or self._ends[-1] == 0:
            total = sum(len(s) for s in shards)
            raise ValueError(
                f"the shards hold {total} tokens, not one window of {seq_len + 1} "
                f"(seq_len={seq_len} plus the shifted target); prepare more text or use a smaller "
                "--seq-len"
            )

    def __len__(self) -> int:
        return int(self._ends[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """``(shard, first token)`` of window ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range for a dataset of {len(self)} windows")
        shard = int(np.searchsorted(self._ends, index, side="right"))
        before = int(self._ends[shard - 1]) if shard else 0
        return shard, (index - before) * self.seq_len

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(index)
        if index < 0:
            index += len(self)
        shard, start = self.locate(index)
        window = torch.from_numpy(
            self.shards[shard][start : start + self.seq_len + 1].astype(np.int64)
        )
        return window[:-1], window[1:]


def prepared_loaders(
    folder: str | os.PathLike[str], seq_len: int, batch_size: int, verify: bool = False
) -> tuple[DataLoader, DataLoader]:
    """The training and validation loaders of a prepared dataset (validation: in order, all
    windows).

    The training loader's dataset is what :func:`sydsgpt.train.train` draws its batches from.
    """
    train = ShardDataset(open_shards(folder, "train", verify), seq_len)
    val = ShardDataset(open_shards(folder, "val", verify), seq_len)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True),
        DataLoader(val, batch_size=batch_size, shuffle=False, drop_last=False),
    )
