"""sydsgpt.classify: balanced seeded splits, the classification objective (the class logits at
the last real token against a label), the head swap and its pooling, what each freezing choice
trains (exact counts), finetuning with checkpoints and exact resume, and the baselines."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sydsgpt.classify import (
    ClassificationDataset,
    ClassificationObjective,
    GPTClassifier,
    balanced_split,
    bag_of_words_baseline,
    class_labels,
    class_logits,
    classifier_train_config,
    finetune_classifier,
    fit_logistic_regression,
    last_token_features,
    load_classifier,
    majority_baseline,
    set_trainable,
    ClassifierConfig,
)
from sydsgpt.train import Session
from sydsgpt.config import Kernels
from sydsgpt.logs import read_log
from sydsgpt.model import SydsGPT
from sydsgpt.lora import LoRAConfig, count_trainable_parameters, read_adapter

from helpers import assert_same_parameters, tiny_config, tiny_model

D, LAYERS, VOCAB = (
    tiny_config()["embedding_dim"],
    tiny_config()["num_layers"],
    tiny_config()["vocab_size"],
)


class CharTokenizer:
    """One id per character (``ord(c) % 61``): enough tokenizer for the tiny model."""

    name, n_vocab = "chars", VOCAB

    def encode(self, text: str) -> list[int]:
        return [ord(c) % VOCAB for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


TOKENIZER = CharTokenizer()


def toy_records(n: int = 60, seed: int = 0) -> list[tuple[str, str]]:
    """Label 'abc' texts are made of a, b, c; label 'xyz' texts of x, y, z (lengths 3..9)."""
    rng = random.Random(seed)
    return [
        (label, "".join(rng.choice(label) for _ in range(rng.randint(3, 9))))
        for label in ("abc", "xyz") * (n // 2)
    ]


def test_balanced_split_is_balanced_disjoint_and_seeded() -> None:
    records = [("ham", f"h{i}") for i in range(100)] + [("spam", f"s{i}") for i in range(20)]
    train, val, test = balanced_split(records, (0.5, 0.25, 0.25), seed=1)
    for split, size in ((train, 10), (val, 5), (test, 5)):
        assert Counter(label for label, _ in split) == {"ham": size, "spam": size}
    texts = [t for split in (train, val, test) for _, t in split]
    assert len(texts) == len(set(texts)) == 40
    assert balanced_split(records, (0.5, 0.25, 0.25), seed=1) == (train, val, test)
    assert balanced_split(records, (0.5, 0.25, 0.25), seed=2) != (train, val, test)
    assert majority_baseline(train, test) == 0.5


@pytest.mark.parametrize(
    "records, fractions, message",
    [
        ([("a", "x"), ("a", "y")], (0.7, 0.1, 0.2), "at least two labels"),
        ([("a", "x"), ("b", "y")], (0.7, 0.1, 0.2), "too few"),
        ([("a", "x"), ("b", "y")], (0.5, 0.5), "three positive numbers"),
    ],
)
def test_balanced_split_errors(
    records: list[tuple[str, str]], fractions: tuple[float, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        balanced_split(records, fractions)


def test_an_example_is_padded_ids_its_length_and_its_label() -> None:
    data = ClassificationDataset(
        [("xyz", "xy"), ("abc", "abcabcab")], TOKENIZER, ("abc", "xyz"), max_length=5, pad_id=7
    )
    ids, length, label = data[0]
    assert ids.tolist() == TOKENIZER.encode("xy") + [7, 7, 7] and (length, label) == (2, 1)
    ids, length, label = data[
        1
    ]  # cut to its first 5 tokens: the class is read at the last kept one
    assert ids.tolist() == TOKENIZER.encode("abcab") and (length, label) == (5, 0)
    assert (
        data.truncated == 1
        and data.lengths.tolist() == [2, 5]
        and data.label_ids.tolist() == [1, 0]
    )


def test_unknown_labels_and_empty_texts_are_clear_errors() -> None:
    with pytest.raises(
        ValueError, match="record 1 has the unknown label 'spma'.*\\['ham', 'spam'\\]"
    ):
        ClassificationDataset([("ham", "hi"), ("spma", "x")], TOKENIZER, ("ham", "spam"), 4)
    with pytest.raises(ValueError, match="record 0 .*empty text"):
        ClassificationDataset([("ham", "")], TOKENIZER, ("ham", "spam"), 4)


def test_the_objective_is_the_cross_entropy_at_the_last_real_token() -> None:
    classifier = GPTClassifier(tiny_model(), 2)
    data = ClassificationDataset(toy_records(6), TOKENIZER, ("abc", "xyz"), max_length=10)
    batch = [torch.stack(column) for column in zip(*(data[i] for i in range(len(data))))]
    out = ClassificationObjective()(classifier, batch)
    logits = class_logits(classifier, data.token_ids, data.lengths)
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, data.label_ids))
    assert (
        out.count == 6
        and out.metrics["accuracy"] == (logits.argmax(-1) == data.label_ids).float().mean()
    )
    assert ClassificationObjective().tokens(batch) == 6 * 10


def test_the_head_swap_and_last_token_pooling_ignore_the_padding() -> None:
    model = tiny_model()
    classifier = GPTClassifier(model, 3)
    assert classifier.head is model.output_projection and classifier.head.weight.shape == (3, D)
    ids = torch.tensor([[5, 9, 2, 0, 0, 0]])
    other_padding = torch.tensor([[5, 9, 2, 44, 13, 60]])
    out = classifier(ids)
    assert out.shape == (1, 6, 3)
    lengths = torch.tensor([3])
    torch.testing.assert_close(
        class_logits(classifier, ids, lengths), class_logits(classifier, other_padding, lengths)
    )
    torch.testing.assert_close(
        class_logits(classifier, ids, lengths), classifier(ids[:, :3])[:, -1]
    )


def test_mean_pooling_is_the_mean_of_the_real_tokens_logits() -> None:
    last = GPTClassifier(tiny_model(), 2, pooling="last")
    mean = GPTClassifier(tiny_model(), 2, pooling="mean")
    mean.load_state_dict(last.state_dict())
    ids = torch.tensor([[5, 9, 2, 8, 0, 0]])
    per_token = last(ids[:, :4])  # (1, 4, 2): each token's own logits
    torch.testing.assert_close(class_logits(mean, ids, torch.tensor([4])), per_token.mean(dim=1))
    with pytest.raises(ValueError, match="pooling"):
        GPTClassifier(tiny_model(), 2, pooling="max")


def test_what_each_choice_trains_is_counted_exactly() -> None:
    head = D * 2 + 2
    block = sum(p.numel() for p in tiny_model().transformer_blocks[-1].parameters())
    final_norm = 2 * D
    expected = {"head": head, "last-block": head + block + final_norm}
    for trainable, count in expected.items():
        assert set_trainable(GPTClassifier(tiny_model(), 2), trainable) == count
    everything = GPTClassifier(tiny_model(), 2)
    assert set_trainable(everything, "all") == sum(p.numel() for p in everything.parameters())
    lora = GPTClassifier(tiny_model(), 2)
    rank = 2
    per_block = 4 * rank * (D + D) + 2 * rank * (D + 4 * D)
    assert set_trainable(lora, "lora", LoRAConfig(rank=rank)) == head + LAYERS * per_block
    two_blocks = GPTClassifier(tiny_model(), 2)
    assert (
        set_trainable(two_blocks, "last-block", last_blocks=2) == head + LAYERS * block + final_norm
    )
    with pytest.raises(ValueError, match="last_blocks must be between 1 and the model's 2 blocks"):
        set_trainable(GPTClassifier(tiny_model(), 2), "last-block", last_blocks=3)
    with pytest.raises(ValueError, match="trainable must be one of"):
        set_trainable(GPTClassifier(tiny_model(), 2), "everything")
    with pytest.raises(ValueError, match="trainable='lora'"):
        set_trainable(GPTClassifier(tiny_model(), 2), "head", LoRAConfig())


def quick_config(**overrides: object) -> object:
    return classifier_train_config(
        **{
            "epochs": 3,
            "batch_size": 8,
            "lr": 1e-2,
            "eval_interval": 5,
            "device": "cpu",
            "seed": 5,
            **overrides,
        }
    )


def test_finetuning_learns_a_toy_task_and_writes_its_run_folder(tmp_path: Path) -> None:
    train, val, test = balanced_split(toy_records(120), (0.6, 0.2, 0.2), seed=0)
    run = finetune_classifier(
        tiny_model(),
        TOKENIZER,
        train,
        val,
        cfg=quick_config(),
        classifier=ClassifierConfig(trainable="all"),
        session=Session(out_dir=tmp_path, show_progress=False),
    )
    assert run.labels == class_labels(train) == ("abc", "xyz") and run.max_length == 9
    assert run.accuracy(test) >= 0.9 and run.predict(["aabbc", "zzyx"]) == ["abc", "xyz"]
    assert run.history[-1]["step"] == 3 * len(train) // 8 and "val_loss" in run.history[-1]
    assert run.history[-1]["val_accuracy"] >= 0.9 and "train_accuracy" in run.history[-1]
    assert run.trainable_params == count_trainable_parameters(run.classifier)
    info = json.loads((tmp_path / "classifier.json").read_text())
    assert info == {
        "labels": ["abc", "xyz"],
        "pooling": "last",
        "trainable": "all",
        "max_length": 9,
        "lora": None,
        "last_blocks": None,
    }
    assert {"checkpoint.pt", "log.jsonl", "run.json"} <= {p.name for p in tmp_path.iterdir()}
    loaded, loaded_info = load_classifier(tmp_path)
    assert loaded_info == info
    assert_same_parameters(loaded, run.classifier)


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path: Path) -> None:
    train, val, _ = balanced_split(toy_records(80), (0.6, 0.2, 0.2), seed=0)
    common = {"classifier": ClassifierConfig(trainable="last-block"), "cfg": quick_config()}
    parts, quiet = tmp_path / "parts", {"show_progress": False}
    whole = finetune_classifier(
        tiny_model(),
        TOKENIZER,
        train,
        val,
        **common,
        session=Session(out_dir=tmp_path / "whole", **quiet),
    )
    finetune_classifier(
        tiny_model(),
        TOKENIZER,
        train,
        val,
        **common,
        session=Session(out_dir=parts, stop_after=3, **quiet),
    )
    resumed = finetune_classifier(
        tiny_model(),
        TOKENIZER,
        train,
        val,
        **common,
        session=Session(out_dir=parts, resume=True, **quiet),
    )
    assert_same_parameters(whole.classifier, resumed.classifier)
    resumed_log = read_log(tmp_path / "parts" / "log.jsonl")
    assert [r.get("train_loss") for r in whole.history] == [
        r.get("train_loss") for r in resumed_log
    ]
    assert [r.get("val_accuracy") for r in whole.history] == [
        r.get("val_accuracy") for r in resumed_log
    ]
    with pytest.raises(ValueError, match="cannot resume .*trainable"):
        finetune_classifier(
            tiny_model(),
            TOKENIZER,
            train,
            val,
            cfg=common["cfg"],
            classifier=ClassifierConfig(trainable="all"),
            session=Session(out_dir=parts, resume=True, **quiet),
        )


def test_a_lora_run_saves_only_its_adapter(tmp_path: Path) -> None:
    train, val, test = balanced_split(toy_records(80), (0.6, 0.2, 0.2), seed=0)
    base = tiny_model()
    before = {k: v.clone() for k, v in base.state_dict().items() if k != "output_projection.weight"}
    run = finetune_classifier(
        base,
        TOKENIZER,
        train,
        val,
        cfg=quick_config(),
        classifier=ClassifierConfig(trainable="lora", lora=LoRAConfig(rank=2)),
        session=Session(out_dir=tmp_path, show_progress=False),
    )
    tensors, info = read_adapter(tmp_path / "adapter.safetensors")
    assert sum(t.numel() for t in tensors.values()) == run.trainable_params
    assert set(tensors) == {k for k, p in run.classifier.named_parameters() if p.requires_grad}
    assert info["labels"] == ["abc", "xyz"] and info["lora"]["rank"] == 2
    after = {
        k.replace(".base.", "."): v
        for k, v in run.classifier.model.state_dict().items()
        if "lora_" not in k
    }
    assert all(torch.equal(after[k], v) for k, v in before.items())  # the base model did not move
    assert run.accuracy(test) >= 0.5
    loaded, _ = load_classifier(tmp_path)
    assert_same_parameters(loaded, run.classifier)


def test_max_length_must_fit_the_context() -> None:
    with pytest.raises(ValueError, match="context length 12"):
        finetune_classifier(
            tiny_model(),
            TOKENIZER,
            toy_records(8),
            cfg=quick_config(),
            classifier=ClassifierConfig(max_length=13),
            session=Session(show_progress=False),
        )


def test_the_bag_of_words_baseline_separates_a_word_level_task() -> None:
    rng = random.Random(0)
    records = [
        (label, " ".join(rng.choice(words) for _ in range(5)))
        for label, words in (("pos", ["good", "great", "fine"]), ("neg", ["bad", "awful", "poor"]))
        * 30
    ]
    train, _, test = balanced_split(records, (0.6, 0.2, 0.2))
    result = bag_of_words_baseline(train, test, steps=50)
    assert (
        result["accuracy"] == 1.0
        and result["vocabulary"] == 6
        and result["trainable_params"] == 6 * 2 + 2
    )
    weights = result["weights"]  # towards "pos", the second of the sorted labels
    assert min(weights[w] for w in ("good", "great", "fine")) > 0
    assert max(weights[w] for w in ("bad", "awful", "poor")) < 0


def test_last_token_features_are_what_a_head_only_classifier_reads() -> None:
    """The cached features times the new head give the classifier's own logits, and the model
    gets its vocabulary head back."""
    model = tiny_model()
    records = [("a", "hello there"), ("b", "hi"), ("a", "a longer text to read")]
    data = ClassificationDataset(records, TOKENIZER, ("a", "b"), max_length=12)
    features = last_token_features(model, data, batch_size=2)
    head = model.output_projection
    assert features.shape == (3, D) and model.output_projection is head
    classifier = GPTClassifier(model, 2)
    expected = class_logits(classifier, data.token_ids, data.lengths)
    torch.testing.assert_close(classifier.head(features), expected)


def test_a_logistic_regression_separates_separable_features() -> None:
    x = torch.tensor([[2.0, 0.0], [1.5, 0.2], [0.0, 2.0], [0.3, 1.8]])
    y = torch.tensor([0, 0, 1, 1])
    fit = fit_logistic_regression(x, y, 2, steps=100, lr=0.1)
    assert fit.accuracy(x, y) == 1.0 and fit.train_s >= 0
    assert fit.accuracy(x, 1 - y) == 0.0


def test_a_subset_keeps_the_order_and_balances_the_labels() -> None:
    from sydsgpt.bench.finetune import subset

    records = [("spam", "1"), ("ham", "2"), ("ham", "3"), ("ham", "4"), ("spam", "5")]
    assert subset(records, 4) == [("spam", "1"), ("ham", "2"), ("ham", "3"), ("spam", "5")]


def test_the_memory_split_counts_gradients_and_optimizer_state_of_trainable_weights_only() -> None:
    from sydsgpt.bench.finetune import memory_breakdown

    ids = torch.randint(0, VOCAB, (2, 8))
    full = memory_breakdown(tiny_model(), ids, "all")
    lora = memory_breakdown(tiny_model(), ids, "lora", LoRAConfig(rank=2))
    head = memory_breakdown(tiny_model(), ids, "head")
    assert full["gradients"] == pytest.approx(full["weights"], rel=1e-6)
    assert full["optimizer"] == pytest.approx(2 * full["gradients"], rel=1e-6)  # two moments
    for split in (lora, head):
        trainable_mib = split["trainable_params"] * 4 / 2**20
        assert split["gradients"] == pytest.approx(trainable_mib, rel=1e-6)
        assert split["optimizer"] == pytest.approx(2 * trainable_mib, rel=1e-6)
    # LoRA still back-propagates through every block, so it saves about the activations of
    # full finetuning; the head alone saves almost nothing.
    assert lora["activations"] > 0.8 * full["activations"] > 8 * head["activations"]


@pytest.mark.slow  # 20 s: every row, the learning curve and the memory split on tiny models
def test_the_benchmark_quick_mode_writes_every_row(tmp_path: Path) -> None:
    from sydsgpt.bench import finetune
    from sydsgpt.cli import main

    if not (Path(os.environ.get("SYDSGPT_DATA_DIR", "")) / "SMSSpamCollection").is_file():
        pytest.skip("no local copy of the SMS Spam Collection")
    assert main(["bench", "--what", "finetune", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "finetune_cpu.json").read_text())
    assert [row["setup"] for row in result["rows"]] == list(finetune.SETUPS)
    assert result["quick"] and all(set(row) >= {"accuracy", "spread"} for row in result["rows"])
    for row in result["rows"]:
        assert len(row["accuracies"]) == len(finetune.SEEDS)
        if row["lr"] is not None:  # the chosen rate is the candidate best on validation
            val = row["val_by_lr"]
            assert val[f"{row['lr']:g}"] == max(val.values())
    sizes = {(p["setup"], p["train_examples"]) for p in result["curve"]}
    assert {name for name, _ in sizes} == set(finetune.CURVE_ROWS) and len(sizes) == len(
        finetune.CURVE_ROWS
    ) * 3
    assert set(result["memory"]["setups"]) == {name for name, _, _ in finetune.MEMORY_SETUPS}
    head = "SmolLM2, head only (cached features)"
    refreshed = finetune.refresh([head], "a test", tmp_path / "finetune_cpu.json", quick=True)
    row = next(r for r in refreshed["rows"] if r["setup"] == head)
    assert row["before_refresh"]["val_by_lr"] and refreshed["refreshed"][-1]["rows"] == [head]
    assert [r["setup"] for r in refreshed["rows"]] == list(finetune.SETUPS)
    assert len(refreshed["curve"]) == len(result["curve"])
    random_curve = "SmolLM2 size, random init, all trained"
    again = finetune.refresh(
        [], "a test", tmp_path / "finetune_cpu.json", quick=True, curve=[random_curve]
    )
    assert again["refreshed"][-1]["curve"] == [random_curve] and len(again["rows"]) == len(
        finetune.SETUPS
    )
    # a refreshed row's base is described as it is today, the other base as it was measured
    stored = json.loads((tmp_path / "finetune_cpu.json").read_text())
    stored["bases"] = {name: {"source": "an older model"} for name in stored["bases"]}
    (tmp_path / "finetune_cpu.json").write_text(json.dumps(stored))
    book_row = "book, head only (cached features)"
    third = finetune.refresh([book_row], "a test", tmp_path / "finetune_cpu.json", quick=True)
    assert third["bases"]["smollm2"] == {"source": "an older model"}
    assert third["bases"]["book"] == finetune.describe_bases(finetune.load_bases(True))["book"]
    with pytest.raises(ValueError, match="no row"):
        finetune.refresh(["no such row"], "a test", tmp_path / "finetune_cpu.json", quick=True)
    one = finetune.run(tmp_path / "one.json", quick=True, only=["majority class"])
    assert [row["setup"] for row in one["rows"]] == ["majority class"] and "curve" not in one
    with pytest.raises(ValueError, match="unknown finetune benchmark row"):
        finetune.run(None, quick=True, only=["pretrained, everything"])


def test_the_finetune_benchmark_refuses_a_gpu_in_one_line(capsys) -> None:
    from sydsgpt.cli import main

    assert main(["bench", "--what", "finetune", "--device", "cuda", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert "CPU only" in err and len(err.splitlines()) == 1


def test_the_committed_benchmark_is_a_full_run() -> None:
    from sydsgpt.bench.common import RESULTS_DIR
    from sydsgpt.bench import finetune

    result = json.loads((RESULTS_DIR / "finetune_cpu.json").read_text())
    assert not result["quick"] and result["data"] == "sms-spam"
    rows = {row["setup"]: row for row in result["rows"]}
    assert list(rows) == list(finetune.SETUPS)
    assert result["load_before"] < 1.0  # measured on a quiet machine
    for row in rows.values():
        assert len(row["accuracies"]) == len(finetune.SEEDS)
        assert row["accuracy"] == pytest.approx(sum(row["accuracies"]) / 3, abs=1e-3)
    assert all(acc == 0.5 for acc in rows["majority class"]["accuracies"])  # balanced tests
    smollm2 = result["bases"]["smollm2"]["config"]
    assert rows["SmolLM2, head only (cached features)"]["trainable_params"] == (
        2 * smollm2["embedding_dim"] + 2
    )
    lora = [rows[f"SmolLM2, LoRA r={r}"]["trainable_params"] for r in (1, 4, 16)]
    assert lora == sorted(lora) and lora[-1] < rows["SmolLM2, all"]["trainable_params"]


def test_a_gpt2_style_model_with_tied_and_padded_head_becomes_a_classifier() -> None:
    """GPT-2 (chapter 4's loader) ties its head to the token embedding and may pad the vocabulary:
    the swap unties the new head and keeps the embedding."""
    model = SydsGPT(tiny_config(tie_weights=True), Kernels(pad_vocab_multiple=64))
    embedding = model.token_embedding.weight.detach().clone()
    classifier = GPTClassifier(model, 2)
    assert (
        classifier.head.weight.shape == (2, D)
        and classifier.head.weight is not model.token_embedding.weight
    )
    assert classifier(torch.tensor([[1, 2, 3]])).shape == (1, 3, 2)
    assert set_trainable(classifier, "head") == 2 * D + 2
    assert torch.equal(model.token_embedding.weight, embedding)
