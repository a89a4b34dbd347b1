"""The teaching views chapters 1-3 show: each keeps its section's main line and folds the rest.

Chapter 2 shows ``MultiHeadAttention`` without the KV cache (chapter 6), RoPE, grouped-query
attention and QK-norm (chapter 7) or the fused paths (the fast-paths appendix); those
chapters show the same methods with ``full=True`` or the ``kv-cache`` region. Chapter 3 shows
``TransformerBlock`` building each part the config names, and chapter 1 shows the two
regions of ``BPETokenizer.train`` and encoding without its cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sydsgpt.attention import MultiHeadAttention
from sydsgpt.blocks import TransformerBlock
from sydsgpt.bpe import BPETokenizer
from sydsgpt.data import GPTDataset, create_dataloader
from sydsgpt.notebook import teaching_source

BOOK = Path(__file__).resolve().parents[1] / "book"


def test_chapter_2_attention_shows_the_main_line_only() -> None:
    text = teaching_source(MultiHeadAttention.forward)
    for kept in (
        "self._project_qkv(x)",
        "self._split_heads(queries)",
        "scaled_dot_product_attention(q, k, v, causal=True",
        "self.output_projection(context)",
    ):
        assert kept in text, kept
    for folded in ("kv_cache.update", "apply_rope", "repeat_kv", "self.q_norm", "raise ValueError"):
        assert folded not in text, folded
    assert "# ... the KV cache (chapter 6)" in text
    assert "# ... QK-norm and RoPE (chapter 7)" in text
    assert "self._sdpa(q, k, v)" in text  # the fused kernel is one call (appendix: making it fast)


def test_chapter_7_sees_everything_it_teaches_with_full() -> None:
    text = teaching_source(MultiHeadAttention.forward, full=True)
    for shown in (
        "apply_rope(q, rope)",
        "repeat_kv(k, groups)",
        "self.q_norm(q)",
        "kv_cache.update(k, v)",
    ):
        assert shown in text, shown
    assert "# later" not in text and "# region" not in text


def test_the_kv_cache_region_holds_the_cache_code() -> None:
    text = teaching_source(MultiHeadAttention.forward, region="kv-cache")
    assert "k, v = kv_cache.update(k, v)" in text
    assert "output_projection" not in text  # only the region, not the whole method


def test_constructor_view_keeps_the_four_layers_and_folds_chapter_7() -> None:
    text = teaching_source(MultiHeadAttention.__init__)
    for layer in (
        "self.weight_query = nn.Linear",
        "self.weight_key = nn.Linear",
        "self.weight_value = nn.Linear",
        "self.output_projection = nn.Linear",
    ):
        assert layer in text, layer
    for folded in ("self.num_kv_heads", "RMSNorm", "raise ValueError", "Kernels()"):
        assert folded not in text, folded
    assert text.startswith("def __init__(\n    self,\n    d_in: int,")


def test_the_fused_qkv_product_is_folded_unless_full() -> None:
    assert "torch.cat" not in teaching_source(MultiHeadAttention._project_qkv)
    assert "torch.cat" in teaching_source(MultiHeadAttention._project_qkv, full=True)


def test_chapter_3_block_builds_every_part_from_the_config() -> None:
    text = teaching_source(TransformerBlock)
    assert "self.layer_norm1 = make_norm(config)" in text
    assert "FEED_FORWARDS[config.ffn].from_config(config)" in text
    assert "x = x + self.dropout(self.feed_forward(self.layer_norm2(x)))" in text
    assert "SwiGLUFeedForward" not in text and "num_kv_heads" not in text


def test_chapter_1_bpe_views() -> None:
    setup = teaching_source(BPETokenizer.train, region="bpe-setup")
    loop = teaching_source(BPETokenizer.train, region="bpe-merge-loop")
    assert setup.startswith("pieces = ") and "heapq.heapify(heap)" in setup
    assert "heapq.heappop(heap)" in loop and "merge_pair(old, best, new_id)" in loop
    assert "print(" not in loop and "heapify" not in loop
    encode = teaching_source(BPETokenizer._encode_chunk)
    assert "merge_pair(ids, best_pair, best_rank)" in encode and "_cache" not in encode


def test_chapter_1_data_views_keep_the_windows_and_fold_the_checks() -> None:
    dataset = teaching_source(GPTDataset)
    assert "return window[:-1], window[1:]" in dataset and "raise" not in dataset
    loader = teaching_source(create_dataloader)
    assert "GPTDataset(text_to_token_ids(text, tokenizer)[0]" in loader and "raise" not in loader


@pytest.mark.parametrize("name", sorted(path.name for path in BOOK.glob("*.ipynb")))
def test_chapter_code_lines_fit_the_page(name: str) -> None:
    """Rendered code cells of every page must not scroll sideways:
    88 characters at most (the Colab cell is hidden)."""
    cells = json.loads((BOOK / name).read_text())["cells"]
    for number, cell in enumerate(cells):
        if cell["cell_type"] != "code" or "remove-cell" in cell["metadata"].get("tags", []):
            continue
        for line in "".join(cell["source"]).splitlines():
            assert len(line) <= 88, f"{name} cell {number}: {len(line)} characters: {line!r}"
