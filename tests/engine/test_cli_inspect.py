"""`python -m engine inspect CKPT --text TEXT ... --json` end to end, against transformers' GPT-2 on the same
weights: ids, token losses, the logit lens (ln_f and lm_head on each block's output), --ablate L.H as a
pre-hook zeroing the head's slice of c_proj's input, and --attribute POS as autograd's gradient x input."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import save_checkpoint
from engine.cli import main
from engine.tokenizers import CharTokenizer

transformers = pytest.importorskip("transformers")
from engine.hf_import import gpt_from_hf  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TEXT = "the cat sat on the mat; the cat sat"
TOKENIZER = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz ;.,\n")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=TOKENIZER.vocab_size, n_positions=48,
                                  bos_token_id=None, eos_token_id=None, attn_implementation="eager")
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        hf.transformer.wte.weight.mul_(5)
        for block in hf.transformer.h:
            block.attn.c_attn.weight.mul_(6)
    path = tmp_path_factory.mktemp("ckpt") / "gpt2-tiny.safetensors"
    save_checkpoint(path, gpt_from_hf(hf.state_dict(), cfg.to_dict()), TOKENIZER)
    return path, hf


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def hf_run(hf, ids: list[int], heads=()):
    """Logits (T, V) and each block's output (T, C), with heads zeroed by pre-hooks on c_proj."""
    blocks, handles = [], []
    for layer, head in heads:
        D = hf.transformer.h[layer].attn.head_dim

        def hook(module, args, head=head, D=D):
            x = args[0].clone()
            x[..., head * D:(head + 1) * D] = 0
            return (x,)
        handles.append(hf.transformer.h[layer].attn.c_proj.register_forward_pre_hook(hook))
    handles += [b.register_forward_hook(lambda m, a, out: blocks.append((out[0] if isinstance(out, tuple) else out)[0]))
                for b in hf.transformer.h]
    try:
        with torch.no_grad():
            logits = hf(torch.tensor([ids])).logits[0]
    finally:
        for h in handles:
            h.remove()
    return logits, blocks


def check_against_transformers(data: dict, hf, heads=(), k: int = 5) -> None:
    ids = TOKENIZER.encode(TEXT)
    assert data["ids"] == ids
    logits, blocks = hf_run(hf, ids, heads)
    loss = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none")
    assert data["token_loss"][0] is None and len(data["token_loss"]) == len(ids)
    np.testing.assert_allclose(data["token_loss"][1:], loss.numpy(), atol=1e-4, rtol=0)
    assert len(data["logit_lens"]) == 2  # one entry per block
    for layer, h in enumerate(blocks):
        with torch.no_grad():
            top = torch.softmax(hf.lm_head(hf.transformer.ln_f(h)), -1).topk(k, dim=-1)
        entry = data["logit_lens"][layer]
        assert len(entry) == len(ids)
        assert [cell["ids"] for cell in entry] == top.indices.tolist()
        np.testing.assert_allclose([cell["probs"] for cell in entry], top.values.numpy(), atol=1e-4, rtol=0)
    final = torch.softmax(logits, -1).topk(k, dim=-1)  # the last entry is the model's own distribution
    assert [cell["ids"] for cell in data["logit_lens"][-1]] == final.indices.tolist()


def test_json_equals_transformers(checkpoint, capsys):
    path, hf = checkpoint
    code, out, err = run_cli(capsys, "inspect", str(path), "--text", TEXT, "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert set(data) == {"ids", "token_loss", "logit_lens", "attribution"} and data["attribution"] == []
    check_against_transformers(data, hf)


def test_ablate_and_top_k(checkpoint, capsys):
    path, hf = checkpoint
    code, out, _ = run_cli(capsys, "inspect", str(path), "--text", TEXT, "--top-k", "3", "--ablate", "0.1",
                           "--ablate", "1.3", "--json")
    assert code == 0
    data = json.loads(out)
    check_against_transformers(data, hf, heads=[(0, 1), (1, 3)], k=3)
    intact = json.loads(run_cli(capsys, "inspect", str(path), "--text", TEXT, "--json")[1])
    assert max(abs(a - b) for a, b in zip(data["token_loss"][1:], intact["token_loss"][1:])) > 1e-2


def test_attribute_equals_autograd_on_transformers(checkpoint, capsys):
    path, hf = checkpoint
    position = 12
    code, out, _ = run_cli(capsys, "inspect", str(path), "--text", TEXT, "--attribute", str(position),
                           "--ablate", "1.0", "--json")
    assert code == 0
    data = json.loads(out)
    ids = torch.tensor([TOKENIZER.encode(TEXT)])
    D = hf.transformer.h[1].attn.head_dim

    def hook(module, args):
        x = args[0].clone()
        x[..., :D] = 0
        return (x,)
    handle = hf.transformer.h[1].attn.c_proj.register_forward_pre_hook(hook)
    try:
        embeds = hf.transformer.wte(ids).detach().requires_grad_()
        logits = hf(inputs_embeds=embeds).logits[0, position]
        logits[int(logits.argmax())].backward()
    finally:
        handle.remove()
    expected = (embeds.grad * embeds).norm(dim=-1)[0, :position + 1]
    assert len(data["attribution"]) == position + 1
    np.testing.assert_allclose(data["attribution"], expected.detach().numpy(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["--ablate", "2.0"], "no head 2.0"),
    (["--ablate", "1"], "LAYER.HEAD"),
    (["--attribute", "99"], "outside the text"),
    (["--top-k", "0"], "--top-k"),
    (["--text", ""], "empty"),
    (["--text", "x" * 60], "do not fit"),
])
def test_bad_input_is_one_error_line(checkpoint, capsys, argv, message):
    path, _ = checkpoint
    args = ["inspect", str(path), "--text", TEXT, *argv, "--json"]
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == "" and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_missing_checkpoint_and_the_text_table(checkpoint, capsys, tmp_path):
    code, _, err = run_cli(capsys, "inspect", str(tmp_path / "none.safetensors"), "--text", "a")
    assert code == 2 and err.startswith("error: ")
    path, _ = checkpoint
    code, out, _ = run_cli(capsys, "inspect", str(path), "--text", TEXT[:6], "--attribute", "3")
    assert code == 0 and "perplexity" in out and "block 1" in out and "gradient x input" in out


def test_as_a_command(checkpoint):
    path, hf = checkpoint
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "engine", "inspect", str(path), "--text", TEXT, "--json"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    check_against_transformers(data, hf)
    assert not any(isinstance(x, float) and math.isnan(x) for x in data["token_loss"][1:])
