"""Muon: momentum whose update is orthogonalized before it is applied.

AdamW scales every number of a gradient on its own. Muon looks at a weight matrix's update
as a whole: it replaces the (momentum-smoothed) gradient ``G = U S V^T`` by ``U V^T``, the
same directions with every singular value set to 1. No direction of the update dominates,
so the rare directions get as large a step as the common ones.

Muon is for the 2-D weight matrices inside the transformer blocks. The token and position
embeddings, the output head, the norms' weights and all biases stay with AdamW: a training
run uses the two optimizers side by side.

- :func:`newton_schulz`: ``U V^T`` of a matrix, approximately, from a few matrix products;
- :class:`Muon`: the optimizer (SGD momentum, Nesterov by default, then :func:`newton_schulz`);
- :func:`split_muon_params`: a model's parameters, split into Muon's and AdamW's;
- :class:`MuonWithAdamW`: both in one optimizer (``sydsgpt train --optimizer muon``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

# The quintic iteration's coefficients: X <- a X + b (X X^T) X + c (X X^T)^2 X. They are tuned
# to push small singular values up fast, at the price of not settling exactly at 1.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

HEAD_NAMES = ("output_projection", "lm_head")
"""Names of a model's output head (a direct child), left to AdamW when the model has no
``transformer_blocks`` and :func:`split_muon_params` has to pick Muon's matrices itself."""


