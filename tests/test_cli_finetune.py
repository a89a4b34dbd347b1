"""``sydsgpt finetune instruct|classify``: tiny runs end to end (a saved checkpoint and a
random-weight GPT-2 folder as the base), resume, the outputs, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import saved_tiny_checkpoint

from sydsgpt.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_and_tokenizer,
)
from sydsgpt.cli import main
from sydsgpt.instruct import format_prompt, word_task_records
from sydsgpt.logs import read_log


FAST = [
    "--batch-size",
    "4",
    "--max-steps",
    "4",
    "--eval-interval",
    "2",
    "--eval-batches",
    "1",
    "--lr",
    "3e-3",
    "--device",
    "cpu",
    "--quiet",
    "--max-new-tokens",
    "3",
]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A tiny pretrained-format checkpoint with a BPE tokenizer (no end token) beside it."""
    text = "".join(format_prompt(r) + r["output"] + "\n" for r in word_task_records(200, seed=1))
    return saved_tiny_checkpoint(tmp_path / "base", text, 400, "tasks", context_length=64)


def finetune(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["finetune", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_names_both_tasks_and_the_base(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for expected in ("classify", "instruct", "--base", "--lora-rank", "examples:"):
        assert expected in text, expected
    with pytest.raises(SystemExit):
        main(["finetune", "instruct", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("--no-mask-prompt", "--resume", "--lr X", "--lora-rank R", "word-tasks"):
        assert expected in text, expected


def test_instruct_end_to_end_and_generate_reads_the_result(
    base: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    code, stdout, err = finetune(
        capsys, "instruct", "word-tasks", "--base", str(base), "--out", str(out), *FAST
    )
    assert code == 0, err
    for name in ("checkpoint.pt", "log.jsonl", "run.json", "loss.png", "tokenizer.json"):
        assert (out / name).is_file(), name
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [0, 1, 2, 3, 4]
    assert (
        "held-out response loss" in err
        and "stopped at the end token" in err
        and "example answer" in stdout
    )
    model, tokenizer = load_model_and_tokenizer(out / "checkpoint.pt")
    assert tokenizer.eot_token == 400 and model.config.vocab_size == 401  # the end token was added
    code = main(
        [
            "generate",
            "--checkpoint",
            str(out / "checkpoint.pt"),
            "--prompt",
            "### Response:\n",
            "--max-new-tokens",
            "3",
            "--device",
            "cpu",
        ]
    )
    assert code == 0


def test_masking_can_be_switched_off(base: Path, tmp_path: Path, capsys) -> None:
    code, _, err = finetune(
        capsys,
        "instruct",
        "word-tasks",
        "--base",
        str(base),
        "--out",
        str(tmp_path / "u"),
        "--no-mask-prompt",
        *FAST,
    )
    assert code == 0 and "loss on every token" in err


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_resume_continues_exactly(base: Path, tmp_path: Path, capsys) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert (
        finetune(capsys, "instruct", "word-tasks", "--base", str(base), "--out", str(whole), *FAST)[
            0
        ]
        == 0
    )
    assert (
        finetune(
            capsys,
            "instruct",
            "word-tasks",
            "--base",
            str(base),
            "--out",
            str(parts),
            "--stop-after",
            "2",
            *FAST,
        )[0]
        == 0
    )
    assert load_checkpoint(parts / "checkpoint.pt")["step"] == 2
    code, _, err = finetune(
        capsys, "instruct", "word-tasks", "--base", str(base), "--out", str(parts), *FAST
    )
    assert code == 2 and "add --resume" in err
    assert (
        finetune(
            capsys,
            "instruct",
            "word-tasks",
            "--base",
            str(base),
            "--out",
            str(parts),
            "--resume",
            *FAST,
        )[0]
        == 0
    )
    a, b = (
        load_checkpoint(whole / "checkpoint.pt")["model"],
        load_checkpoint(parts / "checkpoint.pt")["model"],
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in read_log(whole / "log.jsonl") if "train_loss" in r] == [
        r["train_loss"] for r in read_log(parts / "log.jsonl") if "train_loss" in r
    ]


def test_lora_writes_the_adapter_only(base: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("sydsgpt.lora")
    out = tmp_path / "lora"
    code, _, err = finetune(
        capsys,
        "instruct",
        "word-tasks",
        "--base",
        str(base),
        "--out",
        str(out),
        "--lora-rank",
        "2",
        *FAST,
    )
    assert code == 0, err
    from safetensors.torch import load_file

    adapter = load_file(out / "adapter.safetensors")
    # the LoRA matrices, and the embedding (tied to the head) that holds the new end token's row
    assert (
        any("lora_A" in name for name in adapter) and "model.token_embedding.weight" not in adapter
    )
    assert all(
        "lora" in name or name.startswith(("token_embedding", "output_projection"))
        for name in adapter
    ), list(adapter)


def _records(tmp_path: Path, records: object) -> Path:
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize(
    ("records", "match"),
    [
        ([{"instruction": "Say hi.", "input": ""}], "output"),
        ([{"instruction": "Say hi.", "input": "", "output": ""}], "empty"),
        ({"instruction": "not a list"}, "list"),
    ],
)
def test_bad_instruction_files_are_one_line_errors(
    base: Path, tmp_path: Path, capsys, records: object, match: str
) -> None:
    code, _, err = finetune(
        capsys,
        "instruct",
        str(_records(tmp_path, records)),
        "--base",
        str(base),
        "--out",
        str(tmp_path / "r"),
        *FAST,
    )
    assert (
        code == 2
        and err.startswith("sydsgpt finetune: error:")
        and match in err
        and err.count("\n") == 1
    ), err


def test_a_prompt_longer_than_the_context_is_a_clear_error(
    base: Path, tmp_path: Path, capsys
) -> None:
    long = [
        {"instruction": "Repeat the word twice. " * 40, "input": "king", "output": "king king"}
    ] * 4
    code, _, err = finetune(
        capsys,
        "instruct",
        str(_records(tmp_path, long)),
        "--base",
        str(base),
        "--out",
        str(tmp_path / "r"),
        *FAST,
    )
    last = err.strip().splitlines()[-1]
    assert (
        code == 2
        and last.startswith("sydsgpt finetune: error: the prompt of the record")
        and "longer than the context" in last
    )
    assert not (tmp_path / "r").exists(), (
        "nothing may be written for a run that cannot start (tokenizer.json was)"
    )


def test_every_option_is_checked_before_anything_is_loaded_or_written(
    base: Path, tmp_path: Path, capsys
) -> None:
    # --max-new-tokens is used only at the end: it used to be refused after the whole run
    out = tmp_path / "r"
    code, _, err = finetune(
        capsys,
        "instruct",
        "word-tasks",
        "--base",
        str(base),
        "--out",
        str(out),
        *FAST,
        "--max-new-tokens",
        "0",
    )
    assert (
        code == 2
        and "--max-new-tokens must be a positive integer, got 0" in err
        and err.count("\n") == 1
    ), err
    assert not out.exists()


def test_a_base_of_an_unknown_kind_says_what_is_accepted(tmp_path: Path, capsys) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    for spec, what in (
        (notes, "not a model"),
        (tmp_path / "missing.pt", "no such file or folder"),
        ("missing.pt", "no such file or folder"),
    ):
        code, _, err = finetune(
            capsys, "instruct", "word-tasks", "--base", str(spec), "--out", str(tmp_path / "r")
        )
        assert code == 2 and what in err and "a checkpoint file from sydsgpt train (.pt)" in err, (
            err
        )
        assert "GPT-2 folder" in err and "Hub name" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_lora_runs_with_the_same_seed_give_the_same_weights(
    base: Path, tmp_path: Path, capsys
) -> None:
    # the adapters' initial values come from the seed (they were made before anything was seeded)
    for name in ("a", "b"):
        code, _, err = finetune(
            capsys,
            "instruct",
            "word-tasks",
            "--base",
            str(base),
            "--out",
            str(tmp_path / name),
            "--lora-rank",
            "4",
            "--seed",
            "3",
            *FAST,
        )
        assert code == 0, err
    a, b = (load_checkpoint(tmp_path / name / "checkpoint.pt")["model"] for name in ("a", "b"))
    assert any("lora_A" in k for k in a) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["instruct", "--lr", "-1"], "--lr"),
        (["instruct", "--lora-rank", "0"], "--lora-rank"),
        (["instruct", "--val-fraction", "1.5"], "--val-fraction"),
        (["instruct", "--resume", "--out", "nowhere-dir"], "there is no nowhere-dir"),
        (["classify", "--device", "cuda:7"], "cuda"),
    ],
)
def test_bad_options_are_one_line_errors(capsys, args: list[str], match: str) -> None:
    code, _, err = finetune(capsys, *args)
    assert code == 2 and match in err and err.count("\n") == 1, err


def test_an_unknown_task_is_refused(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "translate"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_random_weight_gpt2_finetunes_with_the_same_code(tmp_path: Path, capsys) -> None:
    # The path readers take with GPT-2 124M/355M, on a tiny GPT-2 that transformers builds offline.
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=128)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    out = tmp_path / "run"
    code, _, err = finetune(
        capsys, "instruct", "word-tasks", "--base", str(tmp_path / "gpt2"), "--out", str(out), *FAST
    )
    assert code == 0, err
    model, tokenizer = load_model_and_tokenizer(out / "checkpoint.pt")
    assert (
        tokenizer.name == "gpt2"
        and tokenizer.eot_token == 50256
        and model.config.vocab_size == 50257
    )
    assert not (out / "tokenizer.json").exists()  # GPT-2's own tokenizer: nothing to save


def _texts(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "texts.tsv"
    path.write_text("".join(line + "\n" for line in lines))
    return path


SPAMMY = [f"spam\tWIN a free prize {i} now, call today" for i in range(20)]
HAMMY = [
    f"ham\tsee you at the {w} tonight, love" for w in ("king", "queen", "lord", "hand", "night") * 4
]


def test_classify_end_to_end_and_with_lora(base: Path, tmp_path: Path, capsys) -> None:
    data = _texts(tmp_path, SPAMMY + HAMMY)
    for extra, out in (([], tmp_path / "plain"), (["--lora-rank", "2"], tmp_path / "lora")):
        code, stdout, err = finetune(
            capsys,
            "classify",
            str(data),
            "--base",
            str(base),
            "--out",
            str(out),
            "--batch-size",
            "4",
            "--max-steps",
            "3",
            "--eval-interval",
            "3",
            "--device",
            "cpu",
            "--quiet",
            *extra,
        )
        assert code == 0, err
        assert stdout.startswith("test accuracy ") and "trainable parameters" in err
        for name in ("checkpoint.pt", "log.jsonl", "loss.png", "classifier.json", "tokenizer.json"):
            assert (out / name).is_file(), name
    assert (tmp_path / "lora" / "adapter.safetensors").is_file()
    assert json.loads((tmp_path / "lora" / "classifier.json").read_text())["trainable"] == "lora"


@pytest.mark.parametrize(
    ("lines", "extra", "match"),
    [
        (SPAMMY + HAMMY + ["eggs\tgreen eggs"], ["--labels", "ham,spam"], "eggs"),
        (SPAMMY + HAMMY + ["ham\t   "], [], "empty"),
        (SPAMMY + HAMMY + ["ham without a tab"], [], "TAB"),
    ],
)
def test_bad_text_files_are_one_line_errors(
    base: Path, tmp_path: Path, capsys, lines: list[str], extra: list[str], match: str
) -> None:
    code, _, err = finetune(
        capsys,
        "classify",
        str(_texts(tmp_path, lines)),
        "--base",
        str(base),
        "--out",
        str(tmp_path / "r"),
        "--device",
        "cpu",
        *extra,
    )
    assert (
        code == 2
        and err.startswith("sydsgpt finetune: error:")
        and match in err
        and err.count("\n") == 1
    ), err


def test_a_gguf_model_is_a_base_too(tmp_path: Path, capsys) -> None:
    """``--base`` takes what ``sydsgpt.models`` names: a Llama-architecture GGUF file here (the
    tiny one the chat tests write), finetuned into a classifier through the same code."""
    from gguf_files import tiny_chat_gguf

    from sydsgpt.cli.finetune import check_base

    check_base("smollm2-135m-instruct")  # a name is accepted before anything is loaded
    gguf = tiny_chat_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "run"
    code, stdout, err = finetune(
        capsys,
        "classify",
        str(_texts(tmp_path, SPAMMY + HAMMY)),
        "--base",
        str(gguf),
        "--out",
        str(out),
        *("--batch-size", "4", "--max-steps", "2", "--eval-interval", "2"),
        *("--device", "cpu", "--quiet"),
    )
    assert code == 0, err
    assert stdout.startswith("test accuracy ") and (out / "checkpoint.pt").is_file()
    config = load_checkpoint(out / "checkpoint.pt")["config"]  # the GGUF model's, with a head
    assert config["norm"] == "rmsnorm" and config["positions"] == "rope"


def test_a_chat_model_finetunes_in_its_chat_format_and_chats_after(tmp_path: Path, capsys) -> None:
    """A GGUF chat model (the tiny one the chat tests write) is finetuned on conversations in
    its own template; the run's checkpoint keeps the template, so ``sydsgpt chat`` talks to it."""
    from gguf_files import tiny_chat_gguf

    from sydsgpt.instruct import chat_format

    out = tmp_path / "run"
    gguf = str(tiny_chat_gguf(tmp_path / "tiny.gguf"))
    code, stdout, err = finetune(
        capsys, "instruct", "word-tasks", "--base", gguf, "--out", str(out), *FAST
    )
    assert code == 0, err
    assert "in its chat format" in err and "example answer" in stdout
    model, tokenizer = load_model_and_tokenizer(out / "checkpoint.pt")
    assert chat_format(tokenizer) is not None and tokenizer.n_vocab <= model.config.vocab_size
    prompt = ["--prompt", "Write the last word.\\n\\nhello there", "--max-new-tokens", "3"]
    assert main(["chat", "--model", str(out / "checkpoint.pt"), *prompt, "--device", "cpu"]) == 0
    assert "not a chat model" not in capsys.readouterr().err


@pytest.mark.slow  # about a second: two short runs and a resumed one
def test_a_chat_model_with_lora_resumes_exactly_and_saves_the_adapter_alone(
    tmp_path: Path, capsys
) -> None:
    from gguf_files import tiny_chat_gguf
    from safetensors.torch import load_file

    gguf = str(tiny_chat_gguf(tmp_path / "tiny.gguf"))
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    lora = ["--base", gguf, "--lora-rank", "2", *FAST]
    assert finetune(capsys, "instruct", "word-tasks", "--out", str(whole), *lora)[0] == 0
    stop = ["--stop-after", "2"]
    assert finetune(capsys, "instruct", "word-tasks", "--out", str(parts), *stop, *lora)[0] == 0
    assert load_checkpoint(parts / "checkpoint.pt")["step"] == 2
    assert (
        finetune(capsys, "instruct", "word-tasks", "--out", str(parts), "--resume", *lora)[0] == 0
    )
    a, b = load_file(whole / "adapter.safetensors"), load_file(parts / "adapter.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the chat model has its end token: only the LoRA matrices are trained and saved
    assert a and all("lora_" in name for name in a), list(a)
    # the run's checkpoint loads as a plain model with B A merged into W, and chats
    from sydsgpt.lora import lora_layers, read_adapter

    model, _ = load_model_and_tokenizer(whole / "checkpoint.pt")
    assert not lora_layers(model)
    state = load_checkpoint(whole / "checkpoint.pt")["model"]
    name = next(k for k in a if k.endswith(".lora_A")).removesuffix(".lora_A")
    settings = read_adapter(whole / "adapter.safetensors")[1]["lora"]
    scaling = settings["alpha"] / settings["rank"]
    merged = state[f"{name}.base.weight"] + scaling * a[f"{name}.lora_B"] @ a[f"{name}.lora_A"]
    torch.testing.assert_close(model.get_parameter(f"{name}.weight"), merged)
    prompt = ["--prompt", "Write the last word.\\n\\nhello there", "--max-new-tokens", "3"]
    assert main(["chat", "--model", str(whole / "checkpoint.pt"), *prompt, "--device", "cpu"]) == 0
    (tmp_path / "moved").mkdir()
    for name in ("checkpoint.pt", "tokenizer.json"):  # the adapter file stays behind
        (whole / name).rename(tmp_path / "moved" / name)
    with pytest.raises(CheckpointError, match="adapter.safetensors"):
        load_model_and_tokenizer(tmp_path / "moved" / "checkpoint.pt")
