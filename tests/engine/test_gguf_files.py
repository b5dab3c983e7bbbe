"""GGUF files found where LM Studio and Ollama keep them, and in folders the user adds (a fake home here)."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf_fixtures import gpt2_file, tiny_gpt2, train_bpe  # noqa: E402

from engine.gguf_files import (  # noqa: E402
    FOLDER,
    GGUF_DIRS_ENV,
    LMSTUDIO,
    OLLAMA,
    find_gguf_files,
    ollama_models,
)
from engine.gguf_reader import GGUFError, read_gguf_summary  # noqa: E402


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory):
    bpe = train_bpe()
    path = tmp_path_factory.mktemp("g") / "tiny.gguf"
    gpt2_file(path, tiny_gpt2(len(bpe["tokens"])), bpe, types=lambda name, x: Q.Q8_0)
    return path.read_bytes()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.delenv(GGUF_DIRS_ENV, raising=False)
    return tmp_path


def _ollama_model(root, name_parts, data: bytes, *, write_blob=True):
    digest = hashlib.sha256(data).hexdigest()
    if write_blob:
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    manifest = root / "manifests" / os.path.join(*name_parts)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:" + "0" * 64},
        "layers": [{"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "1" * 64},
                   {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
                    "size": len(data)}]}))


def test_summary_reads_the_header_only(tmp_path, gguf_bytes):
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes)
    s = read_gguf_summary(path)
    assert (s.architecture, s.name, s.context_length, s.supported) == ("gpt2", "Tiny GPT-2", 64, True)
    assert s.file_bytes == len(gguf_bytes) and s.n_params > 0
    assert set(s.quant_summary) == {"Q8_0", "F32"} and abs(sum(s.quant_summary.values()) - 1) < 1e-12
    assert s.quant_summary["Q8_0"] > s.quant_summary["F32"]  # matrices outweigh norms and biases
    path.write_bytes(gguf_bytes[:100])
    with pytest.raises(GGUFError, match="m.gguf: truncated"):
        read_gguf_summary(path)


def test_lmstudio_ollama_and_user_folders_are_listed(home, gguf_bytes, tmp_path_factory, monkeypatch):
    lms = home / ".lmstudio" / "models" / "lmstudio-community" / "Tiny-GGUF"
    lms.mkdir(parents=True)
    (lms / "tiny-Q8_0.gguf").write_bytes(gguf_bytes)
    (lms / "mmproj-tiny-f16.gguf").write_bytes(gguf_bytes)  # a vision projector: not a language model
    (lms / "broken.gguf").write_bytes(b"GGUF" + bytes(10))  # unreadable: skipped, not an error
    old = home / ".cache" / "lm-studio" / "models" / "someone" / "Old-GGUF"
    old.mkdir(parents=True)
    (old / "old.gguf").write_bytes(gguf_bytes)

    store = home / ".ollama" / "models"
    _ollama_model(store, ["registry.ollama.ai", "library", "tiny", "latest"], gguf_bytes)
    _ollama_model(store, ["registry.ollama.ai", "alice", "mini", "q8"], gguf_bytes + b"\0" * 32)
    _ollama_model(store, ["registry.ollama.ai", "library", "gone", "7b"], b"GGUF-not-downloaded", write_blob=False)

    mine = tmp_path_factory.mktemp("mine")
    (mine / "deep" / "er").mkdir(parents=True)
    (mine / "deep" / "er" / "mine.gguf").write_bytes(gguf_bytes + b"\0" * 64)
    more = tmp_path_factory.mktemp("more")
    (more / "more.GGUF").write_bytes(gguf_bytes + b"\0" * 96)
    monkeypatch.setenv(GGUF_DIRS_ENV, str(mine))

    found = find_gguf_files(extra_folders=[more])
    by_name = {f.name: f for f in found}
    assert by_name["lmstudio-community/Tiny-GGUF/tiny-Q8_0.gguf"].place == LMSTUDIO
    assert by_name["someone/Old-GGUF/old.gguf"].place == LMSTUDIO
    tiny = by_name["tiny:latest"]
    assert tiny.place == OLLAMA and tiny.path.parent == store / "blobs" and tiny.path.name.startswith("sha256-")
    assert by_name["alice/mini:q8"].summary.architecture == "gpt2"
    assert by_name[str(mine / "deep" / "er" / "mine.gguf")].place == FOLDER
    assert by_name[str(more / "more.GGUF")].place == FOLDER
    assert len(found) == 6  # no projector, no broken file, no manifest without its blob
    assert all(f.summary.quant_summary for f in found)


def test_ollama_models_dir_override_and_empty_home(home, gguf_bytes, tmp_path, monkeypatch):
    assert find_gguf_files() == []
    store = tmp_path / "elsewhere"
    _ollama_model(store, ["example.com", "team", "model", "v1"], gguf_bytes)
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    assert [f.name for f in ollama_models()] == ["example.com/team/model:v1"]
    # A manifest that is not JSON is skipped.
    (store / "manifests" / "example.com" / "team" / "model" / "v2").write_text("{not json")
    assert [f.name for f in find_gguf_files()] == ["example.com/team/model:v1"]
