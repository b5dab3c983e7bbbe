"""`python -m engine generate` end to end on a tiny checkpoint saved in a temporary folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.checkpoint import save_checkpoint
from engine.cli import main
from engine.config import ModelConfig
from engine.generation import generate
from engine.model import GPT
from engine.sampling import SamplingConfig
from engine.tokenizers import CharTokenizer

ROOT = Path(__file__).resolve().parents[2]
TEXT = "hello world, the quick brown fox é\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = CharTokenizer.from_text(TEXT)
    model = GPT(ModelConfig(vocab_size=tokenizer.vocab_size, context_length=24, emb_dim=32, n_heads=2,
                            n_layers=2, drop_rate=0.0)).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model, tokenizer)
    return path, model, tokenizer


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_output_matches_the_engine(checkpoint, capsys):
    path, model, tokenizer = checkpoint
    code, out, _ = run_cli(capsys, "generate", str(path), "--prompt", "hello", "--max-new-tokens", "40",
                           "--greedy", "--repetition-penalty", "1.3", "--json")
    assert code == 0
    data = json.loads(out)
    expected = generate(model, tokenizer, "hello", SamplingConfig(greedy=True, repetition_penalty=1.3,
                                                                   max_new_tokens=40))
    assert data["prompt_ids"] == tokenizer.encode("hello")
    assert data["new_ids"] == expected.ids and len(data["new_ids"]) == 40  # past the 24-token context too
    assert data["text"] == tokenizer.decode(data["new_ids"])
    assert data["tokens_per_s"] > 0 and data["stop_reason"] == "max_new_tokens"


def test_sampling_flags_and_seed_repeat(checkpoint, capsys):
    path, model, tokenizer = checkpoint
    argv = ["generate", str(path), "--prompt", "the ", "--max-new-tokens", "15", "--temperature", "1.3",
            "--top-k", "8", "--top-p", "0.9", "--min-p", "0.05", "--seed", "7", "--json"]
    first = json.loads(run_cli(capsys, *argv)[1])
    second = json.loads(run_cli(capsys, *argv)[1])
    assert first["new_ids"] == second["new_ids"] and first["seed"] == 7
    expected = generate(model, tokenizer, "the ", SamplingConfig(temperature=1.3, top_k=8, top_p=0.9, min_p=0.05,
                                                                 seed=7, max_new_tokens=15))
    assert first["new_ids"] == expected.ids


def test_text_output_streams_prompt_then_continuation(checkpoint, capsys):
    path, model, tokenizer = checkpoint
    code, out, err = run_cli(capsys, "generate", str(path), "--prompt", "fox", "--max-new-tokens", "12", "--greedy")
    expected = generate(model, tokenizer, "fox", SamplingConfig(greedy=True, max_new_tokens=12))
    assert code == 0
    assert out == "fox" + expected.text + "\n"
    assert "12 tokens" in err and "tokens/s" in err


def test_empty_prompt_and_zero_tokens(checkpoint, capsys):
    path, _, tokenizer = checkpoint
    data = json.loads(run_cli(capsys, "generate", str(path), "--prompt", "", "--max-new-tokens", "0", "--json")[1])
    assert data["new_ids"] == [] and data["text"] == ""
    assert data["prompt_ids"] == tokenizer.encode("\n")  # a char tokenizer has no end-of-text token


@pytest.mark.parametrize("extra, words", [
    (["--temperature", "-1"], "temperature"),
    (["--top-p", "2"], "top_p"),
    (["--max-new-tokens", "-3"], "max_new_tokens"),
    (["--precision", "fp16"], "CUDA"),
])
def test_bad_settings_print_one_error_line(checkpoint, capsys, extra, words):
    path, _, _ = checkpoint
    code, out, err = run_cli(capsys, "generate", str(path), "--prompt", "a", *extra)
    assert code == 2 and out == ""
    assert err.startswith("error:") and words in err and len(err.strip().splitlines()) == 1


def test_missing_checkpoint_is_one_error_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "generate", str(tmp_path / "nope.safetensors"), "--prompt", "a")
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_command_line_end_to_end(checkpoint):
    path, model, tokenizer = checkpoint
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "engine", "generate", str(path), "--prompt", "hello",
                           "--max-new-tokens", "9", "--greedy", "--precision", "int8", "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert len(data["new_ids"]) == 9
    assert data["new_ids"] == generate(model, tokenizer, "hello", SamplingConfig(greedy=True, max_new_tokens=9),
                                       precision="int8").ids
