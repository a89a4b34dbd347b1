"""Chapter 9's data sets: the SMS zip member and the instruction JSON are downloaded, checked
by sha256 (of the extracted file) and cached like the corpora; parsing errors name the
file, the line or record, and the fix. No network: the downloads are served from memory."""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.error
import zipfile
from pathlib import Path

import pytest

from sydsgpt import corpora
from sydsgpt.corpora import (
    CORPORA,
    CorpusError,
    corpus_path,
    load_instructions,
    load_labelled_texts,
    load_sms_spam,
)

SHARED_DATA = Path(os.environ.get("SYDSGPT_DATA_DIR", corpora.data_dir()))


def shared_bytes(name: str) -> bytes:
    path = SHARED_DATA / CORPORA[name].filename
    if not path.is_file():
        pytest.skip(f"no local copy of {name} at {path}")
    return path.read_bytes()


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SYDSGPT_DATA_DIR", str(cache))
    return cache


def _no_network(url: str, timeout: float = 60.0) -> bytes:
    raise urllib.error.URLError("network is unreachable")


@pytest.mark.parametrize("name", ["sms-spam", "instruction-data"])
def test_shared_copies_match_the_registry(name: str) -> None:
    data = shared_bytes(name)
    assert (
        len(data) == CORPORA[name].size and hashlib.sha256(data).hexdigest() == CORPORA[name].sha256
    )
    assert corpus_path(name, download=False).read_bytes() == data


def test_the_sms_collection_parses_into_its_5574_labelled_messages() -> None:
    shared_bytes("sms-spam")
    records = load_sms_spam()
    assert len(records) == 5574
    assert sum(label == "spam" for label, _ in records) == 747 and {
        label for label, _ in records
    } == {"ham", "spam"}
    assert all(text and text == text.strip() for _, text in records)


def test_the_instruction_data_parses_into_1100_records() -> None:
    shared_bytes("instruction-data")
    records = load_instructions()
    assert len(records) == 1100 and all(
        list(r) == ["instruction", "input", "output"] for r in records
    )
    assert sum(r["input"] == "" for r in records) > 0  # some records have no input


