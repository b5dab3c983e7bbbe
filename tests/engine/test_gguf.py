"""GGUF files read into the parts a Hugging Face folder gives, checked against transformers' own GGUF loader.

The files are written here from small random transformers models, the way llama.cpp's converter writes them
(tests/engine/gguf_fixtures.py); the reference is transformers reading the same file.
"""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("gguf")
pytest.importorskip("transformers")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf import GGUFValueType as V  # noqa: E402
from gguf_fixtures import (  # noqa: E402
    gpt2_file,
    llama_file,
    reference_model,
    reference_tokenizer,
    tiny_gpt2,
    tiny_llama,
    tiny_qwen2,
    train_bpe,
    train_spm,
    transformers,
    write_gguf,
)
from tokenizers import Tokenizer  # noqa: E402

from engine.gguf_reader import GGUFError, read_gguf  # noqa: E402

TEXTS = [
    "Hello world",
    " leading space and  double  spaces",
    "The quick brown fox jumps over the lazy dog.",
    "numbers 12345 and 3.14159, year 2024",
    "h\u00e9llo w\u00f6rld caf\u00e9",
    "emoji \U0001F999 and \u65e5\u672c\u8a9e text",
    "tabs\tand\nnew lines\n\n  indented",
    "<|im_start|>user\nhi<|im_end|>",
    "I'm here, you're there, they'll come",
    "<think>reasoning</think> done",
    "",
    "<s>hi</s> a<s>b <unk> \u2581literal",
    "x  <|im_end|>  y<|endoftext|>",
    "'S 'LL \r\n\r\n 123456789   \n  x",
]

@pytest.fixture(scope="module")
def bpe():
    return train_bpe()


@pytest.fixture(scope="module")
def spm():
    return train_spm()


def model_from_ours(got):
    """A transformers model built from our config dict alone, holding our tensors."""
    cfg = dict(got.config)
    config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    missing, unexpected = model.load_state_dict(got.tensors, strict=False)
    assert not unexpected
    assert set(missing) <= ({"lm_head.weight"} if got.config["tie_word_embeddings"] else set())
    return model


IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 1, 64, 128, 11, 2]])


def _check_against_reference(path, got, monkeypatch, exact_originals=None, config=None):
    ref = reference_model(path, monkeypatch, config)
    ref_sd = ref.state_dict()
    for name, tensor in got.tensors.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, ref_sd[name]), name
        if exact_originals is not None:
            assert torch.equal(tensor, exact_originals[name]), name
    params = {n for n, _ in ref.named_parameters()} - {"lm_head.weight"}
    assert params <= set(got.tensors)
    ours = model_from_ours(got)
    with torch.no_grad():
        expected = ref(IDS).logits
        assert (ours(IDS).logits - expected).abs().max().item() <= 1e-4
    return ref


def _check_tokenizer(path, got, texts=TEXTS):
    ours = Tokenizer.from_str(got.tokenizer_json)
    ref = reference_tokenizer(path)
    for text in texts:
        assert ours.encode(text).ids == ref(text)["input_ids"], text
        assert ours.encode(text, add_special_tokens=False).ids == \
            ref(text, add_special_tokens=False)["input_ids"], text
        ids = ref(text)["input_ids"]
        assert ours.decode(ids, skip_special_tokens=False) == ref.decode(ids, skip_special_tokens=False), text
    return ours, ref


# ------------------------------------------------------------------------------------------------------
# Llama: GQA, tied head, SentencePiece tokenizer.

