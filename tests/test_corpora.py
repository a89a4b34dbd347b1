"""sydsgpt.corpora: download on first use, sha256 check, cache, offline errors (no network here)."""

from __future__ import annotations

import hashlib
import os
import urllib.error
from pathlib import Path

import pytest

from sydsgpt import corpora
from sydsgpt.corpora import CORPORA, CorpusError, corpus_path, data_dir, load_corpus

SHARED_DATA = Path(os.environ.get("SYDSGPT_DATA_DIR", corpora.data_dir()))


@pytest.fixture
def verdict_bytes() -> bytes:
    path = SHARED_DATA / CORPORA["the-verdict"].filename
    if not path.is_file():
        pytest.skip(f"no local copy of the-verdict at {path}")
    return path.read_bytes()


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SYDSGPT_DATA_DIR", str(tmp_path))
    return tmp_path


def _no_network(url: str, timeout: float = 60.0) -> bytes:
    raise urllib.error.URLError("network is unreachable")


@pytest.mark.parametrize("name", ["tinyshakespeare", "the-verdict"])
def test_shared_copies_match_the_registry(name: str) -> None:
    corpus = CORPORA[name]
    if not (SHARED_DATA / corpus.filename).is_file():
        pytest.skip(f"no local copy of {name}")
    data = corpus_path(name, download=False).read_bytes()
    assert len(data) == corpus.size and hashlib.sha256(data).hexdigest() == corpus.sha256
    assert load_corpus(name) == data.decode("utf-8")


def test_offline_and_not_cached_names_file_url_and_env_var(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpora, "_download", _no_network)
    with pytest.raises(CorpusError) as info:
        load_corpus("tinyshakespeare")
    message = str(info.value)
    for part in (
        "tinyshakespeare.txt",
        CORPORA["tinyshakespeare"].url,
        "SYDSGPT_DATA_DIR",
        str(empty_cache),
    ):
        assert part in message
    assert list(empty_cache.iterdir()) == []


def test_first_use_downloads_verifies_and_caches(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch, verdict_bytes: bytes
) -> None:
    urls: list[str] = []

    def serve(url: str, timeout: float = 60.0) -> bytes:
        urls.append(url)
        return verdict_bytes

    monkeypatch.setattr(corpora, "_download", serve)
    assert load_corpus("the-verdict") == verdict_bytes.decode("utf-8")
    assert urls == [CORPORA["the-verdict"].url]
    assert [p.name for p in empty_cache.iterdir()] == ["the-verdict.txt"]  # no temporary file left
    monkeypatch.setattr(corpora, "_download", _no_network)
    assert load_corpus("the-verdict") == verdict_bytes.decode("utf-8")  # from the cache now


def test_corrupt_cached_file_is_an_error(empty_cache: Path) -> None:
    (empty_cache / "the-verdict.txt").write_text("not the verdict")
    with pytest.raises(CorpusError, match="sha256.*Delete it"):
        load_corpus("the-verdict")


def test_download_with_wrong_sha256_caches_nothing(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpora, "_download", lambda url, timeout=60.0: b"a different file")
    with pytest.raises(CorpusError, match="sha256"):
        corpus_path("the-verdict")
    assert list(empty_cache.iterdir()) == []


def test_no_download_when_asked_not_to(empty_cache: Path) -> None:
    with pytest.raises(CorpusError, match="not cached"):
        corpus_path("the-verdict", download=False)


def test_a_local_file_path_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("my own text, ünïcode too", encoding="utf-8")
    assert load_corpus(path) == load_corpus(str(path)) == "my own text, ünïcode too"


def test_unknown_names_are_clear_errors() -> None:
    with pytest.raises(FileNotFoundError, match="neither a known corpus"):
        load_corpus("no-such-corpus")
    with pytest.raises(KeyError, match="known corpora"):
        corpus_path("no-such-corpus")


def test_default_data_dir_is_in_the_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYDSGPT_DATA_DIR", raising=False)
    assert data_dir() == Path.home() / ".cache" / "sydsgpt" / "data"
    monkeypatch.setenv("SYDSGPT_DATA_DIR", "/some/where")
    assert data_dir() == Path("/some/where")
