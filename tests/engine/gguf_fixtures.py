"""GGUF files written here the way llama.cpp's convert_hf_to_gguf.py writes them, from small random transformers
models, with tokenizers trained here: shared by the GGUF reader's tests and the engine's GGUF tests.

Each file has the converter's tensor names, metadata keys, the Llama q/k row permutation, GPT-2's transposed
Conv1D weights and duplicated output head, and a tokenizer written into the metadata as the converter writes it.
The reference is transformers reading the same file (`reference_model`, `reference_tokenizer`). transformers
refuses GGUF model loading unless `accelerate` is installed, which this project does not need; its GGUF path for
llama/qwen2/gpt2 never calls accelerate, so the guard is patched out for the reference.

gguf-py 0.19 dequantizes K-quants but cannot quantize them, so Q4_K/Q5_K/Q6_K tensors are written as random but
valid blocks (bounded scales): both readers then dequantize the very same blocks.
"""
from __future__ import annotations

import json

import gguf
import numpy as np
import torch
import transformers
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from gguf.quants import quantize
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away!",
    "Language models read text as tokens: pieces of words, whole words and punctuation.",
    "In 1969, 3 astronauts flew 384400 km to the Moon and back again in 8 days.",
    "I'm sure you're right, they'll see what we've done, and it's fine.",
    "Caf\u00e9 cr\u00e8me, na\u00efve fa\u00e7ade, \u00fcber stra\u00dfe: accents are text too.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "Tokenizers split text, then merge the most frequent pairs over and over again.",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>",
] * 4

CONTROL, USER_DEFINED, NORMAL, UNKNOWN, BYTE = 3, 4, 1, 2, 6


# ------------------------------------------------------------------------------------------------------
# Tokenizers, trained here and put in the form the converter writes.

def train_bpe() -> dict:
    """A byte-level BPE (GPT-2 style) vocabulary: tokens, token types and merges."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=380, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    tokens.append("<think>")  # a user-defined added token, as reasoning models have
    tokens.append("</think>")
    types = [CONTROL if t in specials else USER_DEFINED if t in ("<think>", "</think>") else NORMAL
             for t in tokens]
    return {"model": "gpt2", "tokens": tokens, "types": types, "merges": merges}


def train_spm() -> dict:
    """A SentencePiece-style BPE vocabulary as Llama 2 has it: <unk> <s> </s>, 256 byte tokens, scored pieces."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=420, show_progress=False))
    data = json.loads(tok.to_str())
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["model"]["merges"]]
    vocab = data["model"]["vocab"]
    merged = []
    for a, b in merges:
        if a + b not in merged:
            merged.append(a + b)
    chars = [t for t in sorted(vocab, key=vocab.get) if len(t) == 1]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + merged + chars
    scores = [0.0] * 259 + [-float(i) for i in range(len(merged))] + \
        [-float(len(merged) + i) for i in range(len(chars))]
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256 + [NORMAL] * (len(merged) + len(chars))
    return {"model": "llama", "tokens": tokens, "types": types, "scores": scores}


# ------------------------------------------------------------------------------------------------------
# Writing GGUF files the way convert_hf_to_gguf.py does.

