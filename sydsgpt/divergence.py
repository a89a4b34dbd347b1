"""Chapter 5: telling a diverging run from a noisy one, before a bad checkpoint is saved.

A learning rate far too high rarely gives a NaN at once: the first update throws the
weights to absurd values (``1e6`` at ``lr=1e6``) while the loss that produced it was still
normal, and only the *next* step's loss is NaN. A checkpoint saved in between would hold
finite garbage. So :func:`sydsgpt.train.train` asks a :class:`DivergenceGuard`:

* after every step, whether the loss is far above its recent level (a **spike**:
  more than ``SPIKE_FACTOR`` times the mean of the last ``WINDOW`` losses plus
  ``SPIKE_MARGIN`` nats);
* before every save, whether the updated weights are sane: finite (weights and optimizer
  moments), and no weight larger than ``GROWTH_LIMIT`` times the largest one at the start
  of the session (or than ``GROWTH_LIMIT``, if that was below 1).

Any of these raises :class:`TrainingDiverged` and nothing from that step is saved, so the
checkpoint it names as the last good one passed the same checks.
"""

from __future__ import annotations

from collections import deque

import torch
from torch import nn

from .checkpoint import first_non_finite, unwrap_model
from .distributed import DistributedContext, all_reduce_sum

WINDOW = 20
"""Steps whose mean loss is the reference of the spike rule."""
MIN_HISTORY = 5
"""Steps needed before the spike rule applies."""
SPIKE_FACTOR, SPIKE_MARGIN = 4.0, 2.0
"""A loss above ``SPIKE_FACTOR * reference + SPIKE_MARGIN`` (nats) is a spike."""
GROWTH_LIMIT = 1000.0
"""A weight this many times larger than the largest at the start (or 1) is absurd."""


class TrainingDiverged(RuntimeError):
    """Training diverged: the loss or the gradient norm became NaN or infinite (the weights
    were not updated with it), the loss spiked far above its recent level, or after an
    update a weight or optimizer moment is not finite or a weight is absurdly large
    (``tensor`` names it). Nothing from that step was saved; ``checkpoint`` is the last
    good one (``None``: none was written)."""

    def __init__(
        self,
        step: int | None,
        loss: float,
        grad_norm: float,
        checkpoint: str | None = None,
        tensor: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.step, self.loss, self.grad_norm = step, loss, grad_norm
        self.checkpoint, self.tensor, self.reason = checkpoint, tensor, reason
        where = f"at step {step}" if step is not None else "in this step"
        if reason is not None:
            message = (
                f"training diverged {where}: {reason} (loss {loss}, gradient norm "
                f"{grad_norm}). Nothing from this step was saved. "
            )
        elif tensor is None:
            message = (
                f"training diverged {where}: loss is {loss}, gradient norm is {grad_norm}. "
                "The optimizer did not apply this step. "
            )
        else:
            message = (
                f"training diverged {where}: {tensor} is not finite after the update (loss was "
                f"{loss}, gradient norm {grad_norm}). Nothing from this step was saved. "
            )
        message += (
            f"The last good checkpoint is {checkpoint}. "
            if checkpoint
            else "No checkpoint was written yet. "
        )
        message += (
            "Try a lower learning rate (--lr), a longer warm-up (--warmup-steps) or "
            "gradient clipping (--grad-clip)."
        )
        super().__init__(message)

    def naming(self, checkpoint: str | None) -> "TrainingDiverged":
        """The same error, naming ``checkpoint`` as the last good one."""
        return TrainingDiverged(
            self.step, self.loss, self.grad_norm, checkpoint, self.tensor, self.reason
        )


def is_spike(loss: float, reference: float) -> bool:
    """Whether ``loss`` is far above ``reference`` (see :data:`SPIKE_FACTOR`)."""
    return loss > SPIKE_FACTOR * reference + SPIKE_MARGIN


def largest_weight(model: nn.Module) -> tuple[str, float]:
    """``(name, value)`` of the weight of largest magnitude (this process's shard under FSDP)."""
    name, largest = "", 0.0
    for key, tensor in unwrap_model(model).state_dict().items():
        if tensor.is_floating_point() and tensor.numel():
            local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
            value = float(local.detach().abs().max()) if local.numel() else 0.0
            if value > largest:
                name, largest = key, value
    return name, largest


class DivergenceGuard:
    """The checks :func:`sydsgpt.train.train` makes after each step and before each save."""

    def __init__(self, model: nn.Module, ctx: DistributedContext, device: torch.device) -> None:
        self.ctx, self.device = ctx, device
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.weight_limit = GROWTH_LIMIT * max(1.0, self._largest(model)[1])

    def _largest(self, model: nn.Module) -> tuple[str, float]:
        name, value = largest_weight(model)
        if self.ctx.enabled:  # FSDP shards differ: every process must agree
            values = torch.zeros(self.ctx.world_size, device=self.device)
            values[self.ctx.rank] = value
            value = float(all_reduce_sum(values, self.ctx).max())
        return name, value

    def after_step(self, step: int, loss: float, grad_norm: float) -> None:
        """Raise on a loss spike; else remember the loss."""
        if len(self.recent) >= MIN_HISTORY:
            reference = sum(self.recent) / len(self.recent)
            if is_spike(loss, reference):
                raise TrainingDiverged(
                    step,
                    loss,
                    grad_norm,
                    reason=(
                        f"the loss {loss:.4g} is far above its recent level {reference:.4g} "
                        f"(mean of the last {len(self.recent)} steps)"
                    ),
                )
        self.recent.append(loss)

    @torch.no_grad()
    def before_save(
        self,
        step: int,
        loss: float,
        grad_norm: float,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
    ) -> None:
        """Raise unless the weights after this step's update are sane (see the module)."""
        bad = first_non_finite(model, optimizer)
        if bad is not None:
            raise TrainingDiverged(step, loss, grad_norm, tensor=bad)
        name, value = self._largest(model)
        if value > self.weight_limit:
            raise TrainingDiverged(
                step,
                loss,
                grad_norm,
                tensor=f"weight {name}",
                reason=(
                    f"a weight reached {value:.3g}, over {GROWTH_LIMIT:g} times the largest at the "
                    f"start ({self.weight_limit / GROWTH_LIMIT:.3g})"
                ),
            )
