"""The training-memory estimate shown before Start against a real run's peak resident memory.

A fresh interpreter (so nothing else is in its memory) builds a dataset, notes its resident memory, trains a
small-but-not-tiny GPT for two steps with the real Trainer and reports its peak resident memory
(the kernel's VmHWM); the peak gained must be within 30% of engine.memory's estimate.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.config import ModelConfig, TrainConfig
from engine.memory import training_memory_bytes, training_memory_problem

ROOT = Path(__file__).resolve().parents[2]
SHAPE = dict(vocab_size=8192, context_length=256, emb_dim=384, n_heads=6, n_layers=6, drop_rate=0.0)
LLAMA = dict(SHAPE, arch="llama", n_kv_heads=2, hidden_dim=1024)  # grouped-query attention, SwiGLU
TRAIN = dict(steps=2, batch_size=4, eval_interval=1000, sample_interval=0, device="cpu", seed=1)

_PROBE = """
import json, os, sys
import torch
from engine.config import ModelConfig, TrainConfig
from engine.data import Dataset, load_corpus
from engine.tokenizers import CharTokenizer
from engine.training.trainer import Trainer

torch.set_num_threads(1)
shape, train = json.loads(sys.argv[1]), json.loads(sys.argv[2])
corpus = load_corpus("copy")
dataset = Dataset.build(corpus, CharTokenizer.from_text(corpus.text()), shape["context_length"])
with open("/proc/self/statm") as f:
    before = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
trainer = Trainer(ModelConfig(**shape), TrainConfig(**train), dataset)
trainer.first_eval_is_cheap = lambda: False  # training memory only
for _ in trainer.run():
    pass
# VmHWM, this address space's own peak: ru_maxrss would carry over the parent's (Linux keeps it across exec,
# so a forked pytest process of 2 GB would be the "peak").
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps({"before": before, "peak": peak}))
"""


@pytest.mark.parametrize("shape", [SHAPE, LLAMA], ids=["gpt2", "llama"])
def test_the_estimate_is_within_30_percent_of_the_measured_peak(shape, tmp_path):
    train = TRAIN
    # Its own empty cache: nothing earlier tests left there (token arrays, a measured peak) changes what it reads.
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", LLM_PLAYGROUND_CACHE=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(shape), json.dumps(train)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    measured = result["peak"] - result["before"]
    estimate = training_memory_bytes(ModelConfig(**shape), TrainConfig(**train))
    print(f"peak gained {measured / 1e6:.0f} MB, estimate {estimate / 1e6:.0f} MB ({measured / estimate:.2f}x)")
    assert 0.7 * estimate <= measured <= 1.3 * estimate


def test_a_run_that_cannot_fit_is_refused_with_how_to_fit_it():
    config, train = ModelConfig(**SHAPE), TrainConfig(**TRAIN)
    need = training_memory_bytes(config, train)
    assert training_memory_problem(config, train, torch.device("cpu"), have=need + 1) is None
    problem = training_memory_problem(config, train, torch.device("cpu"), have=need // 2)
    assert problem is not None and "\n" not in problem
    assert all(word in problem for word in ("batch size", "context length", "gradient accumulation", "bf16"))
