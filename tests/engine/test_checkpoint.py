"""Checkpoints: round trip, exact resume, atomic save, and a clear one-line error for every bad file."""
from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

from engine import checkpoint as ckpt_module
from engine import files
from engine.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_info, save_checkpoint
from engine.config import ModelConfig, TrainConfig
from engine.data import Dataset, load_corpus
from engine.events import FinishedEvent, StepEvent
from engine.model import GPT
from engine.tokenizers import CharTokenizer
from engine.training.trainer import Trainer

CONFIG = ModelConfig(vocab_size=30, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.1)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    corpus = load_corpus("sort")
    return Dataset.build(corpus, CharTokenizer.from_text(corpus.text()), CONFIG.context_length)


def train_config(steps: int) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=4, lr=3e-3, warmup_steps=2, eval_interval=3, eval_batches=2,
                       sample_interval=0, seed=7)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, dataset):
    """A checkpoint after 3 training steps, with optimizer and training state."""
    trainer = Trainer(CONFIG, train_config(3), dataset)
    list(trainer.run())
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    trainer.save(path)
    return path, trainer


def test_round_trip(saved):
    path, trainer = saved
    ck = load_checkpoint(path)
    assert ck.config == CONFIG and ck.path == str(path)
    assert ck.model.head.weight is ck.model.tok_emb.weight  # re-tied
    for (name, a), (_, b) in zip(trainer.model.state_dict().items(), ck.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert ck.tokenizer.to_dict() == trainer.tokenizer.to_dict()
    state = ck.train_state
    assert state["step"] == 3 and state["corpus"] == "sort" and state["tokenizer_spec"] == "char"
    assert state["history"]["step"] == [1, 2, 3] and state["history"]["val_step"] == [0, 3]
    assert state["train_config"]["lr"] == 3e-3 and {"torch", "batch"} <= set(state["rng"])
    saved_opt = ck.optimizer_state["state"]["blocks.0.mlp.fc.weight"]
    live_opt = trainer.optimizer.state[trainer.model.blocks[0].mlp.fc.weight]
    assert torch.equal(saved_opt["exp_avg_sq"], live_opt["exp_avg_sq"]) and float(saved_opt["step"]) == 3
    x = torch.randint(0, 30, (2, 16))
    torch.testing.assert_close(ck.model(x)[0], trainer.model.eval()(x)[0], rtol=0, atol=0)


def test_tied_weights_stored_once(saved):
    path, _ = saved
    header = _header(path)
    assert "tok_emb.weight" in header and "head.weight" not in header


def test_info_reads_header_only(saved):
    path, _ = saved
    info = read_checkpoint_info(path)
    assert info["model_config"] == CONFIG.to_dict() and info["num_params"] == CONFIG.num_params()
    assert info["tokenizer"]["vocab_size"] == saved[1].tokenizer.vocab_size and info["has_optimizer_state"]
    assert info["train_state"]["step"] == 3 and info["file_bytes"] == os.path.getsize(path)


def test_weights_only_checkpoint(tmp_path):
    model = GPT(CONFIG)
    path = save_checkpoint(tmp_path / "w.safetensors", model, CharTokenizer("abc"))
    ck = load_checkpoint(path)
    assert ck.train_state is None and ck.optimizer_state is None


def test_resume_is_bit_exact(tmp_path, dataset):
    """N steps + save + resume N steps == 2N straight steps (dropout on, so RNG state matters)."""
    straight = Trainer(CONFIG, train_config(6), dataset)
    list(straight.run())

    first = Trainer(CONFIG, train_config(6), dataset)
    for event in first.run():
        if isinstance(event, StepEvent) and event.step == 3:
            first.request_stop()
    assert first.step == 3
    path = tmp_path / "half.safetensors"
    first.save(path)
    torch.manual_seed(12345)  # anything in between must not matter
    second = Trainer(CONFIG, train_config(6), dataset, resume=load_checkpoint(path))
    events = list(second.run())
    assert isinstance(events[-1], FinishedEvent) and events[-1].reason == "completed"
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert second.history["loss"] == straight.history["loss"]
    assert second.history["step"] == [1, 2, 3, 4, 5, 6]


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"precious")

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_module, "save_file", broken_save)
    with pytest.raises(CheckpointError, match="No space left"):
        save_checkpoint(path, GPT(CONFIG), CharTokenizer("abc"))
    assert path.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temp file left behind


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_saved_file_gets_the_usual_permissions(tmp_path):
    # The temp file is private while it is written; the finished checkpoint is readable as any saved file.
    path = save_checkpoint(tmp_path / "m.safetensors", GPT(CONFIG), CharTokenizer("abc"))
    assert path.stat().st_mode & 0o777 == 0o666 & ~files._UMASK


def test_save_into_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        save_checkpoint(tmp_path / "no" / "m.safetensors", GPT(CONFIG), CharTokenizer("abc"))


# ---------------------------------------------------------------- bad files

def _header(path) -> dict:
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n])


