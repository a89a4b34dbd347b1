"""Chapter 9: finetuning a pretrained GPT into a text classifier.

The language model's last layer maps each position's features to ``vocab_size`` logits.
A classifier swaps that head for a small one with ``num_classes`` outputs
(:class:`GPTClassifier`) and reads the class logits at **one** position. In a causal
model only the *last* token has seen the whole text, so that is the position used
(``pooling="last"``); ``pooling="mean"`` averages every token's logits instead.

Training reuses chapter 5's loop unchanged (:func:`sydsgpt.train.train`: AdamW, the
schedule, the log, checkpoints, resume, the progress bar) with another objective:
:class:`ClassificationObjective` takes ``(input_ids, length, label)`` batches
(:class:`ClassificationDataset`) and computes the cross-entropy of each text's class
logits at its last real token against its label (and the accuracy, for the log).

- :func:`balanced_split`: equal numbers of each class in train / validation / test, seeded;
- :func:`set_trainable`: train the head only, the last block too, everything, or LoRA;
- :class:`ClassifierConfig`: how the classifier is built (labels, pooling, what trains);
- :func:`finetune_classifier`, :func:`accuracy`, :func:`predict`, :func:`load_classifier`;
- baselines to beat: :func:`majority_baseline`, :func:`bag_of_words_baseline`.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .files import CHECKPOINT_NAME, LockedRunFolder, atomic_write
from .lora import (
    ADAPTER_NAME,
    LoRAConfig,
    apply_lora,
    count_trainable_parameters,
    lora_layers,
    save_adapter,
)
from .checkpoint import load_checkpoint, load_weights
from .model import SydsGPT
from .objectives import ObjectiveOutput, to_device
from .runtime import seed_everything
from .train import Session, TrainConfig, train

Record = tuple[str, str]
"""``(label, text)``."""
TRAINABLE = ("head", "last-block", "all", "lora")
"""What :func:`set_trainable` can leave trainable (the rest is frozen)."""
POOLINGS = ("last", "mean")
CLASSIFIER_NAME = "classifier.json"
"""The file in a run folder that says how its classifier was built (labels, pooling, ...)."""


def class_labels(records: Iterable[Record]) -> tuple[str, ...]:
    """The labels that occur in ``records``, sorted (label ``i`` is class index ``i``)."""
    return tuple(sorted({label for label, _ in records}))


def balanced_split(
    records: Sequence[Record], fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 123
) -> tuple[list[Record], list[Record], list[Record]]:
    """``(train, validation, test)`` with the same number of records of every class in each.

    Every class is undersampled to the size ``n`` of the rarest one (a random choice, seeded),
    and each class's ``n`` records are cut by ``fractions``; each split is then shuffled.
    A majority-class guess therefore scores ``1 / num_classes`` on every split.
    """
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            "fractions must be three positive numbers summing to 1 (train, validation, test), got "
            f"{fractions!r}"
        )
    by_label: dict[str, list[Record]] = {}
    for label, text in records:
        by_label.setdefault(label, []).append((label, text))
    if len(by_label) < 2:
        raise ValueError(
            f"a classifier needs at least two labels; the records have {sorted(by_label)}"
        )
    n = min(len(group) for group in by_label.values())
    n_train, n_val = round(n * fractions[0]), round(n * fractions[1])
    if min(n_train, n_val, n - n_train - n_val) < 1:
        raise ValueError(
            f"the rarest label has {n} records, too few to put at least one in each of the three "
            "splits"
        )
    rng = random.Random(seed)
    splits: tuple[list[Record], list[Record], list[Record]] = ([], [], [])
    for label in sorted(by_label):
        group = rng.sample(by_label[label], n)
        for split, part in zip(
            splits, (group[:n_train], group[n_train : n_train + n_val], group[n_train + n_val :])
        ):
            split.extend(part)
    for split in splits:
        rng.shuffle(split)
    return splits


def default_pad_id(tokenizer: Any) -> int:
    """The tokenizer's ``<|endoftext|>`` id if it has one, else 0. Which id pads does not change
    the result: causal attention never lets the last real token see the padding after it."""
    try:
        return int(tokenizer.eot_token)
    except (AttributeError, KeyError):
        return 0


class ClassificationDataset(Dataset):
    """Labelled texts as fixed-length examples for :class:`ClassificationObjective`.

    Each text is tokenized, cut to its first ``max_length`` tokens and padded with ``pad_id``
    to ``max_length``. Item ``i`` is ``(input_ids, length, label)``: the ``(max_length,)``
    ids, the number of real tokens (the class is read at token ``length - 1``) and the
    label's index in ``labels``.

    Attributes: ``token_ids`` ``(N, max_length)``, ``lengths`` ``(N,)`` (tokens before
    padding), ``label_ids`` ``(N,)``, ``truncated`` (how many texts were cut).
    """

    def __init__(
        self,
        records: Sequence[Record],
        tokenizer: Any,
        labels: Sequence[str],
        max_length: int,
        pad_id: int | None = None,
    ) -> None:
        if not records:
            raise ValueError("there are no records to classify")
        index = {label: i for i, label in enumerate(labels)}
        pad_id = default_pad_id(tokenizer) if pad_id is None else pad_id
        self.labels, self.max_length = tuple(labels), max_length
        self.token_ids = torch.full((len(records), max_length), pad_id, dtype=torch.long)
        self.lengths = torch.zeros(len(records), dtype=torch.long)
        self.label_ids = torch.zeros(len(records), dtype=torch.long)
        self.truncated = 0
        for i, (label, text) in enumerate(records):
            if label not in index:
                raise ValueError(
                    f"record {i} has the unknown label {label!r}; the classifier's labels are "
                    f"{list(labels)}"
                )
            ids = tokenizer.encode(text) if isinstance(text, str) else []
            if not ids:
                raise ValueError(
                    f"record {i} (label {label!r}) has an empty text; every record needs some text "
                    "to classify"
                )
            self.truncated += len(ids) > max_length
            ids = ids[:max_length]
            self.token_ids[i, : len(ids)] = torch.tensor(ids)
            self.lengths[i], self.label_ids[i] = len(ids), index[label]

    def __len__(self) -> int:
        return len(self.token_ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.token_ids[i], self.lengths[i], self.label_ids[i]


class GPTClassifier(nn.Module):
    # region: classifier
    """A pretrained :class:`~sydsgpt.model.SydsGPT` with its vocabulary head swapped for
    a ``num_classes``-way one (the model is changed in place: pass a copy to keep it).

    Forward: ``(B, T)`` ids -> ``(B, T, num_classes)``: position ``t`` holds the class
    logits of the text up to token ``t``: that token's own (``"last"`` pooling) or the
    mean over tokens ``0..t`` (``"mean"``). Read them at each text's last real token.
    """

    def __init__(self, model: nn.Module, num_classes: int, pooling: str = "last") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        device = next(model.parameters()).device
        head = nn.Linear(model.config.embedding_dim, num_classes).to(device)  # d -> classes
        model._init_weights(head)
        model.output_projection = head  # the head swap: (B, T, d) -> (B, T, num_classes)
        self.model, self.num_classes, self.pooling = model, num_classes, pooling

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids)  # (B, T, num_classes)
        if self.pooling == "mean":  # mean of the logits = head(mean of the features)
            steps = torch.arange(1, logits.shape[1] + 1, device=logits.device)
            logits = logits.cumsum(dim=1) / steps.view(1, -1, 1)
        return logits

    # endregion: classifier

    @property
    def config(self) -> Any:
        """The base model's config (what :func:`sydsgpt.train.train` records and checks)."""
        return self.model.config

    @property
    def head(self) -> nn.Linear:
        return self.model.output_projection