def test_llama_f32_equals_the_original_and_transformers(tmp_path, spm, monkeypatch):
    hf = tiny_llama(len(spm["tokens"]))
    path = tmp_path / "llama-f32.gguf"
    llama_file(path, hf, spm)
    got = read_gguf(path)
    c = got.config
    assert c["model_type"] == "llama" and c["tie_word_embeddings"] is True
    assert (c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]) == (256, 512, 2)
    assert (c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]) == (4, 2, 64)
    assert c["rms_norm_eps"] == 1e-5 and c["rope_theta"] == 10000.0 and c["rope_scaling"] is None
    assert c["max_position_embeddings"] == 256 and c["vocab_size"] == len(spm["tokens"])
    assert "lm_head.weight" not in got.tensors
    assert got.quant_summary == {"F32": 1.0}
    assert (got.bos_id, got.eos_id, got.add_bos_token) == (1, 2, True)
    assert got.chat_template.startswith("{% for m in messages %}")
    originals = {k: v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    assert set(got.tensors) == set(originals)
    _check_against_reference(path, got, monkeypatch, exact_originals=originals)
    ours, _ = _check_tokenizer(path, got)
    # Byte fallback: the llama emoji is no piece of this vocabulary, so it is spelled in <0xAB> tokens.
    assert "<0xF0>" in ours.encode("\U0001F999").tokens
    assert ours.decode(ours.encode("caf\u00e9 \U0001F999 ok").ids) == "caf\u00e9 \U0001F999 ok"


def _mixed(name, x):
    table = {"token_embd": Q.Q8_0, "attn_q": Q.Q4_K, "attn_k": Q.Q5_K, "attn_v": Q.Q6_K,
             "attn_output": Q.Q4_0, "ffn_gate": Q.Q4_1, "ffn_up": Q.Q5_0}
    for key, qtype in table.items():
        if key in name:
            return qtype
    return Q.F16 if name.startswith("blk.0.") else Q.BF16


def test_llama_quantized_equals_transformers_dequantization(tmp_path, spm, monkeypatch):
    hf = tiny_llama(len(spm["tokens"]), seed=3)
    path = tmp_path / "llama-mixed.gguf"
    llama_file(path, hf, spm, types=_mixed)
    got = read_gguf(path)
    assert set(got.quant_summary) == {"Q8_0", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "F16", "BF16", "F32"}
    assert abs(sum(got.quant_summary.values()) - 1.0) < 1e-12
    _check_against_reference(path, got, monkeypatch)
    # Q8_0 stays close to the original weights: the names and the permutation line up.
    emb = hf.state_dict()["model.embed_tokens.weight"]
    assert (got.tensors["model.embed_tokens.weight"] - emb).abs().max() < 0.02


def test_other_dtypes_are_one_cast_of_the_float32_read(tmp_path, spm):
    hf = tiny_llama(len(spm["tokens"]), seed=4)
    path = tmp_path / "llama-mixed.gguf"
    llama_file(path, hf, spm, types=_mixed)
    f32 = read_gguf(path).tensors
    bf16 = read_gguf(path, dtype=torch.bfloat16).tensors
    for name, t in bf16.items():
        assert t.dtype == torch.bfloat16 and t.is_contiguous()
        assert torch.equal(t, f32[name].to(torch.bfloat16)), name
    with pytest.raises(GGUFError):
        read_gguf(path, dtype=torch.int8)


# ------------------------------------------------------------------------------------------------------
# Qwen2: biases, untied head, byte-level BPE with the qwen2 pre-tokenizer, F16 + Q8_0.

def test_qwen2_with_biases_and_untied_head(tmp_path, bpe, monkeypatch):
    hf = tiny_qwen2(len(bpe["tokens"]))
    path = tmp_path / "qwen2.gguf"
    eos = bpe["tokens"].index("<|im_end|>")
    llama_file(path, hf, bpe, arch="qwen2", pre="qwen2", add_bos=False, bos=0, eos=eos, eot=eos,
               types=lambda name, x: Q.Q8_0 if "ffn" in name else Q.F16)
    got = read_gguf(path)
    c = got.config
    assert c["model_type"] == "qwen2" and c["attention_bias"] is True and c["tie_word_embeddings"] is False
    assert "lm_head.weight" in got.tensors and "model.layers.1.self_attn.k_proj.bias" in got.tensors
    assert c["rms_norm_eps"] == 1e-6
    assert (got.eos_id, got.eot_id, got.add_bos_token) == (eos, eos, False)
    originals = hf.state_dict()
    # Qwen2 is not permuted by the converter: the F16 q/k weights round-trip to the originals' F16 values.
    q = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(got.tensors[q], originals[q].half().float())
    _check_against_reference(path, got, monkeypatch)
    tok, _ = _check_tokenizer(path, got)
    # Like Qwen2's own tokenizer.json (not transformers' GGUF reader), text is NFC-normalized first.
    assert tok.encode("cafe\u0301").ids == tok.encode("caf\u00e9").ids


# ------------------------------------------------------------------------------------------------------
# GPT-2: Conv1D layout, duplicated output head, byte-level BPE.

@pytest.mark.parametrize("qtype", [Q.F32, Q.Q8_0])
def test_gpt2(tmp_path, bpe, monkeypatch, qtype):
    hf = tiny_gpt2(len(bpe["tokens"]))
    path = tmp_path / f"gpt2-{qtype.name}.gguf"
    gpt2_file(path, hf, bpe, types=lambda name, x: qtype)
    got = read_gguf(path)
    c = got.config
    assert c["model_type"] == "gpt2" and c["tie_word_embeddings"] is True
    assert (c["n_embd"], c["n_layer"], c["n_head"], c["n_positions"], c["n_ctx"]) == (64, 2, 4, 64, 64)
    assert c["layer_norm_epsilon"] == 1e-5 and c["vocab_size"] == len(bpe["tokens"])
    assert got.tensors["transformer.h.0.attn.c_attn.weight"].shape == (64, 192)   # Conv1D: (in, out)
    assert got.tensors["transformer.h.0.mlp.c_proj.weight"].shape == (256, 64)
    assert "lm_head.weight" not in got.tensors
    originals = {k: v for k, v in hf.state_dict().items() if k in got.tensors}
    assert set(originals) == set(got.tensors)
    ref = _check_against_reference(path, got, monkeypatch, config=hf.config,
                                   exact_originals=originals if qtype == Q.F32 else None)
    _check_tokenizer(path, got)
    # The engine's own GPT-2 import takes these parts unchanged.
    from engine.hf_import import gpt_from_hf
    ours = gpt_from_hf(got.tensors, got.config)
    with torch.no_grad():
        assert (ours(IDS)[0] - ref(IDS).logits).abs().max().item() <= 1e-4


# ------------------------------------------------------------------------------------------------------
# Tokenizer variants: Llama 3's pre-tokenizer and BOS; SmolLM's digit split.

def test_llama3_style_tokenizer_and_rope_scaling(tmp_path, bpe):
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192, "rope_theta": 500000.0}
    hf = tiny_llama(len(bpe["tokens"]), rope_parameters=rope, max_position_embeddings=131072)
    head_dim, theta = 64, 500000.0
    # convert_hf_to_gguf's rope_freqs computation for Llama 3.1
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    factors = []
    for f in freqs:
        wavelen = 2 * np.pi / f
        if wavelen < 8192 / 4.0:
            factors.append(1.0)
        elif wavelen > 8192 / 1.0:
            factors.append(8.0)
        else:
            smooth = (8192 / wavelen - 1.0) / (4.0 - 1.0)
            factors.append(1 / ((1 - smooth) / 8.0 + smooth))
    bos = bpe["tokens"].index("<|endoftext|>")
    path = tmp_path / "llama3.gguf"
    llama_file(path, hf, bpe, pre="llama-bpe", add_bos=True, bos=bos, eos=bos, rope_freqs=np.array(factors))
    got = read_gguf(path)
    assert got.config["rope_scaling"] == {k: v for k, v in rope.items() if k != "rope_theta"}
    assert got.config["rope_theta"] == 500000.0 and "rope_freqs.weight" not in got.tensors
    ours = model_from_ours(got)
    assert torch.allclose(ours.model.rotary_emb.inv_freq, hf.model.rotary_emb.inv_freq, rtol=1e-6)
    tok, _ = _check_tokenizer(path, got)
    assert tok.encode("hi").ids[0] == bos

    # Other Llama-3-style numbers only fix the frequencies; the recovered rope_scaling gives the same ones.
    rope2 = dict(rope, factor=16.0, low_freq_factor=2.0, high_freq_factor=8.0,
                 original_max_position_embeddings=4096)
    hf2 = tiny_llama(len(bpe["tokens"]), rope_parameters=rope2)
    wavelen = 2 * np.pi / freqs.astype(np.float64)
    smooth = (4096 / wavelen - 2.0) / (8.0 - 2.0)
    f2 = np.where(wavelen < 4096 / 8.0, 1.0, np.where(wavelen > 4096 / 2.0, 16.0, 1 / ((1 - smooth) / 16.0 + smooth)))
    llama_file(path, hf2, bpe, pre="llama-bpe", bos=bos, eos=bos, rope_freqs=f2)
    got2 = read_gguf(path)
    assert got2.config["rope_scaling"]["factor"] == 16.0
    assert torch.allclose(model_from_ours(got2).model.rotary_emb.inv_freq, hf2.model.rotary_emb.inv_freq,
                          rtol=1e-5)


