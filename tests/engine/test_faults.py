"""Faults and hostile files, each a test: nothing lost, nothing crashes, every problem one line.

- A full disk: a really full 64 KiB tmpfs when the tests run as root and can mount one, else an injected
  writer failure. Saves fail cleanly (old file intact, no temp file), `train` checks --out before training
  and, when the final save still fails, keeps the run in a fallback folder and says where.
- kill -9 in the middle of a save, then the next save to the folder cleans up the temp file.
- A file rewritten in place while it is read (a rewriter thread): never SIGBUS, a one-line error at worst.
- FIFOs and devices as checkpoints, corpora and tokenizer files: refused at once, never opened.
- Hostile but well-formed metadata, text files (UTF-32, late NUL bytes), output paths that would overwrite
  an input or follow a planted symlink, CPU out-of-memory, escape sequences in names, argparse errors.
- Resume with a warmup shorter than the run.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from checkpoint_mutations import DEEP, metadata_of, mutate, read_header, write_header
from disk_faults import full_folder, small_disk

from engine import checkpoint as ckpt_module
from engine import data as data_module
from engine import files
from engine import memory as memory_module
from engine.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_info, save_checkpoint
from engine.cli import main
from engine.cli import train as cli_train
from engine.config import TrainConfig
from engine.data import CorpusError, Dataset, decode_text_file, load_corpus
from engine.events import StepEvent
from engine.model import GPT
from engine.tokenizers import CharTokenizer, load_tokenizer_file
from engine.training.trainer import Trainer, lr_at

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--preset", "tiny", "--context-length", "8", "--n-layers", "1", "--emb-dim", "16", "--n-heads", "2",
        "--batch-size", "2", "--eval-interval", "2", "--sample-interval", "0"]


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny checkpoint with training and optimizer state (2 steps on `copy`)."""
    path = tmp_path_factory.mktemp("faults") / "tiny.safetensors"
    assert main(["train", *TINY, "--corpus", "copy", "--tokenizer", "bpe:300", "--steps", "2", "--warmup-steps", "1",
                 "--out", str(path)]) == 0
    return path


@pytest.fixture
def rescue(tmp_path, monkeypatch) -> Path:
    """The fallback folder for a run whose --out cannot be written."""
    folder = tmp_path / "rescued"
    monkeypatch.setattr(cli_train, "rescue_folders", lambda: [folder])
    return folder


# ---------------------------------------------------------------- a full disk

def fill(path: Path) -> Path:
    """Write zeros to `path` until its disk is full."""
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return path


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """A folder where a checkpoint does not fit (tests/engine/disk_faults.py)."""
    with full_folder(tmp_path, monkeypatch) as folder:
        yield folder


def test_a_save_on_a_full_disk_fails_cleanly(full_disk):
    precious = full_disk / "model.safetensors"
    precious.write_bytes(b"precious" * 100)
    model = GPT(load_checkpoint_config())
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(precious, model, CharTokenizer("abc"))
    message = str(info.value)
    assert "No space left on device" in message and "\n" not in message
    assert precious.read_bytes() == b"precious" * 100  # the old file is intact
    assert os.listdir(full_disk) == ["model.safetensors"]  # and no temp file is left behind


def load_checkpoint_config():
    from engine.config import ModelConfig
    return ModelConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0)


def test_train_keeps_the_run_when_the_final_save_fails(full_disk, rescue, capsys):
    out = full_disk / "run.safetensors"
    out.write_bytes(b"an older run")
    # emb_dim 64: a checkpoint of ~0.6 MB, which cannot fit on the 64 KiB disk (the 4 KiB pre-check does).
    code, stdout, err = run(capsys, "train", *TINY, "--emb-dim", "64", "--corpus", "copy", "--steps", "3",
                            "--out", out)
    line = one_error_line(err)
    assert code == 1 and "No space left on device" in line and "saved to" in line
    assert "training" in stdout  # it trained: the pre-check passed, the disk filled at the end
    rescued = list(rescue.glob("run-rescued-*.safetensors"))
    assert len(rescued) == 1 and str(rescued[0]) in line
    ck = load_checkpoint(rescued[0])
    assert ck.train_state["step"] == 3 and ck.optimizer_state is not None  # resumable, nothing lost
    assert out.read_bytes() == b"an older run" and sorted(os.listdir(full_disk)) == ["run.safetensors"]