def newton_schulz(G: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalize a matrix: ``U V^T`` for ``G = U S V^T``.

    ``G`` is first divided by its Frobenius norm (plus ``eps``), so every singular value
    lies in ``[0, 1]``. Each of the ``steps`` iterations then maps every singular value
    ``s`` to ``a s + b s^3 + c s^5`` and leaves the singular vectors alone. After five steps
    the singular values are near 1 but not exactly 1 (roughly 0.7 to 1.2): close enough
    for an optimizer step, and far cheaper than an SVD. Each step multiplies a small singular
    value by at most ``a`` (about 3.4), so one below roughly 1/500 of the norm stays well
    under 1 after five steps; more ``steps`` lift it.

    A tall matrix (more rows than columns) is transposed first, so the products work on the
    smaller ``rows x rows`` Gram matrix, and transposed back at the end. The arithmetic is
    float32 (the GPU reference uses bfloat16; float32 keeps CPU results exact enough to test).

    Args:
        G: a 2-D ``(rows, cols)`` tensor.
        steps: how many iterations to run.
        eps: added to the norm, so an all-zero ``G`` gives zeros instead of NaNs.

    Returns:
        A ``(rows, cols)`` tensor of ``G``'s dtype with the singular vectors of ``G`` and
        singular values near 1.
    """
    if G.dim() != 2:
        raise ValueError(f"newton_schulz needs a 2-D matrix, got shape {tuple(G.shape)}")
    a, b, c = NS_COEFFICIENTS
    X = G.to(torch.float32)
    X = X / (X.norm() + eps)
    tall = X.size(0) > X.size(1)
    if tall:
        X = X.T  # (cols, rows): the Gram matrix below is then (cols, cols), the smaller one
    for _ in range(steps):
        A = X @ X.T  # (r, r), r = the smaller side
        B = b * A + c * (A @ A)  # (r, r)
        X = a * X + B @ X  # (r, n)
    if tall:
        X = X.T
    return X.to(G.dtype)


def _check_hyperparameters(lr: Any, momentum: Any, ns_steps: Any, weight_decay: Any) -> None:
    """Raise ``ValueError`` (one line) for the first hyperparameter out of range."""
    if not lr > 0:
        raise ValueError(f"Muon needs lr > 0, got {lr}")
    if not 0 <= momentum < 1:
        raise ValueError(f"Muon needs 0 <= momentum < 1, got {momentum}")
    if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 1:
        raise ValueError(f"Muon needs ns_steps to be an int >= 1, got {ns_steps!r}")
    if not weight_decay >= 0:
        raise ValueError(f"Muon needs weight_decay >= 0, got {weight_decay}")


def _closure_loss(closure: Callable[[], float] | None) -> float | None:
    """The loss ``closure()`` recomputes (with gradients on), or None without a closure."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _check_group(params: list[torch.Tensor], group: dict[str, Any], fix: str) -> None:
    """Raise ``ValueError`` (one line) for a parameter of a Muon group that is not 2-D (``fix``
    says where it belongs) or a hyperparameter out of range."""
    for p in params:
        if p.dim() != 2:
            raise ValueError(
                f"Muon only takes 2-D weight matrices, got a parameter of shape "
                f"{tuple(p.shape)}: {fix}"
            )
    _check_hyperparameters(group["lr"], group["momentum"], group["ns_steps"], group["weight_decay"])


class Muon(torch.optim.Optimizer):
    """The Muon optimizer, for 2-D weight matrices only.

    Each step, for every parameter ``p`` (shape ``(rows, cols)``) with a gradient ``g``::

        buf = momentum * buf + g
        update = g + momentum * buf   (nesterov)   or   buf   (plain momentum)
        O = newton_schulz(update)                   # singular values set near 1
        p = p * (1 - lr * weight_decay)             # decoupled weight decay, as in AdamW
        p = p - lr * max(1, rows / cols) ** 0.5 * O

    The factor ``max(1, rows / cols) ** 0.5`` makes the step of a tall matrix larger: its
    orthogonalized update has ``cols`` unit singular values spread over more rows, so each
    entry is smaller than in a wide or square matrix.

    Embeddings, the output head, norms and biases belong to AdamW: an embedding's rows are
    looked up one token at a time and a head's rows score one token each, so setting all
    their directions to the same size does not fit them; vectors have no directions to
    balance. :func:`split_muon_params` sorts a model's parameters; a parameter that is not
    2-D raises ``ValueError`` here.

    Args:
        params: the 2-D parameters, or parameter groups (dicts) as for any optimizer.
        lr: learning rate, > 0.
        momentum: in ``[0, 1)``; 0 makes the update the gradient itself.
        nesterov: look ahead along the momentum (the default) or use the buffer as is.
        ns_steps: Newton-Schulz iterations per step, an int >= 1.
        weight_decay: decoupled weight decay, >= 0.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        weight_decay: float = 0.0,
    ) -> None:
        _check_hyperparameters(lr, momentum, ns_steps, weight_decay)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_steps": ns_steps,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, after checking its hyperparameters and that every parameter is 2-D
        (``torch.optim.Optimizer.__init__`` calls this for each group too)."""
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        _check_group(params, {**self.defaults, **param_group}, "give it to AdamW")
        super().add_param_group({**param_group, "params": params})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Update every parameter that has a gradient; return ``closure()``'s loss (or None)."""
        loss = _closure_loss(closure)
        for group in self.param_groups:
            muon_group_step(group, self.state)
        return loss


def muon_group_step(group: dict[str, Any], state: dict[Any, Any]) -> None:
    """One Muon step (the update in :class:`Muon`'s docstring) on every parameter of
    ``group`` that has a gradient; ``state`` holds each parameter's momentum buffer."""
    lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
    for p in group["params"]:
        if p.grad is None:
            continue
        grad = p.grad
        buf = state[p].setdefault("momentum_buffer", torch.zeros_like(grad))
        buf.mul_(momentum).add_(grad)
        update = grad.add(buf, alpha=momentum) if group["nesterov"] else buf
        orthogonal = newton_schulz(update, steps=group["ns_steps"])
        rows, cols = p.shape
        scale = max(1.0, rows / cols) ** 0.5
        if wd != 0:
            p.mul_(1 - lr * wd)
        p.add_(orthogonal, alpha=-lr * scale)


class MuonWithAdamW(torch.optim.Optimizer):
    """One optimizer for a whole model: Muon for the groups marked ``"muon": True``, AdamW
    for the others.

    Being one :class:`torch.optim.Optimizer`, it works with a learning-rate scheduler (each
    group's rate follows the schedule from its own peak), gradient clipping and checkpoints
    (its ``state_dict`` holds both kinds of state) like AdamW alone.
    :func:`sydsgpt.optim.build_optimizer` builds it when ``TrainConfig.optimizer`` is
    ``"muon"``.

    AdamW's groups take ``lr``, ``betas``, ``eps`` and ``weight_decay`` (decoupled, as in
    :class:`torch.optim.AdamW`); Muon's groups take :class:`Muon`'s hyperparameters.
    """

    def __init__(self, param_groups: Iterable[dict[str, Any]]) -> None:
        defaults = {
            "muon": False,
            "betas": (0.9, 0.95),
            "eps": 1e-8,
            "weight_decay": 0.0,
            "momentum": 0.95,
            "nesterov": True,
            "ns_steps": 5,
        }
        super().__init__(list(param_groups), defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, checking a Muon group as :class:`Muon` does."""
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        merged = {**self.defaults, **param_group}
        if merged["muon"]:
            if "lr" not in param_group:
                raise ValueError("a Muon group needs its own lr (Muon's is about 10x AdamW's)")
            _check_group(params, merged, "put it in an AdamW group")
        super().add_param_group({**param_group, "params": params})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Update every parameter that has a gradient; return ``closure()``'s loss (or None)."""
        loss = _closure_loss(closure)
        for group in self.param_groups:
            if group["muon"]:
                muon_group_step(group, self.state)
            else:
                _adamw_group_step(group, self.state)
        return loss


def _adamw_group_step(group: dict[str, Any], state: dict[Any, Any]) -> None:
    """One AdamW step (decoupled weight decay, bias-corrected moments) on a group."""
    lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    for p in group["params"]:
        if p.grad is None:
            continue
        s = state[p]
        if not s:
            s["step"] = 0
            s["exp_avg"] = torch.zeros_like(p)
            s["exp_avg_sq"] = torch.zeros_like(p)
        s["step"] += 1
        s["exp_avg"].lerp_(p.grad, 1 - beta1)
        s["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        if wd != 0:
            p.mul_(1 - lr * wd)
        first = 1 - beta1 ** s["step"]
        second = (1 - beta2 ** s["step"]) ** 0.5
        denom = (s["exp_avg_sq"].sqrt() / second).add_(eps)
        p.addcdiv_(s["exp_avg"], denom, value=-lr / first)


def split_muon_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split a model's trainable parameters between Muon and AdamW.

    Muon gets the 2-D weights inside ``model.transformer_blocks`` (attention and
    feed-forward matrices). AdamW gets everything else: the token and position embeddings,
    the output head, the norms' weights, the biases and every other 1-D parameter. A weight
    shared with an ``nn.Embedding`` (a head tied to the token embedding) stays with AdamW.

    A model without ``transformer_blocks`` gives Muon the weights of its ``nn.Linear``
    layers, except a direct child named ``output_projection`` or ``lm_head`` (the head).

    Only parameters with ``requires_grad`` are returned, each once, in ``model.parameters()``
    order.

    Returns:
        ``(muon_params, adamw_params)``: two lists that together hold every trainable
        parameter of ``model``.
    """
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    blocks = getattr(model, "transformer_blocks", None)
    if blocks is not None:
        candidates = list(blocks.parameters())
    else:
        heads = [getattr(model, name) for name in HEAD_NAMES if hasattr(model, name)]
        head_ids = {id(p) for h in heads if isinstance(h, nn.Module) for p in h.parameters()}
        candidates = [
            m.weight
            for m in model.modules()
            if isinstance(m, nn.Linear) and id(m.weight) not in head_ids
        ]
    chosen = {id(p) for p in candidates if p.dim() == 2 and id(p) not in embedded}
    muon, adamw = [], []
    for p in model.parameters():
        if p.requires_grad:
            (muon if id(p) in chosen else adamw).append(p)
    return muon, adamw
