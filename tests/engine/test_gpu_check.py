"""scripts/gpu-check on a machine without a GPU: one line and exit 0; and its parts (step runner with timeouts,
the report built from the benchmarks' real --json output), which run the same with or without a GPU."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.cli import main

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check"


@pytest.fixture(scope="module")
def gpu_check():
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up while it loads
    try:
        loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_check", None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the script really runs (minutes)")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    assert SCRIPT.stat().st_mode & 0o111, "scripts/gpu-check must be executable"
    out = tmp_path / "report.md"
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0]
    assert not out.exists()


def test_a_step_that_hangs_is_killed_with_its_children_at_its_timeout(gpu_check, tmp_path):
    hang = ("import subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
            "print('started', flush=True); time.sleep(120)")
    step = gpu_check.Step("hang", "a step that never ends", [sys.executable, "-c", hang], timeout=3, needs=())
    start = time.monotonic()
    gpu_check.run_step(step, tmp_path, deadline=time.monotonic() + 60)
    assert step.status == "timed out" and time.monotonic() - start < 30
    assert "started" in step.output
    # The budget's deadline cuts a step's own timeout; missing packages skip it.
    quick = gpu_check.Step("q", "", [sys.executable, "-c", "pass"], timeout=100, needs=())
    gpu_check.run_step(quick, tmp_path, deadline=time.monotonic() + 2)
    assert quick.status == "skipped" and "budget" in quick.note
    lacking = gpu_check.Step("m", "", [sys.executable, "-c", "pass"], timeout=100, needs=("no_such_module_x",))
    gpu_check.run_step(lacking, tmp_path, deadline=time.monotonic() + 60)
    assert lacking.status == "skipped" and "no_such_module_x" in lacking.note


def test_the_report_reads_the_benchmarks_json(gpu_check, capsys, tmp_path):
    """Real `bench generate --json` and `bench train --json` output (tiny, on the CPU) goes into the report."""
    pytest.importorskip("transformers")
    assert main(["bench", "generate", "--device", "cpu", "--preset", "tiny", "--batches", "1", "--modes", "greedy",
                 "--new-tokens", "4", "--repeats", "1", "--json"]) == 0
    decode = gpu_check.Step("decode", "decoding", [], 1, ())
    decode.status, decode.output = "ok", capsys.readouterr().out
    assert main(["bench", "train", "--device", "cpu", "--preset", "tiny", "--precision", "fp32", "--steps", "1",
                 "--rounds", "1", "--warmup", "1", "--batch-size", "2", "--json"]) == 0
    train = gpu_check.Step("train", "training", [], 1, ())
    train.status, train.output = "ok", capsys.readouterr().out
    failed = gpu_check.Step("ddp", "torchrun", [], 1, ())
    failed.status, failed.note, failed.output = "failed", "exit status 1", "Traceback ...\nerror: boom"
    text = gpu_check.report([decode, train, failed], "NVIDIA H200 (139 GiB)", tmp_path / "x.safetensors",
                            cpu=False, total=12.0)
    assert "| decode | decoding | ok | 0 |" in text and "| ddp | torchrun | failed (exit status 1) | 0 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| tiny | 1 | greedy |"))
    assert row.count("|") == 11  # every column filled (a dash where a contender was not run)
    assert "compiled >= 5x transformers eager: NOT met" in text  # no compiled figure: never reported as met
    assert "tiny fp32, batch 2 x 128: ours" in text and "MFU" in text
    assert "error: boom" in text
