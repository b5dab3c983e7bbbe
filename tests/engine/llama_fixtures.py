"""Small llama-family model folders made here with transformers (no network): Llama, Qwen2 and Mistral.

- llama: `LlamaForCausalLM` with grouped-query attention (4 query heads, 2 key/value heads), a tied head and
  Llama 3 rope scaling, beside the SentencePiece-style tokenizer.json of hf_fixtures (BOS added, a Llama-3-style
  chat template, end of turn <|eot_id|>);
- qwen2: `Qwen2ForCausalLM` with q/k/v biases and an untied head, beside the byte-level ChatML tokenizer of
  hf_fixtures given Qwen2's pre-tokenizer and NFC normalizer (transformers' Qwen2Tokenizer imposes both, as real
  Qwen2 tokenizer.json files have them), its embedding table padded beyond the tokenizer's vocabulary as Qwen's is;
- mistral: `MistralForCausalLM` (sliding window longer than its context), SentencePiece-style tokenizer.

Each is trained for a few dozen steps on a short repetitive text (once per session), so that greedy decoding
follows the text instead of repeating one token, then its norms and biases are nudged off their initial values
so that every mapping shows. `llama_folder(kind, folder)` saves one with save_pretrained.
"""
from __future__ import annotations

from functools import cache
from pathlib import Path

from hf_fixtures import (
    CHATML_TEMPLATE,
    CORPUS,
    bytelevel_json,
    sentencepiece_folder,
    sentencepiece_json,
    train_briefly,
    write_folder,
)

KINDS = ("llama", "qwen2", "mistral")
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}


QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
               r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")


@cache
def qwen2_json() -> str:
    """hf_fixtures' byte-level ChatML tokenizer with Qwen2's pre-tokenizer and NFC normalizer."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers

    tok = Tokenizer.from_str(bytelevel_json())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return tok.to_str()


def qwen2_tokenizer_folder(folder: Path) -> Path:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(qwen2_json())
    ids = [tok.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>")]
    config = {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>", "chat_template": CHATML_TEMPLATE, "model_max_length": 4096}
    return write_folder(folder, qwen2_json(), config, {"eos_token_id": ids})


def _tokenizer_json(kind: str) -> str:
    return qwen2_json() if kind == "qwen2" else sentencepiece_json()


def _config(kind: str, vocab: int):
    import transformers

    shape = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 128}
    if kind == "llama":
        return transformers.LlamaConfig(vocab_size=vocab, tie_word_embeddings=True, rms_norm_eps=1e-5,
                                        rope_parameters={**LLAMA3_ROPE, "rope_theta": 500000.0}, **shape)
    if kind == "qwen2":
        return transformers.Qwen2Config(vocab_size=vocab, tie_word_embeddings=False, rms_norm_eps=1e-6, **shape)
    return transformers.MistralConfig(vocab_size=vocab, tie_word_embeddings=False, sliding_window=4096, **shape)


def model_class(kind: str):
    import transformers

    return {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM,
            "mistral": transformers.MistralForCausalLM}[kind]


@cache
def _trained_state(kind: str) -> tuple[dict, dict]:
    """(config dict, state dict) of the small model of `kind`, trained on CORPUS with its tokenizer."""
    import torch
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(_tokenizer_json(kind))
    vocab = tok.get_vocab_size()
    vocab += 64 - vocab % 64  # padded to a multiple of 64, beyond the tokenizer's ids
    ids = [i for text in CORPUS[:4] for i in tok.encode(text).ids]
    # The trained vocabularies may hold whole sentences as one token: repeat to a few hundred tokens at least.
    data = torch.tensor(ids * max(4, -(-512 // len(ids))))
    torch.manual_seed(0)
    config = _config(kind, vocab)
    model = model_class(kind)(config)
    generator = train_briefly(model, data, steps=80, batch=8, length=48)
    with torch.no_grad():  # norms and biases move away from their init too
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    return config.to_dict(), {k: v.detach().clone() for k, v in model.state_dict().items()}


def trained_model(kind: str):
    """A fresh copy of the trained small model of `kind` (eval mode, fp32)."""
    config, state = _trained_state(kind)
    cls = model_class(kind)
    model = cls(cls.config_class.from_dict(config))
    model.load_state_dict(state)
    return model.eval()


def llama_folder(kind: str, folder: Path, *, dtype=None, max_shard_size: str | None = None) -> Path:
    """The trained model of `kind` saved with save_pretrained, with its tokenizer files."""
    model = trained_model(kind)
    if dtype is not None:
        model = model.to(dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    return qwen2_tokenizer_folder(folder) if kind == "qwen2" else sentencepiece_folder(folder)
