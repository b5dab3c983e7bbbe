"""Run logs: every training run keeps its settings, metrics and samples in the user's data folder, so runs
survive a restart (and a crash), as TensorBoard's do.

A run log is one JSON-lines file per run, `<data>/runs/<date>-<time>-<id>.jsonl`, only ever appended to:
- the first line says what the run is: `{"event": "run", "version": 1, "name": ..., "corpus": ...,
  "tokenizer": ..., "t": ...}`;
- every other line is one of the run's events as `--json` prints it (started, step, eval, sample, finished,
  error), plus `t`, the wall-clock time it was written (seconds since 1970).
Each line is flushed as soon as it is written, so a crash loses at most the line being written; that torn
last line is skipped when the log is read.

`logged(events, log)` passes a run's events through unchanged while writing them: the app's training job and
the command line's `train` both wrap the trainer's events with it, so the trainer knows nothing of logs.

Reading trusts nothing (a log may be garbled, truncated or hostile): every line is size-capped, parsed, and
every field checked for type and range; a line that fails is skipped and counted, a file that is not a run
log is left out, and each problem becomes one line in the reader's warnings, never an exception.

Export to TensorBoard event files (`export_tensorboard`) uses the optional `tensorboard` package
(`pip install 'llm-playground[tensorboard]'`); `tensorboard_problem()` says why it cannot run when it is absent.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from engine.config import ModelConfig, TrainConfig
from engine.events import (
    ErrorEvent,
    EvalEvent,
    Event,
    FinishedEvent,
    ProgressEvent,
    SampleEvent,
    StartedEvent,
    StepEvent,
)
from engine.files import data_dir, first_line, open_regular

LOG_VERSION = 1
LOG_SUFFIX = ".jsonl"
LOGGED_EVENTS = (StartedEvent, StepEvent, EvalEvent, SampleEvent, FinishedEvent, ErrorEvent)
MAX_LINE_BYTES = 1 << 20  # a sample or a config is far smaller; a longer line is garbage
MAX_LOG_BYTES = 1 << 30
MAX_TEXT_CHARS = 20_000  # names, paths, samples: cut to this
MAX_COUNT = 10 ** 15  # steps and tokens above this are not a real run
MAX_SAMPLES = 1_000  # the last ones are kept

E = TypeVar("E", bound=Event)


def runs_dir() -> Path:
    """Where run logs live: `<user data>/llm-playground/runs` (or $LLM_PLAYGROUND_DATA/runs)."""
    return data_dir() / "runs"


# ---------------------------------------------------------------- writing

def _json_safe(value: Any) -> Any:
    """NaN and infinity are not JSON: a diverged loss is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class RunLogWriter:
    """Appends one run's lines to its log, flushing each. A write that fails (a full disk) ends the log and
    leaves the reason in `problem`: training goes on, it is only not kept."""

    def __init__(self, path: Path, file: Any):
        self.path = path
        self._file = file
        self.problem: str | None = None

    @classmethod
    def create(cls, name: str, *, corpus: str, tokenizer: str, folder: str | os.PathLike | None = None) -> RunLogWriter:
        """A new log in `folder` (default `runs_dir()`), its first line written. Raises OSError (one line)."""
        folder = Path(folder) if folder is not None else runs_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # Named by the start time to the microsecond, so that sorting the names lists runs oldest first.
            now = time.time_ns()
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now // 10**9)) + f"{now // 1000 % 10**6:06d}"
            path = folder / f"{stamp}-{secrets.token_hex(3)}{LOG_SUFFIX}"
            file = open(path, "x", encoding="utf-8")  # "x": never append to someone else's file
        except OSError as e:
            raise OSError(f"cannot keep a log of this run in {folder}: {e.strerror or e}") from None
        log = cls(path, file)
        log._write({"event": "run", "version": LOG_VERSION, "name": name, "corpus": corpus, "tokenizer": tokenizer})
        if log.problem:
            raise OSError(log.problem)
        return log

    def write(self, event: Event) -> None:
        """Log one of the run's events (others, such as progress and attention probes, are not kept)."""
        if isinstance(event, LOGGED_EVENTS):
            self._write(event.to_json())

    def _write(self, data: dict[str, Any]) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps({**_json_safe(data), "t": round(time.time(), 3)}, ensure_ascii=False) + "\n")
            self._file.flush()  # in the OS's hands now: a crash of this process loses nothing
        except (OSError, ValueError) as e:
            self.problem = f"the log of this run ({self.path}) could not be written: {getattr(e, 'strerror', None) or first_line(e)}"
            self.close()

    def close(self) -> None:
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            file.flush()
            os.fsync(file.fileno())  # once, at the end: on disk even if the machine goes down next
        except (OSError, ValueError):
            pass
        try:
            file.close()
        except OSError:
            pass


