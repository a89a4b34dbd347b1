"""Chapters 4 and 5 show SydsGPT, train_step and loader_loss as teaching views: the main
line stays, the plumbing of later chapters folds into one comment line each."""

from __future__ import annotations

import ast

import pytest

from sydsgpt.losses import loader_loss
from sydsgpt.model import SydsGPT
from sydsgpt.notebook import teaching_source
from sydsgpt.train import train_step

VIEWS = {
    "SydsGPT": (
        SydsGPT,
        [
            "self.token_embedding = nn.Embedding",
            "self.position_embedding",
            "self.transformer_blocks",
            "self.final_layer_norm",
            "self.output_projection.weight = self.token_embedding.weight",
            "x = self.final_layer_norm(x)",
            "return logits",
        ],
        [
            "RotaryEmbedding(",
            "def make_kv_cache",
            "x = x[:, -1:, :]",
            "logits[..., :",
            "_load_from_state_dict",
        ],
        [
            "# ... rotary position embeddings, applied inside attention (chapter 7)",
            "(chapter 6)",
            "(appendix: making it fast)",
        ],
    ),
    "train_step": (
        train_step,
        [
            "optimizer.zero_grad(set_to_none=True)",
            "(out.loss / n).backward()",
            "clip_grad_norm_",
            "optimizer.step()",
            "scheduler.step()",
            "with autocast(device, amp_dtype):",
            "out = objective(model, batch, device)",
            "with gradient_sync(model, last=i == n - 1):",
        ],
        ["batch_metrics", "metrics.update("],
        ["# ... the objective's other metrics for the log (chapter 9)"],
    ),
    "loader_loss": (
        loader_loss,
        [
            "model.eval()",
            "out = objective(model, batch, device)",
            "model.train(was_training)",
            "sums[0] += out.loss.double() * out.count",
        ],
        ["ctx.world_size != ctx.rank", "metric_sums"],
        ["# ... under DDP, each process takes every world_size-th batch (appendix: scaling up)"],
    ),
}


@pytest.mark.parametrize("name", VIEWS)
def test_the_view_keeps_the_main_line_and_folds_the_plumbing(name: str) -> None:
    obj, kept, dropped, folds = VIEWS[name]
    view = teaching_source(obj)
    for text in kept:
        assert text in view, f"the teaching view of {name} lost {text!r}"
    for text in dropped:
        assert text not in view, f"the teaching view of {name} still shows {text!r}"
    for text in folds:
        assert text in view, f"the teaching view of {name} has no fold line {text!r}"
    ast.parse(view)  # the view is valid Python
    full = teaching_source(obj, full=True)
    for text in dropped:
        assert text in full, f"full=True must show {text!r} in {name}"
