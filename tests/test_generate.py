"""Chapter 6: the logits transforms, the decoding loop, the KV cache path, text and stop strings."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from helpers import peaked_model, tiny_config, tiny_model
from torch import nn

from sydsgpt.attention import KVCache
from sydsgpt.generate import (
    GenerationConfig,
    IgnoredOptionWarning,
    generate,
    generate_text,
    kv_cache_bytes,
    stream,
    stream_text,
    use_decoding_layout,
)
from sydsgpt.sampling import (
    apply_repetition_penalty,
    apply_temperature,
    block_repeated_ngrams,
    select_next_token,
    top_k_filter,
    top_p_filter,
)
from sydsgpt.model import SydsGPT, generate_simple
from sydsgpt.presets import get_preset
from sydsgpt.train import train_step

INF = float("inf")
CONTEXT = 12
GEN_TINY = {"vocab_size": 64, "embedding_dim": 32, "context_length": CONTEXT}
"""The decoding tests' model (tiny_config with a 64-id vocabulary, 32 features)."""


@pytest.fixture(scope="module")
def model() -> SydsGPT:
    """A tiny model with a short context and peaked next-token distributions (a scaled-up
    head), so that penalties and n-gram blocking change what greedy decoding picks."""
    return peaked_model(10, **GEN_TINY, dropout=0.1, qkv_bias=False)


@pytest.fixture(scope="module")
def prompt() -> torch.Tensor:
    return torch.tensor([[50, 8, 28, 56, 49], [43, 55, 58, 13, 50]])


# ---------------------------------------------------------------------------- logits transforms


def test_temperature_divides_logits_and_reshapes_the_distribution() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0])
    assert torch.equal(apply_temperature(logits, 0.5), torch.tensor([4.0, 2.0, 0.0]))
    top = [torch.softmax(apply_temperature(logits, t), -1)[0].item() for t in (0.5, 1.0, 2.0)]
    assert top[0] > top[1] > top[2] > 1 / 3  # colder = more mass on the top token
    assert top[1] == pytest.approx(math.exp(2) / (math.exp(2) + math.exp(1) + 1))


@pytest.mark.parametrize(
    "bad, match", [(-0.5, "temperature must be >= 0"), (0.0, "temperature 0 means greedy")]
)
def test_temperature_errors(bad: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        apply_temperature(torch.zeros(3), bad)


def test_top_k_keeps_exactly_k_lower_id_wins_ties() -> None:
    logits = torch.tensor([1.0, 3.0, 2.0, 3.0, 0.0])
    assert torch.equal(top_k_filter(logits, 2), torch.tensor([-INF, 3.0, -INF, 3.0, -INF]))
    assert torch.equal(top_k_filter(logits, 1), torch.tensor([-INF, 3.0, -INF, -INF, -INF]))
    assert torch.equal(top_k_filter(logits, 3), torch.tensor([-INF, 3.0, 2.0, 3.0, -INF]))
    assert torch.equal(top_k_filter(logits, 5), logits)
    batch = torch.stack([logits, -logits])  # rows are filtered independently
    assert torch.equal(top_k_filter(batch, 1)[1], torch.tensor([-INF, -INF, -INF, -INF, 0.0]))


@pytest.mark.parametrize("k", [0, -1, True, 1.5])
def test_top_k_errors(k: object) -> None:
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        top_k_filter(torch.zeros(4), k)  # type: ignore[arg-type]


def test_top_p_keeps_the_token_that_crosses_the_threshold() -> None:
    probs = torch.tensor(
        [0.15, 0.5, 0.05, 0.3]
    )  # sorted: 0.5 (id 1), 0.3 (id 3), 0.15 (id 0), 0.05 (id 2)
    logits = probs.log()
    kept = lambda p: (top_p_filter(logits, p) > -INF).nonzero().flatten().tolist()  # noqa: E731
    assert kept(0.45) == [1]
    assert kept(0.75) == [1, 3]  # 0.5 < 0.75, so id 3 is needed to reach it
    assert kept(0.81) == [0, 1, 3]
    assert kept(1.0) == [0, 1, 2, 3]
    out = top_p_filter(logits, 0.75)
    assert torch.equal(out[[1, 3]], logits[[1, 3]])  # survivors keep their logits
    batch = torch.stack([logits, logits.flip(0)])
    assert torch.equal(
        top_p_filter(batch, 0.45) > -INF,
        torch.tensor([[0, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.bool),
    )


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5, float("nan")])
def test_top_p_errors(p: float) -> None:
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        top_p_filter(torch.zeros(4), p)


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0])
    out = apply_repetition_penalty(logits, [0, 1, 1], 2.0)  # repeats are penalised once
    assert torch.equal(out, torch.tensor([1.0, -2.0, 0.5, -3.0]))
    assert torch.equal(apply_repetition_penalty(logits, [0, 1], 1.0), logits)
    batch = apply_repetition_penalty(torch.stack([logits, logits]), torch.tensor([[0], [3]]), 2.0)
    assert torch.equal(batch, torch.tensor([[1.0, -1.0, 0.5, -3.0], [2.0, -1.0, 0.5, -6.0]]))
    with pytest.raises(ValueError, match="repetition_penalty must be > 0"):
        apply_repetition_penalty(logits, [0], 0.0)


