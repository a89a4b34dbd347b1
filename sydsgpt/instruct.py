"""Chapter 9: instruction finetuning -- teaching a text continuer to answer.

A record is ``{"instruction", "input", "output"}`` (the input may be empty). Finetuning
turns each record into one token sequence and trains on it with the pretraining loss,
with one change: only the response is graded.

The format follows the model (decided in one place, :func:`chat_format`):

* a **chat model** (its tokenizer has a ChatML ``chat_template``, e.g. SmolLM2-135M-Instruct)
  gets each record as a conversation in its own template: the user message is the
  instruction (and the input after a blank line), the reply is the output, ended by the
  end-of-turn token ``<|im_end|>`` (:mod:`sydsgpt.chat`; what a user wrote stays plain text);
* any other model (the book's, GPT-2) gets the Alpaca-style template below, ended by
  ``<|endoftext|>``.

- :func:`format_prompt`: the Alpaca-style prompt template (:data:`PROMPT_TEMPLATE`);
- :func:`chat_format`, :func:`user_message`, :func:`prompt_ids`: which format, and the ids
  the model reads before it answers (exactly what generation is fed);
- :func:`end_token_id` / :func:`add_end_token`: the end-of-response token
  (``<|im_end|>`` or ``<|endoftext|>``; a plain tokenizer without one gets ``<|endoftext|>``,
  and the model one new row);
- :func:`tokenize_example`: ``prompt + response + <end>`` and where the response starts;
- :func:`collate_instructions`: a padded batch whose targets are :data:`IGNORE_INDEX`
  (-100) on the prompt and on the padding -- **loss masking**;
- :class:`InstructionDataset`: records -> fixed-length ``(input_ids, target_ids)`` pairs
  for :func:`sydsgpt.train.train`, which :func:`finetune_instructions` calls;
- :func:`response_loss`, :func:`generate_response`, :func:`exact_match`: the held-out
  response loss, greedy answers that stop at the end token, and their automatic score;
- :func:`word_task_records`: a small task set whose answers can be checked exactly.

Shapes: ``B`` batch, ``T`` tokens, ``V`` vocabulary.
"""

from __future__ import annotations

import copy
import random
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .bpe import END_OF_TEXT, BPETokenizer
from .chat import ChatTemplate, encode_chat
from .generate import end_of_text_id, generate
from .losses import NextTokenObjective
from .model import SydsGPT
from .objectives import IGNORE_INDEX
from .train import train
from .train_config import Session, TrainConfig

# region: template
PROMPT_TEMPLATE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{instruction}"
    "{input_section}"
    "\n\n### Response:\n"
)
"""The Alpaca-style template: a fixed preamble, the instruction, the input (only when there
is one) and the ``### Response:`` header; the response follows it directly and ends with
the end-of-response token."""

INPUT_SECTION = "\n\n### Input:\n{input}"
"""The input block of :data:`PROMPT_TEMPLATE` (left out when the record's input is empty)."""


def format_prompt(record: Mapping[str, str]) -> str:
    """The prompt of ``record``: everything the model reads before it answers."""
    given = record.get("input", "")
    section = INPUT_SECTION.format(input=given) if given else ""
    return PROMPT_TEMPLATE.format(instruction=record["instruction"], input_section=section)


# endregion: template


# region: format
def chat_format(tokenizer: Any) -> ChatTemplate | None:
    """The one place the format is decided: the tokenizer's chat template when it has one
    (a chat model is finetuned in the conversation format it was trained on), else ``None``
    (the Alpaca-style template of :func:`format_prompt`)."""
    template = getattr(tokenizer, "chat_template", None)
    return ChatTemplate.from_jinja(template) if template else None


def user_message(record: Mapping[str, str]) -> str:
    """A record as a chat model's user message: the instruction, and the input (when there is
    one) after a blank line."""
    given = record.get("input", "")
    return f"{record['instruction']}\n\n{given}" if given else record["instruction"]


def prompt_ids(record: Mapping[str, str] | str, tokenizer: Any) -> list[int]:
    """The ids the model reads before it answers ``record``: exactly what generation is fed.

    Chat format: the conversation of one user message (the template's default system message
    in front, as ``sydsgpt chat`` sends it) and the generation prompt
    ``<|im_start|>assistant\\n``; a ``str`` is the user message itself. Alpaca format: the
    :func:`format_prompt` text; a ``str`` is an already formatted prompt. Either way, text
    that spells a special token is encoded as ordinary text.
    """
    chat = chat_format(tokenizer)
    if chat is None:
        return tokenizer.encode_ordinary(
            record if isinstance(record, str) else format_prompt(record)
        )
    text = record if isinstance(record, str) else user_message(record)
    return encode_chat(tokenizer, [{"role": "user", "content": text}], chat)