def logged(events: Iterable[E], log: RunLogWriter | None) -> Iterator[E]:
    """`events` unchanged, each also written to `log` (None: no log); the log is closed when they end."""
    try:
        for event in events:
            if log is not None:
                log.write(event)
            yield event
    finally:
        if log is not None:
            log.close()


# ---------------------------------------------------------------- reading

class _Bad(ValueError):
    """A field of a line is not what a run log holds."""


def _count(data: dict, key: str) -> int:
    v = data.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_COUNT:
        raise _Bad(key)
    return v


def _number(data: dict, key: str, *, required: bool = True) -> float:
    """A finite number; null (written for NaN) or, when not required, a missing key reads as NaN."""
    if key not in data and not required:
        return math.nan
    v = data.get(key, False)
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _Bad(key)
    return float(v)


def _text(data: dict, key: str, default: str | None = None) -> str:
    v = data.get(key, default)
    if not isinstance(v, str):
        raise _Bad(key)
    return v[:MAX_TEXT_CHARS]


STEP_FIELDS = ("step", "loss", "lr", "grad_norm", "tokens_seen", "tokens_per_s", "elapsed_s", "t")
EVAL_FIELDS = ("step", "val_loss", "train_loss", "tokens_seen", "t")


@dataclass
class SavedRun:
    """A run read back from its log: what it was, its curves, its samples and how it ended."""

    path: Path
    name: str
    created: float  # wall-clock time of its first line
    corpus: str
    tokenizer: str
    model_config: dict[str, Any] = field(default_factory=dict)  # ModelConfig.to_dict(), checked; {} if unknown
    train_config: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields, checked; {} if unknown
    num_params: int | None = None
    device: str = ""
    steps: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in STEP_FIELDS})
    evals: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in EVAL_FIELDS})
    samples: list[tuple[int, str]] = field(default_factory=list)  # (step, prompt + text)
    ended: str | None = None  # "completed", "stopped", "error: ..."; None: still running, or the process died
    skipped: int = 0  # lines that could not be read (a torn last line is not counted)

    @property
    def num_steps(self) -> int:
        return len(self.steps["step"])

    @property
    def last_step(self) -> int:
        return int(max(self.steps["step"] + self.evals["step"], default=0))

    @property
    def final_loss(self) -> float | None:
        values = [v for v in self.steps["loss"] if math.isfinite(v)]
        return values[-1] if values else None

    @property
    def final_val_loss(self) -> float | None:
        values = [v for v in self.evals["val_loss"] if math.isfinite(v)]
        return values[-1] if values else None

    def history(self) -> dict[str, list]:
        """The curves in a checkpoint's train_state["history"] layout (engine/train_state.py)."""
        s, e = self.steps, self.evals
        return {"step": [int(v) for v in s["step"]], "loss": list(s["loss"]), "lr": list(s["lr"]),
                "tokens_seen": [int(v) for v in s["tokens_seen"]], "tokens_per_s": list(s["tokens_per_s"]),
                "val_step": [int(v) for v in e["step"]], "val_loss": list(e["val_loss"]),
                "val_tokens_seen": [int(v) for v in e["tokens_seen"]]}

    def _add(self, data: dict[str, Any]) -> None:
        """One line after the first (raises _Bad, ValueError or TypeError for a line that is not right)."""
        kind, t = data.get("event"), _number(data, "t")
        if kind == "step":
            values = [_count(data, "step"), _number(data, "loss"), _number(data, "lr"), _number(data, "grad_norm"),
                      _count(data, "tokens_seen"), _number(data, "tokens_per_s"), _number(data, "elapsed_s"), t]
            for key, value in zip(STEP_FIELDS, values):
                self.steps[key].append(value)
        elif kind == "eval":
            values = [_count(data, "step"), _number(data, "val_loss"), _number(data, "train_loss"),
                      _count(data, "tokens_seen"), t]
            for key, value in zip(EVAL_FIELDS, values):
                self.evals[key].append(value)
        elif kind == "sample":
            self.samples.append((_count(data, "step"), _text(data, "prompt") + _text(data, "text")))
            del self.samples[:-MAX_SAMPLES]
        elif kind == "started":
            # The configs are checked the way a checkpoint's are (strict fields, ranges).
            self.model_config = ModelConfig.from_dict(data.get("model_config")).to_dict()
            self.train_config = TrainConfig.from_dict(data.get("train_config")).to_dict()
            self.num_params, self.device = _count(data, "num_params"), _text(data, "device", "")
        elif kind == "finished":
            self.ended = _text(data, "reason")[:40]
        elif kind == "error":
            self.ended = "error: " + _text(data, "message")[:500]
        elif not isinstance(kind, str):
            raise _Bad("event")
        # another event name: from a newer version, skipped quietly


