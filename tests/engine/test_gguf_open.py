"""GGUF files opened through the engine (engine.sources / engine.gguf_import) and the command line, against
transformers' own GGUF loader on the same files (tests/engine/gguf_fixtures.py writes them as llama.cpp does)."""
from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
from gguf_fixtures import (  # noqa: E402
    Q,
    gpt2_file,
    llama_file,
    reference_model,
    reference_tokenizer,
    tiny_gpt2,
    tiny_llama,
    train_bpe,
    train_spm,
)

from engine.checkpoint import load_checkpoint  # noqa: E402
from engine.cli import main  # noqa: E402
from engine.cli.train import _describe_gguf  # noqa: E402
from engine.generation import decoder_for, generate  # noqa: E402
from engine.gguf_reader import GGUFError  # noqa: E402
from engine.sampling import SamplingConfig  # noqa: E402
from engine.sources import GGUF, open_model, open_tokenizer, resolve_source  # noqa: E402
from engine.tokenizers import chat_prompt_ids  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a busy CPU
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    spm, bpe = train_spm(), train_bpe()
    folder = tmp_path_factory.mktemp("gguf")
    llama = tiny_llama(len(spm["tokens"]), num_hidden_layers=2)
    gpt2 = tiny_gpt2(len(bpe["tokens"]))
    llama_file(folder / "llama-f32.gguf", llama, spm)
    llama_file(folder / "llama-q8.gguf", llama, spm, types=lambda name, x: Q.Q8_0 if "ffn" in name else Q.F16)
    gpt2_file(folder / "gpt2-f32.gguf", gpt2, bpe)
    gpt2_file(folder / "gpt2-q8.gguf", gpt2, bpe, types=lambda name, x: Q.Q8_0)
    return {"folder": folder, "gpt2_config": gpt2.config}


def _reference(files, name, monkeypatch):
    config = files["gpt2_config"] if name.startswith("gpt2") else None
    return reference_model(files["folder"] / name, monkeypatch, config)


@pytest.mark.parametrize("name", ["llama-f32.gguf", "gpt2-f32.gguf", "llama-q8.gguf", "gpt2-q8.gguf"])
def test_logits_and_greedy_continuations_equal_transformers(name, files, monkeypatch):
    path = files["folder"] / name
    opened = open_model(path)
    assert opened.source.kind == GGUF and opened.source.name == name
    model, tokenizer = opened.model, opened.tokenizer
    assert model.config.arch == ("llama" if name.startswith("llama") else "gpt2")
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # dequantized once, to fp32
    ref = _reference(files, name, monkeypatch)
    # Quantized files: transformers dequantizes the very same blocks, so the logits agree as closely.
    idx = torch.randint(0, 300, (1, 40), generator=torch.Generator().manual_seed(0))
    decoder = decoder_for(model)
    with torch.inference_mode():
        expected = ref(idx).logits
        cache = decoder.new_cache(1)
        assert (decoder.forward(idx[:, :20], cache) - expected[:, 19]).abs().max().item() <= 1e-4
        for t in range(20, 40):
            assert (decoder.forward(idx[:, t:t + 1], cache) - expected[:, t]).abs().max().item() <= 1e-4
    ref_tok = reference_tokenizer(path)
    for prompt in ["The quick brown fox", "def add(a, b):"]:
        ours = generate(model, tokenizer, prompt, SamplingConfig(greedy=True, max_new_tokens=16))
        ids = ref_tok(prompt)["input_ids"]  # BOS first for the llama file (add_bos_token), as ours
        assert ours.prompt_ids == ids
        x = torch.tensor([ids])
        with torch.no_grad():
            out = ref.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=16, do_sample=False,
                               pad_token_id=0, eos_token_id=None)
        assert ours.ids == out[0, len(ids):].tolist(), prompt


def test_tokenizer_and_chat_template_come_from_the_metadata(files):
    path = files["folder"] / "llama-f32.gguf"
    tokenizer = open_tokenizer(path)
    ref = reference_tokenizer(path)
    for text in ["Hello world", "caf\u00e9 \U0001F999 ok", "<s>hi</s>"]:
        assert tokenizer.encode(text) == ref(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.add_bos and tokenizer.bos_id == 1 and tokenizer.eot_id == 2
    # gguf_fixtures' template: the messages' contents one after the other.
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert chat_prompt_ids(tokenizer, messages) == tokenizer.encode("hiyo")


def test_ollama_blobs_are_recognised_by_their_magic(files, tmp_path):
    store = tmp_path / "models"
    (store / "blobs").mkdir(parents=True)
    blob = store / "blobs" / ("sha256-" + "a" * 64)
    blob.write_bytes((files["folder"] / "gpt2-q8.gguf").read_bytes())
    manifest = store / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "latest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model",
                                                "digest": "sha256:" + "a" * 64}]}))
    source = resolve_source(blob)
    assert source.kind == GGUF and source.name == "tiny:latest"
    assert open_model(blob).model.config.arch == "gpt2"


def test_command_line(files, tmp_path, capsys):
    path = files["folder"] / "llama-q8.gguf"
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "GGUF architecture 'llama'" in out and "4 heads sharing 2 key/value heads" in out
    shares = out.split("tensors:")[1].splitlines()[0]
    assert "Q8_0" in shares and "F16" in shares and "F32" in shares and "of the parameters" in shares
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "gguf" and abs(sum(info["quantization"].values()) - 1) < 1e-9

    assert main(["tokenize", "--checkpoint", str(path), "--json", "Hello world"]) == 0
    assert json.loads(capsys.readouterr().out)["ids"] == open_tokenizer(path).encode("Hello world")
    assert main(["generate", str(path), "--prompt", "The", "--max-new-tokens", "5", "--greedy"]) == 0
    capsys.readouterr()

    assert main(["inspect", str(path), "--text", "The quick brown fox", "--json"]) == 0
    inspected = json.loads(capsys.readouterr().out)
    ids = inspected["ids"]
    with torch.no_grad():
        logits = open_model(path).model(torch.tensor([ids]))[0][0]
    losses = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none")
    assert inspected["token_loss"][0] is None
    assert torch.allclose(torch.tensor(inspected["token_loss"][1:]), losses, atol=1e-4)

    out_file = tmp_path / "llama.safetensors"
    assert main(["import-gguf", str(path), "--out", str(out_file)]) == 0
    assert "imported llama-q8.gguf" in capsys.readouterr().out
    checkpoint = load_checkpoint(out_file)
    opened = open_model(path)
    assert checkpoint.config == opened.model.config
    for name, tensor in opened.model.state_dict().items():
        assert torch.equal(checkpoint.model.state_dict()[name], tensor), name
    assert checkpoint.tokenizer.chat_template == opened.tokenizer.chat_template

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(path.read_bytes()[:5000])
    assert main(["import-gguf", str(broken), "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: broken.gguf: truncated") and err.count("\n") == 1
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(GGUFError):
        open_model(broken)


def test_info_escapes_the_names_a_gguf_file_gives():
    """A GGUF file's metadata names (model name, architecture, tokenizer) reach the terminal escaped, as a
    checkpoint's do: no ANSI sequence from a file is printed raw."""
    evil = "\x1b[2J\x1b[31mpwned"
    info = {"path": "m.gguf", "name": evil, "file_bytes": 1000, "family": evil, "architecture": evil,
            "model_config": None, "num_params": 10, "quantization": {"Q8_0": 1.0},
            "tokenizer": {"description": evil, "chat_template": None}, "problem": evil}
    text = _describe_gguf(info)
    assert "\x1b" not in text and "pwned" in text
