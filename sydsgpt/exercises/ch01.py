"""Chapter 1 exercises: decoding from merges, loading saved
merges, compression, and encoding by replaying merges."""

from __future__ import annotations

from .checker import Case, Exercise, expect_close, expect_equal, register

# ---------------------------------------------------------------- 1.1 decode with merges


def _vocabulary(merges: dict[tuple[int, int], int]) -> dict[int, bytes]:
    vocab = {i: bytes([i]) for i in range(256)}
    for (left, right), new_id in merges.items():  # a merge's parts are always older tokens
        vocab[new_id] = vocab[left] + vocab[right]
    return vocab


def _solution_decode(ids: list[int], merges: dict[tuple[int, int], int]) -> str:
    vocab = _vocabulary(merges)
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def _wrong_decode_token_by_token(ids: list[int], merges: dict[tuple[int, int], int]) -> str:
    """Decodes each token's bytes on its own: a character whose UTF-8 bytes are split across two
    tokens becomes two replacement characters. Join all the bytes first, decode once."""
    vocab = _vocabulary(merges)
    return "".join(vocab[i].decode("utf-8", errors="replace") for i in ids)


def _wrong_decode_bytes_as_characters(ids: list[int], merges: dict[tuple[int, int], int]) -> str:
    """Turns each byte into the character with that number (chr(b), i.e. Latin-1): fine for ASCII,
    but 'é' (bytes 195, 169) comes back as 'Ã©'. The bytes are UTF-8: decode them as UTF-8."""
    vocab = _vocabulary(merges)
    return "".join(chr(b) for i in ids for b in vocab[i])


def _wrong_decode_flat_merges(ids: list[int], merges: dict[tuple[int, int], int]) -> str:
    """Expands a merged token into its two parts only once: when a part is itself a merged token
    (id >= 256) it must be expanded too, down to single bytes."""
    vocab = {i: bytes([i]) for i in range(256)}
    for (left, right), new_id in merges.items():
        vocab[new_id] = bytes([left % 256, right % 256])
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def _wrong_decode_strict(ids: list[int], merges: dict[tuple[int, int], int]) -> str:
    """Decodes strictly (.decode('utf-8')): ids cut in the middle of a character, as generation
    often leaves them, raise an error instead of showing U+FFFD; use errors='replace'."""
    return b"".join(_vocabulary(merges)[i] for i in ids).decode("utf-8")


def _decode_case(
    name: str, ids: list[int], merges: dict[tuple[int, int], int], expected: str
) -> Case:
    def run(candidate):
        expect_equal(candidate(list(ids), dict(merges)), expected, f"decode({ids}, {merges})")

    return Case(name, run)


register(
    Exercise(
        key="1.1",
        title="decode(ids, merges): the text of a list of token ids, given the merges {(a, b): "
        "new_id} that made the tokens",
        cases=[
            _decode_case("bytes only, no merges", [104, 105, 33], {}, "hi!"),
            _decode_case(
                "a token made of a token made of bytes",
                [256, 257],
                {(104, 105): 256, (256, 33): 257},
                "hihi!",
            ),
            _decode_case("'é' is two UTF-8 bytes", [195, 169], {}, "é"),
            _decode_case(
                "a character split across two tokens",
                [256, 257],
                {(99, 195): 256, (169, 33): 257},
                "cé!",
            ),
            _decode_case(
                "ids that end in the middle of a character", [256], {(99, 195): 256}, "c\ufffd"
            ),
        ],
        solution=_solution_decode,
        wrong_answers=[
            _wrong_decode_token_by_token,
            _wrong_decode_bytes_as_characters,
            _wrong_decode_flat_merges,
            _wrong_decode_strict,
        ],
        hint="Build the vocabulary {id: bytes} first: ids 0..255 are bytes([id]); walking the "
        "merges in the order they were learned, vocab[new_id] = vocab[a] + vocab[b]. Then join the "
        "bytes of all the ids and decode them once with .decode('utf-8', errors='replace').",
        difficulty=2,
    )
)

# ---------------------------------------------------------------- 1.2 load saved merges


def _solution_load_merges(text: str) -> dict[tuple[int, int], int]:
    merges: dict[tuple[int, int], int] = {}
    lines = [line for line in text.splitlines()[1:] if line.strip()]  # the first line is the header
    for rank, line in enumerate(lines):
        left, right = line.split()
        merges[(int(left), int(right))] = 256 + rank  # new ids follow the 256 bytes, in order
    return merges


