"""Chapter 6: decoding.

Turning next-token logits into text, one token at a time.

* How each token is chosen (temperature, top-k, top-p, penalties) is
  :mod:`sydsgpt.sampling`; :class:`GenerationConfig` holds those options.
* The decoding loop: :func:`stream` yields each new token as soon as it is chosen,
  :func:`generate` returns all of them, :func:`stream_text` / :func:`generate_text`
  work on strings (stop strings, end-of-text).
* The KV cache (``use_cache=True``): the prompt goes through the model once (prefill),
  then each step feeds only the newest token. The tokens are the same as without the
  cache, for every strategy, also past the context length (see :func:`next_token_logits`).

Shapes: ``B`` batch, ``T`` tokens, ``V`` vocabulary.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .attention import KVCache
from .config import SydsGPTConfig
from .sampling import select_next_token
from .tokenizer import text_to_token_ids
from .validation import (
    check_bool,
    check_input_ids,
    check_int,
    check_keys,
    check_ngram_size,
    check_positive_int,
    check_repetition_penalty,
    check_temperature,
    check_top_k,
    check_top_p,
    field_names,
)


# --------------------------------------------------------------------------- configuration


class IgnoredOptionWarning(UserWarning):
    """A generation option is set but changes nothing (top-k at temperature 0)."""


@dataclass(frozen=True)
class GenerationConfig:
    """How each next token is chosen. Every option is off by default (greedy decoding).

    Attributes:
        temperature: 0 = greedy (argmax); > 0 samples from ``softmax(logits / T)``.
        top_k: sample only among the ``k`` most likely tokens (``None`` = off).
        top_p: sample only from the nucleus of probability mass ``p`` (``None`` = off).
        repetition_penalty: CTRL penalty on tokens already seen (1 = off).
        no_repeat_ngram_size: never repeat an n-gram of this size (0 = off).
        eos_id: stop a sequence when it produces this token (kept in the output).
        seed: seeds a private :class:`torch.Generator`: same seed, same tokens.
        use_cache: keep keys/values between steps (KV cache); same tokens, faster.
        preallocate: the KV cache fills fixed buffers instead of concatenating.
        context_length: crop the model's input to the last ``context_length`` tokens
            (default and maximum: the model's ``context_length``).
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    eos_id: int | None = None
    seed: int | None = None
    use_cache: bool = True
    preallocate: bool = True
    context_length: int | None = None

    def __post_init__(self) -> None:
        check_temperature(self.temperature)
        if self.top_k is not None:
            check_top_k(self.top_k)
        if self.top_p is not None:
            check_top_p(self.top_p)
        check_repetition_penalty(self.repetition_penalty)
        check_ngram_size(self.no_repeat_ngram_size)
        check_positive_int(self.context_length, "context_length", allow_none=True)
        check_int(self.seed, "seed", allow_none=True)
        check_int(self.eos_id, "eos_id", minimum=0, allow_none=True)
        for name in ("use_cache", "preallocate"):
            check_bool(getattr(self, name), name)
        ignored = self.ignored_options()
        if ignored:
            warnings.warn(self.ignored_message(ignored), IgnoredOptionWarning, stacklevel=3)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def ignored_options(self) -> list[str]:
        """The options set here that change nothing: at temperature 0 (greedy) the sampling
        options ``top_k``, ``top_p`` and ``seed``."""
        if not self.greedy:
            return []
        return [name for name in ("top_k", "top_p", "seed") if getattr(self, name) is not None]

    @staticmethod
    def ignored_message(names: Sequence[str], flags: Sequence[str] | None = None) -> str:
        """Why ``names`` (spelled ``flags`` when given, e.g. ``--top-k``) do nothing; the fix."""
        shown = ", ".join(flags or names)
        temperature = "--temperature" if flags else "temperature"
        verb = "has" if len(names) == 1 else "have"
        return (
            f"{shown} {verb} no effect at temperature 0, which is greedy "
            f"decoding (always the most likely token); to sample, set {temperature} above 0 "
            f"(e.g. 0.8), or leave {shown} out"
        )

    @classmethod
    def from_options(
        cls, config: "GenerationConfig | Mapping[str, Any] | None" = None, **options: Any
    ) -> "GenerationConfig":
        """``config`` (or the defaults) with ``options`` overriding it; unknown names are an error.

        ``context_len`` (this option's name before it became ``context_length``) still works.
        """
        base = dict(config) if isinstance(config, Mapping) else {}
        for given in (base, options):
            if "context_len" in given:
                given["context_length"] = given.pop("context_len")
        check_keys({*base, *options}, field_names(cls), "generation option", error=TypeError)
        start = config if isinstance(config, GenerationConfig) else cls(**base)
        return replace(start, **options)


def next_token_logits(
    model: nn.Module, ids: torch.Tensor, context_length: int, kv_cache: list[KVCache] | None = None
) -> torch.Tensor:
    """Logits for the token after ``ids``, seeing only the last ``context_length`` tokens.

    Without a cache the whole window goes through the model every step. With one, only
    the tokens the cache has not seen yet do. The model has *absolute* position
    embeddings: once ``ids`` is longer than the window, every token of the window moves
    to a new position each step, so the cached keys/values are stale and the cropped
    window is fed again from an empty cache (a fresh prefill). That keeps the tokens
    identical to the uncached path.

    Args:
        ids: ``(B, T)`` every token so far.
        kv_cache: from ``model.make_kv_cache()``; updated in place.

    Returns:
        ``(B, V)`` logits (only the last position goes through the output head).
    """
    if kv_cache is None:
        new = ids[:, -context_length:]
    else:
        cached = kv_cache[0].length
        if cached == 0 or ids.shape[1] > context_length:  # first step, or the window slid
            for layer_cache in kv_cache:
                layer_cache.reset()
            new = ids[:, -context_length:]
        else:
            new = ids[:, cached:]
    return model(new, kv_cache=kv_cache, last_only=True)[:, -1, :]


# --------------------------------------------------------------------------- the loop


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _context_length(model: nn.Module, config: GenerationConfig) -> int:
    model_ctx = getattr(getattr(model, "config", None), "context_length", None)
    if config.context_length is None:
        if model_ctx is None:
            raise ValueError(
                "the model has no config.context_length; pass context_length=<the model's context "
                "length>"
            )
        return model_ctx
    if model_ctx is not None and config.context_length > model_ctx:
        raise ValueError(
            f"context_length={config.context_length} is longer than the model's "
            f"context_length={model_ctx}; use at most {model_ctx} (or leave it out)."
        )
    return config.context_length


def _check_prompt(input_ids: torch.Tensor, context_length: int, max_new_tokens: int) -> None:
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 1
    ):
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    check_input_ids(input_ids)
    if input_ids.shape[1] > context_length:
        raise ValueError(
            f"the prompt has {input_ids.shape[1]} tokens, more than the context of "
            f"{context_length}; crop it to its last {context_length} tokens first: input_ids[:, "
            f"-{context_length}:]"
        )


