"""GUI benchmark: training inside the app vs the headless CLI, and the GUI's responsiveness meanwhile;
or (--real-size) every action of the app on a real-size model.

    python -m app.tools.bench_gui [--steps 150] [--preset tiny] [--batch-size 16] [--repeats 1]
    python -m app.tools.bench_gui --real-size gpt2-124m,smollm2-135m

--real-size: see app/tools/bench_realsize.py (a 124M-sized random GPT-2 and a SmolLM2-135M-shaped model, each
opened in the app and driven through every tab; wall time, event-loop gap and peak RSS per action).

1. Headless: `python -m engine train ... --json` in a subprocess; tokens/s from its step events.
2. In the app: the real MainWindow (offscreen unless a display is set), the same settings typed into the
   Training tab, Start; tokens/s from the same step events as they reach the tab. Meanwhile a 10 ms
   QTimer records how late the GUI thread serves it: the event-loop gap.

Tokens/s is measured between step `--skip` and the last step on the trainer's own clock (elapsed_s),
so start-up, the first evaluation and warm-up steps count in neither. Targets: the app reaches at least
95% of the headless tokens/s, and the event-loop gap stays under 50 ms at the 99th percentile.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QEventLoop, QTimer

from app.launcher import make_app
from app.main_window import MainWindow
from app.tools import bench_realsize
from engine import StepEvent

ROOT = Path(__file__).resolve().parents[2]
PROBE_MS = 10


def tokens_per_s(steps: list[tuple[int, int, float]], skip: int) -> float:
    """(step, tokens_seen, elapsed_s) records -> tokens/s from step `skip` to the last one."""
    kept = [s for s in steps if s[0] >= skip]
    if len(kept) < 2:
        raise ValueError("too few steps to measure; raise --steps")
    (_, t0, e0), (_, t1, e1) = kept[0], kept[-1]
    return (t1 - t0) / (e1 - e0)


def headless(args: argparse.Namespace, out_dir: Path) -> float:
    cmd = [sys.executable, "-m", "engine", "train", "--preset", args.preset, "--corpus", args.corpus,
           "--tokenizer", "char", "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--eval-interval", str(args.steps), "--sample-interval", str(args.steps), "--device", "cpu",
           "--precision", "fp32", "--out", str(out_dir / "headless.safetensors"), "--json"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if proc.returncode != 0:
        raise RuntimeError(f"the CLI failed: {proc.stderr.strip().splitlines()[-1:]}")
    steps = []
    for line in proc.stdout.splitlines():
        event = json.loads(line)
        if event.get("event") == "step":
            steps.append((event["step"], event["tokens_seen"], event["elapsed_s"]))
    return tokens_per_s(steps, args.skip)


def in_app(args: argparse.Namespace) -> tuple[float, np.ndarray]:
    app = make_app([sys.argv[0]])  # noqa: F841 - the QApplication must stay alive while the window runs
    window = MainWindow()
    window.resize(1400, 900)
    window.show()

    def wait(condition, seconds: float) -> None:
        """Run the real event loop (as app.exec() would) until the condition holds."""
        if condition():
            return
        loop = QEventLoop()
        check = QTimer()
        check.timeout.connect(lambda: condition() and loop.quit())
        check.start(50)
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()
        check.stop()
        if not condition():
            raise RuntimeError("timed out waiting for the app")

    wait(lambda: window.state.model is not None and not window.runner.running(), 300)
    tab = window.training_tab
    tab.model_panel.scratch_radio.setChecked(True)
    tab.model_panel.form.preset_combo.setCurrentText(args.preset)
    tab.data_panel.tokenizer_combo.setCurrentIndex(tab.data_panel.tokenizer_combo.findData("char"))
    form = tab.train_form
    defaults = form.values()
    form.set_values(dict(defaults, steps=args.steps, batch_size=args.batch_size, eval_interval=args.steps,
                         device="cpu", precision="fp32", compile=False, grad_accum=1))
    tab.data_panel.select_corpus(args.corpus)
    wait(lambda: tab.data_panel.corpus_ready, 120)

    steps: list[tuple[int, int, float]] = []
    ticks: list[float] = []
    probe = QTimer()
    probe.setInterval(PROBE_MS)
    probe.timeout.connect(lambda: ticks.append(time.perf_counter()))
    job = tab.start()
    if job is None:
        raise RuntimeError(f"cannot start: {tab.start_problem()}")
    job.events.connect(lambda events: steps.extend(
        (e.step, e.tokens_seen, e.elapsed_s) for e in events if isinstance(e, StepEvent)))
    # The probe covers the training steps only (not data preparation or the first evaluation).
    wait(lambda: len(steps) > 0, 300)
    probe.start()
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    wait(lambda: not tab.is_running, 3600)
    gui_share = (time.thread_time() - cpu0) / (time.perf_counter() - wall0)
    probe.stop()
    rate = tokens_per_s(steps, args.skip)
    print(f"  GUI thread CPU while training: {100 * gui_share:.1f}% of one core", flush=True)
    gaps = np.diff(np.asarray(ticks)) * 1000.0
    window._closing = True
    window.close()
    window.runner.stop_all(10000)
    return rate, gaps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.tools.bench_gui", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--corpus", default="python-docs")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--skip", type=int, default=10, help="warm-up steps left out of tokens/s")
    parser.add_argument("--repeats", type=int, default=1, help="headless/app pairs to run (median reported)")
    parser.add_argument("--real-size", metavar="MODELS",
                        help=f"instead: drive every action on these models ({', '.join(bench_realsize.MODELS)}, "
                             "comma-separated)")
    args = parser.parse_args(argv)
    if args.real_size:
        return bench_realsize.main(args.real_size.split(","))

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen" if not os.environ.get("DISPLAY") else "xcb")
    tmp = Path(tempfile.mkdtemp(prefix="llm-playground-bench-"))
    os.environ.setdefault("LLM_PLAYGROUND_SETTINGS", str(tmp / "settings.ini"))

    cli_rates, app_rates, all_gaps = [], [], []
    for i in range(args.repeats):
        cli_rates.append(headless(args, tmp))
        rate, gaps = in_app(args)
        app_rates.append(rate)
        all_gaps.append(gaps)
        print(f"pair {i + 1}: headless {cli_rates[-1]:,.0f} tokens/s · app {rate:,.0f} tokens/s", flush=True)
    cli, inapp = statistics.median(cli_rates), statistics.median(app_rates)
    gaps = np.concatenate(all_gaps)
    ratio = inapp / cli
    p50, p99 = np.percentile(gaps, [50, 99])
    print(f"settings: {args.preset}, {args.corpus}, char tokenizer, batch {args.batch_size}, fp32, cpu, "
          f"{args.steps} steps (tokens/s from step {args.skip})")
    print(f"headless CLI : {cli:,.0f} tokens/s")
    print(f"in the app   : {inapp:,.0f} tokens/s = {100 * ratio:.1f}% of headless "
          f"(target >= 95%: {'met' if ratio >= 0.95 else 'NOT met'})")
    print(f"event-loop gap while training ({PROBE_MS} ms timer, {len(gaps):,} samples): p50 {p50:.1f} ms, "
          f"p99 {p99:.1f} ms, max {gaps.max():.1f} ms (target p99 < 50 ms: {'met' if p99 < 50 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
