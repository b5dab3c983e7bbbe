"""HFTokenizer: ids equal `tokenizers` and transformers, token bytes / decode right, checkpoint state validated."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hf_fixtures import (
    CHATML_TEMPLATE,
    LLAMA3_TEMPLATE,
    bytelevel_folder,
    bytelevel_json,
    sentencepiece_folder,
    sentencepiece_json,
)

from engine.tokenizers import tokenizer_from_dict
from engine.tokenizers.hf import (
    MAX_CHAT_TEMPLATE_CHARS,
    HFTokenizer,
    HFTokenizerConfig,
    load_hf_tokenizer,
    read_tokenizer_config,
)

TEXTS = [
    "",
    "Hello world",
    " leading space",
    "trailing spaces   ",
    "a\n\nb\r\n\tc",
    "\n",
    "Café naïve 日本語のテキスト 😀🎉 Ω≈ç",
    "<|im_start|>user\nhey<|im_end|>\n",
    "<s>Hi</s> there <unk>",
    "<|eot_id|><|start_header_id|>",
    "<|endoftext|>",
    "<0x41> looks like a byte token",
    "def main():\n    return 1\n",
    "x" * 300,
]

KINDS = ["bytelevel", "sentencepiece"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hf-tok")
    return {"bytelevel": bytelevel_folder(base / "bytelevel"), "sentencepiece": sentencepiece_folder(base / "sp")}


@pytest.fixture(scope="module")
def transformers_tokenizers(folders):
    transformers = pytest.importorskip("transformers")
    return {k: transformers.AutoTokenizer.from_pretrained(str(f)) for k, f in folders.items()}


def raw(folder: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


@pytest.mark.parametrize("kind", KINDS)
def test_ids_and_decode_equal_tokenizers(folders, kind):
    ours, theirs = load_hf_tokenizer(folders[kind]), raw(folders[kind])
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == theirs.encode(text, add_special_tokens=False).ids, text
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=False), text
        # Streaming decodes by concatenating token bytes: in mid-text that is the same text.
        prefix = ours.encode("ok")
        assert ours.decode(prefix + ids) == theirs.decode(prefix + ids, skip_special_tokens=False), text


@pytest.mark.parametrize("kind", KINDS)
def test_special_tokens_in_text_become_ids(folders, kind):
    tok = load_hf_tokenizer(folders[kind])
    for text, special_id in tok.special_tokens.items():
        assert tok.encode(text) == [special_id]
        assert tok.token_bytes(special_id) == text.encode()
        assert tok.decode([special_id]) == text


def test_token_bytes_byte_level(folders):
    tok = load_hf_tokenizer(folders["bytelevel"])
    assert tok.decode_bytes(tok.encode(" \n")) == b" \n"
    emoji = tok.encode("😀")
    assert b"".join(tok.token_bytes(i) for i in emoji) == "😀".encode()
    # Every ordinary token's bytes are what `tokenizers` decodes it to when it stands alone (whole characters).
    theirs = raw(folders["bytelevel"])
    for i in range(tok.vocab_size):
        data = tok.token_bytes(i)
        try:
            assert data.decode("utf-8") == theirs.decode([i], skip_special_tokens=False), i
        except UnicodeDecodeError:
            pass  # part of a character: tokenizers shows U+FFFD there


def test_token_bytes_sentencepiece(folders):
    tok = load_hf_tokenizer(folders["sentencepiece"])
    for b in (0x00, 0x0A, 0x41, 0xE2, 0xFF):
        assert tok.token_bytes(tok.token_to_id(f"<0x{b:02X}>")) == bytes([b])
    word = tok.token_to_id("\u2581the")
    if word is not None:
        assert tok.token_bytes(word) == b" the"  # mid-text: the space stays
    ids = tok.encode("Ωж 🦀")  # not in the corpus: byte fallback
    assert any(tok.render_token(i).startswith("\\x") for i in ids)
    assert tok.decode(ids) == "Ωж 🦀"
    # The space the tokenizer prepends is dropped at the start of a decode only.
    assert tok.decode(tok.encode("Hello")) == "Hello"
    assert tok.decode_bytes(tok.encode("Hello world"))[:1] == b"H"


@pytest.mark.parametrize("kind", KINDS)
def test_surrogates(folders, kind):
    tok, theirs = load_hf_tokenizer(folders[kind]), raw(folders[kind])
    assert tok.encode("a\ud800b") == theirs.encode("a\ufffdb", add_special_tokens=False).ids
    assert tok.encode("\ud83d\ude00") == tok.encode("😀")  # a pair written as two code points
    assert tok.decode(tok.encode("x\udfffy")) == "x\ufffdy"


def test_out_of_range_ids_decode_to_replacement(folders):
    tok = load_hf_tokenizer(folders["bytelevel"])
    assert tok.token_bytes(tok.vocab_size + 5) == "\ufffd".encode()
    assert tok.token_bytes(-1) == "\ufffd".encode()


def test_special_token_info(folders):
    bl = load_hf_tokenizer(folders["bytelevel"])
    im_end, eot = bl.token_to_id("<|im_end|>"), bl.token_to_id("<|endoftext|>")
    assert bl.eot_id == im_end and set(bl.eos_ids) == {im_end, eot}
    assert bl.bos_id is None and not bl.add_bos
    assert bl.encode("hi", add_special=True) == bl.encode("hi")
    assert bl.vocab_size == raw(folders["bytelevel"]).get_vocab_size(with_added_tokens=True)
    assert bl.chat_template == CHATML_TEMPLATE

    sp = load_hf_tokenizer(folders["sentencepiece"])
    assert sp.bos_id == sp.token_to_id("<s>") and sp.add_bos
    assert sp.eot_id == sp.token_to_id("</s>")
    assert set(sp.eos_ids) == {sp.token_to_id("</s>"), sp.token_to_id("<|eot_id|>")}
    assert sp.encode("hi", add_special=True) == [sp.bos_id, *sp.encode("hi")]
    assert {"<s>", "</s>", "<unk>", "<|eot_id|>"} <= set(sp.special_tokens)
    assert sp.config.special_tokens["bos_token"] == "<s>"  # read from an AddedToken object in the config
    assert "SentencePiece" in sp.describe() and "byte-level" in bl.describe()


def test_add_bos_token_false_wins_over_the_post_processor(tmp_path):
    folder = sentencepiece_folder(tmp_path / "sp")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["add_bos_token"] = False
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tok = load_hf_tokenizer(folder)
    assert not tok.add_bos and tok.encode("hi", add_special=True) == tok.encode("hi")


def test_chat_template_jinja_wins(tmp_path):
    folder = bytelevel_folder(tmp_path / "bl")
    (folder / "chat_template.jinja").write_text(LLAMA3_TEMPLATE, encoding="utf-8")
    assert read_tokenizer_config(folder).chat_template == LLAMA3_TEMPLATE
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "tool_use", "template": "x"}, {"name": "default", "template": "d"}]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").unlink()
    assert read_tokenizer_config(folder).chat_template == "d"


@pytest.mark.parametrize("kind", KINDS)
def test_ids_equal_transformers(folders, transformers_tokenizers, kind):
    ours, theirs = load_hf_tokenizer(folders[kind]), transformers_tokenizers[kind]
    for text in TEXTS:
        assert ours.encode(text) == theirs(text, add_special_tokens=False)["input_ids"], text
        assert ours.encode(text, add_special=True) == theirs.encode(text), text
        ids = ours.encode(text)
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=False), text


@pytest.mark.parametrize("kind", KINDS)
def test_state_round_trip(folders, kind):
    tok = load_hf_tokenizer(folders[kind])
    state = json.loads(json.dumps(tok.to_dict()))
    again = tokenizer_from_dict(state)
    assert isinstance(again, HFTokenizer)
    assert again.to_dict() == tok.to_dict()
    for text in TEXTS:
        assert again.encode(text) == tok.encode(text)
        assert again.encode(text, add_special=True) == tok.encode(text, add_special=True)
    for attr in ("eot_id", "eos_ids", "bos_id", "add_bos", "vocab_size"):
        assert getattr(again, attr) == getattr(tok, attr), attr
    assert again.chat_template == tok.chat_template and again.name == tok.name


def good_state() -> dict:
    return HFTokenizer(sentencepiece_json(), HFTokenizerConfig(special_tokens={"bos_token": "<s>"}, eos_ids=(2,))
                       ).to_dict()


HOSTILE = [
    ("tokenizer_json", None, "'tokenizer_json' must be a string"),
    ("tokenizer_json", "{not json", "not JSON"),
    ("tokenizer_json", "[]", "must be an object with a 'model'"),
    ("tokenizer_json", json.dumps({"version": "1.0", "model": {"type": "Nope"}}), "tokenizers library refused"),
    ("tokenizer_json", "x" * (64 * 1024 * 1024 + 1), "more than the"),
    ("name", 5, "'name' must be a string"),
    ("name", "n" * 10_000, "more than the"),
    ("special_tokens", [], "must map names"),
    ("special_tokens", {"evil_token": "x"}, "unknown name"),
    ("special_tokens", {"eos_token": 3}, "must be a string"),
    ("special_tokens", {"eos_token": "x" * 5000}, "more than the"),
    ("extra_special_tokens", "abc", "must be a list"),
    ("extra_special_tokens", [1], "must be a string"),
    ("add_bos", "yes", "true, false or null"),
    ("add_eos", 1, "true, false or null"),
    ("chat_template", 42, "must be a string"),
    ("chat_template", "x" * (MAX_CHAT_TEMPLATE_CHARS + 1), "more than the"),
    ("eos_ids", 2, "list of at most"),
    ("eos_ids", [True], "list of at most"),
    ("eos_ids", [-1], "list of at most"),
    ("eos_ids", list(range(100)), "list of at most"),
    ("eos_ids", [10**9], "outside the vocabulary"),
    ("surprise", 1, "unknown field"),
]


@pytest.mark.parametrize("key,value,message", HOSTILE, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(HOSTILE)])
def test_hostile_state_is_one_clear_line(key, value, message):
    state = good_state()
    state[key] = value
    with pytest.raises(ValueError) as info:
        tokenizer_from_dict(state)
    text = str(info.value)
    assert message in text and "\n" not in text and len(text) < 400


def test_not_a_dict():
    with pytest.raises(ValueError):
        HFTokenizer.from_dict([])  # type: ignore[arg-type]


def test_bad_folders(tmp_path):
    with pytest.raises(ValueError, match="no tokenizer.json"):
        load_hf_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": 3}}')
    with pytest.raises(ValueError, match="tokenizers library refused") as info:
        load_hf_tokenizer(tmp_path)
    assert "\n" not in str(info.value)
    (tmp_path / "tokenizer.json").write_text(bytelevel_json())
    (tmp_path / "tokenizer_config.json").write_text("{oops")
    with pytest.raises(ValueError, match="tokenizer_config.json is not valid JSON"):
        load_hf_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": [0, "x", -3]}')
    tok = load_hf_tokenizer(tmp_path)  # junk ids in generation_config are ignored
    assert tok.eos_ids == (0,)


def test_explicit_bos_and_eos_flags():
    tok = HFTokenizer(bytelevel_json(), HFTokenizerConfig(
        special_tokens={"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}, add_bos=True, add_eos=True))
    assert tok.add_bos and tok.encode("hi", add_special=True) == [tok.bos_id, *tok.encode("hi"), tok.eot_id]


def test_checkpoint_rebuilds_the_tokenizer(folders, tmp_path):
    import torch

    from engine.checkpoint import load_checkpoint, save_checkpoint
    from engine.config import ModelConfig
    from engine.model import GPT

    tok = load_hf_tokenizer(folders["sentencepiece"])
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, context_length=8, emb_dim=16, n_heads=2, n_layers=1))
    path = save_checkpoint(tmp_path / "m.safetensors", model, tok)
    again = load_checkpoint(path).tokenizer
    assert isinstance(again, HFTokenizer) and again.to_dict() == tok.to_dict()
    assert again.encode("Hello <s> world", add_special=True) == tok.encode("Hello <s> world", add_special=True)
