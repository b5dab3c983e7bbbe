"""engine.hub against a local HTTP server that answers like the Hugging Face hub (tests/engine/hub_server.py)."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from hub_server import (
    GOOD_TOKEN,
    N_PARAMS,
    NO_ACCESS_TOKEN,
    FakeHub,
    hub_environment,
    hub_online,
    model_files,
    safetensors_bytes,
    sharded_files,
)

from engine.hub import (
    CachedModel,
    DownloadCancelled,
    HubAuthError,
    HubDownloadProgress,
    HubError,
    HubNotFound,
    HubOffline,
    download_model,
    download_model_job,
    list_cached_models,
    model_folder_info,
    read_safetensors_header,
)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    server = FakeHub()
    server.add("tiny/model", model_files())
    server.add("tiny/sharded", sharded_files())
    server.add("tiny/gated", model_files(), gated=True)
    hub_environment(monkeypatch, server, tmp_path / "hub")
    yield server
    server.close()


def run(repo: str, **kwargs) -> tuple[list[HubDownloadProgress], Path]:
    events, folder = [], None
    for item in download_model_job(repo, token=kwargs.pop("token", False), **kwargs):
        if isinstance(item, Path):
            folder = item
        else:
            events.append(item)
    assert folder is not None
    return events, folder


def test_download_then_list(hub, tmp_path):
    events, folder = run("tiny/model")
    files = model_files()
    assert folder.parent.name == "snapshots" and folder.name == hub.repos["tiny/model"]["sha"]
    wanted = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "chat_template.jinja", "model.safetensors"}
    assert {p.name for p in folder.iterdir()} == wanted
    for name in wanted:
        assert (folder / name).read_bytes() == files[name]
    fetched = {p.rsplit("/", 1)[-1] for m, p in hub.requests if m == "GET" and "/resolve/" in p}
    assert fetched == wanted  # not README, .bin, consolidated.safetensors or onnx/
    assert (folder.parent.parent / "refs" / "main").read_text() == hub.repos["tiny/model"]["sha"]

    total = sum(len(files[n]) for n in wanted)
    assert all(e.total == total and e.n_files == len(wanted) for e in events)
    assert events[-1].done == total and events[-1].files_done == len(wanted)
    assert [e.done for e in events] == sorted(e.done for e in events)
    assert any(e.file == "model.safetensors" for e in events)

    models = list_cached_models()  # HF_HUB_CACHE from the environment
    assert models == [CachedModel("tiny/model", folder, folder.name, ("main",), total, "mamba", N_PARAMS,
                                  ("MambaForCausalLM",), True)]

    # Everything cached: a second run fetches nothing but the file list and metadata.
    hub.requests.clear()
    _, again = run("tiny/model")
    assert again == folder and not [p for m, p in hub.requests if m == "GET" and "/resolve/" in p]


def test_sharded_download_counts_all_shards(hub):
    _, folder = run("tiny/sharded")
    info = model_folder_info(folder)
    assert info.weight_files == ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    assert info.n_params == 100 + 5 + 6
    assert [m.repo_id for m in list_cached_models()] == ["tiny/sharded"]


def hub_reports_bytes() -> bool:
    import inspect

    from huggingface_hub import hf_hub_download

    return "tqdm_class" in inspect.signature(hf_hub_download).parameters


@pytest.mark.skipif(not hub_reports_bytes(), reason="this huggingface_hub reports progress per file only")
def test_cancel_mid_file(hub):
    hub.slow["model.safetensors"] = 0.5
    flag = {"cancel": False}
    seen = []
    with pytest.raises(DownloadCancelled) as info:
        for item in download_model_job("tiny/model", token=False, cancel=lambda: flag["cancel"]):
            seen.append(item)
            if isinstance(item, HubDownloadProgress) and item.file == "model.safetensors":
                flag["cancel"] = True
    assert "cancelled" in str(info.value) and "\n" not in str(info.value)
    assert not any(isinstance(i, Path) for i in seen)
    assert list_cached_models() == []  # config & tokenizer are there, the weights are not
    blobs = list((Path(os.environ["HF_HUB_CACHE"]) / "models--tiny--model" / "blobs").iterdir())
    assert not [b for b in blobs if b.name.endswith(".incomplete")]
    hub.slow.clear()
    _, folder = run("tiny/model")
    assert [m.folder for m in list_cached_models()] == [folder]


def test_cancel_between_files(hub):
    hub.slow["config.json"] = 0.3  # the second file: the cancel comes while it is on its way
    flag = {"cancel": False}
    fetched = []
    with pytest.raises(DownloadCancelled):
        for item in download_model_job("tiny/model", token=False, cancel=lambda: flag["cancel"]):
            if isinstance(item, HubDownloadProgress) and item.file:
                fetched.append(item.file)
                flag["cancel"] = True
    assert "model.safetensors" not in fetched
    assert not [p for m, p in hub.requests if m == "GET" and p.endswith("/model.safetensors")]
    assert list_cached_models() == []


def test_closing_the_job_stops_it(hub):
    hub.slow["model.safetensors"] = 0.3
    job = download_model_job("tiny/model", token=False)
    next(job)
    job.close()
    time.sleep(0.5)
    assert list_cached_models() == []


def test_interrupted_download_then_retry(hub):
    hub.cut.add("model.safetensors")
    with pytest.raises(HubError) as info:
        run("tiny/model")
    message = str(info.value)
    assert message.startswith("download of model.safetensors broke off") and "run again" in message
    assert "\n" not in message
    assert list_cached_models() == []  # a snapshot without its weights is not a model
    hub.cut_done.clear()
    _, folder = run("tiny/model")
    assert [m.folder for m in list_cached_models()] == [folder]


def test_cut_off_or_missing_blobs_are_not_listed(hub):
    _, folder = run("tiny/model")
    weights = (folder / "model.safetensors").resolve()
    data = weights.read_bytes()
    weights.write_bytes(data[:-10])  # as if another tool had been stopped mid-write
    with pytest.raises(ValueError, match="cut off"):
        read_safetensors_header(weights)
    assert list_cached_models() == []
    weights.unlink()  # now a broken symlink: huggingface_hub's scan reports the repo as corrupted
    assert list_cached_models() == []
    # junk in the cache never breaks the listing
    cache = Path(os.environ["HF_HUB_CACHE"])
    (cache / "models--junk--file").write_text("x")
    (cache / "models--no--snapshots").mkdir()
    (cache / "not-a-repo").mkdir()
    _, sharded = run("tiny/sharded")
    assert [m.folder for m in list_cached_models()] == [sharded]


def test_not_causal_lm_or_no_weights_is_skipped(tmp_path):
    cache = tmp_path / "hub"
    snap = cache / "models--org--bert" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text('{"architectures": ["BertModel"], "model_type": "bert"}')
    (snap / "model.safetensors").write_bytes(safetensors_bytes({"w": np.zeros(3, np.float32)}))
    snap2 = cache / "models--org--noweights" / "snapshots" / ("b" * 40)
    snap2.mkdir(parents=True)
    (snap2 / "config.json").write_text('{"model_type": "llama"}')
    assert list_cached_models(cache) == []
    assert list_cached_models(tmp_path / "nowhere") == []


@pytest.mark.parametrize("header", [b"\xff" * 8, (10).to_bytes(8, "little") + b"[1,2]     ",
                                    (7).to_bytes(8, "little") + b'{"a":1}',
                                    (2).to_bytes(8, "little")])
def test_bad_safetensors_headers(tmp_path, header):
    path = tmp_path / "x.safetensors"
    path.write_bytes(header)
    with pytest.raises(ValueError):
        read_safetensors_header(path)


def test_offline_is_reported_fast(monkeypatch, tmp_path):
    hub_online(monkeypatch)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    start = time.monotonic()
    with pytest.raises(HubOffline) as info:
        run("tiny/model", endpoint=f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 2.0
    assert "offline" in str(info.value) and "\n" not in str(info.value)


def test_silent_server_hits_the_deadline(monkeypatch, tmp_path):
    hub_online(monkeypatch)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with socket.socket() as s:  # accepts connections (the kernel does) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        start = time.monotonic()
        with pytest.raises(HubOffline, match="did not answer within 2 s"):
            run("tiny/model", endpoint=f"http://127.0.0.1:{s.getsockname()[1]}")
        assert time.monotonic() - start < 3.0


def test_gated_and_auth_errors(hub, monkeypatch):
    with pytest.raises(HubAuthError, match=r"tiny/gated is gated: accept its conditions at .* set a token"):
        run("tiny/gated")
    with pytest.raises(HubAuthError, match="this token has no access"):
        run("tiny/gated", token=NO_ACCESS_TOKEN)
    with pytest.raises(HubAuthError, match=r"refused the token \(HTTP 401\)"):
        run("tiny/model", token="hf_wrong")
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)  # token=None: huggingface_hub reads HF_TOKEN
    for _ in download_model_job("tiny/gated"):
        pass
    assert [m.repo_id for m in list_cached_models()] == ["tiny/gated"]


def test_not_found(hub):
    with pytest.raises(HubNotFound, match=r"^nobody/nothing was not found on 127\.0\.0\.1:\d+ \(if it is private"):
        run("nobody/nothing")
    with pytest.raises(HubNotFound, match="is not a Hugging Face repo id"):
        run("not a repo id")
    hub.add("tiny/no-weights", {"config.json": b"{}", "pytorch_model.bin": b"x"})
    with pytest.raises(HubNotFound, match="no .safetensors weights"):
        run("tiny/no-weights")


def test_download_model_helper(hub):
    seen = []
    folder = download_model("tiny/model", progress=seen.append, token=False)
    assert (folder / "config.json").is_file() and seen and seen[-1].done == seen[-1].total