def set_trainable(
    classifier: GPTClassifier, trainable: str, lora: LoRAConfig | None = None, last_blocks: int = 1
) -> int:
    """Freeze the classifier except for what ``trainable`` names; returns the trainable count.

    ``"head"``: the new head only; ``"last-block"``: also the last ``last_blocks`` transformer
    blocks (default one) and the final norm; ``"all"``: every parameter; ``"lora"``: the head
    and LoRA adapters (:func:`sydsgpt.lora.apply_lora` with ``lora``, default :class:`LoRAConfig`).
    """
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {TRAINABLE}, got {trainable!r}")
    blocks = classifier.model.transformer_blocks
    if (
        isinstance(last_blocks, bool)
        or not isinstance(last_blocks, int)
        or not 1 <= last_blocks <= len(blocks)
    ):
        raise ValueError(
            f"last_blocks must be between 1 and the model's {len(blocks)} blocks, got "
            f"{last_blocks!r}"
        )
    if lora is not None and trainable != "lora":
        raise ValueError(
            f"a LoRA config was given but trainable={trainable!r}; use trainable='lora'"
        )
    if trainable == "lora":
        if not lora_layers(classifier):
            apply_lora(classifier.model, lora or LoRAConfig())
    classifier.requires_grad_(trainable == "all")
    if trainable == "lora":
        for layer in lora_layers(classifier).values():
            layer.lora_A.requires_grad_(True)
            layer.lora_B.requires_grad_(True)
    if trainable == "last-block":
        for block in blocks[len(blocks) - last_blocks :]:
            block.requires_grad_(True)
        classifier.model.final_layer_norm.requires_grad_(True)
    classifier.head.requires_grad_(True)
    return count_trainable_parameters(classifier)