# endregion: format


# ---------------------------------------------------------------------------- the end token


def _end_id(tokenizer: Any) -> int | None:
    chat = chat_format(tokenizer)
    if chat is not None:
        return tokenizer.special_tokens.get(chat.end)
    return end_of_text_id(tokenizer)


def end_token_id(tokenizer: Any) -> int:
    """The id of the end-of-response token: a chat model's end-of-turn token (``<|im_end|>``,
    SmolLM2's is 2), else ``<|endoftext|>`` (GPT-2's is 50256).

    Raises:
        ValueError: the tokenizer has none; :func:`add_end_token` gives a plain tokenizer one.
    """
    eot = _end_id(tokenizer)
    if eot is None:
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name', tokenizer)!r} has no {END_OF_TEXT} token to "
            "end a response with; add one with sydsgpt.instruct.add_end_token(model, tokenizer)"
        )
    return eot


def add_end_token(model: nn.Module, tokenizer: Any) -> tuple[nn.Module, Any]:
    """Give a tokenizer without ``<|endoftext|>`` that token, and the model a row for it.

    The token gets the next free id (``n_vocab``); the model gets one more row in its token
    embedding and in its output head, both set to the mean of the existing rows (a new
    token starts as an "average" token rather than as noise). A tokenizer that already has
    an end token (a chat model's ``<|im_end|>`` too) is returned unchanged, with the model.

    Returns:
        ``(model, tokenizer)``: new objects when a token was added (the inputs are untouched).
    """
    if _end_id(tokenizer) is not None:
        return model, tokenizer
    if not isinstance(tokenizer, BPETokenizer) or chat_format(tokenizer) is not None:
        raise TypeError(
            f"add_end_token extends a BPETokenizer; {type(tokenizer).__name__} has no {END_OF_TEXT}"
        )
    new_id = tokenizer.n_vocab
    extended = copy.deepcopy(tokenizer)
    extended.special_tokens = {**tokenizer.special_tokens, END_OF_TEXT: new_id}
    extended._rebuild()
    old_config = model.config
    if new_id < old_config.vocab_size:  # the model already has a row for the id
        return model, extended
    param = next(model.parameters())
    grown = SydsGPT(old_config.replace(vocab_size=new_id + 1)).to(
        device=param.device, dtype=param.dtype
    )
    state = model.state_dict()
    with torch.no_grad():
        for name in ("token_embedding.weight", "output_projection.weight"):
            old = state[name]  # (rows, d)
            rows = grown.state_dict()[name].shape[0]
            new = old.mean(dim=0, keepdim=True).expand(rows - old.shape[0], -1)
            state[name] = torch.cat([old, new], dim=0)
    grown.load_state_dict(state)
    return grown.train(model.training), extended


# ---------------------------------------------------------------------------- tokens and masks


def tokenize_example(
    record: Mapping[str, str], tokenizer: Any, end_id: int, max_length: int | None = None
) -> tuple[list[int], int]:
    """``prompt + response + [end_id]`` as ids, and the number of prompt ids.

    The prompt (:func:`prompt_ids`) and the response are encoded separately (special-token
    text in them is ordinary text), so the prompt ids are exactly what
    :func:`generate_response` feeds the model. A sequence longer than ``max_length`` (the
    model's context) loses the end of its response (and its end token).

    Raises:
        ValueError: the prompt alone leaves no room for one response token in ``max_length``.
    """
    prompt = prompt_ids(record, tokenizer)
    response = tokenizer.encode_ordinary(record["output"]) + [end_id]
    if max_length is not None and len(prompt) + 1 > max_length:
        raise ValueError(
            f"the prompt of the record {record['instruction'][:40]!r} is {len(prompt)} tokens, "
            f"longer than the context of {max_length} minus one response token; shorten it, drop "
            "it, or use a model with a longer context"
        )
    ids = prompt + response
    return (ids[: max_length + 1] if max_length is not None else ids), len(prompt)


