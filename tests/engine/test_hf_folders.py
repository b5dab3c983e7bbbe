"""Hugging Face model folders opened directly: GPT-2 family layouts, memory-mapped weights, tokenizer.json,
chat prompts, end-of-turn stops, and every bad input as one line. transformers is the reference throughout."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub here: never try it
transformers = pytest.importorskip("transformers")

from hf_fixtures import CORPUS, GPT2_VOCAB, gpt2_folder, trained_gpt2  # noqa: E402

from engine.generation import generate, prepare_for_inference, stop_token_ids  # noqa: E402
from engine.hf_import import HFImportError, config_from_hf, import_hf_folder  # noqa: E402
from engine.sampling import SamplingConfig  # noqa: E402
from engine.sources import HF_FOLDER, SourceError, open_model, open_tokenizer, resolve_source  # noqa: E402
from engine.tokenizers import chat_prompt_ids  # noqa: E402

PROMPTS = ["Hello world! The", "def main", "Café naïve", "User: what is"]
MESSAGES = [{"role": "user", "content": "what is 2+2?"}, {"role": "assistant", "content": "2+2 is 4."},
            {"role": "user", "content": "and 3+3?"}]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return gpt2_folder(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    return gpt2_folder(tmp_path_factory.mktemp("gpt2-sharded"), max_shard_size="20KB")


@pytest.fixture(scope="module")
def hf_model():
    return trained_gpt2()


def hf_greedy(model, ids: list[int], n: int, eos=None, penalty: float = 1.0) -> list[int]:
    """transformers' greedy generate(): the new ids."""
    config = transformers.GenerationConfig(do_sample=False, max_new_tokens=n, eos_token_id=eos, pad_token_id=0,
                                           repetition_penalty=penalty)
    model.generation_config.eos_token_id = None  # only `eos` may end the text
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(x, generation_config=config, attention_mask=torch.ones_like(x))
    return out[0, len(ids):].tolist()