def _lines(path: Path) -> Iterator[tuple[bytes, bool]]:
    """(line, complete) for each line of a log; a line over the cap comes back empty."""
    with open_regular(path, MAX_LOG_BYTES, "run log") as f:
        while True:
            line = f.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_LINE_BYTES:
                while line and not line.endswith(b"\n"):  # skip the rest of the long line
                    line = f.readline(MAX_LINE_BYTES)
                yield b"", True
                continue
            yield line, line.endswith(b"\n")


def _parse(line: bytes) -> dict[str, Any]:
    data = json.loads(line.decode("utf-8"))
    if not isinstance(data, dict):
        raise _Bad("line")
    return data


def read_run(path: str | os.PathLike) -> tuple[SavedRun | None, str | None]:
    """(the run, None), (the run, a warning about skipped lines) or (None, why it is not a run log)."""
    path = Path(path)
    run: SavedRun | None = None
    try:
        for line, complete in _lines(path):
            try:
                data = _parse(line)
                if run is None:
                    version = data.get("version")
                    if data.get("event") != "run" or type(version) is not int or version != LOG_VERSION:
                        return None, f"{path.name} is not a run log of this version; left out"
                    run = SavedRun(path, _text(data, "name")[:200] or path.stem, _number(data, "t"),
                                   _text(data, "corpus"), _text(data, "tokenizer"))
                else:
                    run._add(data)
            except (ValueError, TypeError, RecursionError, UnicodeDecodeError):
                if run is None:
                    return None, f"{path.name} is not a readable run log; left out"
                if complete:  # an incomplete last line is what a crash leaves: expected, not a problem
                    run.skipped += 1
    except OSError as e:
        return None, first_line(e)
    if run is None:
        return None, f"{path.name} is empty; left out"
    warning = f"{path.name}: {run.skipped:,} unreadable line(s) skipped" if run.skipped else None
    return run, warning


def read_runs_job(folder: str | os.PathLike | None = None) -> Iterator[Event]:
    """Read every run log in `folder` (default `runs_dir()`), oldest first, with a progress event per file.
    Returns (runs, warnings): a warning is one line about one file."""
    folder = Path(folder) if folder is not None else runs_dir()
    try:
        paths = sorted(p for p in folder.iterdir() if p.suffix == LOG_SUFFIX)
    except FileNotFoundError:
        return [], []
    except OSError as e:
        return [], [f"cannot list the saved runs in {folder}: {e.strerror or e}"]
    runs, warnings = [], []
    for i, path in enumerate(paths):
        yield ProgressEvent("runs", i, len(paths), f"reading {path.name}")
        run, warning = read_run(path)
        if run is not None:
            runs.append(run)
        if warning:
            warnings.append(warning)
    runs.sort(key=lambda r: r.created)
    return runs, warnings


