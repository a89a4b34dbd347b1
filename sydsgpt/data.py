"""From a long text to batches of training examples for next-token prediction.

The text becomes one long list of token ids. A window of ``max_length`` ids slides over it,
``step_size`` ids at a time; each window is an input, and the same window shifted one id to
the right is its target: the model learns to predict token ``t + 1`` from tokens ``<= t``.

>>> loader = create_dataloader(text, max_length=4, step_size=4, batch_size=2)  # doctest: +SKIP
>>> inputs, targets = next(iter(loader))   # both (2, 4) int64; targets[:, :-1] == inputs[:, 1:]

Training (chapter 5) draws its batches through :class:`ResumableBatches`: an order fixed
by a seed, resumable from a checkpoint, shared out across processes.
:func:`make_loaders` cuts a corpus into the training and validation loaders.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from .tokenizer import text_to_token_ids
from .validation import check_positive_int

Batch = tuple[torch.Tensor, torch.Tensor]


def _check_positive(**sizes: int) -> None:
    for name, value in sizes.items():
        check_positive_int(value, name)


class GPTDataset(Dataset):
    """Sliding windows over a sequence of token ids.

    Window ``i`` starts at ``i * step_size``; its input is ``ids[start : start + max_length]``
    and its target ``ids[start + 1 : start + max_length + 1]``. Windows overlap when
    ``step_size < max_length``; ids at the end that do not fill a window are dropped.

    Args:
        token_ids: the ids, a sequence of ints or a 1-D tensor of ``N`` ids.
        max_length: tokens per example (the model's context length at most).
        step_size: how far the window moves between examples.

    Items are ``(input_ids, target_ids)``, each a ``LongTensor`` of shape ``(max_length,)``.
    """

    def __init__(
        self, token_ids: Sequence[int] | torch.Tensor, max_length: int, step_size: int
    ) -> None:
        # later: a check that the sizes are positive
        _check_positive(max_length=max_length, step_size=step_size)
        # endlater
        ids = torch.as_tensor(token_ids, dtype=torch.long)
        # later: a check that the ids are one sequence (1-D)
        if ids.dim() != 1:
            raise ValueError(f"token_ids must be one sequence (1-D), got shape {tuple(ids.shape)}")
        # endlater
        needed = max_length + 1  # one window plus the one-token shift of its target
        # later: an error if the text is shorter than one window
        if ids.numel() < needed:
            raise ValueError(
                f"the text has {ids.numel()} tokens, but one training window needs at least "
                f"{needed} (max_length={max_length} plus 1 for the shifted target); use more text "
                "or a smaller max_length"
            )
        # endlater
        self.token_ids = ids
        self.max_length = max_length
        self.step_size = step_size
        self._num_windows = (ids.numel() - needed) // step_size + 1

    def __len__(self) -> int:
        return self._num_windows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # later: negative indices count from the end; an IndexError past either end
        if index < 0:
            index += self._num_windows
        if not 0 <= index < self._num_windows:
            raise IndexError(
                f"window {index} out of range for a dataset of {self._num_windows} windows"
            )
        # endlater
        start = index * self.step_size
        window = self.token_ids[start : start + self.max_length + 1]
        return window[:-1], window[1:]


def create_dataloader(
    text: str,
    max_length: int = 512,
    step_size: int = 256,
    batch_size: int = 8,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    tokenizer: Any = None,
    seed: int | None = None,
) -> DataLoader:
    """Tokenize ``text`` and serve its sliding windows in batches.

    Args:
        text: the training text.
        max_length: tokens per example.
        step_size: stride between consecutive windows.
        batch_size: examples per batch.
        shuffle: serve windows in random order (each epoch anew).
        drop_last: drop a last, smaller batch.
        num_workers: DataLoader worker processes.
        tokenizer: a tiktoken ``Encoding`` or a ``BPETokenizer``; default GPT-2's.
        seed: seeds the shuffling order (default: torch's global generator).

    Returns:
        A ``DataLoader`` yielding ``(input_ids, target_ids)``, both ``int64`` of shape
        ``(batch_size, max_length)``, with ``target_ids[:, t] == input_ids[:, t + 1]``.
    """
    # later: checks of the text and the sizes
    if not isinstance(text, str):
        raise TypeError(f"create_dataloader needs the text as a str, got {type(text).__name__}")
    if not text:
        raise ValueError(
            "the text is empty: give create_dataloader some text to make training windows from"
        )
    _check_positive(max_length=max_length, step_size=step_size, batch_size=batch_size)
    # endlater
    dataset = GPTDataset(text_to_token_ids(text, tokenizer)[0], max_length, step_size)
    # later: an error if drop_last would leave no batch at all
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"the text gives only {len(dataset)} window(s) of {max_length} tokens, fewer than "
            f"batch_size={batch_size}, so with drop_last=True there would be no batch at all; use "
            "drop_last=False, a smaller batch_size or step_size, or more text"
        )
    # endlater
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
    )


def train_val_split(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """Split ``text`` by characters: the first ``1 - val_fraction`` for training, the rest for
    validation.

    Returns:
        ``(train_text, val_text)``; ``train_text + val_text == text``.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("train_val_split needs a non-empty str")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction!r}")
    split = int(round(len(text) * (1.0 - val_fraction)))
    if not 0 < split < len(text):
        raise ValueError(
            f"a text of {len(text)} characters split with val_fraction={val_fraction} leaves one "
            "part empty; use a longer text or a val_fraction nearer 0.5"
        )
    return text[:split], text[split:]


class ResumableBatches:
    """An endless stream of training batches whose order is fixed by ``seed`` and resumable.

    Epoch ``e`` visits the dataset in the order ``randperm(len(dataset))`` drawn from a
    generator seeded with ``seed + e`` (its own generator: the model's random numbers do not
    change it), cut into global batches of ``batch_size`` rows; an incomplete last batch is
    dropped. With ``world_size`` processes, rank ``r`` gets rows ``r*b .. (r+1)*b - 1`` of
    each global batch (``b = batch_size // world_size``): disjoint shards that together form
    the global batch. :meth:`state_dict` records the position, so a resumed run continues
    with exactly the batch an uninterrupted run would have seen.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size != 0:
            raise ValueError(
                f"batch_size ({batch_size}) must be divisible by the number of processes "
                f"({world_size}): each process gets an equal share of every global batch"
            )
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.num_samples = len(dataset)  # type: ignore[arg-type]
        if self.num_samples < batch_size:
            raise ValueError(
                f"the training data has {self.num_samples} sequences, fewer than "
                f"batch_size={batch_size}; use more text, a smaller batch size or a shorter "
                "context length"
            )
        self.epoch, self.position = 0, 0
        self._order: tuple[int, torch.Tensor] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Dataset indices in the order epoch ``epoch`` visits them."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._order = (epoch, torch.randperm(self.num_samples, generator=generator))
        return self._order[1]

    def global_batch_indices(self) -> torch.Tensor:
        """Indices of the next global batch (all processes), without advancing."""
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        start = self.position * self.batch_size
        return self.epoch_order(self.epoch)[start : start + self.batch_size]

    def __iter__(self) -> "ResumableBatches":
        return self

    def __next__(self) -> Batch:
        """This process's shard of the next global batch: ``(input_ids, target_ids)``, each
        ``(b, T)`` (items of another shape are collated with ``default_collate``)."""
        indices = self.global_batch_indices()
        self.position += 1
        per_rank = self.batch_size // self.world_size
        mine = indices[self.rank * per_rank : (self.rank + 1) * per_rank].tolist()
        items = [self.dataset[i] for i in mine]
        if all(
            isinstance(item, (tuple, list)) and len(item) == 2 for item in items
        ):  # (x, y) pairs
            return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])
        return default_collate(items)  # other objectives' items: tuples or dicts of tensors

    @property
    def progress(self) -> float:
        """Epochs done, as a fraction (e.g. 1.25)."""
        return self.epoch + self.position / self.batches_per_epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key in ("seed", "shuffle", "num_samples", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"cannot resume the data order: the checkpoint's {key} is {state[key]!r} but "
                    f"this run's is {getattr(self, key)!r}. Resume with the same text, tokenizer, "
                    "context length, batch size and seed."
                )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def as_dataset(data: Any, batch_size: int) -> Dataset:
    """The dataset behind a DataLoader (checking its batch size) or the dataset itself."""
    if isinstance(data, DataLoader):
        if data.batch_size != batch_size:
            raise ValueError(
                f"the training DataLoader has batch_size={data.batch_size} but "
                f"TrainConfig.batch_size is {batch_size}; make them equal (or pass the dataset "
                "itself)"
            )
        return data.dataset
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise TypeError(
            "train data must be a DataLoader or a map-style Dataset of (input_ids, target_ids), "
            f"got {type(data).__name__}"
        )
    return data


def make_loaders(
    text: str, tokenizer: Any, seq_len: int, batch_size: int, val_fraction: float = 0.1
) -> tuple[DataLoader, DataLoader]:
    """Split ``text`` into training and validation parts (the last ``val_fraction`` is held
    out) and cut each into non-overlapping sequences of ``seq_len`` tokens, in batches of
    ``batch_size`` (the training loader shuffles and drops an incomplete last batch)."""
    train_text, val_text = train_val_split(text, val_fraction)
    common = {
        "max_length": seq_len,
        "step_size": seq_len,
        "batch_size": batch_size,
        "tokenizer": tokenizer,
    }
    loaders = []
    for part, part_text, training in (
        ("training", train_text, True),
        ("validation", val_text, False),
    ):
        try:
            loaders.append(
                create_dataloader(part_text, shuffle=training, drop_last=training, **common)
            )
        except ValueError as exc:  # say which part is too short, and what to change
            share = (
                f"the first {1 - val_fraction:g}"
                if training
                else f"the last {val_fraction:g} (val_fraction)"
            )
            raise ValueError(f"the {part} text ({share} of the data) is too short: {exc}") from None
    return loaders[0], loaders[1]
