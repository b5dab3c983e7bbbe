"""Run logs (engine/training/runlog.py): a real run written and read back, logs torn by a crash or garbled on
purpose, deleting, the command line's log, and the TensorBoard export read back with TensorBoard's own reader."""
from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import pytest

from engine.cli import main
from engine.config import ModelConfig, TrainConfig
from engine.events import EvalEvent, FinishedEvent, SampleEvent, StartedEvent, StepEvent, run_job
from engine.training import runlog
from engine.training.run import RunSpec, prepare_run
from engine.training.runlog import (
    RunLogWriter,
    delete_run,
    export_tensorboard_job,
    logged,
    read_run,
    read_runs_job,
    tensorboard_problem,
)

SHAPE = ModelConfig(vocab_size=256, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
TRAIN = TrainConfig(steps=4, batch_size=2, eval_interval=2, eval_batches=1, sample_interval=2, seed=3)


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory) -> tuple[Path, list]:
    """A real 4-step run through `logged`: its log's path and the events the trainer yielded."""
    folder = tmp_path_factory.mktemp("runs")
    trainer = run_job(prepare_run(RunSpec(TRAIN, corpus="copy", model_config=SHAPE))).trainer
    log = RunLogWriter.create("run 1 · tiny · copy", corpus="copy", tokenizer="char", folder=folder)
    events = list(logged(trainer.run(), log))
    return log.path, events


def _read(path: Path):
    run, warning = read_run(path)
    assert run is not None, warning
    return run, warning


def test_a_run_reads_back_as_it_was_trained(logged_run):
    path, events = logged_run
    run, warning = _read(path)
    assert warning is None and run.skipped == 0
    assert (run.name, run.corpus, run.tokenizer, run.ended) == ("run 1 · tiny · copy", "copy", "char", "completed")
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert run.steps["step"] == [e.step for e in steps] == [1, 2, 3, 4]
    for key in ("loss", "lr", "grad_norm", "tokens_seen", "tokens_per_s", "elapsed_s"):
        assert run.steps[key] == pytest.approx([getattr(e, key) for e in steps], rel=1e-12), key
    evals = [e for e in events if isinstance(e, EvalEvent)]
    assert run.evals["step"] == [e.step for e in evals]
    assert run.evals["val_loss"] == pytest.approx([e.val_loss for e in evals], rel=1e-12)
    assert run.final_loss == pytest.approx(steps[-1].loss) and run.final_val_loss == pytest.approx(evals[-1].val_loss)
    samples = [e for e in events if isinstance(e, SampleEvent)]
    assert samples and run.samples == [(e.step, e.prompt + e.text) for e in samples]
    started = next(e for e in events if isinstance(e, StartedEvent))
    assert ModelConfig.from_dict(run.model_config) == ModelConfig.from_dict(started.model_config)
    assert TrainConfig.from_dict(run.train_config) == TRAIN and run.num_params == started.num_params
    # wall times rise, and the history feeds the plots the way a checkpoint's does
    assert run.steps["t"] == sorted(run.steps["t"]) and run.created <= run.steps["t"][0]
    history = run.history()
    assert history["step"] == [1, 2, 3, 4] and history["val_step"] == run.evals["step"]
    assert run.ended == next(e for e in events if isinstance(e, FinishedEvent)).reason


def test_every_line_is_flushed_as_it_is_written(tmp_path):
    log = RunLogWriter.create("live", corpus="copy", tokenizer="char", folder=tmp_path)
    log.write(StepEvent(1, 9, 2.5, 1e-3, 0.7, 64, 100.0, 0.0, 0.1, 5.0))
    # read while the writer is still open: a crash now would keep both lines
    run, _ = _read(log.path)
    assert run.steps["loss"] == [2.5] and run.ended is None
    log.close()


def _copy_lines(path: Path, tmp_path: Path, extra: list[bytes], *, at: int | None = None) -> Path:
    lines = path.read_bytes().splitlines(keepends=True)
    at = len(lines) if at is None else at
    target = tmp_path / "copy.jsonl"
    target.write_bytes(b"".join(lines[:at] + extra + lines[at:]))
    return target


def test_a_torn_last_line_is_skipped_quietly(logged_run, tmp_path):
    path, _ = logged_run
    whole, _ = _read(path)
    torn = _copy_lines(path, tmp_path, [b'{"event": "step", "step": 5, "lo'])
    run, warning = _read(torn)
    assert warning is None and run.skipped == 0 and run.steps == whole.steps


