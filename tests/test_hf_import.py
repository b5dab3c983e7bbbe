"""GPT-2 weights in the Hugging Face layout load into our GPT with the same logits."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from engine.hf_import import HFImportError, config_from_hf, gpt_from_hf  # noqa: E402


def small_hf_gpt2(vocab_size: int = 97, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=vocab_size, n_positions=64,
                                  bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    # Random init leaves LayerNorms at 1/0 and biases at 0: perturb everything so every mapping is exercised.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_logits_match_transformers():
    hf = small_hf_gpt2()
    ours = gpt_from_hf(hf.state_dict(), hf.config.to_dict())
    idx = torch.randint(0, 97, (3, 50), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx).logits
        got, _ = ours(idx)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4
    assert ours.head.weight is ours.tok_emb.weight


def test_hub_names_without_prefix_load_too():
    hf = small_hf_gpt2()
    hub_style = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    ours = gpt_from_hf(hub_style, hf.config.to_dict())
    idx = torch.arange(20).unsqueeze(0)
    with torch.no_grad():
        assert torch.allclose(ours(idx)[0], hf(idx).logits, atol=1e-4)


def test_config_mapping():
    cfg = config_from_hf({"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024, "n_embd": 768,
                          "n_layer": 12, "n_head": 12, "activation_function": "gelu_new",
                          "layer_norm_epsilon": 1e-5})
    assert (cfg.vocab_size, cfg.context_length, cfg.emb_dim, cfg.n_heads, cfg.n_layers) == (50257, 1024, 768, 12, 12)
    assert cfg.qkv_bias is True


@pytest.mark.parametrize("change, words", [
    ({"activation_function": "gelu"}, "activation_function"),
    ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon"),
    ({"n_inner": 100}, "n_inner"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"tie_word_embeddings": False}, "tied"),
    ({"model_type": "llama"}, "model_type"),
])
def test_unrepresentable_configs_are_refused(change, words):
    base = {"vocab_size": 97, "n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 2}
    with pytest.raises(HFImportError, match=words):
        config_from_hf({**base, **change})


def test_wrong_shapes_and_missing_tensors_are_refused():
    hf = small_hf_gpt2()
    sd = dict(hf.state_dict())
    cfg = hf.config.to_dict()
    with pytest.raises(HFImportError, match="shape"):
        gpt_from_hf(sd, {**cfg, "n_embd": 64})
    del sd["transformer.h.1.mlp.c_fc.bias"]
    with pytest.raises(HFImportError, match="h.1.mlp.c_fc.bias"):
        gpt_from_hf(sd, cfg)


def test_untied_head_is_refused():
    hf = small_hf_gpt2()
    sd = dict(hf.state_dict())
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1.0
    with pytest.raises(HFImportError, match="tied"):
        gpt_from_hf(sd, hf.config.to_dict())
