"""The Muon optimizer (sydsgpt/muon.py): Newton-Schulz orthogonalization, the update rule
checked against hand-written formulas, the Muon/AdamW parameter split, and short training runs
on the tiny model."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from helpers import peaked_model, seeded_randn, tiny_model
from torch import nn

from sydsgpt.muon import Muon, newton_schulz, split_muon_params

SHAPES = [(32, 32), (64, 16), (16, 64)]


def with_spectrum(rows: int, cols: int, s: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A float32 ``(rows, cols)`` matrix ``U diag(s) V^T`` with random orthonormal ``U``, ``V``."""
    k = min(rows, cols)
    U, _ = torch.linalg.qr(seeded_randn(rows, k, seed=seed, dtype=torch.float64))
    V, _ = torch.linalg.qr(seeded_randn(cols, k, seed=seed + 1, dtype=torch.float64))
    return ((U * s.double()) @ V.T).float()


def polar(G: torch.Tensor) -> torch.Tensor:
    """``U V^T`` of ``G = U S V^T`` from an SVD (float64): what Newton-Schulz approximates."""
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    return U @ Vh


def quintic_by_svd(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Newton-Schulz's result computed another way: the scalar map ``s -> a s + b s^3 + c s^5``
    applied ``steps`` times to the normalized singular values, then ``U diag(.) V^T``."""
    U, s, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    s = s / torch.linalg.vector_norm(s)  # the Frobenius norm is the norm of the singular values
    for _ in range(steps):
        s = 3.4445 * s - 4.7750 * s**3 + 2.0315 * s**5
    return ((U * s) @ Vh).float()


# ---------------------------------------------------------------------------------- newton_schulz


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_newton_schulz_pulls_six_orders_of_magnitude_of_singular_values_near_one(shape) -> None:
    k = min(shape)
    G = with_spectrum(*shape, torch.logspace(-3, 3, k))
    s_in = torch.linalg.svdvals(G.double())
    assert s_in.max() / s_in.min() > 1e5  # the input spans about six orders of magnitude
    # After normalization the smallest singular values are ~1e-6 of the largest; each step
    # multiplies a small one by at most ~3.44, so the default 5 steps lift them only to ~4e-4.
    # 15 steps reach the band. Observed: [0.68, 1.14] for all three shapes.
    s_out = torch.linalg.svdvals(newton_schulz(G, steps=15).double())
    assert (s_out - 1).abs().max() < 0.35, s_out


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_newton_schulz_with_its_default_five_steps_sets_singular_values_near_one(shape) -> None:
    inputs = [with_spectrum(*shape, torch.logspace(-1, 1, min(shape)))]
    if shape[0] != shape[1]:
        # A rectangular Gaussian matrix is well conditioned. (A square one is not: its smallest
        # singular value is near zero, and five steps lift it only to about 0.15.)
        inputs.append(seeded_randn(*shape, seed=3))
    for G in inputs:
        s_out = torch.linalg.svdvals(newton_schulz(G).double())
        # The quintic iteration does not settle at 1: observed [0.68, 1.15] over these inputs.
        assert (s_out - 1).abs().max() < 0.35, s_out


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_newton_schulz_maps_each_singular_value_by_the_quintic_and_keeps_the_vectors(shape) -> None:
    G = seeded_randn(*shape, seed=5)
    torch.testing.assert_close(newton_schulz(G), quintic_by_svd(G), rtol=0, atol=2e-5)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_newton_schulz_points_the_way_of_the_polar_factor(shape) -> None:
    G = with_spectrum(*shape, torch.logspace(-3, 3, min(shape)), seed=7)
    target = polar(G).flatten()
    # G itself points elsewhere: its largest singular values dominate it.
    assert F.cosine_similarity(G.double().flatten(), target, dim=0) < 0.6
    out = newton_schulz(G, steps=15).double().flatten()
    assert F.cosine_similarity(out, target, dim=0) > 0.9
    # The default five steps, on a spectrum they can lift (two orders of magnitude).
    G5 = with_spectrum(*shape, torch.logspace(-1, 1, min(shape)), seed=7)
    out5 = newton_schulz(G5).double().flatten()
    assert F.cosine_similarity(out5, polar(G5).flatten(), dim=0) > 0.9


@pytest.mark.parametrize("c", [1e-2, 7.5, 1e3])
def test_newton_schulz_ignores_a_positive_scale(c: float) -> None:
    G = seeded_randn(16, 64, seed=2)
    base = newton_schulz(G)
    scaled = newton_schulz(c * G)
    assert ((scaled - base).norm() / base.norm()).item() < 1e-5


@pytest.mark.parametrize("shape", [(64, 16), (16, 64)], ids=str)
def test_newton_schulz_of_the_transpose_is_the_transpose(shape) -> None:
    G = seeded_randn(*shape, seed=4)
    # Bit for bit: a tall input is transposed and runs the very same products as the wide one.
    # (Iterating on the tall matrix itself gives the same values only up to rounding.)
    assert torch.equal(newton_schulz(G.T.contiguous()), newton_schulz(G).T)


def test_newton_schulz_keeps_the_dtype_and_turns_zeros_into_zeros() -> None:
    assert newton_schulz(seeded_randn(8, 4, dtype=torch.float64)).dtype == torch.float64
    assert torch.equal(newton_schulz(torch.zeros(3, 5)), torch.zeros(3, 5))


@pytest.mark.parametrize("shape", [(6,), (2, 3, 4), ()], ids=str)
def test_newton_schulz_refuses_what_is_not_a_matrix(shape) -> None:
    with pytest.raises(ValueError, match=r"2-D matrix, got shape"):
        newton_schulz(torch.ones(shape))


# ------------------------------------------------------------------------------------- Muon steps


@pytest.mark.parametrize("shape", [(5, 3), (3, 5)], ids=str)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_one_muon_step_without_momentum_by_hand(shape, weight_decay: float) -> None:
    lr = 0.05
    start, grad = seeded_randn(*shape, seed=1), seeded_randn(*shape, seed=2)
    p = nn.Parameter(start.clone())
    p.grad = grad.clone()
    Muon([p], lr=lr, momentum=0.0, weight_decay=weight_decay).step()
    rows, cols = shape
    scale = math.sqrt(rows / cols) if rows > cols else 1.0  # sqrt(5/3) for the tall one
    expected = start * (1 - lr * weight_decay) - lr * scale * quintic_by_svd(grad)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize("nesterov", [True, False])
def test_two_muon_steps_with_momentum_follow_the_formulas(nesterov: bool) -> None:
    lr, mu, wd = 0.03, 0.9, 0.01
    start = seeded_randn(4, 6, seed=1)
    grads = [seeded_randn(4, 6, seed=10), seeded_randn(4, 6, seed=11)]
    p = nn.Parameter(start.clone())
    opt = Muon([p], lr=lr, momentum=mu, nesterov=nesterov, weight_decay=wd)
    for g in grads:
        p.grad = g.clone()
        opt.step()

    expected, buf = start.clone(), torch.zeros_like(start)
    for g in grads:
        buf = mu * buf + g
        update = g + mu * buf if nesterov else buf
        expected = expected * (1 - lr * wd) - lr * 1.0 * quintic_by_svd(update)  # wide: scale 1
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=2e-6)

    # The second step's update differs between the two rules (so the check above can tell them
    # apart): nesterov's is g2 + mu * (mu * g1 + g2), the plain one mu * g1 + g2.
    g1, g2 = grads
    other = (g2 + mu * (mu * g1 + g2)) if not nesterov else (mu * g1 + g2)
    assert (quintic_by_svd(other) - quintic_by_svd(update)).abs().max() > 1e-2


def test_muon_skips_a_parameter_without_a_gradient_and_returns_the_closure_loss() -> None:
    p, q = nn.Parameter(torch.ones(3, 3)), nn.Parameter(torch.ones(3, 3))
    p.grad = seeded_randn(3, 3)
    loss = Muon([p, q], weight_decay=0.5).step(closure=lambda: 1.5)
    assert loss == 1.5
    assert torch.equal(q.detach(), torch.ones(3, 3))  # no gradient: no decay either
    assert not torch.equal(p.detach(), torch.ones(3, 3))


@pytest.mark.parametrize("shape", [(4,), (2, 2, 2)], ids=str)
def test_muon_refuses_a_parameter_that_is_not_a_matrix(shape) -> None:
    bad = nn.Parameter(torch.ones(shape))
    with pytest.raises(ValueError, match=rf"shape {re.escape(str(tuple(shape)))}.*AdamW"):
        Muon([nn.Parameter(torch.ones(2, 2)), bad])
    opt = Muon([nn.Parameter(torch.ones(2, 2))])
    with pytest.raises(ValueError, match="2-D weight matrices"):
        opt.add_param_group({"params": [bad]})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lr": 0.0}, "lr > 0"),
        ({"lr": -0.1}, "lr > 0"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"ns_steps": 0}, "ns_steps"),
        ({"ns_steps": 2.5}, "ns_steps"),
        ({"ns_steps": True}, "ns_steps"),
        ({"weight_decay": -1e-3}, "weight_decay"),
    ],
)
def test_muon_refuses_bad_hyperparameters(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Muon([nn.Parameter(torch.ones(2, 2))], **kwargs)
    with pytest.raises(ValueError, match=match):  # a group's own value is checked as well
        Muon([{"params": [nn.Parameter(torch.ones(2, 2))], **kwargs}])


# ------------------------------------------------------------------------------ split_muon_params


def _names(model: nn.Module, params: list[nn.Parameter]) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_split_gives_muon_the_block_matrices_and_adamw_the_rest() -> None:
    model = tiny_model()
    muon, adamw = split_muon_params(model)
    muon_names, adamw_names = _names(model, muon), _names(model, adamw)

    assert all(p.dim() == 2 for p in muon)
    assert muon_names and all(n.startswith("transformer_blocks.") for n in muon_names)
    for name in ("token_embedding.weight", "position_embedding.weight", "output_projection.weight"):
        assert name in adamw_names
    assert {n for n, p in model.named_parameters() if p.dim() < 2} <= adamw_names
    # Every matrix of the blocks goes to Muon (attention and feed-forward: 6 per block).
    assert len(muon) == 6 * len(model.transformer_blocks)
    # A partition of the trainable parameters: nothing twice, nothing left out.
    assert len(muon) + len(adamw) == len({id(p) for p in muon + adamw})
    assert {id(p) for p in muon + adamw} == {id(p) for p in model.parameters()}


def test_split_leaves_out_frozen_parameters_and_keeps_a_tied_head_with_adamw() -> None:
    model = tiny_model(tie_weights=True)
    frozen = model.transformer_blocks[0].attention.weight_query.weight
    frozen.requires_grad_(False)
    model.final_layer_norm.scale.requires_grad_(False)
    muon, adamw = split_muon_params(model)
    ids = [id(p) for p in muon + adamw]
    assert id(frozen) not in ids and id(model.final_layer_norm.scale) not in ids
    assert ids.count(id(model.token_embedding.weight)) == 1  # the tied head, once, in AdamW
    assert any(p is model.output_projection.weight for p in adamw)
    assert {id(p) for p in muon + adamw} == {id(p) for p in model.parameters() if p.requires_grad}


def test_split_without_transformer_blocks_takes_the_linear_layers_but_not_the_head() -> None:
    class Small(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.body = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 8))
            self.lm_head = nn.Linear(8, 10, bias=False)

    model = Small()
    muon, adamw = split_muon_params(model)
    assert _names(model, muon) == {"body.0.weight", "body.2.weight"}
    assert _names(model, adamw) == {
        "embed.weight",
        "body.0.bias",
        "body.1.weight",
        "body.1.bias",
        "body.2.bias",
        "lm_head.weight",
    }


# ------------------------------------------------------------------------------------ training


def _memorize(model: nn.Module, optimizers: list[torch.optim.Optimizer], steps: int) -> list[float]:
    """Train on one fixed random batch (memorization); the loss at every step."""
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    x = torch.randint(0, vocab, (4, 12), generator=g)
    y = torch.randint(0, vocab, (4, 12), generator=g)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        for opt in optimizers:
            opt.zero_grad()
        loss.backward()
        for opt in optimizers:
            opt.step()
        losses.append(loss.item())
    return losses


def test_muon_with_adamw_memorizes_a_batch() -> None:
    model = tiny_model().train()
    muon, adamw = split_muon_params(model)
    before = [p.detach().clone() for p in muon]
    optimizers = [Muon(muon, lr=0.02), torch.optim.AdamW(adamw, lr=1e-2, weight_decay=0.0)]
    losses = _memorize(model, optimizers, steps=30)
    # Observed: 4.11 -> 0.39.
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(not torch.equal(b, p) for b, p in zip(before, muon))


def test_muon_alone_trains_the_blocks() -> None:
    # Only the block matrices learn (AdamW's parameters frozen), so the drop is Muon's doing. A
    # larger output head (peaked_model) lets the blocks' changes move the logits.
    model = peaked_model(10.0).train()
    muon, adamw = split_muon_params(model)
    for p in adamw:
        p.requires_grad_(False)
    losses = _memorize(model, [Muon(muon, lr=0.02)], steps=30)
    # Observed: 4.32 -> 1.79.
    assert losses[-1] < 0.7 * losses[0], losses
