"""Chapter 4: the full model.

``SydsGPT(config)``: token + position embeddings, a stack of transformer blocks, a final
layer norm and a linear head to vocabulary logits. Plus the config (a plain dict, as in
the original SydsGPT-Pretraining project, validated here as :class:`SydsGPTConfig`),
parameter / memory / FLOP estimates, and greedy ``generate_simple``. The named configs
(GPT-2 sizes, the book's models) are in :mod:`sydsgpt.presets`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .attention import KVCache
from .blocks import TransformerBlock, make_norm
from .config import Kernels, SydsGPTConfig
from .rope import RotaryEmbedding
from .validation import check_input_ids


class SydsGPT(nn.Module):
    """A GPT-2 style decoder-only language model.

    Args:
        config: a dict with keys ``vocab_size``, ``embedding_dim``, ``context_length``,
            ``num_layers``, ``num_heads``, ``dropout``, ``qkv_bias`` (and the optional
            switches of :class:`SydsGPTConfig`), or a :class:`SydsGPTConfig`.

    Forward: ``(B, T)`` token ids -> ``(B, T, vocab_size)`` logits.
    """

    def __init__(self, config: Mapping[str, Any], kernels: Kernels | None = None) -> None:
        super().__init__()
        cfg = SydsGPTConfig.from_dict(config)
        self._config = cfg
        self.kernels = kernels or Kernels()
        rows = self.kernels.padded(cfg.vocab_size)  # vocab_size, unless padded (appendix)
        self.token_embedding = nn.Embedding(rows, cfg.embedding_dim)
        self.position_embedding = (
            nn.Embedding(cfg.context_length, cfg.embedding_dim)
            if cfg.positions == "learned"
            else None
        )
        # later: rotary position embeddings, applied inside attention (chapter 7)
        self.rope = (
            RotaryEmbedding(cfg.head_size, cfg.rope_theta, cfg.rope_scaling)
            if cfg.positions == "rope"
            else None
        )
        # endlater
        self.drop_embedding = nn.Dropout(cfg.dropout)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(cfg, self.kernels) for _ in range(cfg.num_layers)
        )
        self.final_layer_norm = make_norm(cfg)
        self.output_projection = nn.Linear(cfg.embedding_dim, rows, bias=False)
        if cfg.tie_weights:
            self.output_projection.weight = self.token_embedding.weight
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """Weights ~ N(0, 0.02), biases 0 (the norms keep their 1 and 0): GPT-2's normal
        initialisation, without GPT-2's extra scaling of the residual projections."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def config(self) -> SydsGPTConfig:
        """The model's :class:`SydsGPTConfig` (it also reads like the original dict config)."""
        return self._config

    # later: make_kv_cache, for fast generation (chapter 6)
    def make_kv_cache(self, preallocate: bool = True) -> list[KVCache]:
        """One empty :class:`KVCache` per layer, for incremental decoding."""
        return [KVCache(self.config.context_length, preallocate) for _ in self.transformer_blocks]

    # endlater

    def forward(
        self,
        input_ids: torch.Tensor,
        kv_cache: list[KVCache] | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits for every position.

        Args:
            input_ids: ``(B, T)`` int64 token ids.
            kv_cache: from :meth:`make_kv_cache`; ``input_ids`` then holds only the new
                tokens, which continue the cached ones (positions carry on).
            last_only: compute logits for the last position only (generation).

        Returns:
            ``(B, T, vocab_size)`` logits, or ``(B, 1, vocab_size)`` with ``last_only``.
        """
        positions = self._positions(input_ids, kv_cache)  # (T,): 0..T-1 without a cache
        x = self.token_embedding(input_ids)  # (B, T, d)
        if self.position_embedding is not None:
            x = x + self.position_embedding(positions)  # (B, T, d) + (T, d)
        x = self.drop_embedding(x)
        rope = self.rope(positions) if self.rope is not None else None  # RoPE (chapter 7)
        for i, block in enumerate(self.transformer_blocks):
            cache = kv_cache[i] if kv_cache is not None else None  # each layer's (chapter 6)
            x = block(x, kv_cache=cache, rope=rope)
        x = self.final_layer_norm(x)
        # later: last_only: only the last position's logits (generation, chapter 6)
        if last_only:
            x = x[:, -1:, :]
        # endlater
        logits = self.output_projection(x)  # (B, T, vocab)
        # later: drop the rows of a padded vocabulary (appendix: making it fast)
        logits = logits[..., : self.config.vocab_size]
        # endlater
        return logits

    def _positions(self, input_ids: torch.Tensor, kv_cache: list[KVCache] | None) -> torch.Tensor:
        """The positions of ``input_ids``' tokens, after any cached ones; checks the length."""
        check_input_ids(input_ids)
        past = kv_cache[0].length if kv_cache else 0
        t, limit = input_ids.shape[1], self.config.context_length
        if past + t > limit:
            raise ValueError(
                f"sequence of {past + t} tokens exceeds context_length={limit}; crop to the "
                f"last {limit} tokens (e.g. input_ids[:, -context_length:])."
            )
        return torch.arange(past, past + t, device=input_ids.device)

    # later: loading weights saved with another vocabulary padding (appendix: making it fast)
    def _load_from_state_dict(
        self, state_dict: dict[str, torch.Tensor], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # Rows past vocab_size never reach the logits, so a checkpoint loads whatever padding
        # (Kernels.pad_vocab_multiple) it was saved with: extra rows dropped, missing ones 0.
        rows = self.token_embedding.weight.shape[0]
        for name in ("token_embedding.weight", "output_projection.weight"):
            saved = state_dict.get(prefix + name)
            if (
                saved is not None
                and saved.dim() == 2
                and rows != saved.shape[0] >= self.config.vocab_size
            ):
                useful = saved[: self.config.vocab_size]
                padding = useful.new_zeros(rows - useful.shape[0], useful.shape[1])
                state_dict[prefix + name] = torch.cat([useful, padding])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # endlater


def skeleton(config: Mapping[str, Any]) -> SydsGPT:
    """The model ``config`` describes, built on the ``meta`` device: every layer and shape,
    no memory and no random numbers. What counts parameters and FLOPs looks at."""
    with torch.device("meta"):
        return SydsGPT(config)


def count_parameters(config: Mapping[str, Any] | nn.Module, include_position: bool = True) -> int:
    """Number of parameters of a model, or of the model a config describes.

    A config is counted on its :func:`skeleton`, so every layer a config can name is
    counted by what it builds. The tied head is counted once (``parameters()`` yields a
    shared tensor once); ``include_position=False`` leaves the position embedding out.
    """
    model = config if isinstance(config, nn.Module) else skeleton(config)
    total = sum(p.numel() for p in model.parameters())
    position = getattr(model, "position_embedding", None)
    if not include_position and position is not None:
        total -= position.weight.numel()
    return total


def model_memory_bytes(
    config: Mapping[str, Any] | nn.Module, bytes_per_param: int | torch.dtype = 4
) -> int:
    """Bytes the parameters take: 4 per parameter in float32, 2 in bfloat16.

    ``bytes_per_param`` is a number of bytes or a dtype (``torch.bfloat16``). Activations,
    gradients and optimizer state are not included.
    """
    if isinstance(bytes_per_param, torch.dtype):
        bytes_per_param = torch.empty((), dtype=bytes_per_param).element_size()
    return count_parameters(config) * bytes_per_param


def matmul_weights(module: nn.Module) -> int:
    """Weights a token meets in matrix products inside ``module``: its ``nn.Linear`` weights.

    A layer that uses only part of its weights per token (a mixture of experts) says so
    with a method ``matmul_weights_per_token()``, which is used instead.
    """
    own = getattr(module, "matmul_weights_per_token", None)
    if callable(own):
        return int(own())
    if isinstance(module, nn.Linear):
        return module.weight.numel()
    return sum(matmul_weights(child) for child in module.children())


def flops_per_token(
    config: Mapping[str, Any], seq_len: int | None = None, training: bool = True
) -> int:
    """Model FLOPs per token: matrix products in the blocks and head, plus attention.

    Forward: ``2 N + 4 L T q``, where ``N`` counts the weights a token meets in matrix
    products (:func:`matmul_weights` of the blocks, plus the head: ``12 d^2`` per GPT-2
    layer) and ``4 L T q`` is the attention scores ``Q K^T`` and the weighted sum ``A V``
    over ``T`` positions (``q``: all query heads' width; causal halving not counted).
    Training (forward + backward) is three times that: ``6 N + 12 L T q``, the convention
    of the PaLM paper (appendix B), used for model FLOPs utilisation.
    """
    model = skeleton(config)
    c = model.config
    t = c.context_length if seq_len is None else seq_len
    n_matmul = sum(matmul_weights(block) for block in model.transformer_blocks)
    n_matmul += matmul_weights(model.output_projection)
    attention = sum(4 * t * block.attention.q_dim for block in model.transformer_blocks)
    forward = 2 * n_matmul + attention
    return 3 * forward if training else forward


@torch.no_grad()
def generate_simple(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    context_length: int | None = None,
    *,
    context_len: int | None = None,
) -> torch.Tensor:
    """Greedy decoding: append the most likely next token ``max_new_tokens`` times.

    The model only ever sees the last ``context_length`` tokens (default: the model's
    ``config.context_length``). ``context_len=`` is the original project's name for the
    same argument and still works.

    Args:
        input_ids: ``(B, T)`` prompt ids.
    Returns:
        ``(B, T + max_new_tokens)`` ids.
    """
    if context_len is not None:
        if context_length is not None and context_length != context_len:
            raise TypeError("give context_length or its old name context_len, not both")
        context_length = context_len
    if context_length is None:
        config = getattr(model, "config", None)
        if not isinstance(config, SydsGPTConfig):
            raise TypeError(
                "generate_simple needs context_length for a model without a SydsGPTConfig"
            )
        context_length = config.context_length
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if (
        isinstance(context_length, bool)
        or not isinstance(context_length, int)
        or context_length < 1
    ):
        raise ValueError(
            "context_length must be an integer >= 1 (usually config['context_length']), got "
            f"{context_length!r}"
        )
    check_input_ids(input_ids)
    for _ in range(max_new_tokens):
        window = input_ids[
            :, -context_length:
        ]  # crop: the model sees at most context_length tokens
        # SydsGPT can skip the head for every position but the last (the only one used).
        logits = model(window, last_only=True) if isinstance(model, SydsGPT) else model(window)
        logits = logits[:, -1, :]  # (B, vocab)
        next_id = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        input_ids = torch.cat([input_ids, next_id], dim=1)
    return input_ids
