"""Chapter 9, instruction finetuning: the template, the end token, loss masking (by hand and
shown to matter), generation that stops at the end token, the scorer, and a tiny run."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config, tiny_model

from sydsgpt.bpe import END_OF_TEXT, BPETokenizer
from sydsgpt.instruct import (
    IGNORE_INDEX,
    InstructionDataset,
    add_end_token,
    collate_instructions,
    end_token_id,
    exact_match,
    finetune_instructions,
    format_prompt,
    generate_response,
    instruction_loader,
    response_loss,
    tokenize_example,
    word_task_records,
)
from sydsgpt.model import SydsGPT
from sydsgpt.train import Session, TrainConfig


RECORD = {"instruction": "Name a colour.", "input": "", "output": "Red."}


@functools.lru_cache(maxsize=1)
def task_tokenizer() -> BPETokenizer:
    """A 400-id BPE trained on the word tasks' own prompts, with <|endoftext|>."""
    text = "".join(format_prompt(r) + r["output"] + "\n" for r in word_task_records(200, seed=1))
    return BPETokenizer(name="tasks").train(text, 400, special_tokens=[END_OF_TEXT])


def test_the_template_with_and_without_an_input() -> None:
    assert format_prompt(RECORD) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nName a colour.\n\n### Response:\n"
    )
    with_input = format_prompt({**RECORD, "input": "the sky"})
    assert with_input.endswith(
        "### Instruction:\nName a colour.\n\n### Input:\nthe sky\n\n### Response:\n"
    )


def test_collate_masks_the_prompt_and_the_padding_by_hand() -> None:
    # prompt [10, 11, 12], response [20, 21], end 99: the six-token example of the chapter.
    six = ([10, 11, 12, 20, 21, 99], 3)
    short = ([10, 11, 20, 99], 2)
    inputs, targets = collate_instructions([six, short], pad_id=99)
    assert inputs.tolist() == [[10, 11, 12, 20, 21], [10, 11, 20, 99, 99]]
    assert targets.tolist() == [[-100, -100, 20, 21, 99], [-100, 20, 99, -100, -100]]
    _, unmasked = collate_instructions([six, short], pad_id=99, mask_prompt=False)
    assert unmasked.tolist() == [[11, 12, 20, 21, 99], [11, 20, 99, -100, -100]]
    padded, _ = collate_instructions([short], pad_id=0, pad_to=6)
    assert padded.tolist() == [[10, 11, 20, 0, 0, 0]]  # the inputs stop before the end token


def test_the_masked_loss_is_the_mean_over_response_tokens() -> None:
    model = tiny_model()
    batch = collate_instructions([([1, 2, 3, 4, 5, 6], 3), ([7, 8, 9, 10], 2)], pad_id=0)
    logits = model(batch[0])
    by_hand = []
    for row, t in [(0, 2), (0, 3), (0, 4), (1, 1), (1, 2)]:  # the graded positions
        by_hand.append(F.cross_entropy(logits[row, t], batch[1][row, t]))
    assert response_loss(model, [batch]) == pytest.approx(
        torch.stack(by_hand).mean().item(), rel=1e-5
    )
    # the graded loss does not depend on the prompt's targets
    other = batch[1].clone()
    other[0, :2] = IGNORE_INDEX
    assert response_loss(model, [(batch[0], other)]) == pytest.approx(response_loss(model, [batch]))


def test_add_end_token_adds_one_row_and_keeps_every_old_logit() -> None:
    tokenizer = BPETokenizer(name="plain").train("the cat sat on the mat " * 20, 280)
    n = tokenizer.n_vocab
    model = tiny_model(vocab_size=n, tie_weights=True)
    grown, extended = add_end_token(model, tokenizer)
    assert (
        END_OF_TEXT not in tokenizer.special_tokens and tokenizer.n_vocab == n
    )  # the input is untouched
    assert (
        end_token_id(extended) == n
        and extended.n_vocab == n + 1
        and grown.config.vocab_size == n + 1
    )
    assert (
        extended.decode(extended.encode(f"cat{END_OF_TEXT}", allowed_special="all"))
        == f"cat{END_OF_TEXT}"
    )
    ids = torch.tensor([extended.encode_ordinary("the cat sat")])
    with torch.no_grad():
        torch.testing.assert_close(grown(ids)[..., :n], model(ids))
        mean_row = model.token_embedding.weight.mean(dim=0)
        torch.testing.assert_close(grown.token_embedding.weight[n], mean_row)
    assert grown.output_projection.weight is grown.token_embedding.weight  # still tied
    same_model, same_tokenizer = add_end_token(grown, extended)  # already has one: nothing to do
    assert same_model is grown and same_tokenizer is extended
    with pytest.raises(ValueError, match="add_end_token"):
        end_token_id(tokenizer)


def test_tokenize_example_cuts_long_responses_and_refuses_long_prompts() -> None:
    tokenizer = task_tokenizer()
    end = end_token_id(tokenizer)
    ids, prompt_len = tokenize_example(RECORD, tokenizer, end)
    assert ids[:prompt_len] == tokenizer.encode_ordinary(format_prompt(RECORD)) and ids[-1] == end
    cut, _ = tokenize_example(RECORD, tokenizer, end, max_length=prompt_len + 1)
    assert len(cut) == prompt_len + 2 and cut[-1] != end  # the model sees max_length inputs
    with pytest.raises(ValueError, match="longer than the context"):
        tokenize_example(RECORD, tokenizer, end, max_length=prompt_len - 1)