@pytest.mark.parametrize(
    "ids, n, banned",
    [
        ([1, 2, 3, 1, 2], 3, [3]),  # "1 2" was followed by 3
        ([1, 2, 3, 1, 2], 2, [3]),  # "2" was followed by 3
        ([1, 2, 1, 3, 1], 2, [2, 3]),  # "1" was followed by 2 and by 3
        ([5, 1, 3, 2, 1, 3], 3, [2]),  # "1 3" was followed by 2
        ([1, 2, 1, 3, 1], 3, []),  # "3 1" never occurred before
        ([4, 2, 4], 1, [2, 4]),  # unigrams: every seen token
        ([1, 2], 3, []),  # too short for a 3-gram
        ([1, 2, 1, 2], 0, []),  # off
    ],
)
def test_block_repeated_ngrams(ids: list[int], n: int, banned: list[int]) -> None:
    out = block_repeated_ngrams(torch.zeros(6), ids, n)
    assert (out == -INF).nonzero().flatten().tolist() == banned


def test_block_repeated_ngrams_batch_rows_are_independent() -> None:
    out = block_repeated_ngrams(torch.zeros(2, 5), torch.tensor([[1, 2, 1], [3, 4, 3]]), 2)
    assert torch.equal(
        out == -INF, torch.tensor([[0, 0, 1, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    )
    with pytest.raises(ValueError, match="no_repeat_ngram_size must be an integer >= 0"):
        block_repeated_ngrams(torch.zeros(5), [1, 2], -1)


def test_select_next_token_penalties_apply_before_greedy() -> None:
    logits = torch.tensor([[3.0, 2.0, 0.0]])
    seen = torch.tensor([[0]])
    assert select_next_token(logits, seen, GenerationConfig()).tolist() == [[0]]
    assert select_next_token(logits, seen, GenerationConfig(repetition_penalty=2.0)).tolist() == [
        [1]
    ]
    assert select_next_token(
        logits, torch.tensor([[0, 0]]), GenerationConfig(no_repeat_ngram_size=2)
    ).tolist() == [[1]]
    # top-k 1 leaves a single candidate, so sampling must return it whatever the draw.
    picks = {
        select_next_token(logits, seen, GenerationConfig(temperature=5.0, top_k=1)).item()
        for _ in range(20)
    }
    assert picks == {0}
    with pytest.raises(RuntimeError, match="every token was filtered out"):
        select_next_token(
            logits, torch.tensor([[0, 1, 2]]), GenerationConfig(no_repeat_ngram_size=1)
        )


def test_sampling_follows_the_filtered_distribution() -> None:
    logits = torch.tensor([[1.0, 1.0, 1.0, -5.0]]).log_softmax(-1)
    cfg = GenerationConfig(temperature=1.0, top_p=0.6)  # keeps ids 0 and 1 (ties: lower ids first)
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat(
        [
            select_next_token(logits, torch.zeros(1, 0, dtype=torch.long), cfg, gen)
            for _ in range(400)
        ]
    )
    counts = torch.bincount(draws.flatten(), minlength=4).tolist()
    assert counts[2] == counts[3] == 0 and 150 < counts[0] < 250


# ---------------------------------------------------------------------------- options and errors


@pytest.mark.parametrize(
    "options, match",
    [
        ({"temperature": -0.1}, "temperature must be >= 0"),
        ({"top_k": 0}, "top_k must be an integer >= 1"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.01}, r"top_p must be in \(0, 1\]"),
        ({"repetition_penalty": -1.0}, "repetition_penalty must be > 0"),
        ({"no_repeat_ngram_size": -2}, "no_repeat_ngram_size must be an integer >= 0"),
        ({"context_length": 0}, "context_length must be a positive integer, got 0"),
    ],
)
def test_generation_config_errors(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GenerationConfig(**options)


def test_sampling_options_at_temperature_zero_warn() -> None:
    """top_k, top_p and seed only act when sampling: at temperature 0 they warn, once per config."""
    with pytest.warns(IgnoredOptionWarning) as caught:
        config = GenerationConfig(top_k=5)
    assert config.ignored_options() == ["top_k"] and len(caught) == 1
    assert str(caught[0].message) == (
        "top_k has no effect at temperature 0, which is greedy decoding (always the most likely "
        "token); to sample, set temperature above 0 (e.g. 0.8), or leave top_k out"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sampling, or nothing set: no warning
        assert GenerationConfig(temperature=0.7, top_k=5, top_p=0.9, seed=1).ignored_options() == []
        penalties = GenerationConfig(repetition_penalty=1.2, no_repeat_ngram_size=2)
        assert penalties.ignored_options() == []


def test_unknown_option_is_named() -> None:
    with pytest.raises(TypeError, match=r"unknown generation option\(s\) \['temprature'\]"):
        GenerationConfig.from_options(temprature=0.7)
    base = GenerationConfig(temperature=0.7, top_k=5)
    assert GenerationConfig.from_options(base, top_k=9) == GenerationConfig(
        temperature=0.7, top_k=9
    )
    assert GenerationConfig.from_options({"temperature": 1.0, "top_p": 0.9}).top_p == 0.9


@pytest.mark.parametrize(
    "ids, max_new, options, match",
    [
        (torch.zeros(1, 0, dtype=torch.long), 5, {}, "input_ids has no tokens"),
        (
            torch.zeros(1, CONTEXT + 1, dtype=torch.long),
            5,
            {},
            r"more than the context of 12; crop it",
        ),
        (
            torch.zeros(1, 6, dtype=torch.long),
            5,
            {"context_length": 4},
            r"more than the context of 4",
        ),
        (
            torch.zeros(1, 6, dtype=torch.long),
            5,
            {"context_len": 4},
            r"more than the context of 4",
        ),  # the old name
        (torch.zeros(1, 3, dtype=torch.long), 0, {}, "max_new_tokens must be a positive integer"),
        (torch.zeros(1, 3, dtype=torch.long), -2, {}, "max_new_tokens must be a positive integer"),
        (
            torch.zeros(3, dtype=torch.long),
            5,
            {},
            r"must have shape \(batch, tokens\), got shape \(3,\)",
        ),
        (
            torch.zeros(1, 3, dtype=torch.long),
            5,
            {"context_length": CONTEXT + 1},
            "longer than the model's context_length=12",
        ),
    ],
)
def test_generate_errors(
    model: SydsGPT, ids: torch.Tensor, max_new: int, options: dict, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        generate(model, ids, max_new, **options)
    with pytest.raises(ValueError, match=match):  # raised at the call, not at the first next()
        stream(model, ids, max_new, **options)


# ----------------------------------------------------------------------- decoding loop and KV cache


def test_greedy_equals_generate_simple_also_past_the_context(
    model: SydsGPT, prompt: torch.Tensor
) -> None:
    expected = generate_simple(model, prompt, 20, CONTEXT)  # 5 + 20 tokens > 12: the window slides
    for use_cache in (True, False):
        assert torch.equal(generate(model, prompt, 20, use_cache=use_cache), expected)
    assert torch.equal(
        generate(model, prompt, 10, context_len=8), generate_simple(model, prompt, 10, 8)
    )
    # temperature 0 is greedy: the sampling filters and the seed change nothing (and say so)
    ignored = "top_k, top_p, seed have no effect at temperature 0"
    with pytest.warns(IgnoredOptionWarning, match=ignored):
        out = generate(model, prompt, 20, temperature=0.0, top_k=3, top_p=0.5, seed=1)
    assert torch.equal(out, expected)


STRATEGIES = {
    "temperature": {"temperature": 1.0, "seed": 1},
    "top-k": {"temperature": 0.7, "top_k": 5, "seed": 2},
    "top-p": {"temperature": 1.2, "top_p": 0.6, "seed": 3},
    "repetition-penalty": {"repetition_penalty": 1.5},
    "no-repeat-ngram": {"no_repeat_ngram_size": 2},
    "everything": {
        "temperature": 0.9,
        "top_k": 20,
        "top_p": 0.9,
        "repetition_penalty": 1.3,
        "no_repeat_ngram_size": 3,
        "seed": 4,
    },
}


@pytest.mark.parametrize("name", STRATEGIES)
def test_cache_gives_the_same_tokens_for_every_strategy(
    model: SydsGPT, prompt: torch.Tensor, name: str
) -> None:
    options = STRATEGIES[name]
    uncached = generate(
        model, prompt, 25, use_cache=False, **options
    )  # runs 18 tokens past the context
    for preallocate in (True, False):
        assert torch.equal(
            generate(model, prompt, 25, use_cache=True, preallocate=preallocate, **options),
            uncached,
        )
    assert not torch.equal(uncached, generate(model, prompt, 25)), (
        f"{name} should change the greedy tokens"
    )


class _Recorder:
    """Wraps a model's forward to record what each step feeds it."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: list[tuple[int, int, bool]] = []  # (new tokens, cached before, last_only)
        self.model = model

    def __enter__(self) -> "_Recorder":
        original = self.model.forward

        def forward(input_ids, kv_cache=None, last_only=False):  # type: ignore[no-untyped-def]
            self.calls.append(
                (input_ids.shape[1], kv_cache[0].length if kv_cache else -1, last_only)
            )
            return original(input_ids, kv_cache=kv_cache, last_only=last_only)

        self.model.forward = forward  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.model.forward


def test_cache_feeds_one_token_per_step_then_reprefills_the_window(
    model: SydsGPT, prompt: torch.Tensor
) -> None:
    with _Recorder(model) as rec:
        generate(model, prompt, 10)  # 5 prompt tokens, window of 12
    # prefill 5; then 1 token per step up to 12 tokens in view; then the window slides:
    # every later step feeds the whole cropped window again into an emptied cache.
    expected = [(5, 0, True)] + [(1, n, True) for n in range(5, 12)] + [(12, 0, True)] * 2
    assert rec.calls == expected
    with _Recorder(model) as rec:
        generate(model, prompt, 3, use_cache=False)
    assert rec.calls == [(5, -1, True), (6, -1, True), (7, -1, True)]


def test_seed_reproducible_and_private(model: SydsGPT, prompt: torch.Tensor) -> None:
    opts = {"temperature": 1.0, "top_k": 10}
    state = torch.get_rng_state()
    a = generate(model, prompt, 15, seed=7, **opts)
    assert torch.equal(torch.get_rng_state(), state), "a seeded run must not consume the global RNG"
    assert torch.equal(generate(model, prompt, 15, seed=7, **opts), a)
    assert not torch.equal(generate(model, prompt, 15, seed=8, **opts), a)
    gen = torch.Generator().manual_seed(7)
    assert torch.equal(generate(model, prompt, 15, generator=gen, **opts), a)


def test_stream_yields_each_token_and_restores_train_mode(
    model: SydsGPT, prompt: torch.Tensor
) -> None:
    expected = generate(model, prompt, 6)
    model.train()
    try:
        steps = list(stream(model, prompt, 6))
        assert model.training, "the model's mode must be restored after generation"
    finally:
        model.eval()
    assert [tuple(s.shape) for s in steps] == [(2, 1)] * 6
    assert torch.equal(
        torch.cat([prompt, *steps], dim=1), expected
    )  # dropout was off while generating


def test_eos_stops_and_pads_finished_rows(model: SydsGPT, prompt: torch.Tensor) -> None:
    greedy = generate(model, prompt, 10)
    eos = int(greedy[0, 7])  # row 0's third new token
    first_eos = [(greedy[r, 5:] == eos).nonzero().flatten().tolist() for r in range(2)]
    out = generate(model, prompt, 10, eos_id=eos)
    if first_eos[1]:  # both rows finish: stop at the later one
        assert out.shape[1] == 5 + max(first_eos[0][0], first_eos[1][0]) + 1
    assert torch.equal(out[0, :8], greedy[0, :8])
    assert (out[0, 8:] == eos).all(), "a finished row is padded with eos_id"
    one = generate(model, prompt[:1], 10, eos_id=eos)
    assert torch.equal(one, greedy[:1, :8])  # stops right after producing eos (kept)


def test_kv_cache_bytes_formula_matches_the_buffers(model: SydsGPT, prompt: torch.Tensor) -> None:
    assert (
        kv_cache_bytes(get_preset("gpt2-small")) == 2 * 12 * 1024 * 768 * 4
    )  # 72 MiB per sequence
    assert (
        kv_cache_bytes(get_preset("gpt2-small"), 100, batch_size=2, bytes_per_value=2)
        == 2 * 12 * 100 * 768 * 2 * 2
    )
    cache = model.make_kv_cache(preallocate=True)
    with torch.no_grad():
        model(prompt, kv_cache=cache)
    allocated = sum(t.numel() * t.element_size() for c in cache for t in (c._k, c._v))
    assert allocated == kv_cache_bytes(model.config, batch_size=2)
    assert isinstance(cache[0], KVCache) and cache[0].length == 5


# ---------------------------------------------------------------------------- text and stop strings


class ByteTokenizer:
    """UTF-8 bytes as token ids 0..255, plus an end-of-text token 256."""

    name = "bytes"
    n_vocab = 257
    eot_token = 256

    def encode(self, text: str, allowed_special: object = "none_raise") -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return b"".join(b"<|endoftext|>" if i == 256 else bytes([i]) for i in ids).decode(
            "utf-8", errors="replace"
        )


class ScriptedModel(nn.Module):
    """Always predicts the next token of a fixed script (whatever the prompt)."""

    def __init__(self, script: list[int], prompt_len: int) -> None:
        super().__init__()
        self.script, self.prompt_len = script, prompt_len
        self.config = type("Config", (), {"context_length": 64})()
        self.anchor = nn.Parameter(torch.zeros(()))

    def make_kv_cache(self, preallocate: bool = True) -> list[KVCache]:
        return [KVCache(64, preallocate)]

    def forward(
        self,
        input_ids: torch.Tensor,
        kv_cache: list[KVCache] | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        seen = input_ids.shape[1] + (kv_cache[0].length if kv_cache else 0)
        if kv_cache:
            kv_cache[0].length += input_ids.shape[1]
        logits = torch.zeros(input_ids.shape[0], 1, ByteTokenizer.n_vocab)
        logits[:, :, self.script[seen - self.prompt_len]] = 1.0
        return logits


def scripted(text: str | list[int], prompt: str = "> ") -> ScriptedModel:
    ids = list(text.encode("utf-8")) if isinstance(text, str) else text
    return ScriptedModel(ids + [ord("~")] * 64, len(prompt.encode("utf-8")))


def test_stop_string_ends_generation_and_is_excluded() -> None:
    tok = ByteTokenizer()
    assert generate_text(scripted("Hello\n\nWorld"), tok, "> ", 30, stop=["\n\n"]) == "Hello"
    assert generate_text(scripted("Hello\n\nWorld"), tok, "> ", 30, stop="lo") == "Hel"
    assert generate_text(scripted("abc"), tok, "> ", 3, stop=["zz"]) == "abc"  # max_new_tokens
    assert (
        generate_text(scripted("Hello World"), tok, "> ", 30, stop=["W", "ll"]) == "He"
    )  # earliest wins


def test_stream_text_holds_back_possible_stop_starts_and_split_characters() -> None:
    tok = ByteTokenizer()
    assert list(stream_text(scripted("ab\nc\n\nd"), tok, "> ", 20, stop=["\n\n"])) == [
        "a",
        "b",
        "\nc",
    ]
    assert list(stream_text(scripted("é!"), tok, "> ", 3)) == [
        "é",
        "!",
    ]  # é is two bytes: nothing half-decoded
    assert list(stream_text(scripted("xyz"), tok, "> ", 3, stop=["yq"])) == ["x", "yz"]


def test_end_of_text_stops_unless_told_otherwise() -> None:
    tok = ByteTokenizer()
    script = list(b"hi") + [256] + list(b"there")
    assert generate_text(scripted(script), tok, "> ", 20) == "hi"
    assert (
        generate_text(scripted(script), tok, "> ", 8, stop_at_eos=False) == "hi<|endoftext|>there"
    )
    assert generate_text(scripted(list(b"hi") + [ord("!")]), tok, "> ", 20, eos_id=ord("!")) == "hi"


def test_generate_text_errors() -> None:
    tok = ByteTokenizer()
    with pytest.raises(ValueError, match="the prompt is empty"):
        generate_text(scripted("x"), tok, "", 5)
    with pytest.raises(ValueError, match="stop strings must be non-empty strings"):
        generate_text(scripted("x"), tok, "> ", 5, stop=[""])
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        generate_text(scripted("x"), tok, "> ", 5, temperature=-1.0)


def test_generate_text_matches_token_level_generate() -> None:
    """The text functions are the token functions plus encode/decode."""
    tok = ByteTokenizer()
    small = SydsGPT(
        tiny_config(
            vocab_size=257,
            context_length=16,
            num_layers=1,
            num_heads=2,
            dropout=0.1,
            qkv_bias=False,
        )
    ).eval()
    opts = {"temperature": 1.0, "top_k": 40, "seed": 3}
    ids = generate(small, torch.tensor([tok.encode("> ")]), 10, **opts)[0, 2:].tolist()
    ids = ids[: ids.index(256)] if 256 in ids else ids
    assert generate_text(small, tok, "> ", 10, **opts) == tok.decode(ids)


# ---------------------------------------------------------------------------- benchmark


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_generation_benchmark_rows(model: SydsGPT) -> None:
    from sydsgpt.bench.generation import run

    rows = run(new_tokens=[3], preset="tiny", prompt_tokens=4, model=model)
    assert [(r["new_tokens"], r["same_tokens"]) for r in rows] == [(3, True)]
    assert rows[0]["speedup"] == pytest.approx(rows[0]["uncached_s"] / rows[0]["cached_s"])
    assert (
        rows[0]["cached_peak_mib"] >= 0
        and rows[0]["kv_cache_mib"] == kv_cache_bytes(model.config) / 2**20
    )
    with pytest.raises(ValueError, match="exceed the context of 12"):
        run(new_tokens=[9], prompt_tokens=4, model=model)


@pytest.mark.slow
def test_generation_benchmark_matches_transformers() -> None:
    pytest.importorskip("transformers")
    from sydsgpt.bench.generation import compare_with_transformers

    tied = tiny_model(0, **{**GEN_TINY, "context_length": 16}, tie_weights=True)
    rows = compare_with_transformers(new_tokens=[8, 3], prompt_tokens=4, model=tied, repeats=3)
    assert [(r["new_tokens"], r["repeats"], r["same_tokens"]) for r in rows] == [
        (8, 3, True),
        (3, 3, True),
    ]
    for row in rows:
        for name in ("sydsgpt", "sydsgpt_decoding_layout", "transformers"):
            assert row[f"{name}_tok_s"] > 0 and row[f"{name}_peak_mib"] >= 0
        assert 0 < row["sydsgpt_vs_transformers"] and 0 < row["decoding_layout_vs_transformers"]
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        compare_with_transformers(new_tokens=[2], prompt_tokens=4, model=tied, repeats=0)


# ---------------------------------------------------------------------------- decoding layout


def _linear_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("tie", [True, False])
def test_decoding_layout_stores_linear_weights_column_major_and_changes_no_result(
    tie: bool,
) -> None:
    torch.manual_seed(0)
    config = tiny_config(**GEN_TINY, qkv_bias=True, tie_weights=tie)
    plain = SydsGPT(config).eval()
    fast = SydsGPT(config).eval()
    fast.load_state_dict(plain.state_dict())
    assert use_decoding_layout(fast) is fast
    for w in _linear_weights(fast):
        assert w.stride() == (1, w.shape[0]) and w.t().is_contiguous()
    assert all(w.is_contiguous() for w in _linear_weights(plain))
    assert (fast.output_projection.weight is fast.token_embedding.weight) == tie
    assert fast.token_embedding.weight.t().is_contiguous() == tie  # only a tied embedding moves
    # Same names, shapes and values; same logits; same generated tokens (with and without cache).
    ours, theirs = fast.state_dict(), plain.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    ids = torch.tensor([[5, 9, 1, 33, 2]])
    with torch.no_grad():
        assert torch.allclose(fast(ids), plain(ids), atol=1e-6)
    for use_cache in (True, False):
        assert torch.equal(
            generate(fast, ids, 20, use_cache=use_cache),
            generate(plain, ids, 20, use_cache=use_cache),
        )
    # The layout survives a dtype change and loading a checkpoint; enable=False undoes it.
    fast.double()
    fast.load_state_dict(plain.double().state_dict())
    assert all(w.t().is_contiguous() for w in _linear_weights(fast))
    use_decoding_layout(fast, enable=False)
    assert all(w.is_contiguous() for w in _linear_weights(fast))
    assert (fast.output_projection.weight is fast.token_embedding.weight) == tie


def test_a_model_in_decoding_layout_still_trains_like_the_plain_one() -> None:
    torch.manual_seed(0)
    config = tiny_config(**GEN_TINY, dropout=0.0, qkv_bias=False, tie_weights=True)
    plain = SydsGPT(config)
    fast = SydsGPT(config)
    fast.load_state_dict(plain.state_dict())
    use_decoding_layout(fast)
    ids = torch.randint(0, 64, (2, CONTEXT + 1), generator=torch.Generator().manual_seed(1))
    for model in (plain, fast):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(3):
            train_step(model, [(ids[:, :-1], ids[:, 1:])], optimizer)
    for (name, a), b in zip(plain.named_parameters(), fast.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
    assert fast.output_projection.weight is fast.token_embedding.weight


# ---------------------------------------------------------------------------- layering


def _package_imports(module: str) -> set[str]:
    """The ``sydsgpt`` modules that ``sydsgpt.<module>`` imports anywhere in its file
    (function-level and ``TYPE_CHECKING`` imports included)."""
    import ast
    from pathlib import Path

    import sydsgpt

    path = Path(sydsgpt.__file__).parent / f"{module.replace('.', '/')}.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sydsgpt."):
            found.add(node.module.split(".")[1])
    return found


@pytest.mark.parametrize("low, high", [("tokenizer", "bpe"), ("sampling", "generate")])
def test_no_import_circle(low: str, high: str) -> None:
    """The decoding loop imports the sampling functions and the BPE imports the tokenizer layer,
    never the other way round (not even inside a function or for type checking)."""
    assert low in _package_imports(high)
    assert high not in _package_imports(low)