def test_logits_equal_transformers_single_and_sharded(folder, sharded, hf_model):
    assert (sharded / "model.safetensors.index.json").is_file() and not (sharded / "model.safetensors").exists()
    assert len(list(sharded.glob("model-*.safetensors"))) > 2
    idx = torch.randint(0, 420, (2, 60), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf_model(idx).logits
    for path in (folder, sharded):
        opened = open_model(path)
        assert opened.source.kind == HF_FOLDER and opened.model.config.vocab_size == GPT2_VOCAB
        assert next(opened.model.parameters()).dtype == torch.float32
        with torch.no_grad():
            got = opened.model(idx)[0]
        assert (got - expected).abs().max().item() <= 1e-4


def test_weights_are_memory_mapped_not_copied(folder):
    model = open_model(folder).model
    maps = [line.split() for line in Path("/proc/self/maps").read_text().splitlines()
            if line.endswith(str((folder / "model.safetensors").resolve()))]
    ranges = [tuple(int(x, 16) for x in m[0].split("-")) for m in maps]
    assert ranges, "model.safetensors is not mapped"

    def mapped(t: torch.Tensor) -> bool:
        return any(lo <= t.data_ptr() < hi for lo, hi in ranges)

    params = list(model.parameters())
    assert all(mapped(p) for p in params)  # every parameter lives in the file's pages: no second copy
    qkv = model.blocks[0].attn.qkv.weight
    assert not qkv.is_contiguous() and qkv.t().is_contiguous()  # a transposed view of Conv1D's (in, out)
    assert model.head.weight is model.tok_emb.weight


def test_bf16_model_stays_bf16(tmp_path, hf_model):
    path = gpt2_folder(tmp_path / "bf16", dtype=torch.bfloat16)
    model = open_model(path).model
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert prepare_for_inference(model, "bf16") is model  # generating in bf16 makes no copy
    as_fp32 = open_model(path, dtype="fp32").model  # asked for fp32: converted once
    reference = transformers.GPT2LMHeadModel.from_pretrained(str(path), dtype=torch.float32).eval()
    idx = torch.arange(40).unsqueeze(0)
    with torch.no_grad():
        assert (as_fp32(idx)[0] - reference(idx).logits).abs().max().item() <= 1e-4
        diff = (model(idx)[0].float() - reference(idx).logits).abs().max().item()
    assert diff < 0.5  # bf16 arithmetic, same weights


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_continuations_equal_generate(folder, hf_model, penalty):
    opened = open_model(folder)
    for prompt in PROMPTS:
        ids = opened.tokenizer.encode(prompt)
        ours = generate(opened.model, opened.tokenizer, prompt,
                        SamplingConfig(greedy=True, repetition_penalty=penalty, max_new_tokens=40))
        assert ours.prompt_ids == ids
        assert ours.ids == hf_greedy(hf_model, ids, 40, penalty=penalty), prompt
    assert len(set(ours.ids)) > 10  # trained: greedy decoding says something


def test_token_ids_equal_tokenizers(folder):
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ours = open_tokenizer(folder)
    texts = [*CORPUS[:4], "<|im_start|>user\nhi<|im_end|>\n", "a <|endoftext|> b", "", " \t\n😀"]
    for text in texts:
        assert ours.encode(text) == reference.encode(text, add_special_tokens=False).ids, text
    assert ours.vocab_size == reference.get_vocab_size() < GPT2_VOCAB and ours.chat_template


def test_chat_prompt_ids_equal_apply_chat_template(folder, tmp_path):
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = open_tokenizer(folder)
    for messages in (MESSAGES[:1], MESSAGES, [{"role": "system", "content": "Be brief."}, *MESSAGES]):
        expected = reference.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        expected = expected["input_ids"] if isinstance(expected, dict) or hasattr(expected, "keys") else expected
        assert chat_prompt_ids(ours, messages) == list(expected)
    # The tokenizer (template, end-of-turn ids) travels inside a checkpoint made by import-hf.
    from engine.checkpoint import load_checkpoint
    from engine.cli import main

    out = tmp_path / "chat.safetensors"
    assert main(["import-hf", str(folder), "--out", str(out)]) == 0
    restored = load_checkpoint(out).tokenizer
    assert chat_prompt_ids(restored, MESSAGES) == chat_prompt_ids(ours, MESSAGES)
    assert stop_token_ids(restored) == stop_token_ids(ours) == {0, 2}


def test_generation_stops_at_an_end_of_turn_id(folder, hf_model, tmp_path):
    ids = open_tokenizer(folder).encode("Hello world! The")
    free = hf_greedy(hf_model, ids, 12)
    stop = free[4]
    assert stop not in free[:4] and stop not in (0, 2)
    # generation_config.json lists the end-of-turn ids: here the model's 5th greedy token is one of them.
    copy = Path(shutil.copytree(folder, tmp_path / "eot"))
    (copy / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, stop]}))
    opened = open_model(copy)
    assert stop_token_ids(opened.tokenizer) == {2, stop}  # (2, <|im_end|>, is also the eos_token)
    result = generate(opened.model, opened.tokenizer, "Hello world! The",
                      SamplingConfig(greedy=True, max_new_tokens=12, stop_at_eot=True))
    assert result.stop_reason == "eot" and result.ids == free[:5]
    assert result.ids == hf_greedy(hf_model, ids, 12, eos=[2, stop])
    # Without stop_at_eot every token is generated.
    assert generate(opened.model, opened.tokenizer, "Hello world! The",
                    SamplingConfig(greedy=True, max_new_tokens=12)).ids == free


def test_padded_embedding_table_generates_past_the_tokenizer(folder):
    opened = open_model(folder)
    assert opened.tokenizer.vocab_size < opened.model.config.vocab_size
    assert opened.tokenizer.decode([GPT2_VOCAB - 1]) == "\ufffd"  # an id only the model has
    result = generate(opened.model, opened.tokenizer, "Hi", SamplingConfig(temperature=5.0, max_new_tokens=50, seed=1))
    assert len(result.ids) == 50 and isinstance(result.text, str)


def test_gpt2_family_configs_match_transformers():
    sizes = {"gpt2": (768, 12, 12), "gpt2-medium": (1024, 24, 16), "gpt2-large": (1280, 36, 20),
             "gpt2-xl": (1600, 48, 25), "distilgpt2": (768, 6, 12)}
    for name, (emb, layers, heads) in sizes.items():
        hf = transformers.GPT2Config(n_embd=emb, n_layer=layers, n_head=heads)
        data = hf.to_dict()
        if name == "distilgpt2":
            data.update(n_ctx=1024, _num_labels=1)  # distilgpt2's config.json carries these
        config = config_from_hf(data)
        with torch.device("meta"):
            reference = transformers.GPT2LMHeadModel(hf).num_parameters()
        assert config.num_params() == reference, name
        assert (config.emb_dim, config.n_layers, config.n_heads, config.context_length) == (emb, layers, heads, 1024)


