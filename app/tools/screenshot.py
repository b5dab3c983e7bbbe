"""Save a screenshot of the app: `xvfb-run python -m app.tools.screenshot --tab Training --out shot.png`.

Opens the main window (with throw-away settings, so a person's own are never touched), waits for the
default model, optionally trains for a few steps first (--train-steps), picks a tab and saves
`window.grab()` as PNG. Used for the README's pictures and to look at the UI while building it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from app.launcher import make_app
from app.main_window import MainWindow


def _wait(app, condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.processEvents()
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.tools.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("--tab", default="Training", help="tab title to show (Training, Attention, ...)")
    parser.add_argument("--out", default="screenshot.png", help="PNG file to write")
    parser.add_argument("--size", default="1400x900", help="window size WIDTHxHEIGHT")
    parser.add_argument("--theme", default="system", choices=["system", "light", "dark"])
    parser.add_argument("--open", dest="checkpoint", help="open this checkpoint first")
    parser.add_argument("--corpus", help="corpus for the training run (built-in name or file)")
    parser.add_argument("--preset", help="model preset for the training run")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="train this many steps before the screenshot (0: no run)")
    parser.add_argument("--total-steps", type=int, default=0,
                        help="steps of the run (default: the form's value); the shot is taken mid-run")
    parser.add_argument("--eval-interval", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--smoothing", type=float, default=None)
    parser.add_argument("--generate", type=int, default=0,
                        help="Generation tab: generate this many tokens (and select one) before the shot")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    settings_dir = tempfile.mkdtemp(prefix="llm-playground-shot-")
    os.environ.setdefault("LLM_PLAYGROUND_SETTINGS", str(Path(settings_dir) / "settings.ini"))
    if args.theme != "system":
        os.environ["LLM_PLAYGROUND_THEME"] = args.theme


    app = make_app([sys.argv[0]])

    window = MainWindow(load_default=args.checkpoint is None)
    width, height = (int(x) for x in args.size.lower().split("x"))
    window.resize(width, height)
    window.show()
    if args.checkpoint:
        window.open_checkpoint(args.checkpoint)
    if not _wait(app, lambda: window.state.model is not None and not window.runner.running(), 120):
        print("error: the model did not load in time", file=sys.stderr)
        return 1
    tab = window.training_tab
    if args.preset:
        tab.model_panel.form.preset_combo.setCurrentText(args.preset)
    if args.corpus:
        tab.data_panel.select_corpus(args.corpus)
        _wait(app, lambda: tab.data_panel.corpus_ready, 60)
    if args.total_steps:
        tab.train_form.steps.setValue(args.total_steps)
    if args.eval_interval:
        tab.train_form.eval_interval.setValue(args.eval_interval)
    if args.batch_size:
        tab.train_form.batch_size.setValue(args.batch_size)
    if args.smoothing is not None:
        tab.plots_panel.plots.smoothing_slider.setValue(int(round(args.smoothing * 100)))
    if args.train_steps:
        if tab.start() is None:
            print(f"error: cannot start training: {tab.start_problem()}", file=sys.stderr)
            return 1
        _wait(app, lambda: (tab.plots_panel.plots.current_run is not None and tab.plots_panel.plots.current_run.num_steps >= args.train_steps)
              or not tab.is_running, args.timeout)
    titles = [window.tabs.tabText(i) for i in range(window.tabs.count())]
    if args.tab not in titles:
        print(f"error: no tab {args.tab!r}; the tabs are {', '.join(titles)}", file=sys.stderr)
        return 2
    window.tabs.setCurrentIndex(titles.index(args.tab))
    _wait(app, lambda: False, 0.6)  # let plots redraw (15 Hz timer) and layouts settle
    _wait(app, lambda: not window.runner.running(), 60)  # the tab's own jobs (attention run, tokenizing)
    if args.generate and args.tab == "Generation":
        generation = window.tabs.currentWidget()
        generation.max_tokens.setValue(args.generate)
        finished = []
        generation.generation_finished.connect(lambda: finished.append(True))
        generation.generate()
        _wait(app, lambda: bool(finished), args.timeout)
        generation.select_step(1, min(args.generate - 1, 12))
        _wait(app, lambda: not window.runner.running(), 30)
    _wait(app, lambda: False, 0.4)
    tab.plots_panel.plots.redraw()
    app.processEvents()
    if not window.grab().save(args.out):
        print(f"error: could not write {args.out}", file=sys.stderr)
        return 1
    print(args.out)
    if tab.is_running:
        tab.stop_now(adopt=False)
    window._closing = True
    window.close()
    window.runner.stop_all(10000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
