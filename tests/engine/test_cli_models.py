"""The command line on Hugging Face models: generate / tokenize / info on a folder or a cached repo id,
generate --chat, and `models` / `pull` against a local hub server (tests/engine/hub_server.py)."""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_fixtures import gpt2_folder  # noqa: E402
from hub_server import FakeHub, hub_environment, hub_online  # noqa: E402

from engine.checkpoint import save_checkpoint  # noqa: E402
from engine.cli import main  # noqa: E402
from engine.cli import models as models_cli  # noqa: E402
from engine.config import ModelConfig  # noqa: E402
from engine.generation import generate  # noqa: E402
from engine.hub import list_cached_models  # noqa: E402
from engine.model import GPT  # noqa: E402
from engine.sampling import SamplingConfig  # noqa: E402
from engine.sources import open_model, open_tokenizer  # noqa: E402
from engine.tokenizers import CharTokenizer, chat_prompt_ids  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return gpt2_folder(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture
def hub(monkeypatch, tmp_path, folder):
    """A local hub serving the small GPT-2 folder as tiny/gpt2, and an empty cache."""
    server = FakeHub()
    server.add("tiny/gpt2", {p.name: p.read_bytes() for p in folder.iterdir()})
    hub_environment(monkeypatch, server, tmp_path / "hub")
    yield server
    server.close()


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_from_a_folder_equals_the_engine(folder, capsys):
    code, out, _ = run(capsys, "generate", folder, "--prompt", "Hello world! The", "--greedy",
                       "--repetition-penalty", "1.2", "--max-new-tokens", "20", "--json")
    assert code == 0
    opened = open_model(folder)
    expected = generate(opened.model, opened.tokenizer, "Hello world! The",
                        SamplingConfig(greedy=True, repetition_penalty=1.2, max_new_tokens=20))
    data = json.loads(out)
    assert data["new_ids"] == expected.ids and data["text"] == expected.text


def test_generate_chat_renders_the_template_and_stops_at_end_of_turn(folder, capsys):
    code, out, _ = run(capsys, "generate", folder, "--chat", "--system", "Be brief.", "--prompt", "what is 2+2?",
                       "--greedy", "--max-new-tokens", "60", "--json")
    assert code == 0
    data = json.loads(out)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "what is 2+2?"}]
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    expected = reference.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert data["prompt_ids"] == list(expected)
    assert data["prompt_ids"] == chat_prompt_ids(open_tokenizer(folder), messages[1:], system="Be brief.")
    # The model learned to end texts with <|endoftext|>, one of generation_config's end-of-turn ids.
    assert data["stop_reason"] == "eot" and data["new_ids"][-1] in (0, 2) and len(data["new_ids"]) < 60

    code, out, err = run(capsys, "generate", folder, "--chat", "--prompt", "what is 2+2?", "--greedy",
                         "--max-new-tokens", "60")
    assert code == 0 and "stopped at eot" in err
    assert "<|im_start|>" not in out and "<|endoftext|>" not in out and "<|im_end|>" not in out  # the reply only


def test_chat_needs_a_template_and_system_needs_chat(folder, tmp_path, capsys):

    tokenizer = CharTokenizer.from_text("abc ")
    path = tmp_path / "char.safetensors"
    save_checkpoint(path, GPT(ModelConfig(vocab_size=tokenizer.vocab_size, context_length=8, emb_dim=8, n_heads=2,
                                          n_layers=1)),
                    tokenizer)
    code, _, err = run(capsys, "generate", path, "--chat", "--prompt", "hi")
    assert code == 2 and "has no chat template" in err and err.count("\n") == 1
    code, _, err = run(capsys, "generate", folder, "--system", "x", "--prompt", "hi")
    assert code == 2 and "--system needs --chat" in err


def test_info_and_tokenize_on_a_folder(folder, capsys):
    code, out, _ = run(capsys, "info", folder)
    assert code == 0 and "family:     GPT-2" in out and "chat template" in out
    code, out, _ = run(capsys, "info", folder, "--json")
    info = json.loads(out)
    model = transformers.GPT2LMHeadModel.from_pretrained(str(folder))
    assert info["kind"] == "hf-folder" and info["num_params"] == model.num_parameters()
    assert info["model_config"]["n_layers"] == 2 and info["tokenizer"]["eos_ids"] == [0, 2]
    code, out, _ = run(capsys, "tokenize", "--checkpoint", folder, "--json", "<|im_start|>user")
    ids = json.loads(out)["ids"]
    assert code == 0 and ids == open_tokenizer(folder).encode("<|im_start|>user") and ids[0] == 1


def test_unknown_model_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    code, _, err = run(capsys, "generate", "nobody/nothing", "--prompt", "x")
    assert code == 2 and "no complete model nobody/nothing in the Hugging Face cache" in err
    assert "pull nobody/nothing" in err and err.count("\n") == 1
    code, _, err = run(capsys, "info", tmp_path)
    assert code == 2 and "without config.json" in err


