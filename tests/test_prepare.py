"""sydsgpt.prepare: readers, the shard round trip (ids
= tokenizer output), resume, bounded memory, -j N."""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sydsgpt.bpe import BPETokenizer
from sydsgpt.corpora import load_corpus
from sydsgpt.prepare import PrepareConfig, iter_pieces, prepare
from sydsgpt.readers import input_files, iter_documents
from sydsgpt.files import file_sha256
from sydsgpt.shards import read_manifest
from sydsgpt.tokenizer import get_gpt2_tokenizer

DOCS = [
    f"Document {i}: the {w} fox's {i * 37} jumps.\n\nWe'll see   it  twice. Ünïcödé 数字 "
    f"{w * (i % 5)}"
    for i, w in enumerate(["quick", "lazy", "brown", "red"] * 15)
]
EOT = 50256


def small(**overrides) -> PrepareConfig:
    return PrepareConfig(**{"shard_tokens": 500, "val_tokens": 300, "chunk_size": 256, **overrides})


def expected_stream(docs: list[str], tokenizer=None) -> list[int]:
    tokenizer = tokenizer or get_gpt2_tokenizer()
    return [i for d in docs for i in [*tokenizer.encode_ordinary(d), tokenizer.eot_token]]


def all_ids(out: Path) -> list[int]:
    """Validation then training shards, in manifest order: the whole token stream."""
    manifest = read_manifest(out)
    return np.concatenate(
        [np.fromfile(out / s["name"], dtype=manifest["dtype"]) for s in manifest["shards"]]
    ).tolist()


def write_inputs(folder: Path) -> list[str]:
    """The same documents in each format: 2 text files, a .jsonl, a .jsonl.gz and a Parquet file."""
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    folder.mkdir()
    (folder / "a.txt").write_text(DOCS[0])
    (folder / "b.txt").write_text(DOCS[1])
    (folder / "c.jsonl").write_text(
        "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(DOCS[2:20]))
    )
    with gzip.open(folder / "d.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps({"text": d}) + "\n" for d in DOCS[20:40]))
    pq.write_table(
        pa.table({"text": DOCS[40:], "n": list(range(len(DOCS) - 40))}),
        folder / "e.parquet",
        row_group_size=7,
    )
    (folder / "notes.md").write_text("not read")
    return DOCS


def test_each_reader_gives_its_documents(tmp_path: Path) -> None:
    docs = write_inputs(tmp_path / "in")
    assert [p.name for p in input_files([tmp_path / "in"])] == [
        "a.txt",
        "b.txt",
        "c.jsonl",
        "d.jsonl.gz",
        "e.parquet",
    ]
    assert list(iter_documents([tmp_path / "in"])) == docs


def test_shards_hold_the_tokenizers_ids_with_end_of_text_between_documents(tmp_path: Path) -> None:
    docs = write_inputs(tmp_path / "in")
    stats = prepare([tmp_path / "in"], tmp_path / "out", small(), show_progress=False)
    manifest = stats["manifest"]
    assert manifest["complete"] and manifest["dtype"] == "uint16"
    assert manifest["tokenizer"] == {"name": "gpt2", "n_vocab": 50257, "eot": EOT, "spec": "gpt2"}
    expected = expected_stream(docs)
    assert all_ids(tmp_path / "out") == expected
    shards = manifest["shards"]
    assert shards[0]["name"] == "val_000000.bin" and shards[0]["tokens"] == 300
    train = [s for s in shards if s["split"] == "train"]
    assert [s["name"] for s in train] == [f"train_{i:06d}.bin" for i in range(len(train))]
    assert all(s["tokens"] == 500 for s in train[:-1]) and 0 < train[-1]["tokens"] <= 500
    assert manifest["tokens"] == {"train": len(expected) - 300, "val": 300}
    assert all(file_sha256(tmp_path / "out" / s["name"]) == s["sha256"] for s in shards)


def test_a_long_document_is_cut_into_pieces_without_changing_its_ids(tmp_path: Path) -> None:
    text = load_corpus("the-verdict")
    path = tmp_path / "verdict.txt"
    path.write_text(text)
    pieces = list(iter_pieces([path], "text", 1000))
    assert len(pieces) > 15 and "".join(t for p in pieces for t, _ in p) == text
    prepare(
        [path],
        tmp_path / "out",
        small(val_tokens=1000, shard_tokens=2000, chunk_size=1000),
        show_progress=False,
    )
    assert all_ids(tmp_path / "out") == expected_stream([text])


def test_a_long_json_document_is_cut_too(tmp_path: Path) -> None:
    text = load_corpus("the-verdict")
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"text": text}) + "\n" + json.dumps({"text": DOCS[0]}) + "\n")
    pieces = list(iter_pieces([path], "text", 1000))
    assert len(pieces) > 15 and max(len(t) for p in pieces for t, _ in p) <= 1000 + len(DOCS[0])
    prepare(
        [path],
        tmp_path / "out",
        small(val_tokens=1000, shard_tokens=2000, chunk_size=1000),
        show_progress=False,
    )
    assert all_ids(tmp_path / "out") == expected_stream([text, DOCS[0]])


