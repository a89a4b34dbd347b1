"""Chapter 3 exercises: a post-norm block, the exact GELU, GPT-2's scaled residual
initialisation, and a block's parameters for any hidden width and bias setting."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..blocks import TransformerBlock
from ..config import SydsGPTConfig
from .checker import Case, Exercise, expect_close, expect_equal, register

# ---------------------------------------------------------------- 3.1 post-norm block


def _solution_post_norm_block(x, attention, feed_forward, norm1, norm2):
    x = norm1(x + attention(x))  # the 2017 transformer: normalise AFTER adding the shortcut
    return norm2(x + feed_forward(x))


def _wrong_post_norm_is_pre_norm(x, attention, feed_forward, norm1, norm2):
    """Writes GPT-2's pre-norm block, x + f(LN(x)): in
    post-norm the norm comes after the sum, LN(x + f(x))."""
    x = x + attention(norm1(x))
    return x + feed_forward(norm2(x))


def _wrong_post_norm_branch_only(x, attention, feed_forward, norm1, norm2):
    """Normalises only the branch, x + LN(f(x)): in
    post-norm the shortcut's sum itself is normalised."""
    x = x + norm1(attention(x))
    return x + norm2(feed_forward(x))


def _wrong_post_norm_one_norm(x, attention, feed_forward, norm1, norm2):
    """Uses norm1 for both sub-layers: each has its own norm (with its own scale and shift)."""
    x = norm1(x + attention(x))
    return norm1(x + feed_forward(x))


def _run_post_norm_by_hand(candidate) -> None:
    # attention doubles, feed-forward adds 1, norm1 halves,
    # norm2 subtracts 1 (stand-ins, easy to follow):
    # x = 2 -> norm1(2 + 4) = 3 -> norm2(3 + 4) = 6.
    out = candidate(
        torch.tensor([2.0]), lambda t: 2 * t, lambda t: t + 1, lambda t: t / 2, lambda t: t - 1
    )
    expect_close(
        out,
        torch.tensor([6.0]),
        "post_norm_block(2) with attention 2t, feed-forward t + 1, norm1 t / 2, norm2 t - 1",
    )


def _block(emb_dim: int, num_heads: int, **switches) -> TransformerBlock:
    """A GPT-2 block of width ``emb_dim`` (context 4), with chapter 7's ``switches``."""
    sizes = dict(
        vocab_size=1, embedding_dim=emb_dim, context_length=4, num_layers=1, num_heads=num_heads
    )
    return TransformerBlock(SydsGPTConfig(**sizes, **switches))


def _run_post_norm_real(candidate) -> None:
    torch.manual_seed(0)
    block = _block(8, 2).eval()
    x = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = candidate(
            x, block.attention, block.feed_forward, block.layer_norm1, block.layer_norm2
        )
        h = block.layer_norm1(x + block.attention(x))
        expected = block.layer_norm2(h + block.feed_forward(h))
    expect_close(out, expected, "post_norm_block with a TransformerBlock's own layers", atol=1e-5)
    expect_close(
        out.mean(-1),
        torch.zeros(2, 4),
        "each token's mean after the final norm (post-norm output is normalised)",
        atol=1e-5,
    )


register(
    Exercise(
        key="3.1",
        title="post_norm_block(x, attention, feed_forward, norm1, norm2): the 2017 transformer's "
        "block, the norm after each shortcut",
        cases=[
            Case("stand-in layers by hand", _run_post_norm_by_hand),
            Case("a real block's layers, rearranged", _run_post_norm_real),
        ],
        solution=_solution_post_norm_block,
        wrong_answers=[
            _wrong_post_norm_is_pre_norm,
            _wrong_post_norm_branch_only,
            _wrong_post_norm_one_norm,
        ],
        hint="Two lines: x = norm1(x + attention(x)), then return norm2(x + feed_forward(x)). "
        "Compare with the chapter's pre-norm block, where the norm sits inside the branch.",
        difficulty=1,
    )
)

# ---------------------------------------------------------------- 3.2 exact GELU


def _solution_gelu_exact(x: torch.Tensor) -> torch.Tensor:
    return (
        0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    )  # x * Phi(x), Phi the standard normal CDF


def _wrong_gelu_exact_tanh(x: torch.Tensor) -> torch.Tensor:
    """Uses the chapter's tanh approximation: it is up
    to about 5e-4 away from the exact x * Phi(x)."""
    inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
    return 0.5 * x * (1.0 + torch.tanh(inner))