def _wrong_load_ids_from_zero(text: str) -> dict[tuple[int, int], int]:
    """Numbers the merges 0, 1, 2, ...: those ids are already taken by the 256 single bytes.
    The first merge makes token 256."""
    return {pair: new_id - 256 for pair, new_id in _solution_load_merges(text).items()}


def _wrong_load_string_ids(text: str) -> dict[tuple[int, int], int]:
    """Keeps the ids as the strings read from the file: ('104', '105') is not the pair (104, 105).
    Convert each with int()."""
    lines = [line for line in text.splitlines()[1:] if line.strip()]
    ranks = {tuple(line.split()): 256 + rank for rank, line in enumerate(lines)}
    return ranks  # type: ignore[return-value]


def _wrong_load_sorted(text: str) -> dict[tuple[int, int], int]:
    """Sorts the merges: the encoder replays them in the order they were learned, so the file's
    order must survive (a dict keeps insertion order)."""
    return dict(sorted(_solution_load_merges(text).items()))


def _load_case(name: str, text: str, expected: list[tuple[tuple[int, int], int]]) -> Case:
    def run(candidate):
        got = candidate(text)
        if not isinstance(got, dict):
            raise AssertionError(f"load_merges(...) should return a dict, got {type(got).__name__}")
        expect_equal(
            list(got.items()),
            expected,
            f"load_merges({text!r}) as a list of (pair, new_id) in order",
        )

    return Case(name, run)


def _run_round_trip(candidate) -> None:
    from ..bpe import BPETokenizer

    tokenizer = BPETokenizer().train(
        "low lower lowest newer newest wider widest " * 3, vocab_size=270
    )
    merges = {tuple(pair): new_id for pair, new_id in tokenizer.merges.items()}
    text = "#version: 1\n" + "".join(f"{a} {b}\n" for a, b in merges)
    loaded = candidate(text)
    expect_equal(
        list(dict(loaded).items()),
        list(merges.items()),
        "the merges of a trained tokenizer after saving and loading",
    )
    sample = list("lowest widest".encode("utf-8"))
    expect_equal(
        _solution_encode_with_merges(sample, dict(loaded)),
        _solution_encode_with_merges(sample, merges),
        "'lowest widest' encoded with the loaded merges",
    )


register(
    Exercise(
        key="1.2",
        title="load_merges(text): the merges {(a, b): new_id} from a merges file (header line, "
        "then one 'a b' line per merge)",
        cases=[
            _load_case(
                "two merges by hand",
                "#version: 1\n104 105\n256 33\n",
                [((104, 105), 256), ((256, 33), 257)],
            ),
            _load_case(
                "the file order is the learning order",
                "#version: 1\n32 116\n101 32\n",
                [((32, 116), 256), ((101, 32), 257)],
            ),
            _load_case("a file with no merges", "#version: 1\n", []),
            Case(
                "round trip: a trained tokenizer's merges come back and encode the same",
                _run_round_trip,
            ),
        ],
        solution=_solution_load_merges,
        wrong_answers=[_wrong_load_ids_from_zero, _wrong_load_string_ids, _wrong_load_sorted],
        hint="Skip the first line; the merge on line r (counting from 0 after the header) made "
        "token 256 + r. Parse both ids with int() and build the dict in file order.",
        difficulty=2,
    )
)

# ---------------------------------------------------------------- 1.3 bytes per token


def _solution_bytes_per_token(text: str, ids: list[int]) -> float:
    return len(text.encode("utf-8")) / len(ids)


def _wrong_bytes_per_token_characters(text: str, ids: list[int]) -> float:
    """Counts characters (len(text)), not bytes: 'é' is one character but two UTF-8 bytes, and
    the tokenizer works on bytes. Use len(text.encode('utf-8'))."""
    return len(text) / len(ids)


def _wrong_bytes_per_token_inverted(text: str, ids: list[int]) -> float:
    """Divides the other way round (tokens per byte):
    a better tokenizer must give a LARGER number."""
    return len(ids) / len(text.encode("utf-8"))


def _bpt_case(name: str, text: str, encode, expected: float) -> Case:
    def run(candidate):
        ids = encode(text)
        expect_close(
            float(candidate(text, list(ids))),
            expected,
            f"bytes_per_token({text!r}, {len(ids)} ids)",
            atol=1e-9,
        )

    return Case(name, run)