def tokenizer_meta(tok: dict, pre: str | None, add_bos: bool, bos: int, eos: int, eot: int | None = None):
    meta = {"tokenizer.ggml.model": (V.STRING, tok["model"])}
    if pre is not None:
        meta["tokenizer.ggml.pre"] = (V.STRING, pre)
    meta["tokenizer.ggml.tokens"] = (V.ARRAY, tok["tokens"], V.STRING)
    if "scores" in tok:
        meta["tokenizer.ggml.scores"] = (V.ARRAY, tok["scores"], V.FLOAT32)
    meta["tokenizer.ggml.token_type"] = (V.ARRAY, tok["types"], V.INT32)
    if "merges" in tok:
        meta["tokenizer.ggml.merges"] = (V.ARRAY, tok["merges"], V.STRING)
    meta["tokenizer.ggml.bos_token_id"] = (V.UINT32, bos)
    meta["tokenizer.ggml.eos_token_id"] = (V.UINT32, eos)
    if eot is not None:
        meta["tokenizer.ggml.eot_token_id"] = (V.UINT32, eot)
    meta["tokenizer.ggml.add_bos_token"] = (V.BOOL, add_bos)
    meta["tokenizer.ggml.add_eos_token"] = (V.BOOL, False)
    meta["tokenizer.chat_template"] = (V.STRING, "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    return meta


def kquant_blocks(rows: int, cols: int, qtype, seed: int) -> np.ndarray:
    """Random valid K-quant blocks (gguf-py can't quantize K-quants): random bits, small f16 scales."""
    rng = np.random.default_rng(seed)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    d = np.full((blocks.shape[0], 1), 2e-5 if qtype == Q.Q6_K else 1e-4, dtype=np.float16).view(np.uint8)
    if qtype == Q.Q6_K:
        blocks[:, -2:] = d
    else:                                  # Q4_K / Q5_K: d, dmin lead the block
        blocks[:, 0:2] = d
        blocks[:, 2:4] = d
    return blocks.reshape(rows, cols // block * size)


def encode_tensor(x: np.ndarray, qtype, seed: int = 0):
    """(data, raw_dtype) for GGUFWriter.add_tensor."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if qtype == Q.F32:
        return x, None
    if qtype == Q.F16:
        return x.astype(np.float16), None
    if qtype in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
        return kquant_blocks(x.shape[0], x.shape[1], qtype, seed), qtype
    return quantize(x, qtype), qtype


def write_gguf(path, arch: str, meta: dict, tensors: list[tuple[str, np.ndarray, object]]):
    """A GGUF file from metadata {key: (type, value[, element type])} and (name, array, ggml type) tensors."""
    w = gguf.GGUFWriter(str(path), arch)
    for key, spec in meta.items():
        w.add_key_value(key, spec[1], spec[0], spec[2] if len(spec) > 2 else None)
    for k, (name, x, qtype) in enumerate(tensors):
        data, raw = encode_tensor(x, qtype, seed=k)
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute, verbatim in behaviour."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


LLAMA_NAMES = [("input_layernorm.weight", "attn_norm.weight"), ("post_attention_layernorm.weight", "ffn_norm.weight"),
                ("self_attn.q_proj.weight", "attn_q.weight"), ("self_attn.k_proj.weight", "attn_k.weight"),
                ("self_attn.v_proj.weight", "attn_v.weight"), ("self_attn.o_proj.weight", "attn_output.weight"),
                ("self_attn.q_proj.bias", "attn_q.bias"), ("self_attn.k_proj.bias", "attn_k.bias"),
                ("self_attn.v_proj.bias", "attn_v.bias"),
                ("mlp.gate_proj.weight", "ffn_gate.weight"), ("mlp.up_proj.weight", "ffn_up.weight"),
                ("mlp.down_proj.weight", "ffn_down.weight")]


def llama_file(path, model, tok: dict, *, arch="llama", types=None, pre=None, add_bos=True, bos=1, eos=2,
               eot=None, extra_meta=None, rope_freqs=None):
    """Write a LlamaForCausalLM / Qwen2ForCausalLM as convert_hf_to_gguf does; `types` picks each tensor's type."""
    cfg = model.config
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = cfg.hidden_size // n_head
    meta = {"general.name": (V.STRING, "Tiny " + arch),
            f"{arch}.block_count": (V.UINT32, cfg.num_hidden_layers),
            f"{arch}.context_length": (V.UINT32, cfg.max_position_embeddings),
            f"{arch}.embedding_length": (V.UINT32, cfg.hidden_size),
            f"{arch}.feed_forward_length": (V.UINT32, cfg.intermediate_size),
            f"{arch}.attention.head_count": (V.UINT32, n_head),
            f"{arch}.attention.head_count_kv": (V.UINT32, n_kv),
            f"{arch}.rope.freq_base": (V.FLOAT32, float(cfg.rope_parameters["rope_theta"])),
            f"{arch}.attention.layer_norm_rms_epsilon": (V.FLOAT32, cfg.rms_norm_eps),
            "general.file_type": (V.UINT32, 1)}
    if arch == "llama":
        meta[f"{arch}.vocab_size"] = (V.UINT32, cfg.vocab_size)
        meta[f"{arch}.rope.dimension_count"] = (V.UINT32, head_dim)
    meta.update(tokenizer_meta(tok, pre, add_bos, bos, eos, eot))
    meta.update(extra_meta or {})
    pick = types or (lambda name, x: Q.F32)
    tensors = []

    def add(name, x):
        tensors.append((name, x, Q.F32 if x.ndim == 1 else pick(name, x)))

    add("token_embd.weight", sd["model.embed_tokens.weight"])
    if rope_freqs is not None:
        tensors.append(("rope_freqs.weight", rope_freqs.astype(np.float32), Q.F32))
    for i in range(cfg.num_hidden_layers):
        for hf, g in LLAMA_NAMES:
            key = f"model.layers.{i}.{hf}"
            if key not in sd:
                continue
            x = sd[key]
            if arch == "llama" and g.startswith("attn_q."):
                x = permute(x, n_head, n_head)
            elif arch == "llama" and g.startswith("attn_k."):
                x = permute(x, n_head, n_kv)
            add(f"blk.{i}.{g}", x)
    add("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        add("output.weight", sd["lm_head.weight"])
    write_gguf(path, arch, meta, tensors)


def gpt2_file(path, model, tok: dict, *, types=None, pre="gpt-2", extra_meta=None):
    """Write a GPT2LMHeadModel as convert_hf_to_gguf's GPT2Model does (Conv1D transposed, output duplicated)."""
    cfg = model.config
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    eot = tok["tokens"].index("<|endoftext|>")
    meta = {"general.name": (V.STRING, "Tiny GPT-2"),
            "gpt2.block_count": (V.UINT32, cfg.n_layer), "gpt2.context_length": (V.UINT32, cfg.n_positions),  # the n_ctx of config.json
            "gpt2.embedding_length": (V.UINT32, cfg.n_embd),
            "gpt2.feed_forward_length": (V.UINT32, 4 * cfg.n_embd),
            "gpt2.attention.head_count": (V.UINT32, cfg.n_head),
            "gpt2.attention.layer_norm_epsilon": (V.FLOAT32, cfg.layer_norm_epsilon),
            "general.file_type": (V.UINT32, 0)}
    meta.update(tokenizer_meta(tok, pre, False, eot, eot))
    meta.update(extra_meta or {})
    pick = types or (lambda name, x: Q.F32)
    names = {"ln_1": "attn_norm", "ln_2": "ffn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
             "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    tensors = []

    def add(name, x):
        tensors.append((name, x, Q.F32 if x.ndim == 1 else pick(name, x)))

    add("token_embd.weight", sd["transformer.wte.weight"])
    add("output.weight", sd["transformer.wte.weight"])      # GPT-2's head is tied; the converter copies it
    add("position_embd.weight", sd["transformer.wpe.weight"])
    for i in range(cfg.n_layer):
        for hf, g in names.items():
            for kind in ("weight", "bias"):
                x = sd[f"transformer.h.{i}.{hf}.{kind}"]
                if kind == "weight" and not hf.startswith("ln_"):
                    x = x.T                                   # Conv1D (in, out) -> (out, in)
                add(f"blk.{i}.{g}.{kind}", x)
    add("output_norm.weight", sd["transformer.ln_f.weight"])
    add("output_norm.bias", sd["transformer.ln_f.bias"])
    write_gguf(path, "gpt2", meta, tensors)


# ------------------------------------------------------------------------------------------------------
# Small random transformers models (norms and biases perturbed so every mapping shows).

def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def tiny_llama(vocab: int, seed=0, **kw):
    torch.manual_seed(seed)
    args = {"vocab_size": vocab, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
            "tie_word_embeddings": True, "rms_norm_eps": 1e-5, **kw}
    return perturb(transformers.LlamaForCausalLM(transformers.LlamaConfig(**args)), seed)


def tiny_qwen2(vocab: int, seed=1):
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   tie_word_embeddings=False, rms_norm_eps=1e-6)
    return perturb(transformers.Qwen2ForCausalLM(cfg), seed)


def tiny_gpt2(vocab: int, seed=2):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)
    return perturb(transformers.GPT2LMHeadModel(cfg), seed)


def reference_model(path, monkeypatch, config=None):
    """transformers' own GGUF loader on the same file (its accelerate guard patched out, see the docstring).

    For GPT-2, transformers 5 maps the GGUF context length to `n_ctx`, which GPT2Config no longer has, and
    leaves `n_positions` at 1024, so its model can't take the file's position embedding: there the config
    of the original model is passed in, and transformers still reads every tensor from the file.
    """
    import transformers.modeling_utils as mu
    monkeypatch.setattr(mu, "is_accelerate_available", lambda: True)
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, config=config).eval()


def reference_tokenizer(path):
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