def _wrong_gelu_exact_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Uses the sigmoid approximation x * sigmoid(1.702 x), further off still."""
    return x * torch.sigmoid(1.702 * x)


def _wrong_gelu_exact_no_sqrt2(x: torch.Tensor) -> torch.Tensor:
    """Writes Phi(x) = (1 + erf(x)) / 2: the normal CDF is (1 + erf(x / sqrt(2))) / 2."""
    return 0.5 * x * (1.0 + torch.erf(x))


def _run_gelu_exact_points(candidate) -> None:
    # Phi(1) = 0.841345, Phi(-1) = 0.158655 (tables of the normal distribution).
    expected = torch.tensor([0.0, 0.841345, -0.158655, 2 * 0.977250])
    expect_close(
        candidate(torch.tensor([0.0, 1.0, -1.0, 2.0])),
        expected,
        "gelu_exact([0, 1, -1, 2])",
        atol=2e-6,
    )


def _run_gelu_exact_range(candidate) -> None:
    x = torch.linspace(-4, 4, 81, dtype=torch.float64)
    expect_close(
        candidate(x),
        F.gelu(x),
        "gelu_exact on 81 points from -4 to 4 (float64)",
        atol=1e-7,
        rtol=1e-6,
    )


register(
    Exercise(
        key="3.2",
        title="gelu_exact(x): the exact GELU x * Phi(x), Phi the standard normal CDF, elementwise",
        cases=[
            Case("values from the normal table", _run_gelu_exact_points),
            Case("matches the exact GELU from -4 to 4", _run_gelu_exact_range),
        ],
        solution=_solution_gelu_exact,
        wrong_answers=[
            _wrong_gelu_exact_tanh,
            _wrong_gelu_exact_sigmoid,
            _wrong_gelu_exact_no_sqrt2,
        ],
        hint="The standard normal CDF is Phi(x) = (1 + erf(x / sqrt(2))) / 2, and torch.erf "
        "exists.",
        difficulty=1,
    )
)

# ------------------------------------------------------- 3.3 GPT-2's scaled residual initialisation


def _residual_linears(block: TransformerBlock) -> list[torch.nn.Linear]:
    """The two layers whose outputs are added to the residual stream."""
    return [block.attention.output_projection, block.feed_forward.layers[2]]


def _solution_scale_residual_init(
    block: TransformerBlock, num_layers: int, std: float = 0.02
) -> None:
    with torch.no_grad():
        for layer in _residual_linears(block):
            layer.weight.normal_(0.0, std / math.sqrt(2 * num_layers))  # two additions per block


def _wrong_scale_init_per_block(
    block: TransformerBlock, num_layers: int, std: float = 0.02
) -> None:
    """Divides by sqrt(num_layers): each block adds to the residual stream TWICE (attention and
    feed-forward), so there are 2 * num_layers additions: divide by sqrt(2 * num_layers)."""
    with torch.no_grad():
        for layer in _residual_linears(block):
            layer.weight.normal_(0.0, std / math.sqrt(num_layers))


def _wrong_scale_init_every_linear(
    block: TransformerBlock, num_layers: int, std: float = 0.02
) -> None:
    """Re-initialises every Linear of the block with the small std: only the two layers that write
    into the residual stream (the attention's output projection and the feed-forward's last layer)
    are scaled."""
    with torch.no_grad():
        for module in block.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, std / math.sqrt(2 * num_layers))


def _wrong_scale_init_rescales(block: TransformerBlock, num_layers: int, std: float = 0.02) -> None:
    """Multiplies the existing weights by 1 / sqrt(2 * num_layers): they were not drawn with std
    0.02, so draw new ones from N(0, (std / sqrt(2 * num_layers))^2)."""
    with torch.no_grad():
        for layer in _residual_linears(block):
            layer.weight.mul_(1 / math.sqrt(2 * num_layers))


def _scaled_block(seed: int) -> TransformerBlock:
    torch.manual_seed(seed)
    return _block(256, 4)


def _scaled_std_case(num_layers: int) -> Case:
    def run(candidate) -> None:
        block = _scaled_block(num_layers)
        torch.manual_seed(100 + num_layers)
        candidate(block, num_layers)
        target = 0.02 / math.sqrt(2 * num_layers)
        for name, layer in (
            ("attention.output_projection", block.attention.output_projection),
            ("feed_forward.layers[2]", block.feed_forward.layers[2]),
        ):
            got = layer.weight.detach().std().item()
            if abs(got / target - 1) > 0.03:
                raise AssertionError(
                    f"std of {name}.weight with num_layers={num_layers}: expected "
                    f"0.02 / sqrt(2 * {num_layers}) = {target:.5f}, got {got:.5f}"
                )
            expect_close(
                layer.weight.detach().mean().item(),
                0.0,
                f"mean of {name}.weight",
                atol=3 * target / 100,
            )

    return Case(f"the two residual projections get std 0.02 / sqrt(2 * {num_layers})", run)


def _run_scaled_leaves_others(candidate) -> None:
    block = _scaled_block(0)
    before = {n: p.detach().clone() for n, p in block.named_parameters()}
    candidate(block, 12)
    residual = {"attention.output_projection.weight", "feed_forward.layers.2.weight"}
    for name, param in block.named_parameters():
        if name not in residual and not torch.equal(param.detach(), before[name]):
            raise AssertionError(
                f"{name} changed: only the two residual projections' weights are re-initialised"
            )


register(
    Exercise(
        key="3.3",
        in_place=True,
        title="scale_residual_init_(block, num_layers, std=0.02): GPT-2's initialisation of the "
        "layers that write into the residual stream, in place",
        cases=[
            _scaled_std_case(12),
            _scaled_std_case(2),
            Case("every other parameter is left alone", _run_scaled_leaves_others),
        ],
        solution=_solution_scale_residual_init,
        wrong_answers=[
            _wrong_scale_init_per_block,
            _wrong_scale_init_every_linear,
            _wrong_scale_init_rescales,
        ],
        hint="With torch.no_grad(), draw block.attention.output_projection.weight and "
        "block.feed_forward.layers[2].weight anew with .normal_(0.0, std / math.sqrt(2 * "
        "num_layers)): each of the 2 * num_layers additions then adds variance std^2 / (2 * "
        "num_layers), so the residual stream's variance stays about std^2 whatever the depth.",
        difficulty=2,
    )
)

# -------------------------------------------------------- 3.4 parameter count, any width and biases


def _solution_block_parameters(
    emb_dim: int, hidden_dim: int, qkv_bias: bool = False, linear_bias: bool = True
) -> int:
    d, h = emb_dim, hidden_dim
    layer_norms = 2 * (d + d)  # scale and shift, twice
    attention = 3 * d * d + (3 * d if qkv_bias else 0) + d * d + (d if linear_bias else 0)
    feed_forward = d * h + h * d + ((h + d) if linear_bias else 0)
    return layer_norms + attention + feed_forward


def _wrong_block_parameters_four_d(
    emb_dim: int, hidden_dim: int, qkv_bias: bool = False, linear_bias: bool = True
) -> int:
    """Assumes the hidden width is 4 * emb_dim, as in GPT-2: use hidden_dim."""
    return _solution_block_parameters(emb_dim, 4 * emb_dim, qkv_bias, linear_bias)


def _wrong_block_parameters_no_norms(
    emb_dim: int, hidden_dim: int, qkv_bias: bool = False, linear_bias: bool = True
) -> int:
    """Forgets the two layer norms (a scale and a shift of emb_dim each)."""
    return _solution_block_parameters(emb_dim, hidden_dim, qkv_bias, linear_bias) - 4 * emb_dim


def _wrong_block_parameters_ignores_linear_bias(
    emb_dim: int, hidden_dim: int, qkv_bias: bool = False, linear_bias: bool = True
) -> int:
    """Counts the biases of the output projection and
    the feed-forward even when linear_bias is False."""
    return _solution_block_parameters(emb_dim, hidden_dim, qkv_bias, True)


def _wrong_block_parameters_ignores_qkv_bias(
    emb_dim: int, hidden_dim: int, qkv_bias: bool = False, linear_bias: bool = True
) -> int:
    """Leaves out the query/key/value biases when qkv_bias is True (3 * emb_dim numbers)."""
    return _solution_block_parameters(emb_dim, hidden_dim, False, linear_bias)


def _block_parameter_case(emb_dim: int, hidden_dim: int, qkv_bias: bool, linear_bias: bool) -> Case:
    def run(candidate) -> None:
        block = _block(
            emb_dim, 4, qkv_bias=qkv_bias, ffn_hidden_dim=hidden_dim, linear_bias=linear_bias
        )
        expected = sum(p.numel() for p in block.parameters())
        what = (
            f"block_parameters({emb_dim}, {hidden_dim}, qkv_bias={qkv_bias}, "
            f"linear_bias={linear_bias})"
        )
        expect_equal(int(candidate(emb_dim, hidden_dim, qkv_bias, linear_bias)), expected, what)

    return Case(
        f"width {emb_dim}, hidden {hidden_dim}, qkv_bias={qkv_bias}, linear_bias={linear_bias}", run
    )


register(
    Exercise(
        key="3.4",
        title="block_parameters(emb_dim, hidden_dim, qkv_bias=False, linear_bias=True): the "
        "parameters of a TransformerBlock with any feed-forward width",
        cases=[
            _block_parameter_case(8, 32, False, True),
            _block_parameter_case(8, 20, True, True),
            _block_parameter_case(16, 24, True, False),
            _block_parameter_case(768, 2048, False, False),
        ],
        solution=_solution_block_parameters,
        wrong_answers=[
            _wrong_block_parameters_four_d,
            _wrong_block_parameters_no_norms,
            _wrong_block_parameters_ignores_linear_bias,
            _wrong_block_parameters_ignores_qkv_bias,
        ],
        hint="Count each part: two norms (2 * emb_dim each); Q, K, V (emb_dim^2 each, + emb_dim "
        "biases if qkv_bias); the output projection (emb_dim^2, + emb_dim if linear_bias); the "
        "feed-forward emb_dim -> hidden_dim -> emb_dim (two matrices, + hidden_dim + emb_dim "
        "biases if linear_bias).",
        difficulty=2,
    )
)
