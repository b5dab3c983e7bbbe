"""`python -m engine tokenizer train|list`, `tokenize`, end to end through engine.cli.main."""
from __future__ import annotations

import io
import json
import sys
import urllib.error
import urllib.request

import pytest

from engine import tokenizers as T
from engine.checkpoint import save_checkpoint
from engine.cli import main
from engine.config import ModelConfig
from engine.model import GPT
from engine.tokenizers import load_tokenizer_file, named

CORPUS = ("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
          "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles.\n") * 30


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """A private, empty cache and no network at all."""
    monkeypatch.setenv("LLM_PLAYGROUND_CACHE", str(tmp_path / "cache"))

    def refused(*args, **kwargs):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(urllib.request, "urlopen", refused)
    named._forget_named_encodings()
    yield
    named._forget_named_encodings()


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "hamlet.txt"
    path.write_text(CORPUS)
    return path


@pytest.fixture
def tokenizer_file(tmp_path, corpus_file):
    out = tmp_path / "tok.json"
    assert main(["tokenizer", "train", "--corpus", str(corpus_file), "--vocab-size", "300", "--out", str(out)]) == 0
    return out


def test_train_writes_a_tokenizer_file(tmp_path, corpus_file, capsys):
    out = tmp_path / "t.json"
    assert main(["tokenizer", "train", "--corpus", str(corpus_file), "--vocab-size", "300", "--out", str(out)]) == 0
    assert "300 tokens" in capsys.readouterr().out
    tok = load_tokenizer_file(out)
    assert tok.vocab_size == 300 and tok.decode(tok.encode(CORPUS)) == CORPUS


def test_train_json_events_and_cl100k(tmp_path, corpus_file, capsys):
    out = tmp_path / "cl.json"
    assert main(["tokenizer", "train", "--corpus", str(corpus_file), "--vocab-size", "280", "--pattern", "cl100k",
                 "--name", "hamlet", "--out", str(out), "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["event"] == "progress" and events[-1]["event"] == "bpe_trained"
    assert events[-1]["tokenizer"] == "hamlet" and events[-1]["vocab_size"] == 280
    assert load_tokenizer_file(out).pattern == T.CL100K_PATTERN


def test_train_errors_leave_an_existing_out_alone(tmp_path, corpus_file, capsys):
    out = tmp_path / "keep.json"
    out.write_text("precious")
    assert main(["tokenizer", "train", "--corpus", str(corpus_file), "--vocab-size", "12", "--out", str(out)]) == 2
    assert main(["tokenizer", "train", "--corpus", "no-such-corpus", "--vocab-size", "300", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: --vocab-size") and err[1].startswith("error: unknown corpus")
    assert out.read_text() == "precious"


def test_tokenize_json(tokenizer_file, capsys):
    capsys.readouterr()
    text = "To be <|endoftext|> 😀\n"
    assert main(["tokenize", "--tokenizer", str(tokenizer_file), "--json", text]) == 0
    data = json.loads(capsys.readouterr().out)
    tok = load_tokenizer_file(tokenizer_file)
    assert data["ids"] == tok.encode(text) and data["text"] == text
    assert data["tokens"] == [tok.render_token(i) for i in data["ids"]]
    assert "\\n" in data["tokens"]  # the newline shown escaped


def test_tokenize_human_output_and_stdin(tokenizer_file, capsys, monkeypatch):
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO("to be"))
    assert main(["tokenize", "--tokenizer", str(tokenizer_file), "-"]) == 0
    lines = capsys.readouterr().out.splitlines()
    tok = load_tokenizer_file(tokenizer_file)
    ids = tok.encode("to be")
    assert lines[0].startswith(f"{len(ids)} tokens")
    assert [int(line.split()[0]) for line in lines[1:]] == ids


def test_tokenize_from_a_checkpoint(tmp_path, tokenizer_file, capsys):

    tok = load_tokenizer_file(tokenizer_file)
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(ckpt, GPT(ModelConfig(vocab_size=tok.vocab_size, context_length=16, emb_dim=16, n_heads=2,
                                          n_layers=1)), tok)
    capsys.readouterr()
    assert main(["tokenize", "--checkpoint", str(ckpt), "--json", "whether 'tis nobler"]) == 0
    assert json.loads(capsys.readouterr().out)["ids"] == tok.encode("whether 'tis nobler")


def test_tokenize_char_needs_a_corpus(corpus_file, capsys):
    assert main(["tokenize", "--tokenizer", "char", "abc"]) == 2
    assert "--corpus" in capsys.readouterr().err
    assert main(["tokenize", "--tokenizer", "char", "--corpus", str(corpus_file), "--json", "to be"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == list("to be")


def test_tokenize_named_encoding_offline_is_one_line(capsys):
    assert main(["tokenize", "--tokenizer", "cl100k_base", "hello"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cl100k_base: not in the cache and the network is unreachable")
    assert "Connection refused" in err and err.count("\n") == 1


def test_tokenizer_list_offline(capsys):
    assert main(["tokenizer", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(T.NAMED_ENCODINGS)
    assert all(line.endswith("not downloaded yet") for line in lines)