def stream(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    config: GenerationConfig | Mapping[str, Any] | None = None,
    *,
    generator: torch.Generator | None = None,
    **options: Any,
) -> Iterator[torch.Tensor]:
    """Yield the new tokens one step at a time, as soon as each is chosen.

    Arguments are checked at the call (not at the first ``next``). The model runs in
    eval mode (no dropout) under ``torch.no_grad``; its mode is restored afterwards.

    Args:
        model: a :class:`~sydsgpt.model.SydsGPT` (or any model with the same forward).
        input_ids: ``(B, T)`` prompt ids, ``1 <= T <= context_length``.
        max_new_tokens: the most steps (fewer when every sequence reached ``eos_id``).
        config: a :class:`GenerationConfig` (or dict); ``options`` override its fields,
            e.g. ``temperature=0.8, top_k=50, seed=0``.
        generator: the random source for sampling; by default one seeded with
            ``seed``, or torch's global generator when there is no seed.

    Yields:
        ``(B, 1)`` int64 token ids. A sequence that already produced ``eos_id`` keeps
        getting ``eos_id`` until all are done.
    """
    cfg = GenerationConfig.from_options(config, **options)
    context_length = _context_length(model, cfg)
    _check_prompt(input_ids, context_length, max_new_tokens)
    device = _model_device(model)
    if generator is None and cfg.seed is not None and not cfg.greedy:
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
    return _steps(model, input_ids.to(device), max_new_tokens, cfg, context_length, generator)


