"""Chapter 3 exercises: layer normalisation, the GELU activation, and a block's parameter count."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..blocks import TransformerBlock
from .checker import Case, Exercise, expect_close, expect_equal, register

# ---------------------------------------------------------------- 3.1 layer norm


def _solution_layer_norm(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * scale + shift


def _wrong_layer_norm_unbiased(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True)  # torch's default divides by d - 1
    return (x - mean) / torch.sqrt(var + eps) * scale + shift


def _wrong_layer_norm_whole_tensor(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps) * scale + shift  # not per token


def _wrong_layer_norm_no_affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return _solution_layer_norm(x, torch.ones_like(scale), torch.zeros_like(shift), eps)


def _run_layer_norm_by_hand(candidate) -> None:
    # Mean 2.5, variance ((-1.5)^2 + (-0.5)^2 + 0.5^2 + 1.5^2) / 4 = 1.25.
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    expected = (x - 2.5) / math.sqrt(1.25 + 1e-5)
    expect_close(candidate(x, torch.ones(4), torch.zeros(4)), expected, "layer_norm([[1, 2, 3, 4]])")


def _run_layer_norm_per_token(candidate) -> None:
    # Two tokens with very different ranges are normalised separately: both become the same.
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    out = candidate(x, torch.ones(4), torch.zeros(4))
    expect_equal(tuple(out.shape), (2, 4), "output shape")
    expect_close(out[1], out[0], "token 2 (token 1 times ten) after normalising", atol=1e-4)


def _run_layer_norm_scale_shift(candidate) -> None:
    x = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(0)) * 2 + 1
    scale = torch.tensor([1.0, 2.0, 0.5, -1.0, 3.0, 1.0])
    shift = torch.tensor([0.0, 1.0, -1.0, 0.5, 0.0, 2.0])
    expected = F.layer_norm(x, (6,), scale, shift, eps=1e-5)
    expect_close(candidate(x, scale, shift), expected, "layer_norm with scale and shift, (2, 3, 6) input")


register(
    Exercise(
        key="3.1",
        title="layer_norm(x, scale, shift, eps=1e-5): normalise each token's features, then scale and shift",
        cases=[
            Case("[[1, 2, 3, 4]] by hand (mean 2.5, variance 1.25)", _run_layer_norm_by_hand),
            Case("each token is normalised on its own", _run_layer_norm_per_token),
            Case("scale and shift are applied per feature", _run_layer_norm_scale_shift),
        ],
        solution=_solution_layer_norm,
        wrong_answers=[_wrong_layer_norm_unbiased, _wrong_layer_norm_whole_tensor, _wrong_layer_norm_no_affine],
        hint="Take the mean and the variance over the last dimension (keepdim=True). The variance divides by d, "
        "not d - 1: use x.var(dim=-1, keepdim=True, unbiased=False). Then multiply by scale and add shift.",
    )
)

# ---------------------------------------------------------------- 3.2 GELU


def _solution_gelu(x: torch.Tensor) -> torch.Tensor:
    inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
    return 0.5 * x * (1.0 + torch.tanh(inner))


def _wrong_gelu_exact(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))  # the exact GELU, not GPT-2's approximation


def _wrong_gelu_relu(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x)


def _wrong_gelu_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)  # another approximation, a little further off


def _run_gelu_points(candidate) -> None:
    x = torch.tensor([0.0, 1.0, -1.0])
    # tanh(sqrt(2/pi) * 1.044715) = 0.6823, so gelu(1) = 0.5 * 1.6823 and gelu(-1) = -0.5 * 0.3177.
    t = math.tanh(math.sqrt(2.0 / math.pi) * 1.044715)
    expected = torch.tensor([0.0, 0.5 * (1 + t), -0.5 * (1 - t)])
    expect_close(candidate(x), expected, "gelu([0, 1, -1])", atol=1e-6)


def _run_gelu_range(candidate) -> None:
    x = torch.linspace(-5, 5, 101)
    expect_close(candidate(x), F.gelu(x, approximate="tanh"), "gelu on 101 points from -5 to 5", atol=1e-6)


def _run_gelu_shape(candidate) -> None:
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))
    out = candidate(x)
    expect_equal(tuple(out.shape), (2, 3, 4), "output shape")
    expect_close(out, F.gelu(x, approximate="tanh"), "gelu of a (2, 3, 4) tensor", atol=1e-6)


register(
    Exercise(
        key="3.2",
        title="gelu(x): the tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), elementwise",
        cases=[
            Case("gelu(0), gelu(1), gelu(-1) by hand", _run_gelu_points),
            Case("matches the formula from -5 to 5", _run_gelu_range),
            Case("works elementwise on any shape", _run_gelu_shape),
        ],
        solution=_solution_gelu,
        wrong_answers=[_wrong_gelu_exact, _wrong_gelu_relu, _wrong_gelu_sigmoid],
        hint="Use torch.tanh and math.sqrt(2 / math.pi); the cube is x ** 3. The exact GELU with erf differs "
        "from GPT-2's tanh form by up to about 5e-4, which the checks notice.",
    )
)

# ---------------------------------------------------------------- 3.3 parameter count


def _solution_block_parameters(emb_dim: int, qkv_bias: bool = False) -> int:
    d = emb_dim
    layer_norms = 2 * (d + d)  # scale and shift, twice
    attention = 3 * d * d + (3 * d if qkv_bias else 0) + (d * d + d)  # Q, K, V + output projection
    feed_forward = (d * 4 * d + 4 * d) + (4 * d * d + d)
    return layer_norms + attention + feed_forward


def _wrong_block_parameters_no_norms(emb_dim: int, qkv_bias: bool = False) -> int:
    return _solution_block_parameters(emb_dim, qkv_bias) - 4 * emb_dim


def _wrong_block_parameters_no_biases(emb_dim: int, qkv_bias: bool = False) -> int:
    return 12 * emb_dim * emb_dim + 4 * emb_dim  # weights and layer norms only


def _wrong_block_parameters_ignores_qkv_bias(emb_dim: int, qkv_bias: bool = False) -> int:
    return _solution_block_parameters(emb_dim, False)


def _block_parameter_case(emb_dim: int, qkv_bias: bool) -> Case:
    def run(candidate) -> None:
        block = TransformerBlock(emb_dim, context_length=4, num_heads=4, qkv_bias=qkv_bias)
        expected = sum(p.numel() for p in block.parameters())
        expect_equal(int(candidate(emb_dim, qkv_bias)), expected, f"block_parameters({emb_dim}, qkv_bias={qkv_bias})")

    bias = "with" if qkv_bias else "without"
    return Case(f"a block of width {emb_dim}, {bias} query/key/value biases", run)


register(
    Exercise(
        key="3.3",
        title="block_parameters(emb_dim, qkv_bias=False): the number of parameters of one TransformerBlock",
        cases=[
            _block_parameter_case(8, False),
            _block_parameter_case(8, True),
            _block_parameter_case(768, False),
        ],
        solution=_solution_block_parameters,
        wrong_answers=[_wrong_block_parameters_no_norms, _wrong_block_parameters_no_biases, _wrong_block_parameters_ignores_qkv_bias],
        hint="Count each part: two LayerNorms (scale and shift), the Q, K, V projections (bias only if qkv_bias), "
        "the output projection (always with bias), and the feed-forward's two Linear layers d -> 4d -> d with biases.",
    )
)