# region: collate
def collate_instructions(
    examples: Sequence[tuple[Sequence[int], int]],
    pad_id: int,
    *,
    mask_prompt: bool = True,
    pad_to: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of ``(ids, prompt_len)`` examples: ``(input_ids, target_ids)``, each
    ``(B, T)``.

    Inputs are ``ids[:-1]`` and targets ``ids[1:]`` (next-token prediction), both padded
    on the right to ``T`` (``pad_to``, default the longest example minus one). Target
    positions that predict padding are :data:`IGNORE_INDEX`, and so, with ``mask_prompt``,
    are those that predict a prompt token: the loss grades the response and its end
    token only.
    """
    length = pad_to if pad_to is not None else max(len(ids) for ids, _ in examples) - 1
    inputs = torch.full((len(examples), length), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(examples):
        ids = torch.as_tensor(ids, dtype=torch.long)
        n = len(ids) - 1  # positions with a next token
        inputs[row, :n] = ids[:-1]
        targets[row, :n] = ids[1:]
        if mask_prompt:
            targets[row, : prompt_len - 1] = IGNORE_INDEX  # position t predicts ids[t + 1]
    return inputs, targets


# endregion: collate


class InstructionDataset(Dataset):
    """Instruction records as fixed-length ``(input_ids, target_ids)`` pairs (``(T,)`` each).

    Every example is padded to the same ``T`` (the longest one, at most ``max_length``),
    so :func:`sydsgpt.train.train` batches them as it batches pretraining windows.
    ``token_ids`` (all inputs, concatenated) lets training check the ids against the
    vocabulary and fingerprint the data for resume.

    Args:
        records: records with ``instruction``, ``input``, ``output`` (e.g.
            :func:`sydsgpt.corpora.load_instructions`, which checks them).
        tokenizer: the tokenizer, with an end token (:func:`add_end_token`).
        max_length: the model's context length.
        mask_prompt: mask the prompt's targets (the default) or grade them too.
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, str]],
        tokenizer: Any,
        max_length: int,
        *,
        mask_prompt: bool = True,
    ) -> None:
        self.end_id = end_token_id(tokenizer)
        self.examples = [tokenize_example(r, tokenizer, self.end_id, max_length) for r in records]
        self.length = max(len(ids) for ids, _ in self.examples) - 1
        self.inputs, self.targets = collate_instructions(
            self.examples, self.end_id, mask_prompt=mask_prompt, pad_to=self.length
        )
        self.token_ids = self.inputs.reshape(-1)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.targets[index]


def instruction_loader(
    records: Sequence[Mapping[str, str]],
    tokenizer: Any,
    max_length: int,
    batch_size: int = 8,
    *,
    mask_prompt: bool = True,
) -> DataLoader:
    """Batches of ``records`` in order, each padded to its own longest example (evaluation)."""
    end_id = end_token_id(tokenizer)
    examples = [tokenize_example(r, tokenizer, end_id, max_length) for r in records]
    return DataLoader(
        examples,
        batch_size=batch_size,
        shuffle=False,  # type: ignore[arg-type]
        collate_fn=lambda batch: collate_instructions(batch, end_id, mask_prompt=mask_prompt),
    )


# region: loss
@torch.no_grad()
def response_loss(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean cross-entropy per graded token (targets that are not :data:`IGNORE_INDEX`)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for input_ids, target_ids in batches:
        logits = model(input_ids.to(device))  # (B, T, V)
        targets = target_ids.to(device)
        total += F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        ).item()
        count += int((targets != IGNORE_INDEX).sum())
    model.train(was_training)
    if count == 0:
        raise ValueError("no graded tokens: every target is IGNORE_INDEX")
    return total / count


# endregion: loss


# ---------------------------------------------------------------------------- answers and scores


def generate_response(
    model: nn.Module, tokenizer: Any, record: Mapping[str, str] | str, max_new_tokens: int = 64
) -> tuple[str, bool]:
    """The model's greedy answer to ``record`` (a ``str``: see :func:`prompt_ids`), and
    whether it ended with the end token (``<|im_end|>`` for a chat model; ``False``: it ran
    out of ``max_new_tokens``). The end token is not part of the text.

    Raises:
        ValueError: the prompt is longer than the model's context.
    """
    end_id = end_token_id(tokenizer)
    ids = prompt_ids(record, tokenizer)
    context = model.config.context_length
    if len(ids) >= context:
        raise ValueError(
            f"the prompt is {len(ids)} tokens, but the model's context is {context}: "
            "shorten the prompt (or the instruction/input) so the answer has room"
        )
    device = next(model.parameters()).device
    prompt = torch.tensor([ids], device=device)  # (1, T)
    new = generate(model, prompt, min(max_new_tokens, context - len(ids)), eos_id=end_id)[
        0, len(ids) :
    ].tolist()
    stopped = bool(new) and new[-1] == end_id
    return tokenizer.decode(new[:-1] if stopped else new), stopped