@pytest.mark.skipif(not (hasattr(os, "geteuid") and os.geteuid() == 0), reason="needs root to mount a tmpfs")
def test_train_refuses_a_full_out_folder_before_training(tmp_path, capsys):
    with small_disk(tmp_path / "disk") as mounted:
        if not mounted:
            pytest.skip("mount -t tmpfs is not allowed here")
        fill(tmp_path / "disk" / "filler")
        start = time.monotonic()
        code, stdout, err = run(capsys, "train", *TINY, "--corpus", "copy", "--steps", "500",
                                "--out", tmp_path / "disk" / "m.safetensors")
        assert code == 2 and "No space left on device" in one_error_line(err)
        assert "training" not in stdout and time.monotonic() - start < 30
        assert sorted(os.listdir(tmp_path / "disk")) == ["filler"]


def test_tokenizer_train_on_a_full_disk(tmp_path, capsys, monkeypatch):
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(3000)]
    corpus = tmp_path / "text.txt"
    corpus.write_text(" ".join(rng.choice(words) for _ in range(60000)))
    with small_disk(tmp_path / "disk") as mounted:
        out = tmp_path / "disk" / "tok.json"
        out.write_text("old tokenizer")
        if mounted:  # fill the disk, then free two pages: room for the pre-check, not for the ~25 KB file
            filler = fill(tmp_path / "disk" / "filler")
            os.truncate(filler, max(0, filler.stat().st_size - 8192))
        else:
            def no_space(fd):
                raise OSError(errno.ENOSPC, "No space left on device")
            monkeypatch.setattr(files.os, "fsync", no_space)
        code, _, err = run(capsys, "tokenizer", "train", "--corpus", corpus, "--vocab-size", "2000", "--out", out)
        assert code == 2 and "No space left on device" in one_error_line(err)
        assert out.read_text() == "old tokenizer"
        assert sorted(os.listdir(tmp_path / "disk")) == sorted(["tok.json"] + (["filler"] if mounted else []))


# ---------------------------------------------------------------- kill -9 in the middle of a save

KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from engine.files import atomic_write
    def write(name):
        with open(name, "wb") as f:
            f.write(b"half a checkpoint" * 100000)
            f.flush()
        print("writing", flush=True)
        time.sleep(600)
    atomic_write(sys.argv[1], write)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_kill_9_mid_save_keeps_the_old_file_and_the_next_save_cleans_up(tmp_path):
    target = tmp_path / "model.safetensors"
    save_checkpoint(target, GPT(load_checkpoint_config()), CharTokenizer("abc"))
    before = target.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith(files.TEMP_SUFFIX)]
    assert len(leftovers) == 1 and f".{proc.pid}." in leftovers[0]  # the killed writer's temp file
    assert target.read_bytes() == before  # kill -9 never damages the old file
    load_checkpoint(target)
    # A temp file of a process that is still alive (another save going on) is not touched.
    alive = tmp_path / f".other.safetensors.{os.getpid()}.abcdefgh{files.TEMP_SUFFIX}"
    alive.write_bytes(b"in progress")
    save_checkpoint(tmp_path / "other.safetensors", GPT(load_checkpoint_config()), CharTokenizer("abc"))
    assert sorted(os.listdir(tmp_path)) == sorted(["model.safetensors", "other.safetensors", alive.name])


def test_stale_temp_files_are_recognised_by_their_own_name_only(tmp_path):
    dead = 2**22 + 12345  # above the usual pid_max: no such process
    ours = tmp_path / f".a.b.c.safetensors.{dead}.x1y2z3_q{files.TEMP_SUFFIX}"
    ours_npy = tmp_path / f".t.npy.{dead}.abcdefgh{files.TEMP_SUFFIX}.npy"
    theirs = tmp_path / f".notes.{dead}.txt"
    link = tmp_path / f".l.{dead}.abcdefgh{files.TEMP_SUFFIX}"
    for p in (ours, ours_npy, theirs):
        p.write_bytes(b"x")
    link.symlink_to(theirs)
    files.remove_stale_temp_files(tmp_path)
    assert not ours.exists() and not ours_npy.exists() and theirs.exists() and link.is_symlink()


