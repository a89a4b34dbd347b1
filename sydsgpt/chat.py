"""Chat templates: a conversation -> the text and token ids a chat model was trained on.

SmolLM2 (and Qwen, and many others) use **ChatML**: every message is

    <|im_start|>{role}\\n{content}<|im_end|>\\n

and the model's turn begins with ``<|im_start|>assistant\\n`` (the *generation prompt*); it
ends its answer with ``<|im_end|>``, where generation must stop.

``<|im_start|>`` and ``<|im_end|>`` are single *control tokens*. Only the template inserts
them: what a user types is always encoded as plain text, so a message containing the
characters ``<|im_start|>system`` cannot forge a system turn (:func:`encode_chat` encodes
each role and content with ``encode_ordinary``, never looking for special tokens in them).

:class:`ChatSession` keeps a conversation and streams the model's replies (``sydsgpt chat``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch

# _text_pieces: generate.py's incremental decoding (held-back partial characters), which
# stream_text offers only for a text prompt; a chat prompt is ids.
from .generate import GenerationConfig, _text_pieces, end_of_text_id, stream

Message = Mapping[str, str]
"""``{"role": "system" | "user" | "assistant", "content": "..."}``"""


@dataclass(frozen=True)
class ChatTemplate:
    """A ChatML template: the two control tokens and the system prompt used when none is given."""

    start: str = "<|im_start|>"
    end: str = "<|im_end|>"
    default_system: str | None = None
    """Inserted as the first message when the conversation does not begin with a system one."""

    @classmethod
    def from_jinja(cls, template: str | None) -> "ChatTemplate":
        """Recognise a ChatML Jinja template (a GGUF's ``tokenizer.chat_template``) and its
        default system prompt; raise ``ValueError`` for any other template."""
        if not template or "<|im_start|>" not in template or "<|im_end|>" not in template:
            raise ValueError(
                "only ChatML chat templates (<|im_start|>role ... <|im_end|>) are "
                f"supported; this model's template is {str(template)[:80]!r}"
            )
        # The newline after the role is a real one or a Jinja escape "\n".
        default = re.search(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", template, re.S)
        return cls(default_system=default.group(1) if default else None)

    def messages(self, messages: Sequence[Message]) -> list[Message]:
        """The conversation checked, with the default system prompt in front if it applies."""
        for n, m in enumerate(messages):
            if (
                not isinstance(m, Mapping)
                or not isinstance(m.get("role"), str)
                or not isinstance(m.get("content"), str)
            ):
                raise ValueError(
                    f"message {n} must be a dict with string 'role' and 'content', got {m!r}"
                )
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            return [{"role": "system", "content": self.default_system}, *messages]
        return list(messages)

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The conversation as text (to read; the model gets :func:`encode_chat`'s ids)."""
        text = "".join(
            f"{self.start}{m['role']}\n{m['content']}{self.end}\n" for m in self.messages(messages)
        )
        return text + (f"{self.start}assistant\n" if add_generation_prompt else "")


def encode_chat(
    tokenizer: Any,
    messages: Sequence[Message],
    template: ChatTemplate | None = None,
    add_generation_prompt: bool = True,
) -> list[int]:
    """The token ids of a conversation: control tokens from the template, the rest plain text.

    Args:
        tokenizer: a tokenizer with ``special_tokens`` (text -> id) and ``encode_ordinary``,
            such as the :class:`~sydsgpt.gguf_tokenizer.GGUFTokenizer` of a chat model.
        template: default ``ChatTemplate.from_jinja(tokenizer.chat_template)``.

    Returns:
        Ids equal to encoding :meth:`ChatTemplate.render`'s text with its control tokens
        allowed, except that control-token text inside a role or a content stays plain text.
    """
    template = template or ChatTemplate.from_jinja(getattr(tokenizer, "chat_template", None))
    start, end = tokenizer.special_tokens[template.start], tokenizer.special_tokens[template.end]
    ids: list[int] = []
    newline = tokenizer.encode_ordinary("\n")
    for m in template.messages(messages):
        ids += [start, *tokenizer.encode_ordinary(f"{m['role']}\n{m['content']}"), end, *newline]
    if add_generation_prompt:
        ids += [start, *tokenizer.encode_ordinary("assistant\n")]
    return ids


def end_of_turn_ids(tokenizer: Any, template: ChatTemplate | None = None) -> set[int]:
    """The ids that end the model's turn: the template's end token and the tokenizer's
    end-of-sequence id (for SmolLM2 both are ``<|im_end|>``, id 2)."""
    template = template or ChatTemplate.from_jinja(getattr(tokenizer, "chat_template", None))
    ids = {tokenizer.special_tokens[template.end]}
    eos = getattr(tokenizer, "eos_id", None)
    return ids | ({eos} if isinstance(eos, int) else set())


class ChatSession:
    """A conversation with a model: the messages so far, and one streamed reply per turn.

    With a chat model (its tokenizer has a ``chat_template``) every turn is the whole
    conversation through the template, and the reply ends at the end-of-turn token. A model
    without one (the book checkpoint) just continues each prompt on its own, stopping at
    its end-of-text token: :attr:`is_chat` says which.

    Args:
        system: the system message (chat models only); default: the template's own.
        config: generation options (:class:`~sydsgpt.generate.GenerationConfig`).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        system: str | None = None,
        config: Any = None,
        max_new_tokens: int = 256,
    ) -> None:
        chat_template = getattr(tokenizer, "chat_template", None)
        self.template = ChatTemplate.from_jinja(chat_template) if chat_template else None
        if system is not None and self.template is None:
            raise ValueError(
                "this model has no chat template, so it cannot take a system message; "
                "it continues the text it is given (leave the system message out)"
            )
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.config = GenerationConfig.from_options(config)
        self.messages: list[Message] = []
        if system is not None:
            self.messages.append({"role": "system", "content": system})

    @property
    def is_chat(self) -> bool:
        return self.template is not None

    def _prompt(self, text: str) -> tuple[list[int], int | None]:
        """The prompt ids for the next reply (the oldest turns dropped when they do not
        fit the context) and the id that ends the reply."""
        if not self.is_chat:
            ids = self.tokenizer.encode_ordinary(text)[-self.model.config.context_length :]
            return ids, end_of_text_id(self.tokenizer)
        room = self.model.config.context_length - self.max_new_tokens
        history = self.messages + [{"role": "user", "content": text}]
        keep = 1 if history[0]["role"] == "system" else 0
        ids = encode_chat(self.tokenizer, history, self.template)
        while len(ids) > room and len(history) > keep + 1:
            history = history[:keep] + history[keep + 2 :]  # drop the oldest question and answer
            ids = encode_chat(self.tokenizer, history, self.template)
        if len(ids) > room:
            raise ValueError(
                f"the message is too long: the prompt has {len(ids)} tokens, and with "
                f"{self.max_new_tokens} new ones the model's context holds {room}"
            )
        return ids, self.tokenizer.special_tokens[self.template.end]

    def reply(self, text: str) -> Iterator[str]:
        """Stream the model's answer to ``text`` as pieces of text.

        The turn is recorded when the answer ends, also when it is stopped early (a
        ``KeyboardInterrupt`` or closing the iterator): what was said so far is kept.
        """
        ids, end = self._prompt(text)
        prompt = torch.tensor([ids])  # (1, T)
        steps = stream(self.model, prompt, self.max_new_tokens, self.config, eos_id=end)
        said: list[str] = []
        try:
            for piece in _text_pieces(steps, self.tokenizer, (), end):
                said.append(piece)
                yield piece
        finally:
            if self.is_chat:
                self.messages += [
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": "".join(said)},
                ]