def _gpt2_case(candidate) -> None:
    from ..tokenizer import get_gpt2_tokenizer

    text = "Every effort moves you forward, déjà vu."
    ids = get_gpt2_tokenizer().encode(text)
    expect_close(
        float(candidate(text, list(ids))),
        len(text.encode("utf-8")) / len(ids),
        f"bytes_per_token with GPT-2's tokenizer on {text!r} ({len(ids)} tokens)",
        atol=1e-9,
    )


register(
    Exercise(
        key="1.3",
        title="bytes_per_token(text, ids): how many UTF-8 bytes of text each token covers on "
        "average (the compression)",
        cases=[
            _bpt_case(
                "raw bytes: one byte per token", "hello", lambda t: list(t.encode("utf-8")), 1.0
            ),
            _bpt_case("four bytes, two tokens", "abcd", lambda t: [256, 257], 2.0),
            _bpt_case("'é' counts two bytes", "héllo", lambda t: [256, 257, 258], 2.0),
            Case("GPT-2's tokenizer on a sentence with accents", _gpt2_case),
        ],
        solution=_solution_bytes_per_token,
        wrong_answers=[_wrong_bytes_per_token_characters, _wrong_bytes_per_token_inverted],
        hint="The numerator is the number of bytes, len(text.encode('utf-8')), not of characters; "
        "divide it by the number of tokens.",
        difficulty=1,
    )
)

# ---------------------------------------------------------------- 1.4 encode with learned merges


def _merge_first_only(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return ids[:i] + [new_id] + ids[i + 2 :]
    return list(ids)


def _list_case(name: str, ids: list[int], more_args: tuple, expected: list[int]) -> Case:
    """A case that calls ``candidate(ids, *more_args)``: the
    result must be ``expected`` and ``ids`` unchanged."""

    def run(candidate):
        given = list(ids)
        expect_equal(list(candidate(given, *more_args)), expected, name)
        expect_equal(given, ids, "the input list (it must not be modified)")

    return Case(name, run)


def _solution_encode_with_merges(ids: list[int], merges: dict[tuple[int, int], int]) -> list[int]:
    tokens = list(ids)
    for (left, right), new_id in merges.items():  # in the order they were learned
        merged: list[int] = []
        for token in tokens:
            if merged and merged[-1] == left and token == right:
                merged[-1] = new_id  # a fresh id, so it never pairs again within this pass
            else:
                merged.append(token)
        tokens = merged
    return tokens


def _wrong_encode_sorted_merges(ids: list[int], merges: dict[tuple[int, int], int]) -> list[int]:
    """Applies the merges in sorted order instead of the order they were learned: a merge can
    only use tokens that earlier merges made."""
    return _solution_encode_with_merges(
        ids, dict(sorted(merges.items()))
    )  # forgets the learning order


def _wrong_encode_first_occurrence(ids: list[int], merges: dict[tuple[int, int], int]) -> list[int]:
    """Replaces only the first occurrence of each pair:
    every occurrence, left to right, must be merged."""
    tokens = list(ids)
    for pair, new_id in merges.items():
        tokens = _merge_first_only(tokens, pair, new_id)
    return tokens


def _encode_case(ids: list[int], merges: dict[tuple[int, int], int], expected: list[int]) -> Case:
    return _list_case(f"encode_with_merges({ids}, {merges})", ids, (merges,), expected)


register(
    Exercise(
        key="1.4",
        title="encode_with_merges(ids, merges): apply the learned merges {(a, b): new_id}, in the "
        "order they were learned",
        cases=[
            _encode_case([1, 2, 3, 1, 2], {(1, 2): 4, (4, 3): 5}, [5, 4]),
            _encode_case([1, 2, 3], {(2, 3): 4, (1, 2): 5}, [1, 4]),
            _encode_case([1, 1, 1, 1, 1], {(1, 1): 2, (2, 2): 3}, [3, 1]),
            _encode_case([7, 8], {}, [7, 8]),
        ],
        solution=_solution_encode_with_merges,
        wrong_answers=[_wrong_encode_sorted_merges, _wrong_encode_first_occurrence],
        hint="Loop over merges.items() (a dict keeps insertion order) and replace every occurrence "
        "of each pair.",
        difficulty=2,
    )
)
