"""The GGUF reader: every value type, tensor infos, alignment, one-line errors, and a fuzz test."""

from __future__ import annotations

import hashlib
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from gguf_files import Q, gguf, mutations, random_weight, small_gguf, write_gguf
from sydsgpt.gguf import GGUFError, read_gguf


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_gguf(tmp_path_factory.mktemp("gguf") / "small.gguf")


def test_metadata_of_every_type(small: Path) -> None:
    f = read_gguf(small)
    reference = gguf.GGUFReader(small)
    assert f.version == 3 and f.alignment == 32
    assert f.metadata["general.architecture"] == "llama"
    for key, field in reference.fields.items():
        if key.startswith("GGUF.") or key == "t.arr_nested":  # gguf's contents() flattens nesting
            continue
        assert f.metadata[key] == pytest.approx(field.contents()), key
    assert f.metadata["t.str"] == "héllo 🙂" and f.metadata["t.bool"] is True
    assert f.metadata["t.u64"] == 2**60 and f.metadata["t.i64"] == -(2**60)
    assert f.metadata["t.arr_nested"] == [[1, 2], [3]]


def test_tensor_infos_and_values_match_the_gguf_package(small: Path) -> None:
    f = read_gguf(small)
    reference = {t.name: t for t in gguf.GGUFReader(small).tensors}
    assert list(f.tensors) == list(reference)
    for name, info in f.tensors.items():
        ref = reference[name]
        assert info.shape == tuple(int(d) for d in reversed(ref.shape)), name
        assert info.ggml_type.name == ref.tensor_type.name
        assert info.offset == ref.data_offset and info.nbytes == ref.n_bytes
        assert f.raw(name).base is not None  # a view into the mapped file, not a copy
        expected = gguf.quants.dequantize(ref.data, ref.tensor_type).reshape(info.shape)
        np.testing.assert_array_equal(f.tensor(name).numpy(), expected)
    assert f.tensor("w_f32").shape == (3, 8)  # PyTorch's (out, in) order


def test_general_alignment_is_respected(tmp_path: Path) -> None:
    tensors = {"a": (random_weight(1, 3, 0), Q.F32), "b": (random_weight(2, 5, 1), Q.F32)}
    path = tmp_path / "aligned.gguf"
    writer_meta = {"general.alignment": 64}
    write_gguf(path, tensors, writer_meta)
    f = read_gguf(path)
    assert f.alignment == 64 and f.data_offset % 64 == 0
    assert all((info.offset - f.data_offset) % 64 == 0 for info in f.tensors.values())
    np.testing.assert_array_equal(f.tensor("b").numpy(), tensors["b"][0])


# ------------------------------------------------------------------ hand-made damaged files


def _string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def _file(
    version: int = 3,
    kv: bytes = b"",
    n_kv: int = 0,
    infos: bytes = b"",
    n_tensors: int = 0,
    data: bytes = b"",
) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + kv + infos
    return head + b"\0" * (-len(head) % 32) + data


def _info(
    name: bytes = b"w", dims: tuple[int, ...] = (4,), type_id: int = 0, offset: int = 0
) -> bytes:
    return _string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, type_id, offset)


GOOD_KV = _string(b"general.architecture") + struct.pack("<I", 8) + _string(b"llama")