def test_a_bpe_tokenizer_is_saved_with_the_dataset(tmp_path: Path) -> None:
    tok = BPETokenizer(name="bpe300").train(" ".join(DOCS), 300, special_tokens=["<|endoftext|>"])
    tok.save(tmp_path / "tok.json")
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"body": d}) + "\n" for d in DOCS))
    prepare(
        [path],
        tmp_path / "out",
        small(tokenizer=str(tmp_path / "tok.json"), text_field="body"),
        show_progress=False,
    )
    manifest = read_manifest(tmp_path / "out")
    assert manifest["tokenizer"]["spec"] == "tokenizer.json" and manifest["tokenizer"]["eot"] == 299
    assert all_ids(tmp_path / "out") == expected_stream(DOCS, tok)


def test_a_vocabulary_over_65536_ids_uses_uint32(tmp_path: Path) -> None:
    tok = BPETokenizer(name="big").train("a b", 257, special_tokens=[])
    tok.special_tokens = {"<|endoftext|>": 70_000}
    tok._rebuild()
    tok.save(tmp_path / "tok.json")
    (tmp_path / "a.txt").write_text("a b " * 100)
    prepare(
        [tmp_path / "a.txt"],
        tmp_path / "out",
        small(tokenizer=str(tmp_path / "tok.json"), val_tokens=50),
        show_progress=False,
    )
    assert read_manifest(tmp_path / "out")["dtype"] == "uint32"
    assert all_ids(tmp_path / "out")[-1] == 70_000


def test_resume_skips_finished_shards_and_gives_the_same_files(tmp_path: Path) -> None:
    write_inputs(tmp_path / "in")
    full = prepare([tmp_path / "in"], tmp_path / "full", small(), show_progress=False)
    prepare([tmp_path / "in"], tmp_path / "part", small(), stop_after=2, show_progress=False)
    manifest = read_manifest(tmp_path / "part")
    assert not manifest["complete"] and [s["split"] for s in manifest["shards"]] == [
        "val",
        "train",
        "train",
    ]
    finished = {
        s["name"]: os.stat(tmp_path / "part" / s["name"]).st_mtime_ns for s in manifest["shards"]
    }
    (tmp_path / "part" / ".train_000002.bin.x.tmp").write_bytes(b"half")  # what a killed run leaves
    rest = prepare([tmp_path / "in"], tmp_path / "part", small(), show_progress=False)
    assert rest["pieces_skipped"] > 0 and rest["pieces_encoded"] < full["pieces_encoded"]
    assert {
        n: os.stat(tmp_path / "part" / n).st_mtime_ns for n in finished
    } == finished  # not rewritten
    assert read_manifest(tmp_path / "part")["shards"] == full["manifest"]["shards"]
    assert sorted(p.name for p in (tmp_path / "part").iterdir()) == sorted(
        p.name for p in (tmp_path / "full").iterdir()
    )
    again = prepare([tmp_path / "in"], tmp_path / "part", small(), show_progress=False)
    assert again["pieces_encoded"] == 0  # complete: nothing to do


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    write_inputs(tmp_path / "in")
    prepare([tmp_path / "in"], tmp_path / "out", small(), stop_after=1, show_progress=False)
    with pytest.raises(ValueError, match="shard_tokens"):
        prepare([tmp_path / "in"], tmp_path / "out", small(shard_tokens=400), show_progress=False)


def test_two_jobs_write_the_same_shards_as_one(tmp_path: Path) -> None:
    write_inputs(tmp_path / "in")
    one = prepare([tmp_path / "in"], tmp_path / "one", small(), show_progress=False)
    two = prepare([tmp_path / "in"], tmp_path / "two", small(jobs=2), show_progress=False)
    assert two["manifest"]["shards"] == one["manifest"]["shards"]


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
@pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads the resident set size from /proc"
)
def test_memory_stays_bounded_on_a_corpus_larger_than_the_bound(tmp_path: Path) -> None:
    """An 8 MB one-document corpus grows the resident memory by less than 8 MiB (reading it whole
    and encoding it in one call grows it by about 100 MiB): memory is O(piece), not O(corpus)."""
    rng = np.random.default_rng(0)
    words = np.array(
        ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    )
    line = " ".join(rng.choice(words, 200_000))[: 1 << 20]
    path = tmp_path / "big.txt"
    with open(path, "w") as f:
        for i in range(8):
            f.write(line[i:] + line[:i])
    get_gpt2_tokenizer().encode_ordinary("warm up")
    base, peak, done = _rss_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        stats = prepare(
            [path],
            tmp_path / "out",
            PrepareConfig(shard_tokens=200_000, val_tokens=50_000, chunk_size=1 << 16),
            show_progress=False,
        )
    finally:
        done.set()
        sampler.join()
    assert stats["bytes"] == path.stat().st_size > 8e6
    assert peak[0] - base < 8, (
        f"resident memory grew by {peak[0] - base:.1f} MiB while preparing "
        f"{stats['bytes'] / 1e6:.1f} MB"
    )