def test_smollm_pre_tokenizer_splits_digits(tmp_path, bpe):
    hf = tiny_gpt2(len(bpe["tokens"]))
    path = tmp_path / "smollm.gguf"
    gpt2_file(path, hf, bpe, pre="smollm")
    tok = Tokenizer.from_str(read_gguf(path).tokenizer_json)
    assert tok.encode("year 2024").tokens[-4:] == ["2", "0", "2", "4"]
    assert tok.decode(tok.encode("year 2024 ok").ids) == "year 2024 ok"


def test_sentencepiece_without_space_prefix(tmp_path, spm):
    # transformers' GGUF reader ignores tokenizer.ggml.add_space_prefix; llama.cpp honours it, and so do we.
    hf = tiny_llama(len(spm["tokens"]), num_hidden_layers=1)
    path = tmp_path / "Mistral-7B-nospace.gguf"
    llama_file(path, hf, spm, extra_meta={"tokenizer.ggml.add_space_prefix": (V.BOOL, False),
                                          "general.name": (V.STRING, "Mistral 7B")})
    got = read_gguf(path)
    assert got.config["model_type"] == "llama" and got.name == "Mistral 7B"
    tok = Tokenizer.from_str(got.tokenizer_json)
    assert not tok.encode("the fox", add_special_tokens=False).tokens[0].startswith("\u2581")
    assert tok.encode("the fox", add_special_tokens=False).tokens[-1].startswith("\u2581")
    assert tok.decode(tok.encode("the fox").ids) == "the fox"
    llama_file(path, hf, spm)
    with_prefix = Tokenizer.from_str(read_gguf(path).tokenizer_json)
    assert with_prefix.encode("the fox", add_special_tokens=False).tokens[0].startswith("\u2581")