DAMAGED = {
    "wrong magic": (b"GGML" + _file()[4:], "not a GGUF file"),
    "version 1": (_file(version=1), "unsupported GGUF version 1"),
    "big-endian": (_file(version=3 << 24), "big-endian"),
    "truncated header": (_file()[:10], "truncated file"),
    "empty": (b"", "empty"),
    "truncated metadata": (_file(kv=GOOD_KV, n_kv=1)[:-40], "truncated file"),
    "absurd string": (_file(kv=struct.pack("<Q", 2**62) + b"x" * 20, n_kv=1), "absurd length"),
    "absurd array": (
        _file(kv=_string(b"a") + struct.pack("<IIQ", 9, 4, 2**61) + b"\0" * 16, n_kv=1),
        "absurd length",
    ),
    "absurd metadata count": (_file(n_kv=2**40), "absurd metadata count"),
    "absurd tensor count": (_file(n_tensors=2**40), "absurd tensor count"),
    "unknown value type": (
        _file(kv=_string(b"a") + struct.pack("<I", 13) + b"\0" * 8, n_kv=1),
        "unknown value type 13",
    ),
    "unsupported quant type": (
        _file(infos=_info(type_id=99), n_tensors=1, data=b"\0" * 16),
        "unsupported quantization type 99",
    ),
    "data out of bounds": (
        _file(infos=_info(offset=64), n_tensors=1, data=b"\0" * 16),
        "out of bounds",
    ),
    "partial block": (
        _file(infos=_info(dims=(16,), type_id=8), n_tensors=1, data=b"\0" * 34),
        "not a multiple of Q8_0's block size",
    ),
    "too many dims": (
        _file(infos=_info(dims=(1, 1, 1, 1, 1)), n_tensors=1, data=b"\0" * 4),
        "5 dimensions",
    ),
    "bad alignment": (
        _file(kv=_string(b"general.alignment") + struct.pack("<II", 4, 3), n_kv=1),
        "power of two",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_files_give_one_line_errors_naming_the_file(tmp_path: Path, case: str) -> None:
    content, expected = DAMAGED[case]
    path = tmp_path / "damaged.gguf"
    path.write_bytes(content)
    with pytest.raises(GGUFError) as err:
        read_gguf(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert expected in message


def test_a_hand_made_file_reads(tmp_path: Path) -> None:
    path = tmp_path / "ok.gguf"
    path.write_bytes(
        _file(
            kv=GOOD_KV, n_kv=1, infos=_info(), n_tensors=1, data=np.arange(4, dtype="<f4").tobytes()
        )
    )
    f = read_gguf(path)
    assert f.metadata == {"general.architecture": "llama"}
    assert f.tensor("w").tolist() == [0.0, 1.0, 2.0, 3.0]


def test_unknown_tensor_name_is_a_key_error(small: Path) -> None:
    with pytest.raises(KeyError, match="no tensor 'nope'"):
        read_gguf(small).tensor("nope")


# ------------------------------------------------------------------ fuzz


def test_fuzz_never_a_raw_exception_never_hangs_never_allocates_beyond_the_file(
    small: Path, tmp_path: Path
) -> None:
    content = small.read_bytes()
    path = tmp_path / "fuzzed.gguf"
    errors = 0
    started = time.perf_counter()
    for mutated in mutations(content, 600, seed=21):
        path.write_bytes(mutated)
        tracemalloc.start()
        try:
            f = read_gguf(path)
            with np.errstate(all="ignore"):
                for name in f.tensors:
                    f.tensor(name)
        except GGUFError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
            errors += 1
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        # Python objects cost more than their bytes in the file (a str, a list slot), but a
        # length that a damaged file claims is never allocated: the peak stays near the size.
        assert peak < 64 * len(content) + 256 * 1024, (peak, len(mutated))
    assert errors > 300  # most mutations are caught, the rest still read as a valid file
    assert time.perf_counter() - started < 60


@pytest.mark.slow
def test_smollm2_file_reads_like_the_gguf_package() -> None:
    from gguf_files import smollm2_path

    from sydsgpt.smollm2 import FILE_SIZE, SHA256

    path = smollm2_path()
    if path.name == "SmolLM2-135M-Instruct.Q4_1.gguf":  # the wheel's file: the one tested
        assert path.stat().st_size == FILE_SIZE
        assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    f = read_gguf(path)
    reference = gguf.GGUFReader(path)
    assert f.version == 3 and len(f.tensors) == 272 and f.metadata["llama.block_count"] == 30
    merges = reference.fields["tokenizer.ggml.merges"].contents()
    assert f.metadata["tokenizer.ggml.merges"] == merges
    types: dict[str, int] = {}
    for ref in reference.tensors:
        info = f.tensors[ref.name]
        assert (info.offset, info.nbytes) == (ref.data_offset, ref.n_bytes)
        types[info.ggml_type.name] = types.get(info.ggml_type.name, 0) + 1
        if ref.name.startswith("blk.") and ref.name.split(".")[1] not in ("0", "29"):
            continue  # every type is in the first and last blocks and the embedding: enough
        expected = gguf.quants.dequantize(ref.data, ref.tensor_type).reshape(info.shape)
        np.testing.assert_array_equal(f.tensor(ref.name).numpy(), expected, err_msg=ref.name)
    assert types == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
