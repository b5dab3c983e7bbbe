"""Corpora and batches: built-ins offline, user files with their encodings, every bad-corpus case."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import data
from engine.data import CorpusError, Dataset, load_corpus
from engine.tokenizers import CharTokenizer


@pytest.mark.parametrize("name", ["python-docs", "copy", "reverse", "sort", "addition"])
def test_builtin_corpora_load_offline(name):
    corpus = load_corpus(name)
    assert corpus.source == name and corpus.num_chars > 50_000
    assert corpus.documents == load_corpus(name).documents  # deterministic


def test_python_source_is_capped():
    corpus = load_corpus("python-source")
    assert data.PYTHON_SOURCE_CAP <= corpus.num_chars < data.PYTHON_SOURCE_CAP + 500_000
    assert "def " in corpus.documents[0]


def test_synthetic_lines_follow_their_rule():
    line = load_corpus("copy").documents[0].splitlines()[0]
    left, right = line.split("|")
    assert left == right
    line = load_corpus("reverse").documents[0].splitlines()[0]
    left, right = line.split(">")
    assert right == left[::-1]
    a, rest = load_corpus("addition").documents[0].splitlines()[0].split("+")
    b, total = rest.split("=")
    assert int(a) + int(b) == int(total)


def test_text_file_and_folder(tmp_path):
    (tmp_path / "a.txt").write_text("hello world\n", encoding="utf-8")
    (tmp_path / "b.md").write_text("# title\n", encoding="utf-8")
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
    corpus = load_corpus(str(tmp_path))
    assert corpus.documents == ["hello world\n", "# title\n"] and corpus.source == str(tmp_path)
    assert load_corpus(str(tmp_path / "a.txt")).documents == ["hello world\n"]


@pytest.mark.parametrize("encoding,prefix", [("utf-8", b"\xef\xbb\xbf"), ("utf-16-le", b"\xff\xfe"),
                                             ("utf-16-be", b"\xfe\xff")])
def test_byte_order_marks(tmp_path, encoding, prefix):
    path = tmp_path / "t.txt"
    path.write_bytes(prefix + "café ✓ text".encode(encoding))
    assert load_corpus(str(path)).documents == ["café ✓ text"]


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"   \n\n", "empty"),
    (b"PK\x03\x04\x00\x00binary\x00stuff", "binary"),
    (b"caf\xe9 latin-1", "not UTF-8"),
    (b"\xff\xfe\x00\xd8", "UTF-16"),
])
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        load_corpus(str(path))


def test_missing_file_and_empty_folder(tmp_path):
    with pytest.raises(CorpusError, match="unknown corpus"):
        load_corpus(str(tmp_path / "nope.txt"))
    with pytest.raises(CorpusError, match="no .txt"):
        load_corpus(str(tmp_path))


def test_too_short_for_context(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("a short text, much shorter than ten windows\n" * 3, encoding="utf-8")
    corpus = load_corpus(str(path))
    tok = CharTokenizer.from_text(corpus.text())
    Dataset.build(corpus, tok, 4)  # fits a tiny context
    with pytest.raises(CorpusError, match="too short"):
        Dataset.build(corpus, tok, 64)


def test_split_and_batches():
    corpus = load_corpus("addition")
    tok = CharTokenizer.from_text(corpus.text())
    ds = Dataset.build(corpus, tok, 16)
    assert len(ds.train_ids) == int(0.9 * len(ds.ids)) and len(ds.train_ids) + len(ds.val_ids) == len(ds.ids)
    x, y = ds.get_batch("train", 5, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the next tokens
    again, _ = ds.get_batch("train", 5, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)
    text = tok.decode(x[0].tolist() + [int(y[0, -1])])
    assert text in corpus.text()
    vx, _ = ds.get_batch("val", 3, 16, torch.Generator().manual_seed(0))
    assert tok.decode(vx[0].tolist()) in tok.decode(ds.val_ids.tolist())


def test_big_token_arrays_are_memory_mapped(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_PLAYGROUND_CACHE", str(tmp_path))
    monkeypatch.setattr(data, "MMAP_MIN_TOKENS", 1000)
    corpus = load_corpus("sort")
    tok = CharTokenizer.from_text(corpus.text())
    first = data.cached_encode(corpus, tok)
    assert isinstance(first, np.memmap)
    assert len(list((tmp_path / "tokens").glob("*.npy"))) == 1
    second = data.cached_encode(corpus, tok)
    assert np.array_equal(first, second)
    assert np.array_equal(np.asarray(first), data.encode_documents(corpus.documents, tok))
