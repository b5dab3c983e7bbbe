"""The GPT model (the training forward): shapes, causality, initial loss, bf16 attention, learning one batch.

Its inference twin, engine.generation's Decoder (KV cache, attention maps, captures), is tested in
test_forward.py and test_generation.py against this forward and against transformers."""
from __future__ import annotations

import math

import pytest
import torch

from engine.config import ModelConfig, preset
from engine.model import GPT

SMALL = ModelConfig(vocab_size=50, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(SMALL).eval()


def test_shapes(model):
    idx = torch.randint(0, 50, (3, 10))
    logits, loss = model(idx)
    assert logits.shape == (3, 10, 50) and loss is None
    logits, loss = model(idx, idx)
    assert loss.shape == () and torch.isfinite(loss)


def test_longer_than_context_is_refused(model):
    with pytest.raises(ValueError, match="context length"):
        model(torch.zeros(1, SMALL.context_length + 1, dtype=torch.long))


def test_causal(model):
    """Changing a token leaves the logits of every earlier position unchanged."""
    idx = torch.randint(0, 50, (2, 12))
    changed = idx.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 50
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_bf16_cpu_training_attention_matches_the_fused_kernel(model):
    """bf16 training on a CPU takes the two-matmul attention path: same causal result and gradients."""
    import torch.nn.functional as F

    from engine.model import _causal_attention_bf16_cpu

    q, k, v = (torch.randn(2, 4, 13, 8, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    ours = _causal_attention_bf16_cpu(q, k, v, 0.0)
    fused = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    torch.testing.assert_close(ours.float(), fused, atol=2e-2, rtol=2e-2)
    ours.float().sum().backward()
    grads = [t.grad.float() for t in (q, k, v)]
    qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
    F.scaled_dot_product_attention(qf, kf, vf, is_causal=True).sum().backward()
    for mine, ref in zip(grads, (qf.grad, kf.grad, vf.grad)):
        torch.testing.assert_close(mine, ref, atol=5e-2, rtol=5e-2)
    # and the whole model in bf16 autocast still trains causally: a later token never changes earlier logits
    model.train()
    idx = torch.randint(0, 50, (2, 12))
    changed = idx.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 50
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7])


def test_initial_loss_is_about_ln_vocab():
    torch.manual_seed(0)
    config = preset("tiny").with_changes(vocab_size=96, context_length=64)
    model = GPT(config).eval()
    idx, targets = torch.randint(0, 96, (2, 8, 64))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(96)) < 0.1


def test_parameter_layout_and_counts(model):
    names = {n for n, _ in model.named_parameters()}
    assert {"tok_emb.weight", "pos_emb.weight", "blocks.0.attn.qkv.weight", "blocks.1.mlp.proj.bias",
            "ln_f.weight"} <= names
    assert "blocks.0.attn.qkv.bias" not in names  # qkv_bias=False
    assert model.head.weight is model.tok_emb.weight
    assert model.num_params() == SMALL.num_params()
    with_bias = GPT(SMALL.with_changes(qkv_bias=True))
    assert with_bias.num_params() == SMALL.with_changes(qkv_bias=True).num_params()
    n = model.num_params(non_embedding=True)
    assert model.flops_per_token() == 6 * n + 12 * 2 * 4 * 8 * 16


def test_weight_decay_only_on_matrices(model):
    opt = model.configure_optimizer(1e-3, 0.1, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(SMALL)
    opt = model.configure_optimizer(3e-3, 0.0, (0.9, 0.95), "cpu")
    idx = torch.randint(0, 50, (4, 16))
    for _ in range(80):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


@pytest.mark.parametrize("bad", [dict(emb_dim=30, n_heads=4), dict(n_layers=0), dict(vocab_size=10**9),
                                 dict(drop_rate=1.0), dict(context_length=2.5), dict(qkv_bias="yes")])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        SMALL.with_changes(**bad)