# ---------------------------------------------------------------- a file rewritten while it is read

REWRITER = textwrap.dedent("""
    import shutil, sys, threading, time
    from engine.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_info
    a, b, target = sys.argv[1:4]
    stop = threading.Event()
    rewrites = 0
    def rewrite():
        global rewrites
        while not stop.is_set():
            for src in (a, b):
                with open(src, "rb") as f_in, open(target, "r+b") as f_out:  # in place, as `cp` does
                    f_out.truncate(0)
                    shutil.copyfileobj(f_in, f_out, 16384)
                rewrites += 1
                time.sleep(0.002)
    thread = threading.Thread(target=rewrite, daemon=True)
    thread.start()
    ok = refused = 0
    end = time.monotonic() + 120
    while time.monotonic() < end and ok + refused < int(sys.argv[4]):
        for read in (load_checkpoint, read_checkpoint_info):
            try:
                read(target)
                ok += 1
            except CheckpointError as e:
                assert "\\n" not in str(e), e
                refused += 1
    stop.set()
    thread.join()
    print(ok, refused, rewrites)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="in-place rewrites of an open file")
def test_a_file_rewritten_while_it_is_read_never_kills_the_reader(trained, tmp_path):
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, GPT(load_checkpoint(trained).config), load_checkpoint(trained).tokenizer)
    target = tmp_path / "target.safetensors"
    target.write_bytes(trained.read_bytes())
    proc = subprocess.run([sys.executable, "-c", REWRITER, str(trained), str(other), str(target), "60"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    # A memory-mapped reader dies here with SIGBUS (returncode -7); ours reads or says the file changed.
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    ok, refused, rewrites = map(int, proc.stdout.split())
    assert rewrites > 10 and ok + refused >= 60, proc.stdout
    assert refused > 0  # some reads overlapped a rewrite and were refused with one line


def test_a_change_during_the_read_is_detected(trained, tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    path.write_bytes(trained.read_bytes())
    real = ckpt_module._read_tensors

    def read_then_touch(f, h):
        tensors = real(f, h)
        with open(path, "r+b") as g:  # written in place by someone else, same size
            g.seek(os.path.getsize(path) - 4)
            g.write(b"\0\0\0\0")
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        return tensors

    monkeypatch.setattr(ckpt_module, "_read_tensors", read_then_touch)
    with pytest.raises(CheckpointError, match="changed while it was being read"):
        load_checkpoint(path)


# ---------------------------------------------------------------- FIFOs and devices

def _quick(fn, seconds: float = 20.0):
    """Run fn in a thread; fail (instead of hanging the suite) if it does not return in time."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            result["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked (a FIFO opened for reading?)"
    if "error" in result:
        raise result["error"]
    return result.get("value")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_fifos_are_refused_at_once(tmp_path, trained, capsys):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    text_fifo = tmp_path / "pipe.txt"
    os.mkfifo(text_fifo)
    for read in (load_checkpoint, read_checkpoint_info):
        with pytest.raises(CheckpointError, match="not a regular file"):
            _quick(lambda read=read: read(fifo))
    with pytest.raises(CorpusError, match="not a regular file"):
        _quick(lambda: load_corpus(str(text_fifo)))
    with pytest.raises(ValueError, match="not a regular file"):
        _quick(lambda: load_tokenizer_file(tmp_path / "pipe.txt"))
    out = tmp_path / "out.safetensors"
    for argv in (["info", fifo], ["generate", fifo, "--prompt", "a"], ["train", "--resume", fifo, "--out", out],
                 ["train", *TINY, "--corpus", text_fifo, "--steps", "1", "--out", out],
                 ["train", *TINY, "--corpus", "copy", "--tokenizer", text_fifo, "--steps", "1", "--out", out],
                 ["tokenize", "--checkpoint", fifo, "hello"],
                 ["tokenizer", "train", "--corpus", text_fifo, "--vocab-size", "300", "--out", tmp_path / "t.json"]):
        code, _, err = _quick(lambda argv=argv: run(capsys, *argv))
        assert code == 2, (argv, err)
        one_error_line(err)
    assert not out.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_folder_corpus_skips_fifos(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("some text\n" * 10)
    os.mkfifo(folder / "b.txt")
    corpus = _quick(lambda: load_corpus(str(folder)))
    assert corpus.documents == ["some text\n" * 10]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_devices_are_refused_as_corpora_and_as_stored_corpus_paths(trained, tmp_path, capsys):
    with pytest.raises(CorpusError, match="not a regular file"):
        _quick(lambda: load_corpus("/dev/zero"))
    hostile = tmp_path / "zero.safetensors"
    mutate(trained, hostile, ("train_state", "corpus"), "/dev/zero")
    out = tmp_path / "out.safetensors"
    code, _, err = _quick(lambda: run(capsys, "train", "--resume", hostile, "--steps", "4", "--out", out))
    line = one_error_line(err)
    assert code == 2 and "/dev/zero" in line and "not a regular file" in line and not out.exists()
    # Opening it (info, generate, the app's open) never touches the stored path at all.
    code, stdout, _ = _quick(lambda: run(capsys, "info", hostile))
    assert code == 0 and "/dev/zero" in stdout


# ---------------------------------------------------------------- text files

def test_utf32_files_are_decoded(tmp_path):
    text = "Grüße, 世界! 🙂\nsecond line\n" * 20
    for codec in ("utf-32", "utf-32-be", "utf-16", "utf-8-sig"):
        path = tmp_path / f"{codec}.txt"
        data = text.encode(codec)
        if codec == "utf-32-be":
            data = b"\x00\x00\xfe\xff" + data
        path.write_bytes(data)
        assert decode_text_file(path) == text, codec


def test_nul_bytes_anywhere_make_a_file_binary(tmp_path):
    path = tmp_path / "late.txt"
    path.write_bytes(b"plain text\n" * 2000 + b"\x00\x01\x02")  # past the first 8 KB
    with pytest.raises(CorpusError, match="binary"):
        decode_text_file(path)
    utf16 = tmp_path / "nul16.txt"
    utf16.write_bytes(("text " * 3000 + "\x00").encode("utf-16"))
    with pytest.raises(CorpusError, match="binary"):
        decode_text_file(utf16)


def test_corpus_files_have_a_size_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "MAX_FILE_BYTES", 1000)
    big = tmp_path / "big.txt"
    big.write_text("x" * 2000)
    with pytest.raises(CorpusError, match="too large"):
        decode_text_file(big)
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text("y" * 400)
    with pytest.raises(CorpusError, match="more text than a corpus may"):
        load_corpus(str(folder))


def test_an_empty_corpus_name_never_reads_the_current_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "private.txt").write_text("secret notes\n" * 500)
    monkeypatch.chdir(tmp_path)
    for name in ("", "  "):
        with pytest.raises(CorpusError, match="no corpus given"):
            load_corpus(name)
    code, _, err = run(capsys, "tokenizer", "train", "--corpus", "", "--vocab-size", "300", "--out", "t.json")
    assert code == 2 and "no corpus given" in one_error_line(err) and not (tmp_path / "t.json").exists()


