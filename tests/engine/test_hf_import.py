"""GPT-2 weights in the Hugging Face layout load into our GPT with the same logits."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub here: never try it
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
    # Older exports also carry each layer's causal-mask buffers; they are not weights.
    hub_style["h.0.attn.bias"] = torch.ones(1, 1, 64, 64).tril()
    hub_style["h.0.attn.masked_bias"] = torch.tensor(-1e4)
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
    ({"model_type": "gemma"}, "model_type"),
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


# ---------------------------------------------------------------- a whole Hugging Face folder

from pathlib import Path  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from engine.hf_import import import_hf_folder  # noqa: E402

SAMPLES = ["Hello world", "def f(x):\n    return x ** 2\n\n\n", "  leading and trailing  ", "Ünïcödé 中文 😀🎉",
           "it's we're they'll I'd", "numbers 1234567 and 3.14159", "tabs\tand\r\nnewlines", ""]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """A small random GPT-2 and a byte-level BPE trained here, saved as the hub lays them out."""
    from tokenizers import ByteLevelBPETokenizer

    from engine.data import load_corpus

    folder = tmp_path_factory.mktemp("hf-gpt2")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([load_corpus("python-docs").text()[:200_000]], vocab_size=600,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    bpe.save_model(str(folder))  # vocab.json + merges.txt
    model = small_hf_gpt2(vocab_size=600)
    model.save_pretrained(folder)  # config.json + model.safetensors (tied head stored once)
    return folder


@pytest.fixture(scope="module")
def hf_tokenizer(hf_folder):
    return transformers.GPT2Tokenizer.from_pretrained(str(hf_folder), local_files_only=True)


def test_folder_token_ids_equal_transformers(hf_folder, hf_tokenizer):
    _, tok = import_hf_folder(hf_folder)
    for text in SAMPLES:
        assert tok.encode(text) == hf_tokenizer.encode(text), text
        assert tok.decode(tok.encode(text)) == text
    assert tok.eot_id == hf_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tok.vocab_size == 600


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(exclude_categories=("Cs", "Cn"), max_codepoint=0xFFFF), max_size=80))
def test_folder_token_ids_equal_transformers_on_any_text(hf_folder, hf_tokenizer, text):
    # (The BMP only: regex engines disagree on letters of recent Unicode versions, see test_bpe.py.)
    assert _folder_tokenizer(hf_folder).encode(text) == hf_tokenizer.encode(text)


_TOKENIZERS: dict = {}


def _folder_tokenizer(folder):
    from engine.tokenizers import tokenizer_from_hf_files

    if folder not in _TOKENIZERS:
        _TOKENIZERS[folder] = tokenizer_from_hf_files(folder / "vocab.json", folder / "merges.txt")
    return _TOKENIZERS[folder]


def test_import_hf_command_makes_an_equivalent_checkpoint(hf_folder, hf_tokenizer, tmp_path, capsys):
    from engine.checkpoint import load_checkpoint
    from engine.cli import main

    out = tmp_path / "gpt2-small.safetensors"
    assert main(["import-hf", str(hf_folder), "--out", str(out)]) == 0
    assert "imported GPT-2" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(hf_folder), local_files_only=True).eval()
    text = "The quick brown fox jumps over the lazy dog; def main(): return 42"
    ids = ckpt.tokenizer.encode(text)
    assert ids == hf_tokenizer.encode(text)
    idx = torch.tensor([ids[:64]])
    with torch.no_grad():
        diff = (ckpt.model(idx)[0] - hf(idx).logits).abs().max().item()
    assert diff <= 1e-4


def test_import_hf_refuses_incomplete_folders(hf_folder, tmp_path, capsys):
    import shutil

    from engine.cli import main

    broken = tmp_path / "broken"
    shutil.copytree(hf_folder, broken)
    (broken / "merges.txt").unlink()
    out = tmp_path / "x.safetensors"
    assert main(["import-hf", str(broken), "--out", str(out)]) == 2
    assert "merges.txt" in capsys.readouterr().err and not out.exists()
    (broken / "model.safetensors").rename(broken / "pytorch_model.bin")
    assert main(["import-hf", str(broken), "--out", str(out)]) == 2
    assert "pickle" in capsys.readouterr().err
    assert main(["import-hf", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "not a folder" in capsys.readouterr().err