GARBAGE = [
    b"not json at all\n",
    b"[1, 2, 3]\n",
    b'"a string"\n',
    b"\xff\xfe\x00garbled bytes\n",
    b"[" * 100_000 + b"\n",  # deep nesting: a RecursionError inside json
    b'{"event": "step", "step": -1, "loss": 1, "lr": 1, "grad_norm": 1, "tokens_seen": 1, "tokens_per_s": 1, '
    b'"elapsed_s": 1, "t": 1}\n',
    b'{"event": "step", "step": true, "loss": 1, "lr": 1, "grad_norm": 1, "tokens_seen": 1, "tokens_per_s": 1, '
    b'"elapsed_s": 1, "t": 1}\n',
    b'{"event": "step", "step": 7, "loss": "NaN", "lr": 1, "grad_norm": 1, "tokens_seen": 1, "tokens_per_s": 1, '
    b'"elapsed_s": 1, "t": 1}\n',
    b'{"event": "step", "step": 7, "loss": Infinity, "lr": 1, "grad_norm": 1, "tokens_seen": 1, "tokens_per_s": 1, '
    b'"elapsed_s": 1, "t": 1}\n',
    b'{"event": "eval", "step": 1e400, "val_loss": 1, "train_loss": 1, "tokens_seen": 1, "t": 1}\n',
    b'{"event": "eval", "step": 99999999999999999999, "val_loss": 1, "train_loss": 1, "tokens_seen": 1, "t": 1}\n',
    b'{"event": "sample", "step": 2, "prompt": ["x"], "text": "y", "t": 1}\n',
    b'{"event": "started", "model_config": {"n_layers": -3}, "train_config": {}, "num_params": 1, "t": 1}\n',
    b'{"event": 5, "t": 1}\n',
    b'{"event": "finished", "reason": null, "t": 1}\n',
    b'{"step": "' + b"x" * (runlog.MAX_LINE_BYTES + 10) + b'"}\n',  # over the line cap
]


def test_garbage_lines_are_skipped_counted_and_said_in_one_line(logged_run, tmp_path):
    path, _ = logged_run
    whole, _ = _read(path)
    garbled = _copy_lines(path, tmp_path, GARBAGE, at=3)
    run, warning = _read(garbled)
    assert run.skipped == len(GARBAGE)
    assert warning == f"copy.jsonl: {len(GARBAGE)} unreadable line(s) skipped" and "\n" not in warning
    # what was good is all there, untouched by the garbage
    assert run.steps == whole.steps and run.evals == whole.evals and run.samples == whole.samples
    assert run.model_config == whole.model_config and run.ended == "completed"
    assert all(math.isfinite(v) for v in run.steps["loss"])


def test_files_that_are_not_run_logs_are_left_out_with_a_reason(logged_run, tmp_path):
    path, _ = logged_run
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "a-good.jsonl").write_bytes(path.read_bytes())
    (folder / "b-empty.jsonl").write_bytes(b"")
    (folder / "c-garbage.jsonl").write_bytes(os.urandom(5000))
    (folder / "d-other.jsonl").write_text(json.dumps({"event": "step", "step": 1}) + "\n")
    (folder / "e-future.jsonl").write_text(json.dumps({"event": "run", "version": 99}) + "\n")
    (folder / "f-header-bad.jsonl").write_text(json.dumps({"event": "run", "version": 1, "name": 5}) + "\n")
    (folder / "f2-version-true.jsonl").write_text(json.dumps({"event": "run", "version": True, "name": "x",
                                                              "corpus": "c", "tokenizer": "t", "t": 1}) + "\n")
    (folder / "g-folder.jsonl").mkdir()
    (folder / "notes.txt").write_text("not a log, not looked at")
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "h-fifo.jsonl")  # opening it for reading would block forever
    runs, warnings = run_job(read_runs_job(folder))
    assert [r.path.name for r in runs] == ["a-good.jsonl"]
    names = ["b-empty", "c-garbage", "d-other", "e-future", "f-header-bad", "f2-version-true", "g-folder"] + \
        (["h-fifo"] if hasattr(os, "mkfifo") else [])
    assert len(warnings) == len(names)
    for name, warning in zip(names, warnings):
        assert name in warning and "\n" not in warning


def test_runs_are_listed_oldest_first_and_deleted(tmp_path):
    first = RunLogWriter.create("first", corpus="copy", tokenizer="char", folder=tmp_path)
    first.close()
    second = RunLogWriter.create("second", corpus="sort", tokenizer="bpe:300", folder=tmp_path)
    second.close()
    runs, warnings = run_job(read_runs_job(tmp_path))
    assert [r.name for r in runs] == ["first", "second"] and warnings == []
    delete_run(runs[0])
    assert not first.path.exists() and second.path.exists()
    delete_run(runs[0])  # already gone: no error
    assert [r.name for r in run_job(read_runs_job(tmp_path))[0]] == ["second"]
    assert run_job(read_runs_job(tmp_path / "none")) == ([], [])


