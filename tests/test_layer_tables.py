"""A new layer variant is one class plus one registration (sydsgpt.config.register): the config
accepts its name, every block builds it, and parameter and FLOP counts follow from it."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_config
from torch import nn

from sydsgpt.config import FEED_FORWARDS, SydsGPTConfig, register
from sydsgpt.model import SydsGPT, count_parameters, flops_per_token


class SquaredReLUFeedForward(nn.Module):
    """A toy variant: ``down(relu(up(x))^2)`` (Primer's squared ReLU), hidden width 3d."""

    def __init__(self, emb_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.up = nn.Linear(emb_dim, hidden_dim, bias=False)
        self.down = nn.Linear(hidden_dim, emb_dim, bias=False)

    default_hidden_dim = staticmethod(lambda emb_dim: 3 * emb_dim)

    @classmethod
    def from_config(cls, config: SydsGPTConfig) -> SquaredReLUFeedForward:
        return cls(config.embedding_dim, config.ffn_hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)).square())


class TwoExpertFeedForward(nn.Module):
    """A toy mixture: two SquaredReLU experts, each token routed to one of them. A token meets
    only one expert's weights, which ``matmul_weights_per_token`` tells the FLOP count."""

    def __init__(self, emb_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.router = nn.Linear(emb_dim, 2, bias=False)
        self.experts = nn.ModuleList(SquaredReLUFeedForward(emb_dim, hidden_dim) for _ in range(2))

    default_hidden_dim = staticmethod(lambda emb_dim: 2 * emb_dim)

    @classmethod
    def from_config(cls, config: SydsGPTConfig) -> TwoExpertFeedForward:
        return cls(config.embedding_dim, config.ffn_hidden_size)

    def matmul_weights_per_token(self) -> int:
        one_expert = sum(p.numel() for p in self.experts[0].parameters())
        return self.router.weight.numel() + one_expert

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        choice = self.router(x).argmax(dim=-1, keepdim=True)  # (B, T, 1)
        outputs = torch.stack([expert(x) for expert in self.experts], dim=-1)  # (B, T, d, 2)
        return outputs.gather(-1, choice.unsqueeze(-2).expand(*x.shape, 1)).squeeze(-1)


@pytest.fixture()
def registered():
    register("ffn", "relu2")(SquaredReLUFeedForward)
    register("ffn", "two-experts")(TwoExpertFeedForward)
    yield
    del FEED_FORWARDS["relu2"], FEED_FORWARDS["two-experts"]


def test_an_unregistered_name_is_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match=r"config\['ffn'\] must be one of \('gelu', 'swiglu'\)"):
        SydsGPTConfig(**tiny_config(ffn="relu2"))


def test_a_registered_feed_forward_is_built_counted_and_trained(registered) -> None:
    config = tiny_config(ffn="relu2", linear_bias=False)
    model = SydsGPT(config)
    assert all(isinstance(b.feed_forward, SquaredReLUFeedForward) for b in model.transformer_blocks)
    d, layers = config["embedding_dim"], config["num_layers"]
    assert model.config.ffn_hidden_size == 3 * d
    # Its two d x 3d matrices replace GELU's two d x 4d ones (no biases): 2 d^2 fewer per layer.
    gelu = count_parameters(tiny_config(linear_bias=False))
    assert (
        count_parameters(config)
        == gelu - layers * 2 * d * d
        == sum(p.numel() for p in model.parameters())
    )
    assert (
        flops_per_token(config, training=False)
        == flops_per_token(tiny_config(linear_bias=False), training=False) - 2 * layers * 2 * d * d
    )
    ids = torch.randint(0, config["vocab_size"], (2, 8))
    loss = nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten())
    loss.backward()
    assert model.transformer_blocks[0].feed_forward.up.weight.grad.abs().sum() > 0


def test_a_layer_that_uses_part_of_its_weights_counts_only_those_flops(registered) -> None:
    config = tiny_config(ffn="two-experts", linear_bias=False)
    d, layers = config["embedding_dim"], config["num_layers"]
    one_expert = 2 * d * (2 * d)
    # parameters: the router and both experts; FLOPs: the router and one expert per token.
    assert count_parameters(config) == count_parameters(
        tiny_config(ffn="relu2", linear_bias=False, ffn_hidden_dim=2 * d)
    ) + layers * (2 * d + one_expert)
    matmul = flops_per_token(config, training=False) - flops_per_token(
        tiny_config(ffn="relu2", linear_bias=False, ffn_hidden_dim=2 * d), training=False
    )
    assert matmul == 2 * layers * 2 * d
    out = SydsGPT(config)(torch.randint(0, config["vocab_size"], (1, 5)))
    assert out.shape == (1, 5, config["vocab_size"])


def test_register_refuses_a_class_without_from_config_and_an_unknown_table() -> None:
    with pytest.raises(TypeError, match="needs a from_config"):
        register("ffn", "bad")(nn.Linear)
    with pytest.raises(ValueError, match="register\\(\\) takes one of"):
        register("optimizer", "adam")