def delete_run(run: SavedRun) -> None:
    """Remove a run's log for good. Raises OSError with one line."""
    if run.path.suffix != LOG_SUFFIX:
        raise OSError(f"{run.path.name} is not a run log")
    try:
        run.path.unlink()
    except FileNotFoundError:
        pass  # already gone: what was asked
    except OSError as e:
        raise OSError(f"cannot delete {run.path}: {e.strerror or e}") from None


# ---------------------------------------------------------------- TensorBoard

def tensorboard_problem() -> str | None:
    """Why runs cannot be exported as TensorBoard event files here (None when they can)."""
    if importlib.util.find_spec("tensorboard") is None:
        return "needs the optional package tensorboard: pip install 'llm-playground[tensorboard]'"
    return None


HPARAMS = ("lr", "batch_size", "grad_accum", "warmup_steps", "steps", "seed", "precision")
SHAPE = ("arch", "n_layers", "n_heads", "emb_dim", "context_length", "vocab_size", "drop_rate")


def hyperparameters(run: SavedRun) -> dict[str, float | int | str | bool]:
    """The settings that tell runs apart, flat (as TensorBoard's HParams table and the app's table show them)."""
    values: dict[str, Any] = {"corpus": run.corpus, "tokenizer": run.tokenizer}
    values.update({k: run.train_config[k] for k in HPARAMS if k in run.train_config})
    values.update({k: run.model_config[k] for k in SHAPE if k in run.model_config})
    return {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))}


def export_tensorboard_job(runs: list[SavedRun], folder: str | os.PathLike) -> Iterator[Event]:
    """Write each run as TensorBoard event files in `folder/<its log's name>` (view with
    `tensorboard --logdir FOLDER`): the losses, learning rate, gradient norm and throughput per step with
    their wall times, the samples as text, and the settings in the HParams table. Returns the folders."""
    problem = tensorboard_problem()
    if problem:
        raise RuntimeError(f"cannot export to TensorBoard: {problem}")
    # The optional dependency is imported only here, where it is used: the engine works without it.
    from torch.utils.tensorboard import SummaryWriter

    written = []
    for i, run in enumerate(runs):
        yield ProgressEvent("tensorboard", i, len(runs), f"exporting {run.name}")
        target = Path(folder) / run.path.stem
        writer = SummaryWriter(log_dir=str(target))
        try:
            s = run.steps
            for step, loss, lr, norm, tps, t in zip(s["step"], s["loss"], s["lr"], s["grad_norm"],
                                                   s["tokens_per_s"], s["t"]):
                for tag, value in (("train/loss", loss), ("train/lr", lr), ("train/grad_norm", norm),
                                   ("train/tokens_per_s", tps)):
                    if math.isfinite(value):
                        writer.add_scalar(tag, value, int(step), walltime=t)
            e = run.evals
            for step, val, train, t in zip(e["step"], e["val_loss"], e["train_loss"], e["t"]):
                if math.isfinite(val):
                    writer.add_scalar("eval/val_loss", val, int(step), walltime=t)
                if math.isfinite(train):
                    writer.add_scalar("eval/train_loss", train, int(step), walltime=t)
            for step, text in run.samples:
                writer.add_text("samples", "    " + text.replace("\n", "\n    "), step)  # markdown code block
            metrics = {k: v for k, v in (("hparam/final_loss", run.final_loss),
                                         ("hparam/final_val_loss", run.final_val_loss)) if v is not None}
            writer.add_hparams(hyperparameters(run), metrics, run_name=".")
        finally:
            writer.close()
        written.append(target)
    return written
