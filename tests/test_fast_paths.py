"""Every fast path computes what the plain path computes (on CPU).

Already proven elsewhere, so not repeated here:

* fused QKV projection == three projections, forward and gradients, both attention
  implementations: ``tests/test_attention.py::test_fused_and_separate_qkv_projections_agree``;
* SDPA == explicit attention, forward and gradients:
  ``tests/test_attention.py::test_sdpa_and_explicit_agree_forward_and_gradients``;
* padded vocabulary keeps the logits' shape, values and the loss:
  ``tests/test_model.py::test_pad_vocab_multiple_keeps_logits_and_loss`` (and checkpoints load
  with any padding: ``test_a_checkpoint_loads_whatever_vocabulary_padding_it_was_saved_with``);
* pre-allocated KV cache == concatenating cache, same generated tokens for every decoding
  strategy: ``tests/test_generate.py::test_cache_gives_the_same_tokens_for_every_strategy``;
* bf16 autocast's loss is close to float32's, and ``dtype="auto"`` is float32 on CPU:
  ``tests/test_train.py::test_bf16_autocast_on_cpu_is_close_to_float32``;
* ``torch.compile`` through ``train()`` with the ``aot_eager`` backend matches eager, and
  fused AdamW is off by default on CPU: ``tests/test_train.py``.

Here: the model-level switches together through a whole training step (weights after the
step, padded rows), bf16 gradients, ``torch.compile`` with the real (inductor) backend,
fused AdamW's numbers and its CUDA default, and the TF32 switch's logic.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import tiny_config

from sydsgpt.bench.training import transfer_weights
from sydsgpt.config import Kernels
from sydsgpt.model import SydsGPT
from sydsgpt.optim import build_optimizer
from sydsgpt.blocks import GELU
from sydsgpt.runtime import auto_amp_dtype, configure_tf32
from sydsgpt.train import StepOptions, TrainConfig, train_step


TINY = tiny_config(tie_weights=True)
PLAIN = {"attention": "explicit", "fused_qkv": False, "pad_vocab_multiple": 1, "gelu": "explicit"}
FAST = {"attention": "sdpa", "fused_qkv": True, "pad_vocab_multiple": 64, "gelu": "fused"}
BF16_UNIT_ROUNDOFF = 2.0**-8  # bf16 keeps 8 significant bits


def batch(
    seed: int = 0, batch_size: int = 3, tokens: int = 12
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, TINY["vocab_size"], (batch_size, tokens + 1), generator=g)
    return ids[:, :-1], ids[:, 1:]


def model(switches: dict[str, Any], seed: int = 0, dtype: torch.dtype = torch.float32) -> SydsGPT:
    torch.manual_seed(seed)
    return SydsGPT(TINY, Kernels(**switches)).to(dtype).train()


def grads(m: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in m.parameters()])


# --------------------------------------------------------------- model switches, whole step


@pytest.mark.parametrize(
    "switches", [{"pad_vocab_multiple": 64}, FAST], ids=["padded-vocab", "all-model-switches"]
)
def test_fast_model_takes_the_same_training_step_as_the_plain_one(switches: dict[str, Any]) -> None:
    # float64, so the first AdamW step (which moves each weight by about lr * sign(gradient))
    # cannot flip on rounding noise in a near-zero gradient.
    plain = model(PLAIN, dtype=torch.float64)
    fast = model({**PLAIN, **switches}, seed=1, dtype=torch.float64)
    transfer_weights(plain, fast)
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1, device="cpu")
    x, y = batch()
    results = [train_step(m, [(x, y)], build_optimizer(m, cfg)) for m in (plain, fast)]
    (loss_plain, norm_plain), (loss_fast, norm_fast) = results
    assert loss_fast == pytest.approx(loss_plain, abs=1e-12)
    assert norm_fast == pytest.approx(norm_plain, abs=1e-12)
    vocab = TINY["vocab_size"]
    for name, after in fast.state_dict().items():
        expected = plain.state_dict()[name]
        torch.testing.assert_close(
            after[: expected.shape[0]], expected, atol=1e-12, rtol=0, msg=name
        )
    assert fast.token_embedding.weight.shape[0] == 64  # 61 rounded up to a multiple of 64
    padded = fast.token_embedding.weight  # tied with the head: one tensor for both
    assert padded.grad is not None and torch.equal(
        padded.grad[vocab:], torch.zeros_like(padded.grad[vocab:])
    )
    assert torch.equal(
        padded.detach()[vocab:], torch.zeros_like(padded.detach()[vocab:])
    )  # no gradient, decay of 0 is 0


def test_fused_gelu_takes_the_same_training_step_as_chapter_3s() -> None:
    """PyTorch's tanh-approximate GELU kernel is chapter 3's formula: same loss, gradients
    and updated weights (float64, to rounding)."""
    plain = model(PLAIN, dtype=torch.float64)
    fused = model({**PLAIN, "gelu": "fused"}, dtype=torch.float64)
    activations = [type(m.transformer_blocks[0].feed_forward.layers[1]) for m in (plain, fused)]
    assert activations == [GELU, torch.nn.GELU]  # the switch really swaps the layer
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1, device="cpu")
    x, y = batch()
    (loss_plain, norm_plain), (loss_fused, norm_fused) = [
        train_step(m, [(x, y)], build_optimizer(m, cfg)) for m in (plain, fused)
    ]
    assert loss_fused == pytest.approx(loss_plain, abs=1e-12)
    assert norm_fused == pytest.approx(norm_plain, abs=1e-12)
    for name, after in fused.state_dict().items():
        torch.testing.assert_close(after, plain.state_dict()[name], atol=1e-12, rtol=0, msg=name)
    assert Kernels().gelu == "fused"  # the default
    with pytest.raises(ValueError, match="Kernels.gelu"):
        Kernels(gelu="erf")


def test_transfer_weights_refuses_a_different_architecture() -> None:
    with pytest.raises(ValueError, match="cannot copy"):
        transfer_weights(model(PLAIN), SydsGPT({**TINY, "embedding_dim": 8, "num_heads": 2}))


# --------------------------------------------------------------- bf16 autocast


def test_bf16_autocast_gradients_match_float32_within_bf16_precision() -> None:
    """bf16 rounds each matmul operand to 8 significant bits, a relative error of at most
    u = 2^-8 (0.39%). A gradient element passes a forward and a backward product, each
    rounding two operands, so its error is a few u; independent roundings partly cancel.
    We allow 4u (1.6%) relative error in the gradient's norm (seen: 0.35-0.56% on this model)
    and require that it is not 0 (the bf16 path really ran)."""
    m = model(FAST)
    x, y = batch()
    frozen = torch.optim.SGD(m.parameters(), lr=0.0)
    fp32 = StepOptions(grad_clip=None, amp_dtype=auto_amp_dtype("float32", "cpu"))
    train_step(m, [(x, y)], frozen, options=fp32)
    g32 = grads(m)
    bf16 = StepOptions(grad_clip=None, amp_dtype=auto_amp_dtype("bfloat16", "cpu"))
    train_step(m, [(x, y)], frozen, options=bf16)
    g16 = grads(m)
    relative = ((g16 - g32).norm() / g32.norm()).item()
    assert 0 < relative < 4 * BF16_UNIT_ROUNDOFF


# --------------------------------------------------------------- TF32


@pytest.fixture
def restore_matmul_precision() -> Any:
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


@pytest.mark.usefixtures("restore_matmul_precision")
def test_tf32_is_on_by_default_on_cuda_and_a_no_op_on_cpu() -> None:
    torch.set_float32_matmul_precision("highest")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for asked in (None, True, False):
        assert configure_tf32(asked, cpu) is False
        assert torch.get_float32_matmul_precision() == "highest"  # the CPU path touches nothing
    assert configure_tf32(None, cuda) is True  # only sets a flag: no GPU needed to test it
    assert torch.get_float32_matmul_precision() == "high"  # "high" = TF32 allowed
    assert configure_tf32(False, cuda) is False
    assert torch.get_float32_matmul_precision() == "highest"
    assert configure_tf32(True, cuda) is True
    assert torch.get_float32_matmul_precision() == "high"


# --------------------------------------------------------------- fused AdamW


def test_fused_adamw_takes_the_same_steps_as_the_for_each_implementation() -> None:
    # float64: the key bias's gradient is 0 up to rounding noise (softmax ignores a constant
    # added to every score), and Adam turns noise into steps of +-lr whose sign is random.
    models = [model(FAST, dtype=torch.float64), model(FAST, dtype=torch.float64)]
    optimizers = [
        build_optimizer(m, TrainConfig(lr=1e-2, fused_adamw=fused, device="cpu"))
        for m, fused in zip(models, (False, True))
    ]
    assert [o.defaults["fused"] for o in optimizers] == [False, True]
    for step in range(3):
        x, y = batch(seed=step)
        losses = [train_step(m, [(x, y)], o)[0] for m, o in zip(models, optimizers)]
        assert losses[1] == pytest.approx(losses[0], abs=1e-12)
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=1e-10, msg=name)


def test_fused_adamw_default_is_on_for_cuda_only() -> None:
    m = model(FAST)  # parameters on the CPU: building the optimizer does not need a GPU
    assert build_optimizer(m, TrainConfig(), device="cuda").defaults["fused"] is True
    assert not build_optimizer(m, TrainConfig(), device="cpu").defaults["fused"]
    assert not build_optimizer(m, TrainConfig(fused_adamw=False), device="cuda").defaults["fused"]


# --------------------------------------------------------------- torch.compile (inductor)


@pytest.mark.slow
def test_compiled_forward_and_training_step_equal_eager_with_the_inductor_backend() -> None:
    """The backend the benchmarks use: inductor generates and compiles C++ (gcc) on CPU."""
    cfg = TrainConfig(compile=True, device="cpu")
    assert cfg.compile_backend == "inductor"
    eager, compiled_model = model(FAST), model(FAST)
    compiled = torch.compile(compiled_model, backend=cfg.compile_backend)
    x, y = batch()
    torch.testing.assert_close(compiled(x), eager(x), atol=1e-5, rtol=1e-5)
    results = [
        train_step(m, [(x, y)], torch.optim.SGD(m.parameters(), lr=0.1)) for m in (eager, compiled)
    ]
    assert results[1][0] == pytest.approx(results[0][0], abs=1e-5)
    assert results[1][1] == pytest.approx(results[0][1], rel=1e-4)
    torch.testing.assert_close(grads(compiled_model), grads(eager), atol=1e-5, rtol=1e-4)
    for a, b in zip(eager.parameters(), compiled_model.parameters()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)