def exact_match(
    model: nn.Module, tokenizer: Any, records: Sequence[Mapping[str, str]], max_new_tokens: int = 32
) -> dict[str, Any]:
    """Score greedy answers against the records' outputs.

    Returns:
        ``{"exact_match": share of answers equal to the output (after stripping spaces)
        that also stopped at the end token, "stopped": share that stopped at the end token,
        "answers": the answers}``.
    """
    answers, correct, stopped = [], 0, 0
    for record in records:
        text, ended = generate_response(model, tokenizer, record, max_new_tokens)
        answers.append(text)
        stopped += ended
        correct += ended and text.strip() == record["output"].strip()
    return {
        "exact_match": correct / len(records),
        "stopped": stopped / len(records),
        "answers": answers,
    }


# ---------------------------------------------------------------------------- a checkable task set


WORDS = (
    "king",
    "queen",
    "love",
    "night",
    "death",
    "heart",
    "blood",
    "lord",
    "good",
    "sweet",
    "time",
    "man",
    "life",
    "hand",
    "eyes",
    "day",
    "father",
    "son",
    "name",
    "sir",
    "world",
    "heaven",
    "fair",
    "god",
)
"""Common Tiny Shakespeare words (short for the book's 1,024-id tokenizer)."""

# region: tasks
TASKS = {
    "Repeat the word twice.": (1, lambda words: f"{words[0]} {words[0]}"),
    "Write the last word.": (3, lambda words: words[-1]),
    "Write the first word.": (3, lambda words: words[0]),
    "Write the words in reverse order.": (3, lambda words: " ".join(reversed(words))),
}
"""instruction -> (number of input words, the answer for those words)."""


def word_task_records(n: int, seed: int = 0, words: Sequence[str] = WORDS) -> list[dict[str, str]]:
    """``n`` records of the :data:`TASKS`, on random words: exact answers a scorer checks."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        instruction = list(TASKS)[i % len(TASKS)]
        count, answer = TASKS[instruction]
        chosen = rng.sample(list(words), count)
        records.append(
            {"instruction": instruction, "input": " ".join(chosen), "output": answer(chosen)}
        )
    return records


# endregion: tasks


# ---------------------------------------------------------------------------- training


def instruction_data(
    train_records: Sequence[Mapping[str, str]],
    val_records: Sequence[Mapping[str, str]] | None,
    tokenizer: Any,
    context_length: int,
    batch_size: int,
    *,
    mask_prompt: bool = True,
) -> tuple[InstructionDataset, DataLoader | None]:
    """The training dataset and the validation loader (``None`` without records) of
    :func:`finetune_instructions`: every record tokenized and checked against the context."""
    train_data = InstructionDataset(
        train_records, tokenizer, context_length, mask_prompt=mask_prompt
    )
    val_data = None
    if val_records:
        val_data = instruction_loader(
            val_records, tokenizer, context_length, batch_size, mask_prompt=mask_prompt
        )
    return train_data, val_data


def finetune_instructions(
    model: nn.Module,
    tokenizer: Any,
    train_records: Sequence[Mapping[str, str]],
    val_records: Sequence[Mapping[str, str]] | None,
    cfg: TrainConfig,
    *,
    mask_prompt: bool = True,
    session: Session = Session(),
) -> list[dict[str, Any]]:
    """Finetune ``model`` on instruction records with :func:`sydsgpt.train.train`.

    The model must already know the end token (:func:`add_end_token`). The same loop and
    objective as pretraining (:class:`~sydsgpt.losses.NextTokenObjective`, which does not
    grade the :data:`IGNORE_INDEX` targets): AdamW, warm-up and cosine schedule, clipping,
    the JSON-lines log, checkpoints and exact resume; ``val_loss`` in the log is the held-out
    response loss (masked like the training targets). ``mask_prompt=False`` grades every token.
    ``session`` (where it writes, resume, stop, progress) is :func:`~sydsgpt.train.train`'s.
    Returns the log records.
    """
    train_data, val_data = instruction_data(
        train_records,
        val_records,
        tokenizer,
        model.config.context_length,
        cfg.batch_size,
        mask_prompt=mask_prompt,
    )
    return train(
        model,
        train_data,
        val_data,
        cfg,
        tokenizer=tokenizer,
        session=session,
        objective=NextTokenObjective(),
    )