# ---------------------------------------------------------------- outputs that would destroy inputs

def test_out_equal_to_the_corpus_is_refused(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 300)
    before = corpus.read_bytes()
    code, _, err = run(capsys, "train", *TINY, "--corpus", corpus, "--steps", "1", "--out", corpus)
    assert code == 2 and "would replace the input" in one_error_line(err)
    link = tmp_path / "link.txt"
    link.symlink_to(corpus)
    code, _, err = run(capsys, "train", *TINY, "--corpus", link, "--steps", "1", "--out", corpus)
    assert code == 2 and "would replace the input" in one_error_line(err)
    code, _, err = run(capsys, "tokenizer", "train", "--corpus", corpus, "--vocab-size", "300", "--out", corpus)
    assert code == 2 and "would replace the input" in one_error_line(err)
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("hello world\n" * 300)
    code, _, err = run(capsys, "train", *TINY, "--corpus", folder, "--steps", "1", "--out", folder / "out.txt")
    assert code == 2 and "inside the corpus folder" in one_error_line(err)
    assert corpus.read_bytes() == before and sorted(os.listdir(folder)) == ["a.txt"]


def test_resume_may_write_over_its_own_checkpoint(trained, tmp_path, capsys):
    path = tmp_path / "run.safetensors"
    path.write_bytes(trained.read_bytes())
    code, _, err = run(capsys, "train", "--resume", path, "--steps", "3", "--out", path)
    assert code == 0, err
    assert load_checkpoint(path).train_state["step"] == 3


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_tokenizer_train_does_not_follow_planted_symlinks(tmp_path, capsys):
    corpus = tmp_path / "text.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch")
    out = tmp_path / "tok.json"
    (tmp_path / "tok.json.tmp").symlink_to(victim)  # the old fixed temp name
    code, _, err = run(capsys, "tokenizer", "train", "--corpus", corpus, "--vocab-size", "300", "--out", out)
    assert code == 0, err
    assert victim.read_text() == "do not touch" and load_tokenizer_file(out).vocab_size > 256
    out.unlink()
    out.symlink_to(victim)  # a link at the output name itself is replaced, not written through
    code, _, err = run(capsys, "tokenizer", "train", "--corpus", corpus, "--vocab-size", "300", "--out", out)
    assert code == 0, err
    assert victim.read_text() == "do not touch" and not out.is_symlink()


