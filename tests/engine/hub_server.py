"""A local HTTP server on 127.0.0.1 that answers like the Hugging Face hub (no network), for the hub tests.

The server implements just what huggingface_hub 2.x asks for on our code path:
  GET  /api/models/{repo}/revision/{rev}?blobs=true   -> {"id", "sha", "siblings": [{"rfilename", "size"}]}
  HEAD /{repo}/resolve/{rev}/{file}                     -> X-Repo-Commit, ETag, Content-Length
  GET  /{repo}/resolve/{rev}/{file}                     -> the bytes (Range supported)
with the hub's error answers (X-Error-Code RepoNotFound / GatedRepo / EntryNotFound, 401 for a bad token),
and two failure modes: a body cut off mid-way (then HTTP 500 for the retry), and a slow body.
`model_files()` / `sharded_files()` are small repos to serve; `hub_environment` points HF_ENDPOINT and
HF_HUB_CACHE at a server and a temporary cache.
"""
from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from hf_fixtures import CHATML_TEMPLATE, bytelevel_json

GOOD_TOKEN, NO_ACCESS_TOKEN = "hf_good", "hf_no_access"


def safetensors_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    return save(tensors)


def model_files(n_layers: int = 2) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    tensors = {"embed.weight": rng.standard_normal((64, 16), dtype=np.float32)}
    for i in range(n_layers):
        tensors[f"layers.{i}.weight"] = rng.standard_normal((16, 16), dtype=np.float32)
    # A family this version cannot run (listed, never opened).
    config = {"architectures": ["MambaForCausalLM"], "model_type": "mamba", "vocab_size": 64, "hidden_size": 16}
    return {
        "config.json": json.dumps(config).encode(),
        "generation_config.json": b'{"eos_token_id": 2}',
        "tokenizer.json": bytelevel_json().encode(),
        "tokenizer_config.json": json.dumps({"eos_token": "<|im_end|>"}).encode(),
        "chat_template.jinja": CHATML_TEMPLATE.encode(),
        "model.safetensors": safetensors_bytes(tensors),
        # Not needed by the engine: never fetched.
        "README.md": b"# tiny",
        "pytorch_model.bin": b"\0" * 1000,
        "consolidated.safetensors": safetensors_bytes(tensors),
        "onnx/config.json": b"{}",
    }


N_PARAMS = 64 * 16 + 2 * 16 * 16


def sharded_files() -> dict[str, bytes]:
    files = {k: v for k, v in model_files().items() if k != "model.safetensors"}
    a = safetensors_bytes({"a": np.zeros((10, 10), np.float32)})
    b = safetensors_bytes({"b": np.zeros((5,), np.float32), "c": np.zeros((2, 3), np.float16)})
    files["model-00001-of-00002.safetensors"] = a
    files["model-00002-of-00002.safetensors"] = b
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                        "b": "model-00002-of-00002.safetensors",
                                        "c": "model-00002-of-00002.safetensors"}}).encode()
    return files


class FakeHub:
    """Repos, failure modes and a request log, served by a ThreadingHTTPServer on 127.0.0.1."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.cut: set[str] = set()  # files whose next GET breaks off mid-body (later GETs: HTTP 500)
        self.cut_done: set[str] = set()
        self.slow: dict[str, float] = {}  # file -> seconds to wait before sending the body
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                hub.handle(self, head=True)

            def do_GET(self):
                hub.handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def add(self, repo: str, files: dict[str, bytes], gated: bool = False) -> None:
        sha = hashlib.sha1(repo.encode() + json.dumps(sorted(files)).encode()).hexdigest()
        self.repos[repo] = {"sha": sha, "files": files, "gated": gated}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def reply(h, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def error(self, h, status: int, code: str | None, message: str, head: bool, commit: str | None = None) -> None:
        headers = {"X-Error-Message": message, "Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
        if commit:
            headers["X-Repo-Commit"] = commit
        self.reply(h, status, json.dumps({"error": message}).encode(), headers, head)

    def handle(self, h, head: bool) -> None:
        path = h.path.split("?")[0]
        self.requests.append((h.command, path))
        auth = h.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        if token not in (None, GOOD_TOKEN, NO_ACCESS_TOKEN):
            return self.error(h, 401, None, "Invalid credentials in Authorization header", head)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
        if m:
            repo = self.repos.get(m.group(1))
            if repo is None:
                return self.error(h, 404, "RepoNotFound", "Repository not found", head)
            body = {"id": m.group(1), "sha": repo["sha"], "private": False,
                    "gated": "manual" if repo["gated"] else False,
                    "siblings": [{"rfilename": n, "size": len(d)} for n, d in repo["files"].items()]}
            return self.reply(h, 200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if not m:
            return self.error(h, 404, None, "not found", head)
        repo = self.repos.get(m.group(1))
        if repo is None:
            return self.error(h, 404, "RepoNotFound", "Repository not found", head)
        if repo["gated"] and token != GOOD_TOKEN:
            status = 403 if token else 401
            return self.error(h, status, "GatedRepo", "Access to this model is restricted", head)
        name, commit = m.group(3), repo["sha"]
        if m.group(2) not in (commit, "main"):
            return self.error(h, 404, "RevisionNotFound", "Invalid rev id", head)
        data = repo["files"].get(name)
        if data is None:
            return self.error(h, 404, "EntryNotFound", "Entry not found", head, commit)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if head:
            return self.reply(h, 200, data, headers, head=True)
        if name in self.cut_done:
            return self.error(h, 500, None, "Internal Error", head)
        if name in self.cut:
            self.cut.discard(name)
            self.cut_done.add(name)
            h.send_response(200)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[:len(data) // 2])
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return
        status, start = 200, 0
        rng = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range", ""))
        if rng and int(rng.group(1)) < len(data):
            status, start = 206, int(rng.group(1))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data) - start))
        h.end_headers()
        if name in self.slow:
            time.sleep(self.slow[name])
        h.wfile.write(data[start:])


def hub_environment(monkeypatch, server: FakeHub, cache) -> None:
    """Point huggingface_hub (and engine.hub) at `server` and a cache folder; no token, no offline flag."""
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_ETAG_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    hub_online(monkeypatch)


def hub_online(monkeypatch) -> None:
    """Let huggingface_hub make requests (to local servers only, in these tests). It reads HF_HUB_OFFLINE once,
    when imported: a test module that set it to keep transformers off the network must not switch the hub off
    for the tests that come after it."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