@torch.no_grad()
def _steps(
    model: nn.Module,
    ids: torch.Tensor,
    max_new_tokens: int,
    cfg: GenerationConfig,
    context_length: int,
    generator: torch.Generator | None,
) -> Iterator[torch.Tensor]:
    was_training = model.training
    model.eval()
    try:
        cache = model.make_kv_cache(cfg.preallocate) if cfg.use_cache else None
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            logits = next_token_logits(model, ids, context_length, cache)  # (B, V)
            next_id = select_next_token(logits, ids, cfg, generator)  # (B, 1)
            if cfg.eos_id is not None:
                next_id = next_id.masked_fill(done[:, None], cfg.eos_id)
                done |= next_id[:, 0] == cfg.eos_id
            ids = torch.cat([ids, next_id], dim=1)
            yield next_id
            if cfg.eos_id is not None and bool(done.all()):
                return
    finally:
        model.train(was_training)


def generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    config: GenerationConfig | Mapping[str, Any] | None = None,
    *,
    generator: torch.Generator | None = None,
    **options: Any,
) -> torch.Tensor:
    """Generate up to ``max_new_tokens`` tokens after ``input_ids``.

    With the defaults this is greedy decoding, the same tokens as
    :func:`sydsgpt.model.generate_simple`. Options: see :class:`GenerationConfig`.

    Args:
        input_ids: ``(B, T)`` prompt ids.

    Returns:
        ``(B, T + N)`` ids: the prompt followed by the ``N <= max_new_tokens`` new tokens.
    """
    steps = stream(model, input_ids, max_new_tokens, config, generator=generator, **options)
    return torch.cat([input_ids.to(_model_device(model)), *steps], dim=1)


# --------------------------------------------------------------------------- text


def end_of_text_id(tokenizer: Any) -> int | None:
    """The tokenizer's end-of-text token id (``eot_token``), or ``None`` if it has none."""
    eot = getattr(tokenizer, "eot_token", None)
    return eot if isinstance(eot, int) else None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of ``text`` must wait: an incomplete character
    (decoded as U+FFFD) or the beginning of a stop string."""
    hold = len(text) - len(text.rstrip("\ufffd"))
    for s in stops:
        for size in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:size]):
                hold = max(hold, size)
                break
    return hold


def stream_text(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int = 50,
    config: GenerationConfig | Mapping[str, Any] | None = None,
    *,
    stop: str | Iterable[str] = (),
    stop_at_eos: bool = True,
    **options: Any,
) -> Iterator[str]:
    """Yield the continuation of ``prompt`` as text, piece by piece, as it is generated.

    Generation ends after ``max_new_tokens`` tokens, at the tokenizer's end-of-text token
    (when ``stop_at_eos``; not part of the text), or when the new text contains one of
    the ``stop`` strings: the text up to (not including) it is the last piece. Text that
    could be the start of a stop string, or half of a multi-byte character, is held
    back until it is settled, so the pieces always join to the final text.

    Args:
        tokenizer: tiktoken's GPT-2 encoding or a :class:`~sydsgpt.bpe.BPETokenizer`.
            Special tokens written in the prompt (``<|endoftext|>``) become their ids.
        options: generation options (:class:`GenerationConfig`); ``seed`` makes sampling
            repeatable (for a generator of your own, use :func:`stream` on token ids).
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(
            "the prompt is empty: give some text to continue (e.g. 'Once upon a time')."
        )
    stops = [stop] if isinstance(stop, str) else list(stop)
    if any(not isinstance(s, str) or not s for s in stops):
        raise ValueError(f"stop strings must be non-empty strings, got {stops!r}")
    cfg = GenerationConfig.from_options(config, **options)
    if stop_at_eos and cfg.eos_id is None:
        cfg = replace(cfg, eos_id=end_of_text_id(tokenizer))
    input_ids = text_to_token_ids(prompt, tokenizer)  # (1, T)
    steps = stream(model, input_ids, max_new_tokens, cfg)
    return _text_pieces(steps, tokenizer, stops, cfg.eos_id)