# ---------------------------------------------------------------- hostile metadata, each case of the issue

HOSTILE = {
    "empty split pattern": (("tokenizer", "pattern"), "", "pattern must be 1 to"),
    "special id -1": (("tokenizer", "special_tokens", "<|endoftext|>"), -1, "out of range"),
    "special id 2^40": (("tokenizer", "special_tokens", "<|endoftext|>"), 2**40, "out of range"),
    "pattern matching nothing": (("tokenizer", "pattern"), "x?", "can match empty text"),
    "deep JSON in the tokenizer": (("tokenizer",), "<deep>", "nested more than"),
    "deep JSON in the train state": (("train_state",), "<deep>", "nested more than"),
    "model config as a list": (("model_config",), [1, 2], "must be a JSON object"),
    "huge vocab": (("model_config", "vocab_size"), 2**63, "vocab_size must be between"),
}
# Fields only a resumed run uses: the weights still open; --resume refuses them with one line.
HOSTILE_RESUME = {
    "optimizer lr as a string": (("optimizer", "param_groups", 0, "lr"), "0.001", "lr must be a number"),
    "amsgrad on": (("optimizer", "param_groups", 0, "amsgrad"), True, "amsgrad on"),
    "train_config as a list": (("train_state", "train_config"), [1, 2], "train config must be a JSON object"),
    "negative step": (("train_state", "step"), -5, "step must be between"),
    "history value 1e309": (("train_state", "history", "loss"), "<inf>", "history.loss holds inf"),
    "seed out of torch's range": (("train_state", "train_config", "seed"), 2**70, "seed must be"),
    "rng state garbage": (("train_state", "rng", "torch"), "AAAA", "rng.torch holds"),
}


