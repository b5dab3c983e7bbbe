"""Downloads against a local HTTP server on 127.0.0.1: resume, verification, offline errors, tiny-shakespeare."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import urllib.error
import urllib.request

import pytest

from engine import data as corpora
from engine import http as dl
from engine.data import CorpusError, load_corpus
from engine.events import ProgressEvent

PAYLOAD = bytes(range(256)) * 1000  # 256 kB: several chunks


class Server:
    """A threaded HTTP server (port 0) that serves `files`, honours Range, and can misbehave on purpose."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[dict] = []
        self.ignore_range = False
        self.cut_after: int | None = None  # send only this many body bytes, then hang up
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server.requests.append({"path": self.path, "range": self.headers.get("Range")})
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                rng = self.headers.get("Range")
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                chunk = body[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(chunk)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if server.cut_after is not None:
                    chunk = chunk[: server.cut_after]
                self.wfile.write(chunk)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server({"/data.bin": PAYLOAD})
    yield s
    s.close()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_PLAYGROUND_CACHE", str(tmp_path / "cache"))


def test_full_download_with_progress(server, tmp_path):
    dest = tmp_path / "out" / "data.bin"
    events = list(dl.download_job(server.url("/data.bin"), dest, size=len(PAYLOAD),
                                  sha256=hashlib.sha256(PAYLOAD).hexdigest()))
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("data.bin.part").exists()
    assert all(isinstance(e, ProgressEvent) for e in events)
    done = [e.done for e in events]
    assert done == sorted(done) and done[-1] == len(PAYLOAD) and len(events) > 3
    assert events[-1].total == len(PAYLOAD)


def test_resume_from_part_file_uses_range(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(PAYLOAD[:100_000])
    events = list(dl.download_job(server.url("/data.bin"), dest, size=len(PAYLOAD)))
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1]["range"] == "bytes=100000-"
    assert events[0].done == 100_000  # progress starts where the part file ended


def test_broken_download_resumes_on_the_next_try(server, tmp_path):
    dest = tmp_path / "data.bin"
    server.cut_after = 70_000
    with pytest.raises(dl.DownloadError, match="broke off at 70,000 of 256,000 bytes"):
        dl.download(server.url("/data.bin"), dest, size=len(PAYLOAD))
    assert not dest.exists()
    assert dest.with_name("data.bin.part").stat().st_size == 70_000  # kept for resuming
    server.cut_after = None
    dl.download(server.url("/data.bin"), dest, size=len(PAYLOAD))
    assert server.requests[-1]["range"] == "bytes=70000-"
    assert dest.read_bytes() == PAYLOAD


def test_server_without_range_support_restarts_cleanly(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(b"garbage" * 100)
    server.ignore_range = True
    dl.download(server.url("/data.bin"), dest, size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_file_gets_416_and_is_verified(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(PAYLOAD)
    dl.download(server.url("/data.bin"), dest, size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_wrong_size_or_hash_is_refused_and_deleted(server, tmp_path):
    dest = tmp_path / "data.bin"
    with pytest.raises(dl.DownloadError, match="expected 12,345"):
        dl.download(server.url("/data.bin"), dest, size=12_345)
    assert not dest.exists() and not dest.with_name("data.bin.part").exists()
    with pytest.raises(dl.DownloadError, match="sha256"):
        dl.download(server.url("/data.bin"), dest, sha256="0" * 64)
    assert not dest.exists()


def test_http_error_is_one_line(server, tmp_path):
    with pytest.raises(dl.DownloadError, match="404"):
        dl.download(server.url("/missing"), tmp_path / "x")


def test_refused_connection_fails_with_reason(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(dl.DownloadError, match="cannot reach 127.0.0.1"):
        dl.download(f"http://127.0.0.1:{port}/x", tmp_path / "x")


def test_silent_server_hits_the_deadline(tmp_path):
    with socket.socket() as listener:  # accepts connections but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
        with pytest.raises(dl.DownloadError, match="did not answer within 0.3 s"):
            dl.download(url, tmp_path / "x", connect_timeout=0.3)


def test_closing_the_job_keeps_the_part_file(server, tmp_path):
    dest = tmp_path / "data.bin"
    job = dl.download_job(server.url("/data.bin"), dest)
    for event in job:
        if event.done > 0:
            break
    job.close()
    assert not dest.exists()
    assert 0 < dest.with_name("data.bin.part").stat().st_size < len(PAYLOAD)


# ---------------------------------------------------------------- tiny-shakespeare

def fake_shakespeare() -> bytes:
    head = b"First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    line = b"All:\nSpeak, speak.\n\n"
    body = head + line * (corpora.TINY_SHAKESPEARE.size // len(line))
    return body[: corpora.TINY_SHAKESPEARE.size]


def test_tiny_shakespeare_downloads_once_then_works_offline(monkeypatch):
    data = fake_shakespeare()
    server = Server({"/input.txt": data})
    try:
        events = list(corpora.fetch_corpus_job(url=server.url("/input.txt")))
    finally:
        server.close()
    assert events and events[-1].done == len(data)
    assert corpora.cached_corpus_ok(corpora.TINY_SHAKESPEARE)

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used although the corpus is cached")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    corpus = load_corpus("tiny-shakespeare")
    assert corpus.name == "tiny-shakespeare" and corpus.source == "tiny-shakespeare"
    assert corpus.text().encode() == data


def test_tiny_shakespeare_wrong_text_is_refused():
    wrong = b"x" * corpora.TINY_SHAKESPEARE.size
    server = Server({"/input.txt": wrong})
    try:
        with pytest.raises(dl.DownloadError, match="not the expected text"):
            list(corpora.fetch_corpus_job(url=server.url("/input.txt")))
    finally:
        server.close()
    assert not corpora.TINY_SHAKESPEARE.path.exists()


def test_tiny_shakespeare_damaged_cache_is_noticed(monkeypatch):
    data = fake_shakespeare()
    server = Server({"/input.txt": data})
    try:
        list(corpora.fetch_corpus_job(url=server.url("/input.txt")))
        path = corpora.TINY_SHAKESPEARE.path
        path.write_bytes(data[:-5] + b"XXXXX")  # same size, different bytes
        assert not corpora.cached_corpus_ok(corpora.TINY_SHAKESPEARE)
        list(corpora.fetch_corpus_job(url=server.url("/input.txt")))
        assert path.read_bytes() == data
    finally:
        server.close()


def test_tiny_shakespeare_offline_names_the_alternatives(monkeypatch):
    def refused(*args, **kwargs):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(urllib.request, "urlopen", refused)
    with pytest.raises(CorpusError) as info:
        load_corpus("tiny-shakespeare")
    message = str(info.value)
    assert "Connection refused" in message and "python-docs" in message and "\n" not in message