def _rewrite_header(src, dst, change) -> None:
    """Copy a checkpoint with its JSON header edited by `change(header)` (data bytes kept)."""
    raw = open(src, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    change(header)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + raw[8 + n:])


def _set_meta(key, value):
    def change(header):
        header["__metadata__"][key] = value if isinstance(value, str) else json.dumps(value)
    return change


def _bad_file(kind: str, good, tmp_path):
    path = tmp_path / f"{kind}.safetensors"
    raw = open(good, "rb").read()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random-bytes":
        path.write_bytes(os.urandom(5000))
    elif kind == "text":
        path.write_text("this is not a model\n" * 100)
    elif kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "truncated-header":
        path.write_bytes(raw[:100])
    elif kind == "header-not-json":
        path.write_bytes(struct.pack("<Q", 16) + b"{not json at all" + b"\0" * 64)
    elif kind == "huge-header-length":
        path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    elif kind == "foreign":
        save_file({"transformer.wte.weight": torch.zeros(4, 4)}, str(path), metadata={"format": "pt"})
    elif kind == "no-metadata":
        save_file({"a": torch.zeros(2)}, str(path))
    elif kind == "future-version":
        _rewrite_header(good, path, _set_meta("format_version", "99"))
    elif kind == "config-bad-json":
        _rewrite_header(good, path, _set_meta("model_config", "{'vocab_size': 3"))
    elif kind == "config-huge":
        _rewrite_header(good, path, _set_meta("model_config", {**CONFIG.to_dict(), "vocab_size": 10**12}))
    elif kind == "config-big-but-legal":
        big = {**CONFIG.to_dict(), "n_layers": 200, "emb_dim": 8192, "n_heads": 64, "context_length": 32768}
        _rewrite_header(good, path, _set_meta("model_config", big))
    elif kind == "config-unknown-field":
        _rewrite_header(good, path, _set_meta("model_config", {**CONFIG.to_dict(), "evil": 1}))
    elif kind == "config-not-object":
        _rewrite_header(good, path, _set_meta("model_config", [1, 2, 3]))
    elif kind == "deeply-nested":
        _rewrite_header(good, path, _set_meta("train_state", "[" * 100_000 + "]" * 100_000))
    elif kind == "tokenizer-unknown":
        _rewrite_header(good, path, _set_meta("tokenizer", {"type": "mystery"}))
    elif kind == "tokenizer-too-big":
        chars = "".join(map(chr, range(40, 140)))
        _rewrite_header(good, path, _set_meta("tokenizer", {"type": "char", "chars": chars}))
    elif kind == "shape-mismatch":
        _rewrite_header(good, path, _set_meta("model_config", {**CONFIG.to_dict(), "emb_dim": 64}))
    elif kind == "missing-tensor":
        _rewrite_header(good, path, lambda h: h.pop("ln_f.bias"))
    elif kind == "unexpected-tensor":
        def add(h):
            h["evil.weight"] = dict(h["ln_f.bias"])
        _rewrite_header(good, path, add)
    elif kind == "wrong-dtype":
        def to_int(h):
            h["ln_f.bias"]["dtype"] = "I32"
        _rewrite_header(good, path, to_int)
    elif kind == "offsets-past-end":
        def move(h):
            h["ln_f.bias"]["data_offsets"] = [10**9, 10**9 + 128]
        _rewrite_header(good, path, move)
    elif kind == "nan-weights":
        ck = load_checkpoint(good)
        with torch.no_grad():
            ck.model.blocks[0].mlp.fc.weight[0, 0] = float("nan")
        save_checkpoint(path, ck.model, ck.tokenizer)
    elif kind == "folder":
        path.mkdir()
    elif kind == "missing":
        pass
    return path


BAD = {
    "empty": "too short", "random-bytes": "not a safetensors", "text": "not a safetensors",
    "truncated": "truncated", "truncated-header": "truncated", "header-not-json": "not valid JSON",
    "huge-header-length": "bad header length", "foreign": "not an LLM Playground checkpoint",
    "no-metadata": "not an LLM Playground checkpoint", "future-version": "version 99",
    "config-bad-json": "not valid JSON", "config-huge": "vocab_size must be between",
    "config-big-but-legal": "larger than the weights", "config-unknown-field": "unknown model config",
    "config-not-object": "must be a JSON object", "deeply-nested": "not valid JSON",
    "tokenizer-unknown": "unknown tokenizer", "tokenizer-too-big": "tokenizer has",
    "shape-mismatch": "shape", "missing-tensor": "missing tensor", "unexpected-tensor": "unexpected tensor",
    "wrong-dtype": "dtype", "offsets-past-end": "truncated", "nan-weights": "NaN",
    "folder": "is a folder", "missing": "no such file",
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_checkpoints_give_one_clear_line(kind, saved, tmp_path):
    path = _bad_file(kind, saved[0], tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert BAD[kind] in message and "\n" not in message and len(message) < 300
    if kind != "nan-weights":  # values are only read by load_checkpoint
        with pytest.raises(CheckpointError, match=BAD[kind].split()[0]):
            read_checkpoint_info(path)
