"""Whether a tokenizer can be used, asked before a run (engine.tokenizer_problem): offline, a named encoding
that is not cached is unavailable with the reason; nothing is downloaded to find out."""
from __future__ import annotations

import dataclasses
import http.server
import socket
import threading

import pytest

from engine.tokenizers import named, tokenizer_problem
from engine.tokenizers.named import named_encoding_problem


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_PLAYGROUND_CACHE", str(tmp_path / "empty-cache"))
    named._forget_named_encodings()
    yield
    named._forget_named_encodings()


def _dead_url() -> str:
    """An http URL on this machine where nothing listens (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/encodings/gpt2.tiktoken"


def _point_at(monkeypatch, url: str) -> None:
    specs = {name: dataclasses.replace(spec, files=tuple((url + f"?{i}", sha) for i, (_, sha) in enumerate(spec.files)))
             for name, spec in named.NAMED_ENCODINGS.items()}
    monkeypatch.setattr(named, "NAMED_ENCODINGS", specs)


def test_offline_a_named_encoding_is_unavailable_with_the_reason(monkeypatch):
    _point_at(monkeypatch, _dead_url())
    assert named_encoding_problem("gpt2", connect=False) is None  # unknown without asking: not refused yet
    problem = named_encoding_problem("gpt2")
    assert problem.startswith("gpt2: not in the cache and the network is unreachable (")
    assert "Connection refused" in problem and "\n" not in problem
    # remembered: the others are refused without knocking again, connect or not
    assert named._network_down is not None
    assert named_encoding_problem("cl100k_base", connect=False).startswith("cl100k_base: not in the cache")
    assert tokenizer_problem("o200k_base", connect=False).startswith("o200k_base: not in the cache")
    assert not named.tiktoken_cache_dir().exists()  # nothing was fetched


def test_a_reachable_host_counts_as_available_and_nothing_is_downloaded(monkeypatch):
    heads = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_HEAD(self):
            heads.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "123")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _point_at(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}/x")
        assert named_encoding_problem("r50k_base") is None
        assert len(heads) == 1  # one HEAD request, no GET
        assert not named.tiktoken_cache_dir().exists()
    finally:
        server.shutdown()


def test_other_specs(tmp_path):
    assert tokenizer_problem("char") is None and tokenizer_problem("bpe:512") is None
    assert tokenizer_problem("bpe:300:cl100k") is None
    assert "bad tokenizer" in tokenizer_problem("bpe:lots")
    assert "unknown tokenizer" in tokenizer_problem(str(tmp_path / "missing.json"))
    assert "a tokenizer is needed" in tokenizer_problem("  ")
    assert "unknown tiktoken encoding" in named_encoding_problem("gpt5")
    path = tmp_path / "tok.json"
    path.write_text("{}")
    assert tokenizer_problem(str(path)) is None  # exists: whether it reads is the run's to say