def test_the_dataset_pads_every_example_to_one_length() -> None:
    tokenizer = task_tokenizer()
    records = word_task_records(8)
    data = InstructionDataset(records, tokenizer, max_length=128)
    lengths = {tuple(x.shape) for x, _ in (data[i] for i in range(len(data)))}
    assert lengths == {(data.length,)} and data.token_ids.numel() == 8 * data.length
    x, y = data[0]
    assert (y != IGNORE_INDEX).sum() == len(tokenizer.encode_ordinary(records[0]["output"])) + 1


def always(token: int, vocab: int, context_length: int = 128) -> SydsGPT:
    """A tiny model whose greedy choice is always ``token`` (its head sees a constant vector)."""
    torch.manual_seed(0)
    model = SydsGPT(tiny_config(vocab_size=vocab, context_length=context_length)).eval()
    with torch.no_grad():
        model.output_projection.weight.zero_()
        model.output_projection.weight[token] = 1.0
        model.final_layer_norm.scale.zero_()
        model.final_layer_norm.shift.fill_(1.0)
    return model


def test_generation_stops_at_the_end_token() -> None:
    tokenizer = task_tokenizer()
    end, vocab = end_token_id(tokenizer), tokenizer.n_vocab
    record = word_task_records(1)[0]
    assert generate_response(always(end, vocab), tokenizer, record, 10) == ("", True)
    word = tokenizer.encode_ordinary(" king")[0]
    text, stopped = generate_response(always(word, vocab), tokenizer, record, 5)
    assert not stopped and text == tokenizer.decode([word] * 5)
    assert exact_match(always(end, vocab), tokenizer, word_task_records(4), 5) == {
        "exact_match": 0.0,
        "stopped": 1.0,
        "answers": [""] * 4,
    }
    with pytest.raises(ValueError, match="context"):
        generate_response(always(end, vocab, context_length=8), tokenizer, record, 5)


def test_exact_match_needs_the_answer_and_the_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    import sydsgpt.instruct as instruct

    records = word_task_records(4)
    replies = iter(
        [
            (records[0]["output"], True),
            (records[1]["output"] + " ", True),
            (records[2]["output"], False),
            ("x", True),
        ]
    )
    monkeypatch.setattr(instruct, "generate_response", lambda *args: next(replies))
    score = exact_match(None, None, records)
    assert (score["exact_match"], score["stopped"]) == (0.5, 0.75)


def test_the_word_tasks_are_seeded_and_correct() -> None:
    records = word_task_records(8, seed=3)
    assert records == word_task_records(8, seed=3) and records != word_task_records(8, seed=4)
    for r in records:
        words = r["input"].split()
        expected = {
            "Repeat the word twice.": f"{words[0]} {words[0]}",
            "Write the last word.": words[-1],
            "Write the first word.": words[0],
            "Write the words in reverse order.": " ".join(words[::-1]),
        }
        assert r["output"] == expected[r["instruction"]]


def test_finetuning_lowers_the_held_out_response_loss() -> None:
    tokenizer = task_tokenizer()
    torch.manual_seed(0)
    model = SydsGPT(tiny_config(vocab_size=tokenizer.n_vocab, context_length=64, embedding_dim=32))
    train_records, val_records = word_task_records(96, seed=0), word_task_records(16, seed=9)
    val = instruction_loader(val_records, tokenizer, 64, batch_size=8)
    before = response_loss(model, val)
    cfg = TrainConfig(
        max_steps=30, batch_size=8, lr=3e-3, eval_interval=0, sample_tokens=0, device="cpu", seed=1
    )
    history = finetune_instructions(
        model, tokenizer, train_records, val_records, cfg, session=Session(show_progress=False)
    )
    assert len(history) == 30
    assert response_loss(model, val) < before - 1.0


def test_the_instruct_benchmark_runs_quickly() -> None:
    from sydsgpt.bench.instruct import (
        COLUMNS,
        REAL_COLUMNS,
        SMOL_TEST_RECORDS,
        real_splits,
        run,
        splits,
    )

    for split in (splits, real_splits):
        train, test = split()
        assert not {(r["instruction"], r["input"]) for r in test} & {
            (r["instruction"], r["input"]) for r in train
        }
    assert len(real_splits()[1]) == SMOL_TEST_RECORDS >= 50
    result = run(None, quick=True)
    assert [row["setup"] for row in result["rows"]] == [
        "base model",
        "finetuned, masked loss",
        "finetuned, unmasked loss",
    ]
    assert all(set(COLUMNS) <= set(row) | {"lr"} for row in result["rows"])
    real = result["real_model"]
    assert [(row["setup"], row["steps"]) for row in real["rows"]] == [
        ("base model", 0),
        *[
            (setup, n)
            for n in real["steps_per_run"]
            for setup in ("LoRA, masked loss", "LoRA, unmasked loss")
        ],
    ]
    assert real["format"].startswith("the model's ChatML chat template")
    assert len(result["loadavg_before"]) == 3 and result["threads"] >= 1
    for row in real["rows"][1:]:
        assert set(REAL_COLUMNS) <= set(row)
        assert [r["seed"] for r in row["per_seed"]] == real["seeds"]
        assert 0 < row["trainable_params"] < real["base_params"]
        losses = [r["response_loss"] for r in row["per_seed"]]
        assert row["response_loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-4)
