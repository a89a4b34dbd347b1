"""sydsgpt.data: sliding windows, the data loader, the train/validation split."""

from __future__ import annotations

import inspect

import pytest
import torch

from sydsgpt.bpe import BPETokenizer
from sydsgpt.corpora import load_corpus
from sydsgpt.data import GPTDataset, create_dataloader, train_val_split
from sydsgpt.tokenizer import get_gpt2_tokenizer


@pytest.fixture(scope="module")
def verdict() -> str:
    return load_corpus("the-verdict")


def test_dataset_windows_by_hand() -> None:
    ds = GPTDataset(list(range(10)), max_length=4, step_size=3)
    # windows need 5 ids: starts 0 and 3 fit (3 + 5 <= 10), start 6 does not
    assert len(ds) == 2
    x, y = ds[1]
    assert x.tolist() == [3, 4, 5, 6] and y.tolist() == [4, 5, 6, 7]
    assert x.dtype == torch.long
    assert ds[-1][0].tolist() == x.tolist()
    with pytest.raises(IndexError, match="window 2 out of range"):
        ds[2]


def test_dataset_uses_the_last_full_window() -> None:
    ds = GPTDataset(torch.arange(9), max_length=4, step_size=4)
    assert len(ds) == 2 and ds[1][1].tolist() == [5, 6, 7, 8]


def test_dataset_refuses_2d_ids() -> None:
    with pytest.raises(ValueError, match="1-D"):
        GPTDataset(torch.zeros(2, 10, dtype=torch.long), 4, 1)


def test_original_signature_and_defaults() -> None:
    params = inspect.signature(create_dataloader).parameters
    assert list(params)[:8] == [
        "text",
        "max_length",
        "step_size",
        "batch_size",
        "shuffle",
        "drop_last",
        "num_workers",
        "tokenizer",
    ]
    defaults = {
        name: p.default for name, p in params.items() if p.default is not inspect.Parameter.empty
    }
    assert defaults == {
        "max_length": 512,
        "step_size": 256,
        "batch_size": 8,
        "shuffle": True,
        "drop_last": True,
        "num_workers": 0,
        "tokenizer": None,
        "seed": None,
    }


def test_loader_shapes_and_shift_by_one(verdict: str) -> None:
    loader = create_dataloader(verdict, max_length=16, step_size=8, batch_size=4, seed=0)
    inputs, targets = next(iter(loader))
    assert inputs.shape == targets.shape == (4, 16)
    assert inputs.dtype == targets.dtype == torch.int64
    assert torch.equal(targets[:, :-1], inputs[:, 1:])


def test_unshuffled_windows_tile_the_token_ids(verdict: str) -> None:
    ids = get_gpt2_tokenizer().encode(verdict)
    loader = create_dataloader(
        verdict, max_length=32, step_size=32, batch_size=3, shuffle=False, drop_last=False
    )
    inputs = torch.cat([x for x, _ in loader]).flatten()
    assert len(loader.dataset) == (len(ids) - 33) // 32 + 1
    assert inputs.tolist() == ids[: inputs.numel()]


def test_seed_fixes_the_shuffle(verdict: str) -> None:
    def first_batch(seed: int) -> torch.Tensor:
        return next(
            iter(create_dataloader(verdict, max_length=8, step_size=8, batch_size=4, seed=seed))
        )[0]

    assert torch.equal(first_batch(1), first_batch(1))
    assert not torch.equal(first_batch(1), first_batch(2))


def test_loader_accepts_a_from_scratch_tokenizer(verdict: str) -> None:
    tok = BPETokenizer().train(verdict, 400)
    loader = create_dataloader(
        verdict, max_length=10, step_size=10, batch_size=2, shuffle=False, tokenizer=tok
    )
    inputs, _ = next(iter(loader))
    assert inputs.flatten().tolist() == tok.encode(verdict)[:20]


def test_empty_text_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        create_dataloader("")


def test_too_short_text_says_how_many_tokens(verdict: str) -> None:
    with pytest.raises(ValueError, match=r"has 3 tokens.*at least 9"):
        create_dataloader("Hello, world", max_length=8)


@pytest.mark.parametrize(
    "bad", [{"max_length": 0}, {"step_size": -1}, {"batch_size": 0}, {"max_length": 2.5}]
)
def test_non_positive_sizes_are_errors(bad: dict, verdict: str) -> None:
    with pytest.raises(ValueError, match=f"{next(iter(bad))} must be a positive integer"):
        create_dataloader(verdict, **{"max_length": 8, "step_size": 8, "batch_size": 2, **bad})


def test_too_few_windows_for_one_batch_is_an_error(verdict: str) -> None:
    with pytest.raises(ValueError, match="no batch at all"):
        create_dataloader(verdict[:200], max_length=16, step_size=16, batch_size=8)
    assert (
        len(
            create_dataloader(
                verdict[:200], max_length=16, step_size=16, batch_size=8, drop_last=False
            )
        )
        == 1
    )


def test_train_val_split_by_characters(verdict: str) -> None:
    train, val = train_val_split(verdict, val_fraction=0.1)
    assert train + val == verdict
    assert len(train) == round(0.9 * len(verdict))
    assert train_val_split("abcdefghij", 0.3) == ("abcdefg", "hij")


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_val_fraction_must_be_inside_0_1(fraction: float) -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        train_val_split("some text", fraction)


def test_split_that_leaves_a_part_empty_is_an_error() -> None:
    with pytest.raises(ValueError, match="leaves one part empty"):
        train_val_split("ab", 0.1)
