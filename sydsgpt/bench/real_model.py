"""Benchmark: the real model against the book's own and against transformers (chapter 8).

Two measurements, each a list of rows in ``real_model_cpu.json``:

* ``quality``: held-out bits per byte of SmolLM2-135M-Instruct and of the book checkpoint on
  the same texts: Tiny Shakespeare's held-out split (the last 10%, the book checkpoint's own
  held-out data) and :data:`UNSEEN_TEXT`, a text the book checkpoint never saw. Each model
  reads the text in sequences of its own length (the book checkpoint's context, SmolLM2's
  :data:`SMOLLM2_SEQ_LEN`); bits per byte do not depend on the tokenizer, so the two are
  comparable.
* ``decode``: greedy decoding with the KV cache, SydsGPT (:func:`sydsgpt.generate.generate`)
  against transformers' ``generate`` on the same GGUF file (transformers dequantizes it to
  float32, as :func:`sydsgpt.smollm2.load_smollm2` does), the same chat prompts and number
  of new tokens, in turn, ``repeats`` rounds; the tokens are compared. Beside them the
  memory-bandwidth limit: every decoded token reads every weight once, so no float32 decoder
  can beat ``bandwidth / weight bytes`` tokens per second, where the bandwidth is measured
  here by summing a tensor far larger than the caches (:func:`read_bandwidth`).

``sydsgpt bench --what realmodel`` runs it (about 5 minutes on 2 cores); ``--quick`` runs a
tiny random Llama written to a temporary GGUF file (seconds; a smoke test, not a result).
Timings mean something only on a quiet machine: the JSON records the load average before and
after.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..corpora import load_corpus
from ..data import train_val_split
from ..generate import generate
from ..presets import MODERN_PARTS
from ..quantize import model_weight_bytes
from .common import report
from .quantization import text_evaluator

UNSEEN_TEXT = "the-verdict"
"""Edith Wharton's short story *The Verdict* (1908, chapter 1's text): not Shakespeare, so the
book checkpoint never read it. SmolLM2's web-scale training data may well contain it: for
SmolLM2 it tests a change of domain, not text it cannot have seen."""
SMOLLM2_SEQ_LEN, SMOLLM2_BATCH = 512, 2
PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a neural network is in one sentence.",
)
NEW_TOKENS, REPEATS = 64, 5
BANDWIDTH_MIB = 1024
"""The tensor :func:`read_bandwidth` sums: 1 GiB, far beyond any CPU cache."""
QUICK_LLAMA = {
    **MODERN_PARTS,
    "vocab_size": 300,
    "embedding_dim": 64,
    "context_length": 128,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "ffn_hidden_dim": 128,
    "dropout": 0.0,
    "tie_weights": True,
}
MIB = 2**20
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm")
QUALITY_COLUMNS = ("text", "model", "seq_len", "tokens", "bytes", "val_loss", "val_bpb")
DECODE_COLUMNS = (
    "prompt",
    "new_tokens",
    "sydsgpt_tok_s",
    "transformers_tok_s",
    "ratio",
    "same_tokens",
    "bandwidth_limit_tok_s",
)


def read_bandwidth(mib: int = BANDWIDTH_MIB, repeats: int = 5) -> float:
    """Bytes per second at which this machine's threads read memory: the fastest of
    ``repeats`` sums of a ``mib``-MiB float32 tensor (after one untimed sum)."""
    x = torch.ones(mib * MIB // 4)
    x.sum()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - start)
    return x.numel() * 4 / best


def quality_rows(
    models: dict[str, tuple[Any, Any, int, int]], texts: dict[str, str], log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """One row per (text, model); ``models`` maps a name to ``(model, tokenizer, seq_len,
    batch_size)``."""
    rows = []
    for text_name, text in texts.items():
        for name, (model, tokenizer, seq_len, batch) in models.items():
            evaluate = text_evaluator(tokenizer, text, seq_len, batch_size=batch)
            loss, bpb, tokens = evaluate(model)
            rows.append(
                {
                    "text": text_name,
                    "model": name,
                    "seq_len": seq_len,
                    "tokens": tokens,
                    "bytes": len(text.encode("utf-8")),
                    "val_loss": round(loss, 4),
                    "val_bpb": round(bpb, 4),
                }
            )
            log(f"  {text_name} / {name}: {bpb:.4f} bits/byte over {tokens} tokens")
    return rows


def _transformers_model(path: Path) -> Any:
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    return hf.eval()


def decode_rows(
    model: Any,
    prompts: list[torch.Tensor],
    path: Path,
    new_tokens: int = NEW_TOKENS,
    repeats: int = REPEATS,
    bandwidth: float | None = None,
) -> list[dict[str, Any]]:
    """Greedy tokens/s of SydsGPT and transformers on the GGUF file at ``path``, per prompt:
    medians over ``repeats`` rounds (each round runs both, in turn), the median per-round
    ratio, whether the tokens agree, and the memory-bandwidth limit."""
    hf = _transformers_model(path)

    def ours(ids: torch.Tensor) -> torch.Tensor:
        return generate(model, ids, new_tokens, use_cache=True)

    def theirs(ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                eos_token_id=None,  # no stop at <|im_end|>: the same work as ours
                do_sample=False,
                use_cache=True,
                pad_token_id=0,
            )

    weight_bytes = model_weight_bytes(model)
    rows = []
    for text, ids in zip(PROMPTS, prompts):
        ours(ids[:, :4]), theirs(ids[:, :4])  # warm-up
        speed: dict[str, list[float]] = {"sydsgpt": [], "transformers": []}
        same = True
        for _ in range(repeats):
            outputs = {}
            for name, run_one in (("sydsgpt", ours), ("transformers", theirs)):
                start = time.perf_counter()
                outputs[name] = run_one(ids)
                speed[name].append(new_tokens / (time.perf_counter() - start))
            same = same and torch.equal(outputs["sydsgpt"], outputs["transformers"])
        rows.append(
            {
                "prompt": text,
                "prompt_tokens": ids.shape[1],
                "new_tokens": new_tokens,
                "repeats": repeats,
                "sydsgpt_tok_s": statistics.median(speed["sydsgpt"]),
                "transformers_tok_s": statistics.median(speed["transformers"]),
                "ratio": statistics.median(
                    a / b for a, b in zip(speed["sydsgpt"], speed["transformers"])
                ),
                "same_tokens": same,
                "weight_bytes": weight_bytes,
                "bandwidth_limit_tok_s": bandwidth / weight_bytes if bandwidth else None,
            }
        )
    return rows


def matmul_share(model: Any, ids: torch.Tensor, new_tokens: int = 16) -> dict[str, float]:
    """Where one greedy decode's time goes, from PyTorch's profiler: the share of the CPU
    time spent in matrix products (``aten::mm``, ``addmm``, ``bmm``), and the rate at which
    those products went through the weights (weight bytes x steps / their time)."""
    from torch.profiler import ProfilerActivity, profile

    generate(model, ids, 2)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        generate(model, ids, new_tokens, use_cache=True)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    products = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    steps = new_tokens  # the prefill reads the weights once too; new_tokens - 1 steps follow
    return {
        "matmul_share": products / total,
        "matmul_gb_s": model_weight_bytes(model) * steps / (products / 1e6) / 1e9,
        "profiled_tokens": new_tokens,
    }


def _chat_prompts(tokenizer: Any) -> list[torch.Tensor]:
    """The prompts through the tokenizer's chat template (ChatML where it has none)."""
    from ..chat import ChatTemplate, encode_chat

    jinja = getattr(tokenizer, "chat_template", None)
    template = ChatTemplate.from_jinja(jinja) if jinja else ChatTemplate()
    messages = [[{"role": "user", "content": p}] for p in PROMPTS]
    return [torch.tensor([encode_chat(tokenizer, m, template)]) for m in messages]


