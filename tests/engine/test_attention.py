"""Attention maps equal transformers' eager attention on the same weights; rollout follows Abnar & Zuidema."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.generation.attention import attention_maps, attention_rollout

transformers = pytest.importorskip("transformers")
from engine.hf_import import gpt_from_hf  # noqa: E402


@pytest.fixture(scope="module")
def pair():
    """transformers' GPT-2 with eager attention, and our GPT holding the same weights."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_head=4, n_layer=3, resid_pdrop=0.3,
                                     embd_pdrop=0.3, attn_pdrop=0.3, bos_token_id=None, eos_token_id=None,
                                     attn_implementation="eager")
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # sharper attention than the init's near-uniform rows
        for block in hf.transformer.h:
            block.attn.c_attn.weight.mul_(8)
            block.attn.c_attn.bias.normal_()
    return hf, gpt_from_hf(hf.state_dict(), config.to_dict())


@pytest.fixture(scope="module")
def model(pair):
    return pair[1]


def test_maps_equal_transformers_eager_attention(pair):
    hf, model = pair
    ids = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
    model.train()  # dropout on: the maps must still be the eval-mode ones, and the flag left alone
    assert model.config.drop_rate > 0
    maps = attention_maps(model, ids)
    assert model.training
    model.eval()
    with torch.no_grad():
        weights = hf(torch.tensor([ids]), output_attentions=True).attentions
    expected = torch.stack([w[0] for w in weights]).numpy()
    assert maps.shape == (3, 4, 11, 11) and maps.dtype == np.float32
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    assert np.allclose(maps.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(maps, 1) == 0)  # causal: nothing from the future
    assert maps.std() > 0.05  # not uniform: the comparison above means something


def test_maps_accept_tensors_and_reject_bad_input(model):
    ids = torch.tensor([[1, 2, 3]])
    assert attention_maps(model, ids).shape == (3, 4, 3, 3)
    with pytest.raises(ValueError, match="context length"):
        attention_maps(model, list(range(17)))
    with pytest.raises(ValueError, match="at least one"):
        attention_maps(model, [])
    with pytest.raises(ValueError, match="between 0 and 49"):
        attention_maps(model, [1, 50])


def test_rollout_by_hand():
    # Two layers, one head, two tokens.
    a1 = np.array([[1.0, 0.0], [0.5, 0.5]])
    a2 = np.array([[1.0, 0.0], [0.2, 0.8]])
    maps = np.stack([a1[None], a2[None]])
    r1 = (a1 + np.eye(2)) / (a1 + np.eye(2)).sum(-1, keepdims=True)
    r2 = (a2 + np.eye(2)) / (a2 + np.eye(2)).sum(-1, keepdims=True)
    np.testing.assert_allclose(attention_rollout(maps), r2 @ r1, rtol=1e-6)


def test_rollout_of_real_maps(model):
    maps = attention_maps(model, [7, 8, 9, 10, 11, 12])
    rollout = attention_rollout(maps)
    assert rollout.shape == (6, 6) and rollout.dtype == np.float32
    np.testing.assert_allclose(rollout.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(rollout, 1) == 0)
    assert rollout[0, 0] == pytest.approx(1.0)  # the first token can only draw from itself
    # Heads are averaged: permuting them changes nothing.
    np.testing.assert_allclose(attention_rollout(maps[:, ::-1]), rollout, rtol=1e-6)
    with pytest.raises(ValueError, match="layers, heads"):
        attention_rollout(maps[0])