def test_pull_then_models_then_generate_by_repo_id(hub, folder, capsys):
    code, out, err = run(capsys, "pull", "tiny/gpt2")
    assert code == 0 and out.startswith("downloaded tiny/gpt2") and not err
    fetched = {p.rsplit("/", 1)[-1] for m, p in hub.requests if m == "GET" and "/resolve/" in p}
    assert fetched == {p.name for p in folder.iterdir()}

    code, out, _ = run(capsys, "models")
    assert code == 0 and "tiny/gpt2" in out and "gpt2" in out and "yes" in out
    code, out, _ = run(capsys, "models", "--json")
    [entry] = json.loads(out)
    params = transformers.GPT2LMHeadModel.from_pretrained(str(folder)).num_parameters()
    assert (entry["name"], entry["family"], entry["n_params"], entry["supported"]) == ("tiny/gpt2", "gpt2", params,
                                                                                        True)
    assert entry["size_bytes"] == sum(p.stat().st_size for p in folder.iterdir())

    # Offline from here on: the repo id names the cached snapshot.
    hub.close()
    code, out, _ = run(capsys, "generate", "tiny/gpt2", "--prompt", "Hello", "--greedy", "--max-new-tokens", "8",
                       "--json")
    opened = open_model(folder)
    expected = generate(opened.model, opened.tokenizer, "Hello", SamplingConfig(greedy=True, max_new_tokens=8))
    assert code == 0 and json.loads(out)["new_ids"] == expected.ids


def test_models_on_an_empty_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "none"))
    code, out, _ = run(capsys, "models")
    assert code == 0 and "no models" in out and "pull" in out
    assert run(capsys, "models", "--json")[1].strip() == "[]"


def test_pull_offline_is_one_line_within_2_s(tmp_path, capsys, monkeypatch):
    hub_online(monkeypatch)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    code, _, err = run(capsys, "pull", "tiny/gpt2")
    assert time.monotonic() - start < 2.0
    assert code == 2 and err.startswith("error: ") and "offline" in err and err.count("\n") == 1


def test_pull_ctrl_c_cancels_cleanly(hub, capsys, monkeypatch):
    hub.slow["model.safetensors"] = 0.5
    calls = []
    original = models_cli.ProgressPrinter

    class Interrupting(original):
        def __call__(self, event):
            calls.append(event.file)
            if event.file == "model.safetensors":
                raise KeyboardInterrupt  # as Ctrl-C arrives while the weights download

    monkeypatch.setattr(models_cli, "ProgressPrinter", Interrupting)
    code, out, err = run(capsys, "pull", "tiny/gpt2")
    assert code == 130 and "cancelled" in err and err.count("\n") == 1 and not out
    time.sleep(0.8)
    assert list_cached_models() == []  # no half-written model to trip over
    hub.slow.clear()
    monkeypatch.setattr(models_cli, "ProgressPrinter", original)
    assert run(capsys, "pull", "tiny/gpt2")[0] == 0
    assert [m.repo_id for m in list_cached_models()] == ["tiny/gpt2"]


def test_pull_errors_are_one_line(hub, capsys):
    code, _, err = run(capsys, "pull", "nobody/nothing")
    assert code == 2 and "was not found" in err and err.count("\n") == 1
    code, _, err = run(capsys, "pull", "not a repo")
    assert code == 2 and "is not a Hugging Face repo id" in err


def test_weights_of_the_pulled_model_are_the_files(hub, capsys):
    assert run(capsys, "pull", "tiny/gpt2")[0] == 0
    [cached] = list_cached_models()
    opened = open_model("tiny/gpt2")
    assert opened.source.name == "tiny/gpt2" and opened.source.path == cached.folder
    assert torch.equal(opened.model.tok_emb.weight,
                       transformers.GPT2LMHeadModel.from_pretrained(str(cached.folder)).transformer.wte.weight)


def test_interrupted_pull_is_one_line_and_retry_works(hub, capsys):
    hub.cut.add("model.safetensors")
    code, _, err = run(capsys, "pull", "tiny/gpt2")
    assert code == 2 and "download of model.safetensors broke off" in err and err.count("\n") == 1
    assert list_cached_models() == []
    hub.cut_done.clear()
    assert run(capsys, "pull", "tiny/gpt2")[0] == 0 and [m.repo_id for m in list_cached_models()] == ["tiny/gpt2"]


def test_info_says_why_a_folder_cannot_open(tmp_path, capsys):
    from hub_server import model_files

    folder = tmp_path / "mamba"
    folder.mkdir()
    for name, data in model_files().items():
        if "/" not in name:
            (folder / name).write_bytes(data)
    code, out, _ = run(capsys, "info", folder)
    assert code == 0 and "model_type 'mamba'" in out
    assert "cannot open: config.json: unsupported model_type 'mamba' (supported: gpt2, llama, mistral, qwen2)" in out
    code, _, err = run(capsys, "generate", folder, "--prompt", "x")
    assert code == 2 and "unsupported model_type 'mamba'" in err and err.count("\n") == 1