def test_a_log_that_cannot_be_written_leaves_training_alone(tmp_path):
    log = RunLogWriter.create("full disk", corpus="copy", tokenizer="char", folder=tmp_path)

    class FullDisk:
        def write(self, text):
            raise OSError(28, "No space left on device")

        def flush(self):
            pass

        def fileno(self):
            raise OSError("closed")

        def close(self):
            pass

    log._file = FullDisk()
    events = [StepEvent(i, 9, 2.0, 1e-3, 0.5, 64 * i, 100.0, 0.0, 0.1, 1.0) for i in range(1, 4)]
    assert list(logged(iter(events), log)) == events
    assert "could not be written: No space left on device" in log.problem
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    if not os.access(readonly, os.W_OK):  # (root can write anywhere)
        with pytest.raises(OSError, match="cannot keep a log of this run"):
            RunLogWriter.create("x", corpus="copy", tokenizer="char", folder=readonly)


def test_the_command_line_keeps_a_log_unless_told_not_to(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLM_PLAYGROUND_DATA", str(tmp_path / "data"))
    tiny = ["--preset", "tiny", "--context-length", "16", "--n-layers", "2", "--emb-dim", "32", "--batch-size", "2",
            "--eval-interval", "2", "--sample-interval", "0", "--corpus", "copy", "--steps", "2"]
    assert main(["train", *tiny, "--json", "--out", str(tmp_path / "m.safetensors")]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    runs, warnings = run_job(read_runs_job(tmp_path / "data" / "runs"))
    assert len(runs) == 1 and warnings == []
    assert runs[0].name == "m.safetensors (command line)" and runs[0].ended == "completed"
    assert runs[0].steps["loss"] == [e["loss"] for e in printed if e["event"] == "step"]
    assert main(["train", *tiny, "--no-run-log", "--out", str(tmp_path / "n.safetensors")]) == 0
    assert len(run_job(read_runs_job(tmp_path / "data" / "runs"))[0]) == 1


def test_tensorboard_export_reads_back_in_tensorboard(logged_run, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path, _ = logged_run
    run, _ = _read(path)
    assert tensorboard_problem() is None
    folders = run_job(export_tensorboard_job([run], tmp_path / "tb"))
    assert folders == [tmp_path / "tb" / path.stem]
    acc = EventAccumulator(str(folders[0]), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == run.steps["step"]
    assert [e.value for e in loss] == pytest.approx(run.steps["loss"], rel=1e-6)  # stored as float32
    assert [e.wall_time for e in loss] == pytest.approx(run.steps["t"], abs=1e-3)
    assert [e.value for e in acc.Scalars("train/grad_norm")] == pytest.approx(run.steps["grad_norm"], rel=1e-6)
    assert [e.value for e in acc.Scalars("eval/val_loss")] == pytest.approx(run.evals["val_loss"], rel=1e-6)
    texts = acc.Tensors("samples/text_summary")
    assert [t.step for t in texts] == [s for s, _ in run.samples]


def test_tensorboard_export_says_why_it_cannot_run(monkeypatch, logged_run, tmp_path):
    real = runlog.importlib.util.find_spec
    monkeypatch.setattr(runlog.importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard"
                        else real(name, *a))
    assert "pip install" in tensorboard_problem() and "tensorboard" in tensorboard_problem()
    run, _ = _read(logged_run[0])
    with pytest.raises(RuntimeError, match="optional package tensorboard"):
        run_job(export_tensorboard_job([run], tmp_path))
    assert not any(tmp_path.iterdir())


def test_any_mangling_of_a_log_reads_without_raising(logged_run, tmp_path):
    """Bytes flipped, cut or spliced anywhere: the reader gives a run or a reason, never an exception."""
    good = logged_run[0].read_bytes()
    rng = random.Random(0)
    target = tmp_path / "mangled.jsonl"
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(data))
            match rng.randrange(3):
                case 0:
                    data[at] = rng.randrange(256)
                case 1:
                    del data[at:at + rng.randint(1, 40)]
                case _:
                    data[at:at] = rng.choice([b"\n", b"{", b"]", b'"', b"null", b"1e999", b"-5", b"\xff"])
        target.write_bytes(bytes(data))
        run, warning = read_run(target)
        assert run is not None or warning
        if run is not None:
            assert all(isinstance(v, float) for v in run.steps["loss"])
            assert all(s >= 0 for s in run.steps["step"]) and isinstance(run.history(), dict)
