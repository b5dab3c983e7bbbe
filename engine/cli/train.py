"""`python -m engine train ...` and `python -m engine info MODEL` (a checkpoint, a Hugging Face folder or repo id).

train: a new model from a preset, fine-tuning from a checkpoint (--init), or continuing a run exactly
(--resume). The output file is written once, atomically, when training ends (completed, or stopped with
Ctrl-C: the first Ctrl-C ends the run at once, dropping the step in progress, with no last evaluation or
sample, and saves so the run can be resumed; a second one aborts without saving). A failure never touches
an existing file at --out.
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

from engine.checkpoint import CheckpointError, load_checkpoint
from engine.cli.errors import check_out, one_line_error, one_line_errors, safe
from engine.cli.progress import ProgressLine, ProgressPrinter, progress_bar
from engine.config import PRESETS, ModelConfig, TrainConfig, preset
from engine.data import corpus_names, corpus_source_problem
from engine.events import (
    AttentionProbeEvent,
    CheckpointEvent,
    ErrorEvent,
    EvalEvent,
    Event,
    FinishedEvent,
    ProgressEvent,
    SampleEvent,
    StartedEvent,
    StepEvent,
    run_job,
)
from engine.files import rescue_folders
from engine.sources import GGUF, HF_FOLDER, describe_source
from engine.tokenizers import TOKENIZER_SPECS_HELP
from engine.training import distributed
from engine.training.distributed import DEFAULT_TIMEOUT_S
from engine.training.run import RunSpec, prepare_run
from engine.training.runlog import RunLogWriter, logged, runs_dir

# ModelConfig field -> the flag that sets it (new models only); the app's Export command writes them too.
SHAPE_FLAGS = {"n_layers": "--n-layers", "n_heads": "--n-heads", "emb_dim": "--emb-dim",
               "context_length": "--context-length", "drop_rate": "--drop-rate", "qkv_bias": "--qkv-bias"}
TRAIN_FLAGS = ("steps", "batch_size", "lr", "warmup_steps", "grad_accum", "eval_interval", "eval_tokens", "seed",
               "device", "precision", "sample_interval")


class UsageError(ValueError):
    """Bad combination of flags: one line for the user."""


def register(subparsers: Any) -> None:
    p = one_line_errors(subparsers.add_parser(
        "train", help="train a GPT (new, fine-tuned with --init, or continued with --resume)",
        description="Train a GPT and save it as one .safetensors checkpoint. The first Ctrl-C stops at once "
                    "(the step in progress is dropped) and saves (resumable with --resume); a second Ctrl-C "
                    "aborts without saving."))
    model = p.add_argument_group("model (new models only)")
    model.add_argument("--preset", choices=list(PRESETS), help="model shape to start from")
    model.add_argument("--n-layers", type=int, help="transformer blocks")
    model.add_argument("--n-heads", type=int, help="attention heads per block")
    model.add_argument("--emb-dim", type=int, help="embedding width (divisible by --n-heads)")
    model.add_argument("--context-length", type=int, help="tokens the model sees at once")
    model.add_argument("--drop-rate", type=float, help="dropout probability during training")
    model.add_argument("--qkv-bias", action=argparse.BooleanOptionalAction, default=None,
                       help="bias on the query/key/value projection")
    data = p.add_argument_group("data")
    data.add_argument("--corpus", metavar="NAME|PATH",
                      help=f"built-in corpus ({', '.join(corpus_names())}) or a text file / folder")
    data.add_argument("--tokenizer", metavar="SPEC",
                      help=f"{TOKENIZER_SPECS_HELP} (default char)")
    run = p.add_argument_group("training")
    run.add_argument("--steps", type=int, help="optimizer steps in all (with --resume: the new total)")
    run.add_argument("--batch-size", type=int, help="sequences per micro-batch (under torchrun: per process, so "
                     "the global batch is batch size x grad accum x processes)")
    run.add_argument("--lr", type=float, help="peak learning rate")
    run.add_argument("--warmup-steps", type=int, help="steps of linear warmup before cosine decay")
    run.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    run.add_argument("--eval-interval", type=int, help="steps between validation losses")
    run.add_argument("--eval-tokens", type=int, metavar="N",
                     help="tokens read from each split at every evaluation (default 0: automatic, about 10%% of "
                          "the training time between two evaluations)")
    run.add_argument("--sample-interval", type=int, help="steps between sample texts (0: no samples)")
    run.add_argument("--seed", type=int, help="random seed (weights, batches, dropout)")
    run.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="where to train (default auto)")
    run.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="arithmetic precision (default fp32)")
    run.add_argument("--compile", action="store_true", default=None, help="compile the model with torch.compile")
    multi = p.add_argument_group("multi-GPU and multi-node (launch with torchrun --nproc_per_node=N -m engine ...)")
    multi.add_argument("--fsdp", action="store_true",
                       help="shard the model, gradients and optimizer state across the processes (FSDP2) "
                            "instead of keeping a copy on each (DDP)")
    multi.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                       help="give up when the other processes do not answer within this time "
                            f"(default {DEFAULT_TIMEOUT_S})")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--init", metavar="CKPT", help="fine-tune: start from this checkpoint's weights and tokenizer")
    start.add_argument("--resume", metavar="CKPT", help="continue this checkpoint's run exactly where it stopped")
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="FILE", help="checkpoint to write (.safetensors)")
    out.add_argument("--no-optimizer-state", action="store_true",
                     help="leave the optimizer state out (a ~3x smaller file that cannot be resumed exactly)")
    out.add_argument("--json", action="store_true", help="print one JSON object per event instead of a progress bar")
    out.add_argument("--no-run-log", action="store_true",
                     help="do not keep this run's settings, losses and samples in the saved runs "
                          f"({runs_dir()}, listed by the app)")
    p.set_defaults(func=run_train)

    i = one_line_errors(subparsers.add_parser(
        "info", help="describe a checkpoint or a Hugging Face model without loading its weights"))
    i.add_argument("checkpoint", metavar="CKPT",
                   help="a .safetensors checkpoint, a Hugging Face model folder, or a cached model's repo id")
    i.add_argument("--json", action="store_true", help="print the description as JSON")
    i.set_defaults(func=run_info)


# ---------------------------------------------------------------- train

def _train_config(args: argparse.Namespace, base: dict[str, Any] | None) -> TrainConfig:
    values = dict(base or {})
    for name in TRAIN_FLAGS:
        value = getattr(args, name)
        if value is not None:
            values[name] = value
    if args.compile:
        values["compile"] = True
    if "steps" not in values:
        raise UsageError("--steps is required")
    return TrainConfig.from_dict(values)


def _given_shape_flags(args: argparse.Namespace) -> list[str]:
    return [flag for name, flag in SHAPE_FLAGS.items() if getattr(args, name) is not None]


def _run_spec(args: argparse.Namespace, dist: distributed.DistContext | None = None) -> tuple[Path, RunSpec]:
    """The output file and what to build the run from, from the flags: fails on a bad combination before
    any work (a checkpoint given with --init / --resume is read here)."""
    # Before anything slow: --out must be writable and must not be an input (the corpus, a tokenizer file).
    # The --resume / --init checkpoint may be --out: it is read whole first and replaced atomically at the end.
    out = check_out(args.out, inputs=[args.corpus, args.tokenizer])
    if args.resume or args.init:
        flag = "--resume" if args.resume else "--init"
        fixed = _given_shape_flags(args) + (["--preset"] if args.preset else [])
        if fixed:
            raise UsageError(f"{', '.join(fixed)} cannot be combined with {flag}: the model's shape comes from "
                             "the checkpoint")
        if args.tokenizer:
            raise UsageError(f"--tokenizer cannot be combined with {flag}: the checkpoint's tokenizer is kept")
    if args.resume:
        source = load_checkpoint(args.resume)
        state = source.train_state
        problem = source.train_state_problem or source.optimizer_problem
        if problem:
            raise UsageError(f"{safe(args.resume)} cannot be resumed: {problem}; use --init to fine-tune from its "
                             "weights instead")
        if not state or source.optimizer_state is None:
            raise UsageError(f"{safe(args.resume)} has no training or optimizer state to resume "
                             "(saved with --no-optimizer-state?); use --init to fine-tune from it instead")
        train_config = _train_config(args, state.get("train_config"))
        done, saved_corpus = state.get("step", 0), state.get("corpus") or ""
        if done >= train_config.steps:
            raise UsageError(f"{safe(args.resume)} already has all {train_config.steps:,} steps; pass --steps "
                             f"with a larger total (more than {done:,}) to train further")
        if not args.corpus:
            # A path stored in a file: only a regular file or folder under the size cap is read (never a FIFO
            # or a device), and it must not be --out either.
            problem = corpus_source_problem(saved_corpus)
            if problem:
                raise UsageError(f"the corpus saved in {safe(args.resume)} ({safe(saved_corpus, 120)}) cannot be "
                                 f"used: {problem}; give one with --corpus")
            check_out(args.out, inputs=[saved_corpus])
        return out, RunSpec(train_config, corpus=args.corpus or saved_corpus, resume=source, dist=dist)
    if not args.init and not args.preset:
        raise UsageError("--preset is required (or --init / --resume a checkpoint)")
    if not args.corpus:
        raise UsageError("--corpus is required")
    train_config = _train_config(args, None)
    if args.init:
        return out, RunSpec(train_config, corpus=args.corpus, init=load_checkpoint(args.init), dist=dist)
    shape = preset(args.preset).with_changes(**{name: getattr(args, name) for name in SHAPE_FLAGS})
    return out, RunSpec(train_config, corpus=args.corpus, tokenizer=args.tokenizer or "char", model_config=shape,
                        dist=dist)


def train_command(model: ModelConfig, train: TrainConfig, *, corpus: str, tokenizer: str | None,
                  init: str | None = None, out: str = "model.safetensors", fsdp: bool = False) -> list[str]:
    """The words after `python -m engine` that train this run: the closest preset and the flags that differ
    from it, or --init; the data; the training settings that differ from the defaults; the output.

    tokenizer: a spec (char, bpe:N, gpt2, a file), or None when `init` (fine-tuning) brings its own.
    """
    words = ["train"]
    if init:
        words += ["--init", init]
    else:
        name = closest_preset(model)
        words += ["--preset", name]
        base = PRESETS[name]
        for field, flag in SHAPE_FLAGS.items():
            value, default = getattr(model, field), getattr(base, field)
            if value == default:
                continue
            if isinstance(value, bool):
                words.append(flag if value else f"--no-{flag[2:]}")
            else:
                words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    words += ["--corpus", corpus]
    if tokenizer and not init:
        words += ["--tokenizer", tokenizer]
    defaults = TrainConfig()
    words += ["--steps", str(train.steps), "--batch-size", str(train.batch_size)]
    if train.grad_accum != defaults.grad_accum:
        words += ["--grad-accum", str(train.grad_accum)]
    words += ["--lr", f"{train.lr:g}", "--warmup-steps", str(train.warmup_steps),
              "--eval-interval", str(train.eval_interval)]
    if train.eval_tokens != defaults.eval_tokens:
        words += ["--eval-tokens", str(train.eval_tokens)]
    if train.sample_interval != defaults.sample_interval:
        words += ["--sample-interval", str(train.sample_interval)]
    if train.seed != defaults.seed:
        words += ["--seed", str(train.seed)]
    words += ["--device", train.device, "--precision", train.precision]
    if train.compile:
        words.append("--compile")
    if fsdp:
        words.append("--fsdp")
    return words + ["--out", out]


def closest_preset(config: ModelConfig) -> str:
    """The preset that needs the fewest shape flags to reach this shape."""
    return min(PRESETS, key=lambda name: sum(getattr(PRESETS[name], f) != getattr(config, f) for f in SHAPE_FLAGS))


class _TrainProgress:
    """Human output on standard output: the run's preparation and its steps on one progress line (on a
    terminal), evaluations and samples as lines of their own."""

    def __init__(self) -> None:
        self.line = ProgressLine(sys.stdout)
        self.preparing = ProgressPrinter(self.line)
        self.val: float | None = None

    def handle(self, event: Event) -> None:
        match event:
            case StartedEvent():
                self.line.clear()  # the preparation's line
                self.line.print(f"training {event.num_params:,} parameters on {event.device}, {event.precision}, "
                                f"steps {event.start_step:,} -> {event.total_steps:,} "
                                f"({event.tokens_per_step:,} tokens per step)")
            case StepEvent():
                self.line.show(self._bar(event), force=event.step == event.total_steps)
            case EvalEvent():
                self.val = event.val_loss
                if not self.line.tty:
                    self.line.print(f"step {event.step:,}: val loss {event.val_loss:.4f}, "
                                    f"train loss {event.train_loss:.4f}")
            case SampleEvent():
                self.line.print(f"--- sample at step {event.step:,} ---\n{event.prompt}{event.text}\n---")
            case FinishedEvent() | ErrorEvent():
                self.line.end()
            case ProgressEvent() | AttentionProbeEvent() | CheckpointEvent():
                pass  # evaluation progress (for pausing a GUI), probes (no probe text here), saves (said below)
            case _:
                raise TypeError(f"unexpected event {type(event).__name__}")

    def _bar(self, e: StepEvent) -> str:
        val = f"{self.val:.4f}" if self.val is not None else "-"
        eta = time.strftime("%H:%M:%S", time.gmtime(e.eta_s)) if math.isfinite(e.eta_s) else "-"
        return (f"{progress_bar(e.step / max(1, e.total_steps), 24)} {e.step:,}/{e.total_steps:,} "
                f"loss {e.loss:.4f} val {val} lr {e.lr:.2e} {e.tokens_per_s:,.0f} tok/s "
                f"MFU {100 * e.mfu:.0f}% ETA {eta}")


def _print_json(data: dict[str, Any]) -> None:
    print(json.dumps(data), flush=True)


def run_train(args: argparse.Namespace) -> int:
    """Train in this process, or as one rank of a torchrun job (see engine/training/distributed.py)."""
    if not distributed.launched_by_torchrun():
        if args.fsdp:
            raise UsageError("--fsdp shards the model across processes: launch with "
                             "torchrun --nproc_per_node=N -m engine train ...")
        return _run_train(args)
    return distributed.run(lambda dist: _run_train(args, dist), device=args.device or "auto", fsdp=args.fsdp,
                           timeout_s=args.dist_timeout)


def _run_train(args: argparse.Namespace, dist: distributed.DistContext | None = None) -> int:
    out, spec = _run_spec(args, dist)
    progress = None if args.json else _TrainProgress()
    try:
        # --json prints the run's events only (its first line is "started"): preparing is not reported there.
        trainer = run_job(prepare_run(spec), progress.preparing if progress else None).trainer
    finally:
        if progress is not None:
            progress.preparing.close()
    interrupted = {"count": 0}

    def on_sigint(signum, frame):  # first Ctrl-C: stop now and save; second: abort
        interrupted["count"] += 1
        if interrupted["count"] > 1:
            raise KeyboardInterrupt
        trainer.request_stop()
        if distributed.is_main_process():  # under torchrun every process gets the signal: say it once
            when = "after this step" if dist is not None else "now (the step in progress is dropped)"
            print(f"\nstopping {when} and saving (Ctrl-C again to abort without saving)", file=sys.stderr)

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: no handler, Ctrl-C aborts
        previous = None
    finished = None
    log = _run_log(args, out, trainer)
    try:
        for event in logged(trainer.run(), log):
            if isinstance(event, ProgressEvent):
                continue  # evaluation progress: only useful to pause a GUI mid-evaluation
            if args.json:
                _print_json(event.to_json())
            else:
                progress.handle(event)
            if isinstance(event, ErrorEvent):
                hint = f" ({event.hint})" if event.hint else ""
                print(f"error: {event.message}{hint}; nothing was written to {out}", file=sys.stderr)
                return 1
            if isinstance(event, FinishedEvent):
                finished = event
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if log is not None and log.problem:
            print(f"warning: {log.problem}", file=sys.stderr)

    try:
        saved = trainer.save(out, include_optimizer=not args.no_optimizer_state)
    except CheckpointError as e:
        if dist is not None:
            raise
        return _save_elsewhere(trainer, args, e)
    if args.json:
        _print_json(saved.to_json())
    else:
        val = f", val loss {finished.final_val_loss:.4f}" if finished and finished.final_val_loss is not None else ""
        print(f"saved {out} (step {trainer.step:,}{val})")
    if finished is not None and finished.reason == "stopped":
        if not args.json and distributed.is_main_process():  # once, not from every torchrun process
            print(f"stopped early; continue with: python -m engine train --resume {out} --out {out}",
                  file=sys.stderr)
        return 130
    return 0


def _run_log(args: argparse.Namespace, out: Path, trainer) -> RunLogWriter | None:
    """The run's log in the saved runs (engine/training/runlog.py), written by one process only; None if it is
    not wanted or cannot be written (said on standard error: the training goes on)."""
    if args.no_run_log or not distributed.is_main_process():
        return None
    corpus = trainer.dataset.corpus
    try:
        return RunLogWriter.create(f"{out.name} (command line)", corpus=corpus.source or corpus.name,
                                   tokenizer=trainer.tokenizer_spec)
    except OSError as e:
        print(f"warning: {e}; training without it", file=sys.stderr)
        return None


def _save_elsewhere(trainer, args: argparse.Namespace, error: CheckpointError) -> int:
    """The save to --out failed (a full disk, a folder gone read-only): keep the run in a fallback place
    rather than throw the training away, and say where. Exit status 1."""
    name = Path(args.out).name or "model.safetensors"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in rescue_folders():
        target = folder / f"{Path(name).stem}-rescued-{stamp}{Path(name).suffix or '.safetensors'}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            saved = trainer.save(target, include_optimizer=not args.no_optimizer_state)
        except (CheckpointError, OSError):
            continue
        if args.json:
            _print_json({**saved.to_json(), "rescued_from": args.out})
        one_line_error(f"{error}; the trained model (step {trainer.step:,}) was saved to {target} instead")
        return 1
    one_line_error(f"{error}; no fallback folder could be written either, so the trained model is lost")
    return 1


# ---------------------------------------------------------------- info

def _describe(info: dict[str, Any]) -> str:
    c = ModelConfig.from_dict(info["model_config"])
    lines = [
        f"file:       {info['path']} ({info['file_bytes'] / 1e6:.1f} MB, format {info['format_version']})",
        f"{_model_line(info['model_config'])}, dropout {c.drop_rate}, qkv_bias {'yes' if c.qkv_bias else 'no'}",
        f"parameters: {info['num_params']:,} ({c.weights_bytes('fp32') / 1e6:.1f} MB in fp32)",
        f"tokenizer:  {safe(info['tokenizer']['description'])}",
    ]
    if info.get("train_state_problem"):  # a hand-edited state: say so, do not crash
        lines.append(f"training:   (the training state in this file is malformed: {safe(info['train_state_problem'])})")
    else:
        lines += _describe_training(info.get("train_state"))
    if info.get("optimizer_problem"):
        lines.append(f"optimizer:  (the optimizer state in this file is malformed: {safe(info['optimizer_problem'])})")
    else:
        lines.append(f"optimizer:  {'saved (resumable)' if info['has_optimizer_state'] else 'not saved'}")
    return "\n".join(lines)


def _describe_training(state: dict[str, Any] | None) -> list[str]:
    """Lines about a training state that `read_checkpoint_info` validated (every field in range)."""
    if not state:
        return ["training:   no training state (weights only)"]
    tc = TrainConfig.from_dict(state.get("train_config") or {}) if "train_config" in state else None
    history = state.get("history") or {}
    step = state.get("step", 0)
    lines = [f"training:   step {step:,}" + (f" of {tc.steps:,}" if tc else "")
             + f" on corpus {safe(state.get('corpus') or '?', 200)} (tokenizer {safe(state.get('tokenizer_spec') or '?', 100)})"]
    if tc is not None:
        lines.append(f"settings:   batch {tc.batch_size} x {tc.grad_accum} accum, lr {tc.lr}, warmup {tc.warmup_steps}, "
                     f"seed {tc.seed}, {tc.precision}")
    loss = [v for v in history.get("loss") or [] if v is not None]
    val = [v for v in history.get("val_loss") or [] if v is not None]
    if loss or val:
        last = f"loss {loss[-1]:.4f}" if loss else "loss -"
        last_val = f"val loss {val[-1]:.4f}" if val else "val loss -"
        lines.append(f"last:       {last}, {last_val}")
    return lines


def _describe_folder(info: dict[str, Any]) -> str:
    size = f"{info['file_bytes'] / 1e6:.1f} MB of weights in {len(info['weight_files'])} file(s)"
    lines = [f"folder:     {info['path']} ({safe(info['name'])}, {size})",
             f"family:     {safe(info['family'] or info['model_type'] or 'unknown')}"
             f" (model_type {safe(repr(info['model_type']))}, "
             f"{safe(', '.join(info['architectures'])) or 'no architectures'})"]
    config = info.get("model_config")
    if config is not None:
        lines.append(_model_line(config))
    lines.append(f"parameters: {info['num_params']:,}")
    return "\n".join(lines + _tokenizer_and_problem(info))


def _model_line(config: dict[str, Any]) -> str:
    c = ModelConfig.from_dict(config)
    heads = f"{c.n_heads} heads" + (f" sharing {c.n_kv_heads} key/value heads" if c.n_kv_heads != c.n_heads else "")
    return (f"model:      {c.arch} family, {c.n_layers} layers, {heads}, emb_dim {c.emb_dim}, "
            f"context {c.context_length}, vocab {c.vocab_size:,}")


def _describe_gguf(info: dict[str, Any]) -> str:
    # Names come from the file's metadata: escaped, as every text from a file printed on a terminal.
    lines = [f"file:       {info['path']} ({safe(info['name'])}, {info['file_bytes'] / 1e6:.1f} MB)",
             f"family:     {safe(info['family'] or 'unknown')} (GGUF architecture {safe(repr(info['architecture']))})"]
    if info.get("model_config") is not None:
        lines.append(_model_line(info["model_config"]))
    lines.append(f"parameters: {info['num_params']:,}")
    shares = ", ".join(f"{safe(kind)} {share:.1%}" for kind, share in info["quantization"].items())
    lines.append(f"tensors:    {shares} of the parameters")
    return "\n".join(lines + _tokenizer_and_problem(info))


def _tokenizer_and_problem(info: dict[str, Any]) -> list[str]:
    """The last lines of a folder's or a GGUF file's description: its tokenizer, and why it can't be opened."""
    lines = []
    tokenizer = info.get("tokenizer")
    if tokenizer is not None:
        chat = ", chat template" if tokenizer.get("chat_template") else ""
        lines.append(f"tokenizer:  {safe(tokenizer['description'])}{chat}")
    if info.get("problem"):
        lines.append(f"cannot open: {safe(info['problem'])}")
    return lines


def run_info(args: argparse.Namespace) -> int:
    info = describe_source(args.checkpoint)
    if info["kind"] in (HF_FOLDER, GGUF):
        if args.json:
            _print_json(info)
        else:
            print(_describe_folder(info) if info["kind"] == HF_FOLDER else _describe_gguf(info))
        return 0
    if args.json:
        state = info.get("train_state")
        if state:
            info["train_state"] = {k: v for k, v in state.items() if k != "rng"}  # binary blobs: not for people
        _print_json(info)
    else:
        print(_describe(info))
    return 0
