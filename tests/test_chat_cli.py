"""``sydsgpt chat`` and the ChatSession behind it: turns, history, stopping, plain models."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch

from gguf_files import tiny_chat_gguf
from sydsgpt.chat import ChatSession
from sydsgpt.cli import main
from sydsgpt.cli.chat import _answer, load_chat_model

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_chat_gguf(tmp_path_factory.mktemp("chat") / "tiny-chat.gguf")


def test_one_shot_prompt(tiny_chat_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["chat", "--model", str(tiny_chat_model), "--prompt", "hello", "--max-new-tokens", "6"]
    assert main(argv) == 0
    first = capsys.readouterr()
    assert first.out.endswith("\n") and "not a chat model" not in first.err
    assert main(argv) == 0 and capsys.readouterr().out == first.out  # greedy: the same answer


def test_interactive_session_keeps_the_conversation(
    tiny_chat_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = iter(["hello", "", "how are you?"])

    def typed(prompt: str = "") -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr(builtins, "input", typed)
    seen: list[ChatSession] = []
    original = ChatSession.__init__

    def remember(self: ChatSession, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        seen.append(self)

    monkeypatch.setattr(ChatSession, "__init__", remember)
    argv = [
        "chat",
        "--model",
        str(tiny_chat_model),
        "--system",
        "Be brief.",
        "--max-new-tokens",
        "4",
    ]
    assert main(argv) == 0
    (session,) = seen
    roles = [m["role"] for m in session.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]  # the empty line skipped
    assert session.messages[0]["content"] == "Be brief."
    assert session.messages[3]["content"] == "how are you?"


def test_ctrl_c_stops_the_answer_and_keeps_what_was_said(tiny_chat_model: Path) -> None:
    model, tokenizer = load_chat_model(str(tiny_chat_model), "cpu")
    session = ChatSession(model, tokenizer, max_new_tokens=8)
    calls = {"n": 0}
    forward = model.forward

    def interrupted(*args: object, **kwargs: object) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return forward(*args, **kwargs)

    model.forward = interrupted  # type: ignore[method-assign]

    class Out:
        text = ""

        def write(self, s: str) -> None:
            Out.text += s

        def flush(self) -> None:
            pass

    _answer(session, "hello", Out())  # type: ignore[arg-type]
    assert Out.text.endswith(" [stopped]\n")
    assert session.messages[-1]["role"] == "assistant"
    assert Out.text.startswith(session.messages[-1]["content"])


def test_old_turns_are_dropped_when_the_context_is_full(tiny_chat_model: Path) -> None:
    model, tokenizer = load_chat_model(str(tiny_chat_model), "cpu")
    session = ChatSession(model, tokenizer, system="Be brief.", max_new_tokens=60)
    long = "how are you? " * 6
    turn = [{"role": "user", "content": long}, {"role": "assistant", "content": long}]
    session.messages += turn * 3
    ids, end = session._prompt("hello")
    assert len(ids) <= model.config.context_length - 60
    assert end == tokenizer.special_tokens["<|im_end|>"]
    assert tokenizer.decode(ids).startswith("<|im_start|>system\nBe brief.<|im_end|>")
    with pytest.raises(ValueError, match="the message is too long"):
        session._prompt("hello " * 200)


def test_the_book_checkpoint_continues_text(capsys: pytest.CaptureFixture[str]) -> None:
    book = ["chat", "--model", "book-checkpoint"]
    assert main([*book, "--prompt", "ROMEO:", "--max-new-tokens", "8"]) == 0
    captured = capsys.readouterr()
    assert "not a chat model" in captured.err and captured.out.strip()
    assert main([*book, "--system", "x", "--prompt", "ROMEO:"]) == 2  # bad usage
    err = capsys.readouterr().err
    assert "no chat template" in err and err.count("\n") == 1


def test_unknown_model_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--model", "no-such-model", "--prompt", "hi"]) == 2
    assert "'no-such-model' is not a model: give smollm2-135m-instruct" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_names_paris(capsys: pytest.CaptureFixture[str]) -> None:
    from gguf_files import smollm2_path

    smollm2_path()
    question = "What is the capital of France?"
    assert main(["chat", "--prompt", question, "--max-new-tokens", "30"]) == 0
    assert "Paris" in capsys.readouterr().out