def test_distilgpt2_shaped_folder_with_vocab_and_merges(tmp_path):
    """The oldest layout: n_ctx, no tokenizer.json, a GPT-2 BPE in vocab.json + merges.txt, distilgpt2's fields."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False)
    bpe.save_model(str(tmp_path))
    torch.manual_seed(1)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=3, n_head=4, n_embd=32, vocab_size=400,
                                                                 n_positions=32)).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(n_ctx=32, _num_labels=1, architectures=["GPT2LMHeadModel"])
    config.pop("n_positions")
    (tmp_path / "config.json").write_text(json.dumps(config))
    opened = open_model(tmp_path)
    assert opened.tokenizer.type_name != "hf" and opened.model.config.context_length == 32
    reference = transformers.GPT2Tokenizer.from_pretrained(str(tmp_path))
    text = "The quick brown fox"
    assert opened.tokenizer.encode(text) == reference.encode(text)
    idx = torch.tensor([reference.encode(text)])
    with torch.no_grad():
        assert (opened.model(idx)[0] - model(idx).logits).abs().max().item() <= 1e-4


# ---------------------------------------------------------------- bad input: one line naming the file

def broken_copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "broken"))


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("changes, words", [
    ({"model_type": "gemma"}, "unsupported model_type 'gemma' (supported: gpt2, llama, mistral, qwen2)"),
    ({"model_type": "bert"}, "unsupported model_type 'bert'"),
    ({"activation_function": "relu"}, "activation_function"),
    ({"n_inner": 100}, "n_inner"),
    ({"scale_attn_weights": False}, "scale_attn_weights"),
    ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon"),
    ({"n_embd": 64}, "shape"),
    ({"n_embd": 32.5}, "n_embd must be a whole number"),
    ({"n_layer": 10**6}, "n_layers must be between"),  # refused before anything is allocated
    ({"n_positions": 10**9}, "context_length must be between"),
])
def test_bad_configs_are_one_line(folder, tmp_path, changes, words):
    broken = broken_copy(folder, tmp_path)
    edit_config(broken, **changes)
    with pytest.raises(HFImportError) as info:
        open_model(broken)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_missing_and_broken_files_are_named(folder, sharded, tmp_path):
    broken = Path(shutil.copytree(sharded, tmp_path / "shards"))
    shard = sorted(broken.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(HFImportError, match=f"{shard.name} is missing"):
        open_model(broken)

    single = broken_copy(folder, tmp_path)
    data = (single / "model.safetensors").read_bytes()
    (single / "model.safetensors").write_bytes(data[:len(data) // 2])  # a cut-off download
    with pytest.raises(HFImportError, match="cannot read model.safetensors"):
        open_model(single)
    (single / "model.safetensors").write_bytes(data)
    (single / "tokenizer.json").write_text('{"model": {"type": "Nope"}}')
    with pytest.raises(HFImportError, match="tokenizers library refused tokenizer.json"):
        open_model(single)
    (single / "tokenizer.json").unlink()
    with pytest.raises(HFImportError, match="no tokenizer"):
        open_model(single)
    (single / "config.json").unlink()
    with pytest.raises(SourceError, match="without config.json"):
        resolve_source(single)


def test_extra_or_missing_tensors(folder, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = broken_copy(folder, tmp_path)
    tensors = load_file(str(broken / "model.safetensors"))
    save_file({**tensors, "h.0.attn.extra": torch.zeros(2)}, str(broken / "model.safetensors"))
    with pytest.raises(HFImportError, match="tensors a GPT-2 doesn't have: h.0.attn.extra"):
        open_model(broken)
    del tensors["transformer.h.1.mlp.c_fc.bias"]  # (save_pretrained keeps the prefix)
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(HFImportError, match="model.safetensors: no tensor 'h.1.mlp.c_fc.bias'"):
        open_model(broken)


def test_import_hf_keeps_the_old_api_in_fp32(folder):
    model, tokenizer = import_hf_folder(folder)
    assert next(model.parameters()).dtype == torch.float32 and tokenizer.type_name == "hf"


def test_nan_weights_are_refused_but_huge_finite_ones_are_not(folder, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = broken_copy(folder, tmp_path)
    tensors = load_file(str(broken / "model.safetensors"))
    name = "transformer.h.0.mlp.c_fc.weight"
    huge = tensors[name].clone()
    huge[:2] = 3e38  # finite, but their sum overflows: the element-by-element check decides
    save_file({**tensors, name: huge}, str(broken / "model.safetensors"))
    assert open_model(broken).model.blocks[0].mlp.fc.weight.max().item() == pytest.approx(3e38)
    nan = tensors[name].clone()
    nan[3, 4] = float("nan")
    save_file({**tensors, name: nan}, str(broken / "model.safetensors"))
    with pytest.raises(HFImportError, match="h.0.mlp.c_fc.weight holds NaN or infinite values"):
        open_model(broken)