def last_token_logits(
    classifier: nn.Module, input_ids: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """``(B, num_classes)``: each text's logits at its last real token (``lengths - 1``)."""
    logits = classifier(input_ids)  # (B, T, C)
    return logits[torch.arange(len(lengths), device=logits.device), lengths.to(logits.device) - 1]


@torch.no_grad()
def class_logits(
    classifier: nn.Module, input_ids: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """:func:`last_token_logits` without a graph for gradients (predictions)."""
    return last_token_logits(classifier, input_ids, lengths)


class ClassificationObjective:
    """One label per text: batches of ``(input_ids (B, T), lengths (B,), labels (B,))``.

    The loss is the cross-entropy of each text's class logits at its last real token
    (:func:`last_token_logits`) against its label, averaged over the texts (``count``);
    ``accuracy`` is the share of texts whose largest logit is their label.
    """

    metric_names = ("accuracy",)

    def __call__(
        self,
        model: nn.Module,
        batch: Sequence[torch.Tensor],
        device: torch.device | str | None = None,
    ) -> ObjectiveOutput:
        input_ids, lengths, labels = to_device(tuple(batch), device)
        logits = last_token_logits(model, input_ids, lengths)  # (B, C)
        loss = nn.functional.cross_entropy(logits, labels)
        accuracy = (logits.detach().argmax(-1) == labels).float().mean()
        return ObjectiveOutput(loss, count=len(labels), metrics={"accuracy": accuracy})

    def tokens(self, batch: Sequence[torch.Tensor]) -> int:
        return batch[0].numel()


@torch.no_grad()
def accuracy(classifier: nn.Module, dataset: ClassificationDataset, batch_size: int = 64) -> float:
    """The fraction of ``dataset`` the classifier labels right (eval mode; its mode is restored)."""
    was_training, device = classifier.training, next(classifier.parameters()).device
    classifier.eval()
    correct = 0
    for start in range(0, len(dataset), batch_size):
        ids = dataset.token_ids[start : start + batch_size].to(device)
        predicted = class_logits(
            classifier, ids, dataset.lengths[start : start + batch_size]
        ).argmax(-1)
        correct += int((predicted.cpu() == dataset.label_ids[start : start + batch_size]).sum())
    classifier.train(was_training)
    return correct / len(dataset)


def predict(
    classifier: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[str],
    max_length: int,
) -> list[str]:
    """The predicted label of each text."""
    data = ClassificationDataset([(labels[0], t) for t in texts], tokenizer, labels, max_length)
    classifier.eval()
    device = next(classifier.parameters()).device
    predicted = class_logits(classifier, data.token_ids.to(device), data.lengths).argmax(-1)
    return [labels[i] for i in predicted.tolist()]


def classifier_train_config(**overrides: Any) -> TrainConfig:
    """The training options chapter 9 classifies with (``overrides`` replace any of them):
    two epochs, a 10-step warm-up then the cosine decay, no weight decay, no text samples."""
    base: dict[str, Any] = {
        "epochs": 2,
        "batch_size": 16,
        "lr": 5e-4,
        "warmup_steps": 10,
        "min_lr_ratio": 0.1,
        "weight_decay": 0.0,
        "eval_interval": 25,
        "eval_batches": None,
        "sample_tokens": 0,
    }
    return TrainConfig(**{**base, **overrides})


@dataclass(frozen=True)
class ClassifierConfig:
    """How :func:`finetune_classifier` builds the classifier and what of it trains; saved
    (resolved) as the run folder's ``classifier.json``, and a resumed run must use the same."""

    labels: Sequence[str] | None = None
    """The classes, in index order (``None``: the sorted labels of the training records)."""
    pooling: str = "last"
    """Where the class is read: the ``"last"`` token or the ``"mean"`` over tokens
    (:class:`GPTClassifier`)."""
    trainable: str = "last-block"
    """What trains (:func:`set_trainable`): ``"head"``, ``"last-block"``, ``"all"``, ``"lora"``."""
    last_blocks: int = 1
    """With ``"last-block"``: how many of the last transformer blocks train."""
    lora: LoRAConfig | None = None
    """With ``"lora"``: the adapters (``None``: :class:`~sydsgpt.lora.LoRAConfig`'s defaults)."""
    max_length: int | None = None
    """Tokens per text (``None``: the longest training text, at most the model's context)."""

    def to_dict(self) -> dict[str, Any]:
        """``classifier.json``'s content: LoRA only with ``"lora"``, ``last_blocks`` only with
        ``"last-block"``."""
        info = asdict(self)
        info["labels"] = list(self.labels) if self.labels is not None else None
        info["lora"] = (self.lora or LoRAConfig()).to_dict() if self.trainable == "lora" else None
        info["last_blocks"] = self.last_blocks if self.trainable == "last-block" else None
        return info


@dataclass
class ClassifierRun:
    """What :func:`finetune_classifier` returns."""

    classifier: GPTClassifier
    tokenizer: Any
    labels: tuple[str, ...]
    max_length: int
    history: list[dict[str, Any]]
    train_s: float
    """Wall-clock seconds of the training loop (evaluations included)."""
    trainable_params: int

    def dataset(self, records: Sequence[Record]) -> ClassificationDataset:
        return ClassificationDataset(records, self.tokenizer, self.labels, self.max_length)

    def accuracy(self, records: Sequence[Record]) -> float:
        """The accuracy on ``records`` (e.g. the held-out test split)."""
        return accuracy(self.classifier, self.dataset(records))

    def predict(self, texts: Sequence[str]) -> list[str]:
        return predict(self.classifier, self.tokenizer, texts, self.labels, self.max_length)


def finetune_classifier(
    model: nn.Module,
    tokenizer: Any,
    train_records: Sequence[Record],
    val_records: Sequence[Record] | None = None,
    *,
    classifier: ClassifierConfig = ClassifierConfig(),
    cfg: TrainConfig | None = None,
    session: Session = Session(),
) -> ClassifierRun:
    """Turn ``model`` (changed in place) into a classifier and train it on ``train_records``.

    Args:
        classifier: how the classifier is built and what trains (:class:`ClassifierConfig`).
        cfg: the training options (default :func:`classifier_train_config`); text samples are off.
        session: as for :func:`sydsgpt.train.train`; its ``out_dir`` is the run folder
            (``checkpoint.pt``, ``log.jsonl``, ``run.json`` as for :func:`~sydsgpt.train.train`,
            plus ``classifier.json``; with LoRA ``adapter.safetensors``).
    """
    spec = classifier
    trainable, pooling, lora = spec.trainable, spec.pooling, spec.lora
    last_blocks = spec.last_blocks
    labels = tuple(spec.labels) if spec.labels is not None else class_labels(train_records)
    if len(labels) < 2:
        raise ValueError(f"a classifier needs at least two labels, got {list(labels)}")
    cfg = replace(cfg or classifier_train_config(), sample_tokens=0)  # a classifier writes no text
    context = model.config.context_length
    max_length = spec.max_length
    if max_length is None:
        longest = max((len(tokenizer.encode(text)) for _, text in train_records), default=1)
        max_length = max(1, min(context, longest))
    if not 1 <= max_length <= context:
        raise ValueError(
            f"max_length must be between 1 and the model's context length {context}, got "
            f"{max_length}"
        )
    train_data = ClassificationDataset(train_records, tokenizer, labels, max_length)
    val_loader = None
    if val_records:
        val_loader = DataLoader(
            ClassificationDataset(val_records, tokenizer, labels, max_length),
            batch_size=cfg.batch_size,
        )
    seed_everything(cfg.seed)  # the new head's and the adapters' initial values
    built = GPTClassifier(model, len(labels), pooling)
    trainable_params = set_trainable(built, trainable, lora, last_blocks)
    info = replace(spec, labels=labels, max_length=max_length).to_dict()
    out_dir = session.out_dir
    out = out_dir.path if isinstance(out_dir, LockedRunFolder) else out_dir and Path(out_dir)
    if out is not None:
        _check_same_classifier(out, info, bool(session.resume))
        atomic_write(out / CLASSIFIER_NAME, json.dumps(info, indent=2) + "\n")
    start = time.perf_counter()
    history = train(
        built,
        train_data,
        val_loader,
        cfg,
        tokenizer=tokenizer,
        session=session,
        objective=ClassificationObjective(),
    )
    train_s = time.perf_counter() - start
    if out is not None and trainable == "lora":
        save_adapter(out / ADAPTER_NAME, built, lora or LoRAConfig(), metadata=info)
    return ClassifierRun(
        built.eval(), tokenizer, labels, max_length, history, train_s, trainable_params
    )


def load_classifier(
    out_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[GPTClassifier, dict[str, Any]]:
    """The classifier a :func:`finetune_classifier` run folder holds (eval mode, on ``device``),
    and its ``classifier.json`` (``labels``, ``pooling``, ``trainable``, ``max_length``,
    ``lora``)."""
    out = Path(out_dir)
    if not (out / CLASSIFIER_NAME).is_file():
        raise FileNotFoundError(
            f"{out} has no {CLASSIFIER_NAME}: it is not a classifier run folder "
            "(finetune_classifier(..., session=Session(out_dir=...)))"
        )
    info = json.loads((out / CLASSIFIER_NAME).read_text())
    state = load_checkpoint(out / CHECKPOINT_NAME)
    classifier = GPTClassifier(SydsGPT(state["config"]), len(info["labels"]), info["pooling"])
    if info.get("lora"):
        apply_lora(classifier.model, LoRAConfig.from_dict(info["lora"]))
    load_weights(classifier, state["model"], out / CHECKPOINT_NAME)
    return classifier.to(device).eval(), info


def _check_same_classifier(out: Path, info: dict[str, Any], resume: bool) -> None:
    saved = out / CLASSIFIER_NAME
    if not (resume and saved.is_file() and (out / CHECKPOINT_NAME).is_file()):
        return
    old = json.loads(saved.read_text())
    changed = [k for k in info if old.get(k) != info[k]]
    if changed:
        raise ValueError(
            f"cannot resume {out}: its classifier was built with other {', '.join(changed)} "
            f"({', '.join(f'{k}={old.get(k)!r}' for k in changed)}); use the same options or "
            "another output folder"
        )


# ---------------------------------------------------------------------------- baselines


def majority_baseline(train_records: Sequence[Record], test_records: Sequence[Record]) -> float:
    """Test accuracy of always answering the most common
    training label (``1/num_classes`` on balanced data)."""
    counts = Counter(label for label, _ in train_records)
    guess = max(sorted(counts), key=counts.__getitem__)
    return sum(label == guess for label, _ in test_records) / len(test_records)


def words(text: str) -> list[str]:
    """Lower-cased words and numbers: the bag-of-words tokens."""
    return re.findall(r"[a-z0-9]+", text.lower())


def bag_of_words_baseline(
    train_records: Sequence[Record],
    test_records: Sequence[Record],
    *,
    min_count: int = 2,
    steps: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-4,
    seed: int = 123,
) -> dict[str, Any]:
    """Logistic regression on word presence: ``logits = x W^T + b``, ``x[j] = 1`` when the text
    has vocabulary word ``j`` (words seen ``min_count`` times in training). Full-batch Adam.

    Returns ``{"accuracy", "trainable_params", "train_s", "vocabulary", "weights"}``: the
    accuracy on ``test_records``, the vocabulary's size, and each word's weight towards every
    class but the first (``{word: W[c] - W[0]}``, two classes: positive means the second).
    """
    labels = class_labels(train_records)
    counts = Counter(w for _, text in train_records for w in set(words(text)))
    vocabulary = {
        w: j for j, w in enumerate(sorted(w for w, c in counts.items() if c >= min_count))
    }

    def features(records: Sequence[Record]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.zeros(len(records), len(vocabulary))
        for i, (_, text) in enumerate(records):
            x[i, [vocabulary[w] for w in set(words(text)) if w in vocabulary]] = 1.0
        return x, torch.tensor(
            [labels.index(label) if label in labels else -1 for label, _ in records]
        )

    (x, y), (x_test, y_test) = features(train_records), features(test_records)
    fit = fit_logistic_regression(
        x, y, len(labels), steps=steps, lr=lr, weight_decay=weight_decay, seed=seed
    )
    return {
        "accuracy": fit.accuracy(x_test, y_test),
        "trainable_params": count_trainable_parameters(fit.regression),
        "train_s": fit.train_s,
        "vocabulary": len(vocabulary),
        "weights": {
            w: (fit.regression.weight[1:, j] - fit.regression.weight[0, j]).squeeze().tolist()
            for w, j in vocabulary.items()
        },
    }


# region: logistic
@dataclass
class LogisticFit:
    """A trained :func:`fit_logistic_regression`: the linear layer and its training time."""

    regression: nn.Linear
    train_s: float

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """The share of rows of ``x`` whose largest logit is their label ``y``."""
        return (self.regression(x).argmax(-1) == y).float().mean().item()


def fit_logistic_regression(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    steps: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-4,
    seed: int = 123,
) -> LogisticFit:
    """Logistic regression, ``logits = x W^T + b``, fitted by full-batch Adam on ``(N, F)``
    features ``x`` and ``(N,)`` labels ``y``. On word-presence features it is the bag-of-words
    baseline; on a frozen model's :func:`last_token_features` it is the "head only" classifier.
    """
    torch.manual_seed(seed)
    regression = nn.Linear(x.shape[1], num_classes)
    optimizer = torch.optim.Adam(regression.parameters(), lr=lr, weight_decay=weight_decay)
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(regression(x), y).backward()
        optimizer.step()
    return LogisticFit(regression, time.perf_counter() - start)


# endregion: logistic


@torch.no_grad()
def last_token_features(
    model: nn.Module, dataset: ClassificationDataset, batch_size: int = 32
) -> torch.Tensor:
    """``(N, d)``: a frozen language model's features at each text's last real token, after the
    final norm: exactly what a new head reads in a head-only classifier. Computed once, they
    make training that head a logistic regression of seconds (:func:`fit_logistic_regression`).
    """
    was_training, device = model.training, next(model.parameters()).device
    head = model.output_projection
    model.output_projection = nn.Identity()  # (B, T, d) features instead of vocabulary logits
    model.eval()
    try:
        parts = []
        for start in range(0, len(dataset), batch_size):
            ids = dataset.token_ids[start : start + batch_size].to(device)
            lengths = dataset.lengths[start : start + batch_size].to(device)
            features = model(ids)  # (B, T, d)
            parts.append(features[torch.arange(len(ids), device=device), lengths - 1].float().cpu())
    finally:
        model.output_projection = head
        model.train(was_training)
    return torch.cat(parts)
