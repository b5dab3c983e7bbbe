"""Small Hugging Face tokenizer folders trained here (no network), shared by the HF tokenizer/chat/hub tests.

- `bytelevel_folder`: a GPT-2-style byte-level BPE with ChatML special tokens and a ChatML template
  (eos <|im_end|>, no BOS, generation_config ending turns on <|im_end|> and <|endoftext|>).
- `sentencepiece_folder`: a Llama-2-style tokenizer (Metaspace pre-tokenizer, BPE with byte fallback,
  `<0x00>`..`<0xFF>` in the model vocabulary, decoder Replace/ByteFallback/Fuse/Strip), add_bos_token, and a
  Llama-3-style template that writes bos_token and raises on a bad role.
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

CORPUS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "Café naïve résumé — déjà vu; 日本語のテキスト and emoji 😀🎉.",
    "def main():\n    print('hi')\n\n\nreturn x + y * 2\t# tabs",
    "User: what is 2+2?\nAssistant: 2+2 is 4.",
] * 20

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA3_TEMPLATE = """{{ bos_token }}
{%- for message in messages %}
    {%- if message['role'] not in ['system', 'user', 'assistant'] %}
        {{- raise_exception('Unknown role: ' + message['role']) }}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA_SPECIALS = ["<unk>", "<s>", "</s>"]
LLAMA3_SPECIALS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]


@cache
def bytelevel_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=CHATML_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok.to_str()


@cache
def sentencepiece_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    # A small alphabet so that rarer characters (Japanese, emoji) go through byte fallback.
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=LLAMA_SPECIALS + BYTE_TOKENS, show_progress=False,
                                  limit_alphabet=60)
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens(LLAMA3_SPECIALS)
    # As Llama 2's tokenizer.json: encode(text) (with special tokens) starts with <s>.
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    spec = json.loads(tok.to_str())
    # As in Llama's tokenizer.json: the byte tokens live in the model's vocabulary, not among added tokens.
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in BYTE_TOKENS]
    return json.dumps(spec, ensure_ascii=False)


def write_folder(folder: Path, tokenizer_json: str, config: dict, generation: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    if generation is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation), encoding="utf-8")
    return folder


def bytelevel_folder(folder: Path) -> Path:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(bytelevel_json())
    ids = [tok.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>")]
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>", "chat_template": CHATML_TEMPLATE, "model_max_length": 4096}
    return write_folder(folder, bytelevel_json(), config, {"eos_token_id": ids})


def sentencepiece_folder(folder: Path) -> Path:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(sentencepiece_json())
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": True, "add_eos_token": False,
              "bos_token": {"__type": "AddedToken", "content": "<s>", "special": True},
              "eos_token": "</s>", "unk_token": "<unk>", "chat_template": LLAMA3_TEMPLATE}
    return write_folder(folder, sentencepiece_json(), config,
                        {"bos_token_id": 1, "eos_token_id": [tok.token_to_id("</s>"), tok.token_to_id("<|eot_id|>")]})


# ---------------------------------------------------------------- a small GPT-2 model folder

GPT2_VOCAB = 448  # the byte-level tokenizer has ~410 tokens: the embedding table is padded, as Qwen's is


def train_briefly(model, data, *, steps: int, batch: int, length: int):
    """AdamW at lr 1e-2 on random windows of `data` (a 1-D id tensor), one thread; returns the generator that
    drew the windows (seeded 0), for whatever the caller draws next."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    # One thread: on a busy shared CPU, two OpenMP threads waiting on each other make tiny steps 30x slower.
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            starts = torch.randint(0, len(data) - length - 1, (batch,), generator=generator)
            windows = torch.stack([data[s:s + length] for s in starts])
            loss = model(windows, labels=windows).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return generator


@cache
def _trained_gpt2_state() -> tuple[dict, dict]:
    """(config dict, state dict) of a 2-layer, 32-wide GPT2LMHeadModel trained for a few seconds on CORPUS with
    the byte-level tokenizer, so that greedy decoding follows the text instead of repeating one token."""
    import torch
    import transformers
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(bytelevel_json())
    ids = [i for text in CORPUS[:4] for i in tok.encode(text).ids + [tok.token_to_id("<|endoftext|>")]]
    data = torch.tensor(ids * 4)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=GPT2_VOCAB, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    generator = train_briefly(model, data, steps=100, batch=16, length=64)
    with torch.no_grad():  # LayerNorm biases etc. move away from their init too
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.01)
    return config.to_dict(), {k: v.detach().clone() for k, v in model.state_dict().items()}


def trained_gpt2():
    """A fresh copy of the trained small GPT-2 (eval mode)."""
    import transformers

    config, state = _trained_gpt2_state()
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config.from_dict(config))
    model.load_state_dict(state)
    return model.eval()


def gpt2_folder(folder: Path, *, max_shard_size: str | None = None, dtype=None) -> Path:
    """The trained small GPT-2 saved with save_pretrained (sharded when max_shard_size is given, in `dtype` when
    given), with the ChatML byte-level tokenizer.json, tokenizer_config.json and generation_config.json."""
    model = trained_gpt2()
    if dtype is not None:
        model = model.to(dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    return bytelevel_folder(folder)
