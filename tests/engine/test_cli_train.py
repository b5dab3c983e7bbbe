"""`python -m engine train` and `info` end to end on a tiny model, and every bad input's one-line error."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.cli import main
from engine.cli.progress import ProgressLine, ProgressPrinter, progress_bar
from engine.events import ProgressEvent

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--preset", "tiny", "--context-length", "16", "--n-layers", "2", "--emb-dim", "32", "--batch-size", "2",
        "--eval-interval", "2", "--sample-interval", "0"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "tiny.safetensors"
    assert main(["train", *TINY, "--corpus", "copy", "--steps", "3", "--out", str(path)]) == 0
    return path


def test_train_prints_progress_and_saves(trained, capsys):
    code, out, err = run(capsys, "info", trained)
    assert code == 0
    assert "2 layers" in out and "emb_dim 32" in out and "step 3 of 3" in out and "corpus copy" in out
    assert "char (" in out and "saved (resumable)" in out


def test_train_json_events(tmp_path, capsys):
    out_path = tmp_path / "m.safetensors"
    code, out, err = run(capsys, "train", *TINY, "--corpus", "sort", "--steps", "2", "--json", "--out", out_path)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-2:] == ["finished", "checkpoint"]
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2]
    assert {"loss", "lr", "tokens_per_s", "grad_norm", "eta_s"} <= set(steps[0])
    assert [e["step"] for e in events if e["event"] == "eval"] == [0, 2]
    assert all("val_loss" in e for e in events if e["event"] == "eval")
    assert events[-1]["path"] == str(out_path) and out_path.exists()


def test_info_json(trained, capsys):
    code, out, _ = run(capsys, "info", trained, "--json")
    info = json.loads(out)
    assert code == 0 and info["model_config"]["n_layers"] == 2 and info["train_state"]["step"] == 3
    assert "rng" not in info["train_state"] and info["has_optimizer_state"]


def test_resume_continues_the_run(trained, tmp_path, capsys):
    out_path = tmp_path / "more.safetensors"
    code, out, err = run(capsys, "train", "--resume", trained, "--steps", "5", "--out", out_path)
    assert code == 0, err
    code, out, _ = run(capsys, "info", out_path, "--json")
    state = json.loads(out)["train_state"]
    assert state["step"] == 5 and state["history"]["step"] == [1, 2, 3, 4, 5]
    assert state["train_config"]["batch_size"] == 2 and state["corpus"] == "copy"  # saved settings kept


def test_resume_needs_more_steps(trained, tmp_path, capsys):
    code, _, err = run(capsys, "train", "--resume", trained, "--out", tmp_path / "x.safetensors")
    assert code == 2 and err.startswith("error:") and "--steps" in err


def test_fine_tune_keeps_the_tokenizer(trained, tmp_path, capsys):
    out_path = tmp_path / "ft.safetensors"
    code, _, err = run(capsys, "train", "--init", trained, "--corpus", "reverse", "--steps", "2",
                       "--batch-size", "2", "--lr", "1e-4", "--sample-interval", "0", "--out", out_path)
    assert code == 0, err
    _, out, _ = run(capsys, "info", out_path, "--json")
    info = json.loads(out)
    _, original, _ = run(capsys, "info", trained, "--json")
    assert info["tokenizer"] == json.loads(original)["tokenizer"] and info["train_state"]["corpus"] == "reverse"


def _bad_inputs(tmp_path: Path, trained: Path) -> dict[str, list]:
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    short = tmp_path / "short.txt"
    short.write_text("too short\n")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(trained.read_bytes()[:1000])
    hostile = tmp_path / "hostile.safetensors"
    ck = load_checkpoint(trained)
    optimizer = ck.model.configure_optimizer(1e-3, 0.1, (0.9, 0.95), "cpu")
    save_checkpoint(hostile, ck.model, ck.tokenizer, optimizer=optimizer,
                    train_state={"step": 1, "corpus": "copy", "train_config": {"steps": 5, "lr": "fast"}})
    base = ["train", *TINY, "--steps", "2"]
    return {
        "missing corpus": [*base, "--corpus", tmp_path / "nope.txt"],
        "binary corpus": [*base, "--corpus", binary],
        "empty corpus": [*base, "--corpus", empty],
        "short corpus": [*base, "--corpus", short],
        "zero steps": ["train", *TINY, "--steps", "0", "--corpus", "copy"],
        "huge lr": [*base, "--corpus", "copy", "--lr", "5"],
        "bad shape": [*base, "--corpus", "copy", "--n-heads", "3"],
        "not a number": [*base, "--corpus", "copy", "--batch-size", "two"],
        "unknown preset": ["train", "--preset", "giant", "--corpus", "copy", "--steps", "2"],
        "no preset": ["train", "--corpus", "copy", "--steps", "2"],
        "fp16 on cpu": [*base, "--corpus", "copy", "--device", "cpu", "--precision", "fp16"],
        "corrupt resume": ["train", "--resume", corrupt],
        "hostile resume state": ["train", "--resume", hostile],
        "missing init": ["train", "--init", tmp_path / "nope.safetensors", "--corpus", "copy", "--steps", "2"],
        "shape with init": ["train", "--init", trained, "--n-layers", "3", "--corpus", "copy", "--steps", "2"],
        "unknown tokenizer": [*base, "--corpus", "copy", "--tokenizer", "morse"],
    }


def test_bad_input_is_one_line_and_leaves_out_untouched(trained, tmp_path, capsys):
    out_path = tmp_path / "existing.safetensors"
    out_path.write_bytes(b"keep me")
    for name, argv in _bad_inputs(tmp_path, trained).items():
        with pytest.raises(SystemExit) if name in ("not a number", "unknown preset") else _no_exit():
            code = main([str(a) for a in argv + ["--out", out_path]])
            assert code == 2, name
        _, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert out_path.read_bytes() == b"keep me", name
    assert sorted(os.listdir(tmp_path)) == sorted(["existing.safetensors", "binary.txt", "empty.txt", "short.txt",
                                                   "corrupt.safetensors", "hostile.safetensors"])


def test_out_folder_must_exist(tmp_path, capsys):
    code, _, err = run(capsys, "train", *TINY, "--corpus", "copy", "--steps", "1",
                       "--out", tmp_path / "missing" / "m.safetensors")
    assert code == 2 and "does not exist" in err


def test_info_on_bad_file(tmp_path, capsys):
    path = tmp_path / "x.safetensors"
    path.write_text("hello")
    code, _, err = run(capsys, "info", path)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")


def test_subprocess_error_has_no_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "engine", "train", "--preset", "tiny", "--corpus",
                             str(tmp_path / "missing.txt"), "--steps", "2", "--out", str(tmp_path / "m.safetensors")],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "m.safetensors").exists()


class _no_exit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stops_and_saves_a_resumable_run(tmp_path):
    out_path = tmp_path / "stopped.safetensors"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "engine", "train", *TINY, "--corpus", "copy", "--steps", "100000",
                             "--json", "--out", str(out_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        for line in proc.stdout:
            if json.loads(line)["event"] == "step":
                proc.send_signal(signal.SIGINT)
                break
        rest, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    events = [json.loads(line) for line in rest.splitlines()]
    assert events[-2]["event"] == "finished" and events[-2]["reason"] == "stopped"
    assert events[-1]["event"] == "checkpoint" and out_path.exists()
    state = load_checkpoint(out_path).train_state
    assert 1 <= state["step"] < 100000 and state["train_config"]["steps"] == 100000


def test_info_survives_a_malformed_training_state(trained, tmp_path, capsys):
    ck = load_checkpoint(trained)
    path = tmp_path / "odd.safetensors"
    save_checkpoint(path, ck.model, ck.tokenizer, train_state={"step": "many", "history": [1, 2]})
    code, out, err = run(capsys, "info", path)
    assert code == 0 and "malformed" in out and not err


def test_bench_dispatches_to_its_modules(monkeypatch, capsys):
    import types

    from engine.cli import bench

    seen = {}
    fake = types.ModuleType("engine.fake_bench")
    fake.add_arguments = lambda parser: parser.add_argument("--rounds", type=int, default=1)
    fake.run = lambda args: seen.setdefault("rounds", args.rounds) and 0
    monkeypatch.setitem(sys.modules, "engine.fake_bench", fake)
    monkeypatch.setitem(bench.BENCHMARKS, "generate", ("engine.fake_bench", "fake"))
    monkeypatch.setitem(bench.BENCHMARKS, "tokenizer", ("engine.no_such_bench", "missing"))
    assert main(["bench", "generate", "--rounds", "3"]) == 0 and seen == {"rounds": 3}
    assert main(["bench", "tokenizer"]) == 2
    assert "not available" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "generate", "--bogus"])
    assert capsys.readouterr().err.startswith("error: unrecognized arguments")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_line_redraws_in_place_on_a_terminal_only():
    screen = _Terminal()
    line = ProgressLine(screen)
    printer = ProgressPrinter(line)
    printer(ProgressEvent("download x", 0, 100, "downloading x"))
    printer(ProgressEvent("download x", 50, 100, "downloading x"))  # within REDRAW_S: skipped
    printer(ProgressEvent("download x", 100, 100, "downloaded x"))  # the end is always drawn
    line.print("a line of its own")
    printer(ProgressEvent("bpe", 0, 0, "learning merges"))
    printer.close()
    text = screen.getvalue()
    assert text.count("\r") == 3 + 2 and "50.0%" not in text  # three drawings, one erasure
    # The shorter line blanks what is left of the longer one before it.
    assert f"\r{progress_bar(1.0)} 100.0%  downloaded x \na line of its own\n" in text
    assert "] learning merges" in text and text.endswith("\r")  # the spinner's line is erased at the end
    piped = io.StringIO()
    ProgressPrinter(ProgressLine(piped))(ProgressEvent("x", 1, 2, "half"))
    ProgressLine(piped).print("only lines")
    assert piped.getvalue() == "only lines\n"
    assert progress_bar(0.5, 4) == "[##..]" and progress_bar(2.0, 2) == "[##]"