def _text_pieces(
    steps: Iterator[torch.Tensor], tokenizer: Any, stops: Sequence[str], eos_id: int | None
) -> Iterator[str]:
    new_ids: list[int] = []
    sent = 0  # characters already yielded
    text = ""
    for step in steps:
        token = int(step[0, 0])
        if token == eos_id:
            break
        new_ids.append(token)
        text = tokenizer.decode(new_ids)
        cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
        if cuts:
            if min(cuts) > sent:
                yield text[sent : min(cuts)]
            steps.close()
            return
        ready = len(text) - _held_back(text, stops)
        if ready > sent:
            yield text[sent:ready]
            sent = ready
    if len(text) > sent:
        yield text[sent:]


def generate_text(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int = 50,
    config: GenerationConfig | Mapping[str, Any] | None = None,
    **options: Any,
) -> str:
    """The continuation of ``prompt`` (without the prompt); see :func:`stream_text`.

    Example::

        generate_text(model, get_gpt2_tokenizer(), "Every effort moves you", 40,
                      temperature=0.8, top_k=50, seed=123, stop=["\\n\\n"])
    """
    return "".join(stream_text(model, tokenizer, prompt, max_new_tokens, config, **options))


def kv_cache_bytes(
    config: Mapping[str, Any] | SydsGPTConfig,
    num_tokens: int | None = None,
    batch_size: int = 1,
    bytes_per_value: int = 4,
) -> int:
    """Memory of a full KV cache: ``2 * layers * tokens * kv_heads * head_dim * batch * bytes``.

    Each layer keeps one key and one value vector per token for each *key/value* head:
    ``embedding_dim`` numbers for GPT-2's multi-head attention, ``num_heads / num_kv_heads``
    times fewer with grouped-query attention (chapter 7), ``head_dim`` with multi-query
    attention. ``num_tokens`` defaults to the context length (``num_tokens=1``: bytes
    per token); 4 bytes = float32, 2 = bfloat16.
    """
    c = SydsGPTConfig.from_dict(config)
    tokens = c.context_length if num_tokens is None else num_tokens
    return 2 * c.num_layers * tokens * c.kv_heads * c.head_size * batch_size * bytes_per_value


# --------------------------------------------------------------------------- weight layout


def use_decoding_layout(model: nn.Module, enable: bool = True) -> nn.Module:
    """Store every linear layer's weight transposed in memory, for faster one-token steps.

    ``nn.Linear`` keeps its weight ``W`` as ``(out_features, in_features)`` rows and computes
    ``x @ W.T``. A decode step with the KV cache is one token, so each product is a
    matrix times a vector, limited by how fast the weights stream from memory. On the CPU
    we measured, the matrix library streams ``W.T`` faster when ``W.T`` is contiguous, that
    is, when ``W`` is stored column by column (the layout of GPT-2's original ``Conv1D``).
    This re-stores each linear weight that way, including the output head and the token
    embedding it shares a tensor with when the weights are tied.

    Shapes, names, ``state_dict`` values and results are unchanged; only the memory order
    moves (``W.stride()`` becomes ``(1, out_features)``). It survives ``.to(...)`` and
    ``load_state_dict``. Training also works in this layout, but a step is slower (the
    training benchmark's "defaults, decoding layout" row measures by how much), so it is
    off by default: call it on a model you are about to generate with, before building any
    optimizer (the parameters are new tensors).
    ``enable=False`` restores the usual row-major storage.

    Returns:
        ``model``, changed in place.
    """
    replaced: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in replaced:
            weight = module.weight.detach()
            data = weight.t().contiguous().t() if enable else weight.contiguous()
            replaced[id(module.weight)] = nn.Parameter(
                data, requires_grad=module.weight.requires_grad
            )
    for module in model.modules():  # every user of a replaced tensor (a tied embedding too)
        if isinstance(module, (nn.Linear, nn.Embedding)) and id(module.weight) in replaced:
            module.weight = replaced[id(module.weight)]
    return model