def _quick(log: Callable[[str], None]) -> tuple[list[dict], list[dict], float]:
    from ..bpe import BPETokenizer
    from ..gguf import read_gguf
    from ..gguf_model import export_gguf, load_gguf_model
    from ..gguf_tokenizer import tokenizer_from_gguf
    from ..model import SydsGPT

    text = load_corpus(UNSEEN_TEXT)[:4000]
    bpe = BPETokenizer().train(
        text, QUICK_LLAMA["vocab_size"], special_tokens=["<|im_start|>", "<|im_end|>"]
    )
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        path = export_gguf(SydsGPT(QUICK_LLAMA), Path(folder) / "tiny.gguf", bpe)
        f = read_gguf(path)
        model, tokenizer = load_gguf_model(f).eval(), tokenizer_from_gguf(f)
        models = {"tiny-random": (model, tokenizer, 64, 4)}
        quality = quality_rows(models, {UNSEEN_TEXT: text[:2000]}, log)
        prompts = _chat_prompts(tokenizer)
        bandwidth = read_bandwidth(64, 2)
        decode = decode_rows(model, prompts, path, 8, 2, bandwidth)
        profile = matmul_share(model, prompts[0], 4)
        for row in decode:
            row.update(profile)
    return quality, decode, bandwidth


def _full(log: Callable[[str], None]) -> tuple[list[dict], list[dict], float]:
    from ..book import load_book_checkpoint
    from ..smollm2 import find_smollm2, load_smollm2

    book = load_book_checkpoint()
    path = find_smollm2()
    model, tokenizer = load_smollm2(path, context_length=SMOLLM2_SEQ_LEN)
    models = {
        "book-checkpoint": (book.model, book.tokenizer, book.model.config.context_length, 16),
        "smollm2-135m-instruct": (model, tokenizer, SMOLLM2_SEQ_LEN, SMOLLM2_BATCH),
    }
    texts = {
        "tinyshakespeare (held-out 10%)": train_val_split(load_corpus("tinyshakespeare"), 0.1)[1],
        UNSEEN_TEXT: load_corpus(UNSEEN_TEXT),
    }
    quality = quality_rows(models, texts, log)
    model, _ = load_smollm2(path)  # the full context for decoding, as `sydsgpt chat` loads it
    bandwidth = read_bandwidth()
    log(f"  read bandwidth: {bandwidth / 1e9:.2f} GB/s")
    prompts = _chat_prompts(tokenizer)
    decode = decode_rows(model, prompts, path, bandwidth=bandwidth)
    profile = matmul_share(model, prompts[0])
    log(
        f"  matrix products: {profile['matmul_share']:.0%} of the decode time, "
        f"{profile['matmul_gb_s']:.1f} GB/s through the weights"
    )
    for row in decode:
        row.update(profile)
    return quality, decode, bandwidth


def run(
    out: str | Path | None = None, quick: bool = False, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Measure both tables, print them, write the JSON to ``out``; returns the payload."""
    load_before = os.getloadavg()
    quality, decode, bandwidth = (_quick if quick else _full)(log)
    report(quality, QUALITY_COLUMNS, None, "real_model", log)
    extra = {
        "quick": quick,
        "threads": torch.get_num_threads(),
        "quality": quality,
        "bandwidth_gb_s": bandwidth / 1e9,
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
    }
    return report(decode, DECODE_COLUMNS, out, "real_model", log, **extra)
