"""From a long text to batches of training examples for next-token prediction.

The text becomes one long list of token ids. A window of ``max_length`` ids slides over it,
``step_size`` ids at a time; each window is an input, and the same window shifted one id to
the right is its target: the model learns to predict token ``t + 1`` from tokens ``<= t``.

>>> loader = create_dataloader(text, max_length=4, step_size=4, batch_size=2)  # doctest: +SKIP
>>> inputs, targets = next(iter(loader))   # both (2, 4) int64; targets[:, :-1] == inputs[:, 1:]
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .tokenizer import text_to_token_ids


def _check_positive(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


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

    def __init__(self, token_ids: Sequence[int] | torch.Tensor, max_length: int, step_size: int) -> None:
        _check_positive(max_length=max_length, step_size=step_size)
        ids = torch.as_tensor(token_ids, dtype=torch.long)
        if ids.dim() != 1:
            raise ValueError(f"token_ids must be one sequence (1-D), got shape {tuple(ids.shape)}")
        needed = max_length + 1  # one window plus the one-token shift of its target
        if ids.numel() < needed:
            raise ValueError(
                f"the text has {ids.numel()} tokens, but one training window needs at least "
                f"{needed} (max_length={max_length} plus 1 for the shifted target); use more text or a smaller max_length"
            )
        self.token_ids = ids
        self.max_length = max_length
        self.step_size = step_size
        self._num_windows = (ids.numel() - needed) // step_size + 1

    def __len__(self) -> int:
        return self._num_windows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index < 0:
            index += self._num_windows
        if not 0 <= index < self._num_windows:
            raise IndexError(f"window {index} out of range for a dataset of {self._num_windows} windows")
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
    if not isinstance(text, str):
        raise TypeError(f"create_dataloader needs the text as a str, got {type(text).__name__}")
    if not text:
        raise ValueError("the text is empty: give create_dataloader some text to make training windows from")
    _check_positive(max_length=max_length, step_size=step_size, batch_size=batch_size)
    dataset = GPTDataset(text_to_token_ids(text, tokenizer)[0], max_length, step_size)
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"the text gives only {len(dataset)} window(s) of {max_length} tokens, fewer than batch_size="
            f"{batch_size}, so with drop_last=True there would be no batch at all; use drop_last=False, "
            "a smaller batch_size or step_size, or more text"
        )
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
        num_workers=num_workers, generator=generator,
    )


def train_val_split(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """Split ``text`` by characters: the first ``1 - val_fraction`` for training, the rest for validation.

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
            f"a text of {len(text)} characters split with val_fraction={val_fraction} leaves one part empty; "
            "use a longer text or a val_fraction nearer 0.5"
        )
    return text[:split], text[split:]
