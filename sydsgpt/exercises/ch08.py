"""Chapter 8 exercises: a real model's file and its arithmetic (a Q8_0 round trip, a Q4_0 block
read by hand, the nucleus of a next-token distribution, int8 with one scale per group of
columns, and the weight bytes one decoding step reads).

Difficulty: ★ a short formula, ★★ a few careful lines, ★★★ a step that needs the
chapter's shapes and conventions.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import torch

from .checker import Case, Exercise, expect_close, expect_equal, register


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- 8.1 a Q8_0 round trip


def _solution_q8_0_round_trip(block: torch.Tensor) -> torch.Tensor:
    x = block.float()
    d = x.abs().max() / 127  # float32, as GGML computes it
    if d == 0:
        return torch.zeros_like(x)  # an all-zero block: d = 0 and every q = 0
    q = torch.round(x / d).clamp(-127, 127)  # the int8 values
    d16 = d.to(torch.float16).to(torch.float32)  # the file stores d as float16
    return d16 * q


def _wrong_q8_0_over_128(block):
    """Divides max|x| by 128: the largest value then needs q = 128, one past int8's 127, and
    clamping it loses the largest value. Q8_0 uses d = max|x| / 127."""
    x = block.float()
    d = x.abs().max() / 128
    if d == 0:
        return torch.zeros_like(x)
    q = torch.round(x / d).clamp(-127, 127)
    return d.half().float() * q


def _wrong_q8_0_floor(block):
    """Floors x / d instead of rounding it: the error reaches a whole step d instead of d / 2."""
    x = block.float()
    d = x.abs().max() / 127
    if d == 0:
        return torch.zeros_like(x)
    q = torch.floor(x / d).clamp(-127, 127)
    return d.half().float() * q


def _wrong_q8_0_range_over_255(block):
    """Takes d = (max - min) / 255, as an asymmetric scheme would, but keeps no zero point:
    Q8_0 is symmetric, d = max|x| / 127 and q = round(x / d)."""
    x = block.float()
    d = (x.max() - x.min()) / 255
    q = torch.round(x / d).clamp(-127, 127)
    return d.half().float() * q


def _wrong_q8_0_float32_scale(block):
    """Multiplies q by the float32 d: the file stores d as float16, and dequantizing reads
    that float16 back, so the result is float16(d) * q."""
    x = block.float()
    d = x.abs().max() / 127
    if d == 0:
        return torch.zeros_like(x)
    return d * torch.round(x / d).clamp(-127, 127)


def _run_q8_0_by_hand(candidate) -> None:
    # max|x| = 63.5, so d = 63.5 / 127 = 0.5 (exact in float16) and every x / d is an integer.
    ks = [*range(-15, 16), 127]
    block = torch.tensor([0.5 * k for k in ks])
    expect_close(
        candidate(block),
        torch.tensor([0.5 * k for k in ks]),
        "multiples of 0.5 up to 63.5 (d = 0.5): the round trip is exact",
        atol=0.0,
        rtol=0.0,
    )


def _run_q8_0_zeros(candidate) -> None:
    out = torch.as_tensor(candidate(torch.zeros(32)))
    expect_close(out, torch.zeros(32), "a block of zeros (d = 0: no division by zero)", atol=0.0)


def _run_q8_0_random(candidate) -> None:
    import gguf.quants

    x = _randn(32, seed=8) * 0.05
    out = torch.as_tensor(candidate(x.clone())).double()
    expect_equal(tuple(out.shape), (32,), "a random block: output shape")
    d32 = (x.abs().max() / 127).double()  # the scale by the rule, in float32
    d16 = (x.abs().max() / 127).half().double()  # and as the file stores it
    k = out / d16
    off_grid = (k - k.round()).abs().max().item()
    if off_grid > 1e-3 or k.abs().max().item() > 127 + 1e-3:
        raise AssertionError(
            "a random block: every value must be float16(d) * q with q an integer in "
            f"[-127, 127] (d = max|x| / 127); found one {off_grid:.3g} of a step off that grid "
            f"or a |q| of {k.abs().max().item():.4g}"
        )
    error = (out - x.double()).abs().max().item()
    bound = (d32 / 2 + 127 * (d32 - d16).abs()).item() + 1e-7  # rounding + float16 scale
    if error > bound:
        raise AssertionError(
            f"a random block: the largest error |x - dequantized| is {error:.4g}, but rounding "
            f"to the nearest step keeps it within d / 2 (about {bound:.4g} here)"
        )
    raw = gguf.quants.quantize(x.numpy(), gguf.GGMLQuantizationType.Q8_0)
    reference = torch.from_numpy(
        gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q8_0)
    ).double()
    expect_close(out, reference, "a random block against the gguf package", atol=1.001 * d16.item())
    same = int((out == reference).sum())
    if same < 31:  # a value exactly halfway between two steps may round either way
        raise AssertionError(
            f"a random block against the gguf package: only {same} of 32 values are exactly "
            "equal (expected at least 31): is d stored as float16 before multiplying?"
        )


register(
    Exercise(
        key="8.1",
        title="q8_0_round_trip(block): quantize 32 float32 values as GGML's Q8_0 does and return "
        "the dequantized values float16(d) * q",
        cases=[
            Case("a block with d = 0.5 by hand", _run_q8_0_by_hand),
            Case("a block of zeros", _run_q8_0_zeros),
            Case("a random block", _run_q8_0_random),
        ],
        solution=_solution_q8_0_round_trip,
        wrong_answers=[
            _wrong_q8_0_over_128,
            _wrong_q8_0_floor,
            _wrong_q8_0_range_over_255,
            _wrong_q8_0_float32_scale,
        ],
        hint="d = max|x| / 127 and q = round(x / d), clamped to [-127, 127]; return zeros when d "
        "is 0. The file keeps d as float16: dequantize with d.to(torch.float16).float() * q.",
        difficulty=1,
    )
)

# ---------------------------------------------------------------- 8.2 a Q4_0 block by hand


def _solution_dequantize_q4_0_block(raw: bytes) -> torch.Tensor:
    (d,) = struct.unpack("<e", raw[:2])  # little-endian float16
    qs = torch.tensor(list(raw[2:18]), dtype=torch.int64)  # 16 bytes
    nibbles = torch.cat([qs & 0x0F, qs >> 4])  # values 0..15 low, then values 16..31 high
    return (d * (nibbles - 8)).to(torch.float32)


def _wrong_q4_0_interleaved(raw):
    """Reads the nibbles in interleaved order (byte 0 holds values 0 and 1): in GGML's Q4_0 byte
    j holds value j in its low 4 bits and value j + 16 in its high 4 bits."""
    (d,) = struct.unpack("<e", raw[:2])
    qs = torch.tensor(list(raw[2:18]), dtype=torch.int64)
    nibbles = torch.stack([qs & 0x0F, qs >> 4], dim=1).reshape(-1)
    return (d * (nibbles - 8)).to(torch.float32)


def _wrong_q4_0_no_offset(raw):
    """Forgets to subtract 8: a nibble is 0..15, and Q4_0 stores q + 8 so that the value is
    d * (nibble - 8), from -8 d to 7 d."""
    (d,) = struct.unpack("<e", raw[:2])
    qs = torch.tensor(list(raw[2:18]), dtype=torch.int64)
    return (d * torch.cat([qs & 0x0F, qs >> 4])).to(torch.float32)


def _wrong_q4_0_big_endian(raw):
    """Reads the scale d as big-endian: GGUF files are little-endian (struct format '<e')."""
    (d,) = struct.unpack(">e", raw[:2])
    qs = torch.tensor(list(raw[2:18]), dtype=torch.int64)
    return (d * (torch.cat([qs & 0x0F, qs >> 4]) - 8)).to(torch.float32)


def _q4_0_block(d: float, low: list[int], high: list[int]) -> bytes:
    """The 18 bytes of a Q4_0 block: d, then byte j = low[j] | high[j] << 4."""
    return struct.pack("<e", d) + bytes(lo | (hi << 4) for lo, hi in zip(low, high))


def _run_q4_0_by_hand(candidate) -> None:
    # d = 0.5; byte j holds nibble j (value j) low and nibble 15 - j (value j + 16) high.
    raw = _q4_0_block(0.5, list(range(16)), [15 - j for j in range(16)])
    first = [-4.0, -3.5, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    expect_close(
        candidate(raw),
        torch.tensor(first + first[::-1]),
        "d = 0.5, low nibbles 0..15, high nibbles 15..0",
        atol=0.0,
    )


def _run_q4_0_constant(candidate) -> None:
    # Every low nibble 9 and every high nibble 3, d = -2: values 0..15 are -2, 16..31 are 10.
    raw = _q4_0_block(-2.0, [9] * 16, [3] * 16)
    expect_close(
        candidate(raw),
        torch.tensor([-2.0] * 16 + [10.0] * 16),
        "d = -2, low nibbles 9, high nibbles 3",
        atol=0.0,
    )


def _run_q4_0_random(candidate) -> None:
    import gguf.quants

    from ..quants import dequantize

    rng = np.random.default_rng(9)
    for i in range(4):
        d = np.float16(rng.normal() * 0.05)
        raw = d.astype("<f2").tobytes() + rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
        block = np.frombuffer(raw, dtype=np.uint8)
        out = candidate(raw)
        expect_close(out, dequantize(block, "Q4_0"), f"random block {i} against sydsgpt.quants")
        expect_close(
            out,
            gguf.quants.dequantize(block, gguf.GGMLQuantizationType.Q4_0),
            f"random block {i} against the gguf package",
        )


register(
    Exercise(
        key="8.2",
        title="dequantize_q4_0_block(raw): the 32 float32 values of one 18-byte GGML Q4_0 block "
        "(float16 d, then 16 bytes of nibbles)",
        cases=[
            Case("a block by hand", _run_q4_0_by_hand),
            Case("a constant block", _run_q4_0_constant),
            Case("random blocks", _run_q4_0_random),
        ],
        solution=_solution_dequantize_q4_0_block,
        wrong_answers=[_wrong_q4_0_interleaved, _wrong_q4_0_no_offset, _wrong_q4_0_big_endian],
        hint="struct.unpack('<e', raw[:2]) reads the little-endian float16 d. Byte j of "
        "raw[2:18] holds value j in its low 4 bits (b & 0x0F) and value j + 16 in its high 4 "
        "bits (b >> 4); each value is d * (nibble - 8).",
        difficulty=2,
    )
)

# ---------------------------------------------------------------- 8.3 the nucleus


def _solution_nucleus(probs: torch.Tensor, p: float) -> torch.Tensor:
    order = torch.sort(probs, descending=True, stable=True).indices  # ties: lower id first
    sorted_probs = probs[order]
    running = torch.cumsum(sorted_probs, dim=0)
    before = torch.cat([running.new_zeros(1), running[:-1]])  # the mass ranked above each token
    return order[before < p]  # a token is in while the mass above it is still short of p


def _wrong_nucleus_drops_crossing(probs, p):
    """Keeps the tokens while the running total (including them) is below p: that drops the
    token that brings the total to p, so the kept mass falls short of p."""
    order = torch.sort(probs, descending=True, stable=True).indices
    return order[torch.cumsum(probs[order], dim=0) < p]


def _wrong_nucleus_one_too_many(probs, p):
    """Keeps a token while the mass above it is at most p (<= instead of <): when the total
    reaches p exactly, one more token slips in. The nucleus is the smallest set."""
    order = torch.sort(probs, descending=True, stable=True).indices
    sorted_probs = probs[order]
    before = torch.cat([sorted_probs.new_zeros(1), torch.cumsum(sorted_probs, dim=0)[:-1]])
    return order[before <= p]


def _wrong_nucleus_vocab_order(probs, p):
    """Returns the nucleus in vocabulary order: list the ids from most to least probable."""
    return torch.sort(_solution_nucleus(probs, p)).values


def _wrong_nucleus_ascending(probs, p):
    """Sorts the probabilities in ascending order: the nucleus starts from the most probable
    token (descending=True)."""
    order = torch.sort(probs, stable=True).indices
    sorted_probs = probs[order]
    before = torch.cat([sorted_probs.new_zeros(1), torch.cumsum(sorted_probs, dim=0)[:-1]])
    return order[before < p]


def _ids(result) -> list[int]:
    return [int(i) for i in torch.as_tensor(result).reshape(-1).tolist()]


_PROBS = [0.0625, 0.5, 0.1875, 0.25]  # 1/16, 8/16, 3/16, 4/16: sums are exact in float32


def _run_nucleus_by_hand(candidate) -> None:
    probs = torch.tensor(_PROBS)
    for p, expected in [(0.5, [1]), (0.6, [1, 3]), (0.9, [1, 3, 2]), (1.0, [1, 3, 2, 0])]:
        expect_equal(_ids(candidate(probs, p)), expected, f"probs {_PROBS}, p = {p}")


def _run_nucleus_boundary(candidate) -> None:
    probs = torch.tensor(_PROBS)
    expect_equal(
        _ids(candidate(probs, 0.75)),
        [1, 3],
        f"probs {_PROBS}, p = 0.75: 1/2 + 1/4 reaches p exactly, so two tokens are enough",
    )


def _run_nucleus_one_token(candidate) -> None:
    probs = torch.tensor([0.05, 0.03, 0.9, 0.02])
    expect_equal(_ids(candidate(probs, 0.8)), [2], "one token of probability 0.9, p = 0.8")


def _run_nucleus_ties(candidate) -> None:
    probs = torch.tensor([0.125, 0.375, 0.125, 0.375])
    expect_equal(_ids(candidate(probs, 0.5)), [1, 3], "ties, p = 0.5: the lower id first")
    expect_equal(_ids(candidate(probs, 0.8)), [1, 3, 0], "ties, p = 0.8: the lower id first")


def _run_nucleus_random(candidate) -> None:
    probs = torch.softmax(_randn(50, seed=10) * 2, dim=0)
    ids = _ids(candidate(probs, 0.9))
    what = "a random distribution over 50 tokens, p = 0.9"
    if not ids or len(set(ids)) != len(ids):
        raise AssertionError(f"{what}: expected distinct token ids, got {ids}")
    kept = probs[ids].double()
    if (kept[1:] > kept[:-1]).any():
        raise AssertionError(f"{what}: the ids must go from the most to the least probable")
    outside = [i for i in range(50) if i not in ids]
    if outside and probs[outside].max() > kept.min():
        raise AssertionError(f"{what}: a token left out is more probable than one kept")
    total = kept.sum().item()
    if total < 0.9 - 1e-6 or total - kept[-1].item() >= 0.9:
        raise AssertionError(
            f"{what}: the {len(ids)} tokens hold {total:.4f} of the mass; the nucleus is the "
            "smallest set that holds at least p"
        )


register(
    Exercise(
        key="8.3",
        title="nucleus(probs, p): the ids of the smallest set of most probable tokens holding at "
        "least p of the mass, most probable first (ties: lower id first)",
        cases=[
            Case("four tokens by hand", _run_nucleus_by_hand),
            Case("exactly on p: 'at least' stops there", _run_nucleus_boundary),
            Case("one token above p", _run_nucleus_one_token),
            Case("ties", _run_nucleus_ties),
            Case("a random distribution", _run_nucleus_random),
        ],
        solution=_solution_nucleus,
        wrong_answers=[
            _wrong_nucleus_drops_crossing,
            _wrong_nucleus_one_too_many,
            _wrong_nucleus_vocab_order,
            _wrong_nucleus_ascending,
        ],
        hint="torch.sort(probs, descending=True, stable=True) ranks the tokens (stable keeps the "
        "lower id first among ties). A token belongs to the nucleus while the mass of the tokens "
        "ranked above it is still below p; torch.cumsum gives the running totals.",
        difficulty=2,
    )
)

# ---------------------------------------------------------------- 8.4 int8 in groups


def _solution_int8_groups(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    out_features, in_features = weight.shape
    w = weight.float().reshape(out_features, in_features // group_size, group_size)
    scale = w.abs().amax(dim=2, keepdim=True) / 127  # (out, groups, 1)
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)  # an all-zero group stays 0
    q = torch.round(w / safe).clamp(-127, 127)
    return (q * scale).reshape(out_features, in_features)


def _wrong_int8_groups_along_out(weight, group_size):
    """Groups consecutive rows of each column (along the output dimension): the groups are
    group_size consecutive input columns within one row, as GGUF's blocks are."""
    return _solution_int8_groups(weight.T.contiguous(), group_size).T