def test_readers_name_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(ValueError, match="cannot read this file type"):
        input_files([tmp_path / "x.csv"])
    (tmp_path / "bad.jsonl").write_text('{"content": "a"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: .*'text'"):
        list(iter_documents([tmp_path / "bad.jsonl"]))
    (tmp_path / "tiny.txt").write_text("too small")
    with pytest.raises(ValueError, match="fewer than the validation shard"):
        prepare([tmp_path / "tiny.txt"], tmp_path / "out", small(), show_progress=False)
    with pytest.raises(ValueError, match="ready tokenizer"):
        prepare(
            [tmp_path / "tiny.txt"],
            tmp_path / "out2",
            small(tokenizer="bpe:300"),
            show_progress=False,
        )


def test_parquet_without_pyarrow_says_which_package_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *args, **kwargs)

    (tmp_path / "a.parquet").write_bytes(b"PAR1")
    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        list(iter_documents([tmp_path / "a.parquet"]))


def test_the_command_line_prepares_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sydsgpt.cli import main

    write_inputs(tmp_path / "in")
    args = [
        "prepare",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "out"),
        "--shard-tokens",
        "500",
        "--val-tokens",
        "300",
        "--chunk-size",
        "256",
        "-j",
        "1",
        "--quiet",
    ]
    assert main([*args, "--stop-after", "1"]) == 0
    assert "unfinished" in capsys.readouterr().err
    assert main(args) == 0
    assert "complete" in capsys.readouterr().err
    assert all_ids(tmp_path / "out") == expected_stream(DOCS)
    assert (
        main(["prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    )  # a missing input is bad usage
    assert capsys.readouterr().err.startswith("sydsgpt prepare: error: input")


# -------------------------------------------------------------- separators, failures, errors

SEPARATOR = "<|endoftext|>"
STORIES = "".join(
    f"Story {i}: once there was a cat{'.' * (i % 4)} The end.{SEPARATOR}\n" for i in range(60)
)
"""Documents separated by <|endoftext|>, as in CS336's tinystories_sample.txt."""


def tiny(**overrides) -> PrepareConfig:
    return PrepareConfig(**{"shard_tokens": 200, "val_tokens": 100, "chunk_size": 64, **overrides})


@pytest.mark.parametrize("chunk_size", [7, 64, 4096])
def test_a_separator_is_a_document_boundary(tmp_path: Path, chunk_size: int) -> None:
    """With --separator the ids are tiktoken's encode(text, allowed_special="all") (plus the
    end-of-text id of the last document), wherever the read chunks cut a separator."""
    path = tmp_path / "stories.txt"
    path.write_text(STORIES + "Last story, no separator after it.", encoding="utf-8")
    cfg = tiny(chunk_size=chunk_size, separator=SEPARATOR)
    prepare([path], tmp_path / "out", cfg, show_progress=False)
    gpt2 = get_gpt2_tokenizer()
    expected = gpt2.encode(path.read_text(encoding="utf-8"), allowed_special="all") + [EOT]
    assert all_ids(tmp_path / "out") == expected
    assert expected.count(EOT) == 61


def test_special_token_text_is_refused_without_a_separator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sydsgpt.cli import main

    path = tmp_path / "stories.txt"
    path.write_text(STORIES, encoding="utf-8")
    with pytest.raises(
        ValueError,
        match=rf"{path} contains '<\|endoftext\|>', the text of one "
        r"of the tokenizer's special tokens, .*pass --separator '<\|endoftext\|>'",
    ):
        prepare([path], tmp_path / "out", tiny(), show_progress=False)
    args = [
        "prepare",
        str(path),
        "--out",
        str(tmp_path / "out"),
        "--shard-tokens",
        "200",
        "--val-tokens",
        "100",
        "--quiet",
    ]
    assert main(args) == 2
    assert "pass --separator '<|endoftext|>'" in capsys.readouterr().err
    assert main([*args, "--separator", SEPARATOR]) == 0  # the failed run's folder is reused
    ids = get_gpt2_tokenizer().encode(STORIES, allowed_special="all")
    assert all_ids(tmp_path / "out") == ids + [EOT]  # the "\n" after the last separator: a document


def test_after_a_failed_run_the_fixed_input_starts_over(tmp_path: Path) -> None:
    """A bad input fails the run; once it is fixed the same command works (it used to be refused:
    "inputs differ", until the folder was deleted by hand)."""
    good, bad = tmp_path / "a.txt", tmp_path / "b.txt"
    good.write_text(" ".join(DOCS), encoding="utf-8")
    bad.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        prepare([good, bad], tmp_path / "out", tiny(), show_progress=False)
    assert read_manifest(tmp_path / "out")["failed"].startswith("ValueError")
    bad.write_text("caf\u00e9 au lait, now in UTF-8", encoding="utf-8")
    prepare([good, bad], tmp_path / "out", tiny(), show_progress=False)
    fixed = bad.read_text(encoding="utf-8")
    assert all_ids(tmp_path / "out") == expected_stream([" ".join(DOCS), fixed])
    assert "failed" not in read_manifest(tmp_path / "out")


def test_an_interrupted_run_with_other_inputs_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text(" ".join(DOCS), encoding="utf-8")
    prepare([path], tmp_path / "out", tiny(), stop_after=1, show_progress=False)
    path.write_text(" ".join(DOCS[1:]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"other settings \(inputs differ\)"):
        prepare([path], tmp_path / "out", tiny(), show_progress=False)


def test_an_out_folder_of_other_files_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text(" ".join(DOCS), encoding="utf-8")
    out = tmp_path / "home"
    out.mkdir()
    for name in ("notes.md", "photo.jpg", "thesis.tex", "todo.txt"):
        (out / name).write_text("mine")
    with pytest.raises(
        FileExistsError,
        match=rf"--out {out} is a folder of other files "
        r"\(notes.md, photo.jpg, thesis.tex and 1 more\), not a prepared dataset",
    ):
        prepare([path], out, tiny(), show_progress=False)
    untouched = ["notes.md", "photo.jpg", "thesis.tex", "todo.txt"]
    assert sorted(p.name for p in out.iterdir()) == untouched
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"")  # hidden files do not count
    prepare([path], tmp_path / "empty", tiny(), show_progress=False)  # an empty folder is fine


def _bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """Each kind of damaged input, and the start of the error that must name it."""
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    folder.mkdir()
    cases = {}
    path = folder / "latin1.txt"
    path.write_bytes("ok\ncaf\u00e9\n".encode("latin-1"))
    cases["latin-1 text"] = path, rf"{path}:2: not UTF-8 text \(byte 0xe9 at column 4\)"
    path = folder / "malformed.jsonl"
    path.write_text('{"text": "fine"}\n{text: "no quotes"}\n', encoding="utf-8")
    cases["malformed jsonl"] = path, rf"{path}:2: not a line of JSON \(Expecting property name"
    path = folder / "truncated.jsonl.gz"
    whole = gzip.compress("".join(json.dumps({"text": d}) + "\n" for d in DOCS).encode())
    path.write_bytes(whole[: len(whole) // 2])
    cases["truncated gzip"] = path, rf"{path}: the gzip file is truncated or damaged after line \d+"
    path = folder / "corrupt.parquet"
    pq.write_table(pa.table({"text": DOCS}), path)
    data = path.read_bytes()
    path.write_bytes(data[:4] + b"\0" * (len(data) - 12) + data[-8:])
    cases["corrupt parquet"] = path, rf"{path}: not a readable Parquet file"
    return cases


def test_every_damaged_input_is_named(tmp_path: Path) -> None:
    """Among many inputs, each error names the damaged file (and its line where there is one)."""
    good = tmp_path / "good.txt"
    good.write_text(" ".join(DOCS), encoding="utf-8")
    for name, (path, message) in _bad_inputs(tmp_path / "in").items():
        with pytest.raises(ValueError, match=message):
            prepare([good, path, good], tmp_path / name, tiny(), show_progress=False)


def test_a_lone_surrogate_in_json_is_encoded_as_tiktoken_does(tmp_path: Path) -> None:
    """ "\\ud83d" alone is valid JSON but has no UTF-8 bytes: it becomes U+FFFD, as in tiktoken."""
    path = tmp_path / "emoji.jsonl"
    text = "half an emoji: \ud83d, then text. " + " ".join(DOCS)
    path.write_text(json.dumps({"text": text}) + "\n", encoding="utf-8")
    assert "\\ud83d" in path.read_text(encoding="utf-8")
    stats = prepare([path], tmp_path / "out", tiny(), show_progress=False)
    assert all_ids(tmp_path / "out") == get_gpt2_tokenizer().encode_ordinary(text) + [EOT]
    assert stats["bytes"] == len(text.replace("\ud83d", "\ufffd").encode("utf-8"))