def _hostile_file(trained: Path, dst: Path, place, value) -> Path:
    if value == "<deep>":
        header, data = read_header(trained)
        header["__metadata__"][place[0]] = DEEP
        write_header(dst, header, data)
    elif value == "<inf>":
        header, data = read_header(trained)
        state = json.loads(header["__metadata__"]["train_state"])
        state["history"]["loss"][0] = 12345.678
        header["__metadata__"]["train_state"] = json.dumps(state).replace("12345.678", "1e309")
        write_header(dst, header, data)
    else:
        mutate(trained, dst, place, value)
    return dst


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_metadata_is_one_line_everywhere(case, trained, tmp_path, capsys):
    place, value, expected = HOSTILE[case]
    path = _hostile_file(trained, tmp_path / "hostile.safetensors", place, value)
    out = tmp_path / "out.safetensors"
    for argv in (["info", path], ["generate", path, "--prompt", "ab", "--max-new-tokens", "2"],
                 ["train", "--resume", path, "--steps", "4", "--out", out],
                 ["train", "--init", path, "--corpus", "copy", "--steps", "1", "--batch-size", "2", "--out", out]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and expected in one_error_line(err), (argv, err)
    assert not out.exists()


@pytest.mark.parametrize("case", list(HOSTILE_RESUME))
def test_hostile_training_state_is_refused_by_resume_only(case, trained, tmp_path, capsys):
    place, value, expected = HOSTILE_RESUME[case]
    path = _hostile_file(trained, tmp_path / "hostile.safetensors", place, value)
    out = tmp_path / "out.safetensors"
    code, _, err = run(capsys, "train", "--resume", path, "--steps", "4", "--out", out)
    line = one_error_line(err)
    assert code == 2 and expected in line and "cannot be resumed" in line and not out.exists()
    code, stdout, err = run(capsys, "info", path)
    assert code == 0 and "malformed" in stdout and not err
    ck = load_checkpoint(path)  # the weights are fine: generate and fine-tuning work
    assert (ck.train_state_problem or ck.optimizer_problem) and expected in (ck.train_state_problem or
                                                                             ck.optimizer_problem)
    code, _, err = run(capsys, "generate", path, "--prompt", "ab", "--max-new-tokens", "2", "--seed", "1")
    assert code == 0, err


def test_huge_but_finite_weights_are_reported(trained, tmp_path, capsys):
    ck = load_checkpoint(trained)
    with torch.no_grad():
        for p in ck.model.parameters():
            p.mul_(1e30)
    path = save_checkpoint(tmp_path / "huge.safetensors", ck.model, ck.tokenizer)
    for extra in ([], ["--greedy"]):
        code, _, err = run(capsys, "generate", path, "--prompt", "ab", "--max-new-tokens", "3", *extra)
        assert code == 2 and "not finite" in one_error_line(err)
    out = tmp_path / "out.safetensors"
    code, stdout, err = run(capsys, "train", "--init", path, "--corpus", "copy", "--steps", "2", "--batch-size", "2",
                            "--out", out)
    assert code == 1 and "the loss became" in one_error_line(err) and not out.exists()


def test_info_and_load_share_one_validator(trained, tmp_path, capsys):
    header, data = read_header(trained)
    junk = tmp_path / "junk.safetensors"
    write_header(junk, header, data + b"JUNKJUNK")
    overlap = tmp_path / "overlap.safetensors"
    changed = json.loads(json.dumps(header))
    names = sorted((n for n in changed if n != "__metadata__"), key=lambda n: changed[n]["data_offsets"][0])
    a, b = names[-2], names[-1]
    if changed[a]["dtype"] == changed[b]["dtype"] and changed[a]["shape"] == changed[b]["shape"]:
        changed[b]["data_offsets"] = changed[a]["data_offsets"]  # two tensors on the same bytes
    else:
        changed[b]["data_offsets"][0] -= 4
        changed[b]["data_offsets"][1] -= 4
    write_header(overlap, changed, data)
    for path, expected in ((junk, "junk after its tensors"), (overlap, "overlap or leave gaps")):
        for read in (read_checkpoint_info, load_checkpoint):
            with pytest.raises(CheckpointError, match=expected):
                read(path)
        code, _, err = run(capsys, "info", path)
        assert code == 2 and expected in one_error_line(err)


def test_info_escapes_control_characters(trained, tmp_path, capsys):
    path = tmp_path / "ansi.safetensors"
    mutate(trained, path, ("train_state", "corpus"), "\x1b[2J\x1b[31mevil\x07")
    code, out, err = run(capsys, "info", path)
    assert code == 0 and "\x1b" not in out and "\x07" not in out and "\\x1b[31mevil" in out


# ---------------------------------------------------------------- command-line plumbing

def test_argparse_errors_are_one_line(capsys):
    for argv in (["--bogus"], ["nosuchcommand"], [], ["tokenizer"], ["train", "--steps", "many"],
                 ["generate"], ["bench", "nosuch"]):
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        one_error_line(err)


def test_argparse_error_in_a_real_process_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "engine", "--bogus"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")


def test_a_run_too_big_for_memory_is_refused_before_allocating(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(memory_module, "available_memory_bytes", lambda device: 200_000_000)
    start = time.monotonic()
    code, stdout, err = run(capsys, "train", "--preset", "small", "--corpus", "copy", "--steps", "1",
                            "--batch-size", "4096", "--out", tmp_path / "m.safetensors")
    line = one_error_line(err)
    assert code == 2 and "needs about" in line and "smaller batch size" in line and "bf16" in line
    assert "training" not in stdout and time.monotonic() - start < 60


def test_the_estimate_matches_the_model_card():
    from engine.config import BYTES_PER_PARAM, PRESETS
    config = PRESETS["small"]
    need = memory_module.training_memory_bytes(config, TrainConfig(batch_size=1))
    # Weights, gradients and AdamW's two moments: 4x the weights in fp32, plus one sequence's activations.
    assert 4 * config.weights_bytes("fp32") < need < 4 * config.weights_bytes("fp32") + 200e6
    assert config.weights_bytes("fp32") == config.num_params() * BYTES_PER_PARAM["fp32"]
    bigger = memory_module.training_memory_bytes(config, TrainConfig(batch_size=64))
    assert bigger > 10 * (need - 4 * config.weights_bytes("fp32"))


def test_allocator_failures_are_one_line(tmp_path, capsys, monkeypatch):
    def no_memory(self, lr):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 123456789012 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(Trainer, "_train_step", no_memory)
    code, _, err = run(capsys, "train", *TINY, "--corpus", "copy", "--steps", "2", "--out", tmp_path / "m.safetensors")
    assert code == 1 and "out of memory at step 1" in one_error_line(err)
    monkeypatch.setattr(cli_train, "_run_spec", lambda args, dist=None: (_ for _ in ()).throw(MemoryError()))
    code, _, err = run(capsys, "train", *TINY, "--corpus", "copy", "--steps", "2", "--out", tmp_path / "m.safetensors")
    assert code == 2 and "out of memory" in one_error_line(err)
    assert not (tmp_path / "m.safetensors").exists()


# ---------------------------------------------------------------- resume with a short warmup

def test_resume_with_a_short_warmup_is_bit_exact_for_the_same_total(tmp_path):
    """Warmup 1 of 8 steps: stopped at 4 (as Ctrl-C does), saved, resumed with the same total: the same
    weights, bit for bit, as 8 straight steps."""
    corpus = load_corpus("reverse")
    tokenizer = CharTokenizer.from_text(corpus.text())
    dataset = Dataset.build(corpus, tokenizer, 16)
    config = load_checkpoint_config().with_changes(vocab_size=tokenizer.vocab_size, drop_rate=0.1)
    settings = TrainConfig(steps=8, batch_size=2, lr=3e-3, warmup_steps=1, eval_interval=4, eval_batches=1,
                           sample_interval=0, seed=3, device="cpu")
    straight = Trainer(config, settings, dataset)
    list(straight.run())
    first = Trainer(config, settings, dataset)
    for event in first.run():
        if isinstance(event, StepEvent) and event.step == 4:
            first.request_stop()
    path = first.save(tmp_path / "half.safetensors").path
    second = Trainer(config, settings, dataset, resume=load_checkpoint(path))
    list(second.run())
    for (name, a), b in zip(straight.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert second.history["lr"] == straight.history["lr"]


def test_resume_to_a_larger_total_follows_the_new_schedule(trained, tmp_path, capsys):
    """The cosine decay runs to the total steps, so a finished run resumed to a larger --steps continues on
    the schedule of the new total (as the README says): steps after the resume use lr_at(step, new total)."""
    out = tmp_path / "more.safetensors"
    code, _, err = run(capsys, "train", "--resume", trained, "--steps", "6", "--out", out)
    assert code == 0, err
    state = load_checkpoint(out).train_state
    config = TrainConfig.from_dict(state["train_config"])
    assert config.steps == 6 and config.warmup_steps < 6
    assert state["history"]["lr"][2:] == [pytest.approx(lr_at(step, config), rel=1e-6) for step in range(2, 6)]
    assert state["history"]["lr"][:2] == load_checkpoint(trained).train_state["history"]["lr"]


def test_metadata_mutation_helper_round_trips(trained, tmp_path):
    copy = tmp_path / "copy.safetensors"
    mutate(trained, copy, ("train_state", "step"), 2)
    assert metadata_of(copy) == metadata_of(trained)
    assert load_checkpoint(copy).train_state["step"] == 2