def test_linear_rope_scaling_and_yarn(tmp_path, spm):
    hf = tiny_llama(len(spm["tokens"]))
    path = tmp_path / "linear.gguf"
    llama_file(path, hf, spm, extra_meta={"llama.rope.scaling.type": (V.STRING, "linear"),
                                          "llama.rope.scaling.factor": (V.FLOAT32, 4.0)})
    assert read_gguf(path).config["rope_scaling"] == {"rope_type": "linear", "factor": 4.0}
    llama_file(path, hf, spm, extra_meta={"llama.rope.scaling.type": (V.STRING, "yarn"),
                                          "llama.rope.scaling.factor": (V.FLOAT32, 4.0)})
    _refused(path, "YaRN")


# ------------------------------------------------------------------------------------------------------
# Hostile and broken files: one GGUFError line each, naming the file, before anything big is allocated.

def _refused(path, *words):
    with pytest.raises(GGUFError) as info:
        read_gguf(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(os.path.basename(path) + ":"), msg
    for word in words:
        assert word in msg, msg
    return msg


@pytest.fixture(scope="module")
def small_gpt2_bytes(tmp_path_factory, bpe):
    path = tmp_path_factory.mktemp("ok") / "ok.gguf"
    gpt2_file(path, tiny_gpt2(len(bpe["tokens"])), bpe)
    return path.read_bytes()


def _tensor_info_at(data: bytes, name: str) -> int:
    """Offset of a tensor's n_dims field in the header."""
    key = struct.pack("<Q", len(name)) + name.encode()
    return data.index(key) + len(key)


def test_truncated_and_not_gguf(tmp_path, small_gpt2_bytes):
    path = tmp_path / "cut.gguf"
    path.write_bytes(small_gpt2_bytes[:-200])
    _refused(path, "truncated", "output_norm.bias")
    path.write_bytes(small_gpt2_bytes[:3000])
    _refused(path, "truncated")
    path.write_bytes(b"")
    _refused(path, "empty")
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    _refused(path, "not a GGUF file")
    _refused(tmp_path / "missing.gguf", "cannot read")


def test_unsupported_tensor_types(tmp_path, small_gpt2_bytes, bpe):
    data = bytearray(small_gpt2_bytes)
    at = _tensor_info_at(data, "blk.1.ffn_up.weight") + 4 + 2 * 8
    struct.pack_into("<I", data, at, 99)
    path = tmp_path / "type99.gguf"
    path.write_bytes(bytes(data))
    _refused(path, "blk.1.ffn_up.weight", "99")
    struct.pack_into("<I", data, at, int(Q.IQ2_XXS))
    path.write_bytes(bytes(data))
    _refused(path, "blk.1.ffn_up.weight", "IQ2_XXS", "not supported")


def test_unknown_architecture_and_tokenizers(tmp_path, small_gpt2_bytes, bpe, spm):
    path = tmp_path / "mamba.gguf"
    write_gguf(path, "mamba", {"mamba.block_count": (V.UINT32, 1)}, [("token_embd.weight", np.zeros((4, 32)), Q.F32)])
    _refused(path, "architecture 'mamba'")
    hf = tiny_gpt2(len(bpe["tokens"]))
    path = tmp_path / "pre.gguf"
    gpt2_file(path, hf, bpe, pre="some-new-model")
    _refused(path, "pre-tokenizer 'some-new-model'")
    gpt2_file(path, hf, bpe, extra_meta={"tokenizer.ggml.model": (V.STRING, "bert")})
    _refused(path, "tokenizer model 'bert'")
    bad = dict(bpe, merges=["a b"] + bpe["merges"][1:] + ["zz qq"])
    gpt2_file(path, hf, bad)
    _refused(path, "merge #")


@pytest.mark.parametrize("meta, words", [
    ({"gpt2.block_count": (V.UINT32, 1_000_000)}, ["gpt2.block_count", "outside"]),
    ({"gpt2.embedding_length": (V.UINT32, 1 << 20)}, ["gpt2.embedding_length", "outside"]),
    ({"gpt2.attention.head_count": (V.UINT32, 3)}, ["not a multiple of 3 heads"]),
    ({"gpt2.feed_forward_length": (V.UINT32, 128)}, ["blk.0.ffn_up.weight", "shape"]),
    ({"gpt2.block_count": (V.UINT32, 3)}, ["blk.2", "missing"]),
    ({"gpt2.block_count": (V.STRING, "2")}, ["gpt2.block_count", "integer", "string"]),
    ({"gpt2.attention.layer_norm_epsilon": (V.STRING, "tiny")}, ["layer_norm_epsilon", "number"]),
    ({"tokenizer.ggml.tokens": (V.ARRAY, [1, 2, 3], V.INT32)}, ["tokenizer.ggml.tokens", "array of strings"]),
    ({"tokenizer.ggml.token_type": (V.ARRAY, [1, 1], V.INT32)}, ["token_type", "2 entries"]),
    ({"tokenizer.ggml.bos_token_id": (V.UINT32, 10 ** 6)}, ["bos_token_id", "not a token id"]),
    ({"tokenizer.ggml.add_bos_token": (V.UINT8, 1)}, ["add_bos_token", "bool"]),
    ({"tokenizer.chat_template": (V.ARRAY, ["x"], V.STRING)}, ["chat_template", "string"]),
    ({"general.architecture": (V.UINT32, 7)}, ["general.architecture", "string"]),
])
def test_bad_metadata(tmp_path, bpe, meta, words):
    path = tmp_path / "bad.gguf"
    gpt2_file(path, tiny_gpt2(len(bpe["tokens"])), bpe, extra_meta=meta)
    _refused(path, *words)


def test_absurd_counts_are_refused_before_allocating(tmp_path, small_gpt2_bytes):
    path = tmp_path / "absurd.gguf"
    data = bytearray(small_gpt2_bytes)
    # A tensor claiming 2^30 x 2^30 elements.
    at = _tensor_info_at(data, "token_embd.weight") + 4
    struct.pack_into("<QQ", data, at, 1 << 30, 1 << 30)
    path.write_bytes(bytes(data))
    _refused(path, "token_embd.weight")
    # The vocabulary array claiming 2^40 strings.
    data = bytearray(small_gpt2_bytes)
    key = b"tokenizer.ggml.tokens"
    at = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key) + 4 + 4
    struct.pack_into("<Q", data, at, 1 << 40)
    path.write_bytes(bytes(data))
    _refused(path, "tokenizer.ggml.tokens", "claims")
    # Header counts beyond any real model.
    data = bytearray(small_gpt2_bytes)
    struct.pack_into("<Q", data, 8, 1 << 40)
    path.write_bytes(bytes(data))
    _refused(path, "tensors")


def test_llama_only_partly_biased_and_moe_are_refused(tmp_path, spm):
    hf = tiny_llama(len(spm["tokens"]), attention_bias=True)
    sd = hf.state_dict()
    for i in range(2):
        del sd[f"model.layers.{i}.self_attn.o_proj.bias"]

    class Stub:   # q/k/v biases but no output bias: a Qwen2 layout under a llama name
        config = hf.config

        @staticmethod
        def state_dict():
            return sd
    path = tmp_path / "bias.gguf"
    llama_file(path, Stub, spm)
    _refused(path, "biases on only some")
    llama_file(path, tiny_llama(len(spm["tokens"])), spm, extra_meta={"llama.expert_count": (V.UINT32, 8)})
    _refused(path, "mixture-of-experts")