def test_the_sms_file_is_extracted_from_the_zip_verified_and_cached(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = shared_bytes("sms-spam")
    urls: list[str] = []

    def serve(url: str, timeout: float = 60.0) -> bytes:
        urls.append(url)
        return zipped({"readme": b"the UCI readme", "SMSSpamCollection": data})

    monkeypatch.setattr(corpora, "_download", serve)
    assert len(load_sms_spam()) == 5574
    assert urls == [CORPORA["sms-spam"].url] and urls[0].endswith(".zip")
    assert [p.name for p in empty_cache.iterdir()] == [
        "SMSSpamCollection"
    ]  # the member only, no zip, no temp file
    monkeypatch.setattr(corpora, "_download", _no_network)
    assert len(load_sms_spam()) == 5574  # from the cache


def test_a_zip_whose_member_has_another_sha256_caches_nothing(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        corpora,
        "_download",
        lambda url, timeout=60.0: zipped({"SMSSpamCollection": b"ham\thello\n"}),
    )
    with pytest.raises(CorpusError, match="SMSSpamCollection inside .*sha256"):
        load_sms_spam()
    assert not empty_cache.exists() or list(empty_cache.iterdir()) == []


@pytest.mark.parametrize(
    "archive, message",
    [(b"not a zip", "not a zip archive"), (None, "has no member 'SMSSpamCollection'")],
)
def test_a_broken_archive_is_a_clear_error(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch, archive: bytes | None, message: str
) -> None:
    served = archive if archive is not None else zipped({"other.txt": b"x"})
    monkeypatch.setattr(corpora, "_download", lambda url, timeout=60.0: served)
    with pytest.raises(CorpusError, match=message):
        corpus_path("sms-spam")


@pytest.mark.parametrize("name", ["sms-spam", "instruction-data"])
def test_offline_and_not_cached_names_file_url_and_env_var(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setattr(corpora, "_download", _no_network)
    with pytest.raises(CorpusError) as info:
        corpus_path(name)
    for part in (CORPORA[name].filename, CORPORA[name].url, "SYDSGPT_DATA_DIR", str(empty_cache)):
        assert part in str(info.value)


@pytest.mark.parametrize("name", ["sms-spam", "instruction-data"])
def test_a_corrupt_cached_copy_is_an_error(empty_cache: Path, name: str) -> None:
    empty_cache.mkdir()
    (empty_cache / CORPORA[name].filename).write_text("something else")
    with pytest.raises(CorpusError, match="sha256.*Delete it"):
        corpus_path(name)


def test_the_instruction_json_downloads_and_is_checked(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = shared_bytes("instruction-data")
    monkeypatch.setattr(corpora, "_download", lambda url, timeout=60.0: data)
    assert len(load_instructions()) == 1100
    monkeypatch.setattr(corpora, "_download", lambda url, timeout=60.0: data + b" ")
    (empty_cache / "instruction-data.json").unlink()
    with pytest.raises(CorpusError, match="sha256"):
        load_instructions()


# --------------------------------------------------------------------- parsing a reader's own files


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_labelled_text_file_of_ones_own(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.tsv", "pos\tgreat film\n\nneg\t dull \nneg\tso-so\tthen bad\n")
    assert load_labelled_texts(path) == [
        ("pos", "great film"),
        ("neg", "dull"),
        ("neg", "so-so\tthen bad"),
    ]
    assert load_labelled_texts(path, labels=("neg", "pos"))[0] == ("pos", "great film")


@pytest.mark.parametrize(
    "text, message",
    [
        ("ham\thello\nspam no tab here\n", r"mine.tsv:2: no TAB"),
        ("ham\thello\nspam\t   \n", r"mine.tsv:2: empty text"),
        ("\thello\n", r"mine.tsv:1: empty label"),
        (
            "ham\thello\nspma\toops\n",
            r"mine.tsv:2: unknown label 'spma'; expected one of \['ham', 'spam'\]",
        ),
        ("\n\n", r"no 'label<TAB>text' lines"),
    ],
)
def test_bad_labelled_text_files_are_one_line_errors(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, "mine.tsv", text)
    with pytest.raises(ValueError, match=message) as info:
        load_labelled_texts(path, labels=("ham", "spam"))
    assert "\n" not in str(info.value)


def test_instruction_records_of_ones_own(tmp_path: Path) -> None:
    records = [
        {"instruction": "Add 2 and 3.", "output": "5", "id": 7},
        {"instruction": "Say hi", "input": "Ann", "output": "Hi Ann"},
    ]
    path = write(tmp_path, "mine.json", json.dumps(records))
    assert load_instructions(path) == [
        {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
        {"instruction": "Say hi", "input": "Ann", "output": "Hi Ann"},
    ]


@pytest.mark.parametrize(
    "content, message",
    [
        ('[{"instruction": "x", ', "not valid JSON"),
        ('{"instruction": "x"}', "non-empty JSON list"),
        ("[]", "non-empty JSON list"),
        ('["just text"]', "record 0 is a str"),
        (
            '[{"instruction": "a", "output": "b"}, {"instruction": "c"}]',
            "record 1 has no 'output' field",
        ),
        ('[{"output": "b"}]', "record 0 has no 'instruction' field"),
        (
            '[{"instruction": " ", "output": "b"}]',
            "record 0's 'instruction' must be a non-empty string",
        ),
        ('[{"instruction": "a", "output": 5}]', "record 0's 'output' must be a non-empty string"),
        (
            '[{"instruction": "a", "input": null, "output": "b"}]',
            "record 0's 'input' must be a string",
        ),
    ],
)
def test_bad_instruction_files_are_one_line_errors(
    tmp_path: Path, content: str, message: str
) -> None:
    path = write(tmp_path, "mine.json", content)
    with pytest.raises(ValueError, match=message) as info:
        load_instructions(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