def _wrong_int8_groups_per_row(weight, group_size):
    """Uses one scale per row whatever group_size is: each group of group_size columns gets its
    own scale, so an outlier only coarsens its own group."""
    return _solution_int8_groups(weight, weight.shape[1])


def _wrong_int8_groups_over_128(weight, group_size):
    """Divides max|w| by 128: the largest value then needs q = 128, which int8's symmetric
    range [-127, 127] cannot hold. The scale is max|w| / 127."""
    out_features, in_features = weight.shape
    w = weight.float().reshape(out_features, in_features // group_size, group_size)
    scale = w.abs().amax(dim=2, keepdim=True) / 128
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.round(w / safe).clamp(-127, 127)
    return (q * scale).reshape(out_features, in_features)


def _run_groups_whole_row(candidate) -> None:
    from ..quantize import dequantize_int8_rows, quantize_int8_rows

    w = _randn(8, 16, seed=11)
    w[3] = 0.0  # an all-zero row stays zero
    expect_close(
        candidate(w, 16),
        dequantize_int8_rows(*quantize_int8_rows(w)),
        "group_size = in_features (16): one group per row is sydsgpt.quantize's int8 per row",
        atol=1e-6,
    )


def _run_groups_by_hand(candidate) -> None:
    # Row 0: group 1 has the outlier 12.7 (scale 0.1), group 2's max is 1.27 (scale 0.01).
    # Row 1: group 1 is all zeros, group 2's max is 2.54 (scale 0.02).
    w = torch.tensor(
        [
            [0.04, -0.26, 0.33, 12.7, 0.5, -1.0, 0.25, 1.27],
            [0.0, 0.0, 0.0, 0.0, 2.54, -0.02, 1.0, 0.3],
        ]
    )
    expected = torch.tensor(
        [[0.0, -0.3, 0.3, 12.7, 0.5, -1.0, 0.25, 1.27], [0.0, 0.0, 0.0, 0.0, 2.54, -0.02, 1.0, 0.3]]
    )
    expect_close(
        candidate(w, 4),
        expected,
        "a (2, 8) weight, groups of 4: the outlier 12.7 coarsens only its own group",
        atol=1e-5,
    )


def _run_groups_outliers(candidate) -> None:
    w = _randn(16, 256, seed=12) * 0.02
    columns = torch.randint(0, 256, (16,), generator=torch.Generator().manual_seed(13))
    w[torch.arange(16), columns] *= 100  # one outlier, 100 times larger, in each row
    errors = {g: (candidate(w, g) - w).square().mean().item() for g in (32, 256)}
    expect_equal(
        tuple(candidate(w, 32).shape), (16, 256), "a (16, 256) weight, groups of 32: shape"
    )
    # Per row, the outlier's group is as coarse as a whole row's one scale; the 7 other groups
    # of 32 get scales some 30 times finer, so the error is about 1/8 of the per-row error.
    if not errors[32] < 0.25 * errors[256]:
        raise AssertionError(
            f"a (16, 256) weight with one outlier per row: mean squared error {errors[32]:.3g} "
            f"with groups of 32 against {errors[256]:.3g} with one group per row; groups of 32 "
            "should confine the outlier to its own group (expected under a quarter)"
        )


register(
    Exercise(
        key="8.4",
        title="int8_groups(weight, group_size): symmetric int8 of an (out, in) weight with one "
        "scale per group of group_size consecutive input columns, dequantized",
        cases=[
            Case("one group per row", _run_groups_whole_row),
            Case("a (2, 8) weight by hand", _run_groups_by_hand),
            Case("outliers, groups of 32 against one per row", _run_groups_outliers),
        ],
        solution=_solution_int8_groups,
        wrong_answers=[
            _wrong_int8_groups_along_out,
            _wrong_int8_groups_per_row,
            _wrong_int8_groups_over_128,
        ],
        hint="Reshape (out, in) to (out, in // group_size, group_size): each group is then one "
        "slice of the last dimension. scale = its max |w| / 127 (amax(dim=2, keepdim=True)), "
        "q = round(w / scale) clamped to [-127, 127]; divide by 1 where a scale is 0, then "
        "reshape q * scale back.",
        difficulty=3,
    )
)

# ---------------------------------------------------------------- 8.5 the bytes one step reads

EMBEDDING = "token_embedding.weight"
HEAD = "output_projection.weight"


def _solution_decode_bytes_per_token(
    shapes: dict[str, tuple[tuple[int, ...], float]], tied: bool
) -> int:
    total = 0
    for name, (shape, bytes_per_value) in shapes.items():
        values = math.prod(shape)
        if name == "token_embedding.weight" and not tied:
            values = shape[-1]  # the lookup reads one row of the table
        total += values * bytes_per_value
    return int(total)


def _wrong_bytes_double_counts_tied(shapes, tied):
    """Counts the whole embedding and also a head of the same size when tied: a tied model has
    one table, read whole once by the head (and its one-row lookup is part of that)."""
    total = sum(math.prod(shape) * b for shape, b in shapes.values())
    if tied:
        shape, b = shapes[EMBEDDING]
        total += math.prod(shape) * b
    return int(total)


def _wrong_bytes_one_row_when_tied(shapes, tied):
    """Counts one embedding row even when tied: then the embedding is also the output head,
    and the head multiplies by the whole table at every step."""
    total = 0
    for name, (shape, b) in shapes.items():
        total += (shape[-1] if name == EMBEDDING else math.prod(shape)) * b
    return int(total)


def _wrong_bytes_counts_values(shapes, tied):
    """Counts values, not bytes: multiply each tensor's values by its bytes per value."""
    total = 0
    for name, (shape, _) in shapes.items():
        total += shape[-1] if name == EMBEDDING and not tied else math.prod(shape)
    return int(total)


_SMALL = {
    EMBEDDING: ((10, 4), 2),  # 80 bytes, one row 8
    "transformer_blocks.0.feed_forward.up_projection.weight": ((8, 4), 1),  # 32 bytes
    "final_layer_norm.scale": ((4,), 4),  # 16 bytes
}


def _run_bytes_untied(candidate) -> None:
    shapes = {**_SMALL, HEAD: ((10, 4), 2)}  # the head: 80 bytes
    expect_equal(
        candidate(shapes, False),
        8 + 32 + 16 + 80,
        "untied, a (10, 4) table at 2 bytes: one embedding row (8) + 32 + 16 + the head (80)",
    )


def _run_bytes_tied(candidate) -> None:
    expect_equal(
        candidate(dict(_SMALL), True),
        80 + 32 + 16,
        "tied, a (10, 4) table at 2 bytes: the whole table (80), read by the head, + 32 + 16",
    )


def _smollm2_shapes(bytes_per_value: float) -> dict[str, tuple[tuple[int, ...], float]]:
    d, kv, hidden = 576, 192, 1536
    shapes = {EMBEDDING: ((49152, d), bytes_per_value)}
    for i in range(30):
        block = f"transformer_blocks.{i}"
        for name, shape in [
            ("layer_norm1.scale", (d,)),
            ("attention.weight_query.weight", (d, d)),
            ("attention.weight_key.weight", (kv, d)),
            ("attention.weight_value.weight", (kv, d)),
            ("attention.output_projection.weight", (d, d)),
            ("layer_norm2.scale", (d,)),
            ("feed_forward.gate_projection.weight", (hidden, d)),
            ("feed_forward.up_projection.weight", (hidden, d)),
            ("feed_forward.down_projection.weight", (d, hidden)),
        ]:
            shapes[f"{block}.{name}"] = (shape, bytes_per_value)
    shapes["final_layer_norm.scale"] = ((d,), bytes_per_value)
    return shapes


def _run_bytes_smollm2(candidate) -> None:
    # Tied: every parameter is read once per token. 49152 * 576 (the table) + 30 layers of
    # 2 * 576^2 + 2 * 192 * 576 + 3 * 1536 * 576 + 2 * 576 + the final 576 = 134,515,008.
    expect_equal(
        candidate(_smollm2_shapes(4), True),
        4 * 134_515_008,
        "SmolLM2-135M in float32 (tied): all 134,515,008 parameters, 4 bytes each",
    )


register(
    Exercise(
        key="8.5",
        title="decode_bytes_per_token(shapes, tied): the weight bytes one decoding step reads, "
        "shapes = {name: (shape, bytes_per_value)}",
        cases=[
            Case("an untied model by hand", _run_bytes_untied),
            Case("a tied model by hand", _run_bytes_tied),
            Case("SmolLM2-135M's shapes", _run_bytes_smollm2),
        ],
        solution=_solution_decode_bytes_per_token,
        wrong_answers=[
            _wrong_bytes_double_counts_tied,
            _wrong_bytes_one_row_when_tied,
            _wrong_bytes_counts_values,
        ],
        hint="Each tensor is read whole once per token: math.prod(shape) * bytes_per_value. The "
        "one exception is 'token_embedding.weight' of an untied model: the lookup reads one row "
        "(shape[1] values). When tied there is no 'output_projection.weight': the embedding table "
        "is the head, which reads all of it.",
        difficulty=2,
    )
)
