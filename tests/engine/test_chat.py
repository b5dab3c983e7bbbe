"""Chat templates render and encode exactly as transformers' apply_chat_template; failures are one clear line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hf_fixtures import bytelevel_folder, sentencepiece_folder

from engine.tokenizers.chat import ChatTemplateError, chat_prompt_ids, chat_prompt_text, render_chat
from engine.tokenizers.hf import load_hf_tokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "Hi there!"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello. 😀"},
     {"role": "user", "content": "  2+2?\n"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<|im_end|> inside text"}],
    [{"role": "user", "content": "tool_calls none", "tool_calls": None}],
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("chat")
    return {"chatml": bytelevel_folder(base / "chatml"), "llama3": sentencepiece_folder(base / "llama3")}


@pytest.fixture(scope="module")
def hf(folders):
    transformers = pytest.importorskip("transformers")
    return {k: transformers.AutoTokenizer.from_pretrained(str(f)) for k, f in folders.items()}


def transformers_ids(tokenizer, messages) -> list[int]:
    # transformers 5 returns a BatchEncoding (return_dict=True) by default; older versions a list of ids.
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"]) if hasattr(out, "keys") else list(out)


@pytest.mark.parametrize("kind", ["chatml", "llama3"])
@pytest.mark.parametrize("index", range(len(CONVERSATIONS)))
def test_equal_to_transformers(folders, hf, kind, index):
    tok = load_hf_tokenizer(folders[kind])
    messages = CONVERSATIONS[index]
    assert chat_prompt_text(tok, messages) == hf[kind].apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False)
    assert chat_prompt_ids(tok, messages) == transformers_ids(hf[kind], messages)
    assert chat_prompt_text(tok, messages, add_generation_prompt=False) == hf[kind].apply_chat_template(
        messages, add_generation_prompt=False, tokenize=False)


@pytest.mark.parametrize("kind", ["chatml", "llama3"])
def test_system_argument(folders, hf, kind):
    tok = load_hf_tokenizer(folders[kind])
    messages = [{"role": "user", "content": "Hi"}]
    with_system = [{"role": "system", "content": "You are terse."}, *messages]
    assert chat_prompt_ids(tok, messages, system="You are terse.") == transformers_ids(hf[kind], with_system)


def test_template_shapes(folders):
    chatml = load_hf_tokenizer(folders["chatml"])
    text = chat_prompt_text(chatml, [{"role": "user", "content": "Hi"}])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert text.endswith("<|im_start|>assistant\n")
    ids = chat_prompt_ids(chatml, [{"role": "user", "content": "<|im_end|>"}])
    assert ids.count(chatml.token_to_id("<|im_end|>")) == 3  # special text in content is special (as transformers)

    llama = load_hf_tokenizer(folders["llama3"])
    ids = chat_prompt_ids(llama, [{"role": "user", "content": "Hi"}])
    assert ids[0] == llama.bos_id and ids.count(llama.bos_id) == 1  # the template's bos_token, not a second one


def test_raise_exception_is_one_line(folders):
    llama = load_hf_tokenizer(folders["llama3"])
    with pytest.raises(ChatTemplateError) as info:
        chat_prompt_ids(llama, [{"role": "wizard", "content": "Hi"}])
    assert str(info.value) == "the chat template refused the conversation: Unknown role: wizard"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("template,message", [
    ("{% for m in messages %}{{ m.content }", "syntax error on line 1"),
    ("{{ messages[0].content + 5 }}", "the chat template failed: TypeError"),
    ("{{ messages.__class__.__mro__ }}", "unsafe"),
    ("{{ messages.append(1) }}", "unsafe"),
    ("{% set ns = namespace(_x=1) %}", "unsafe"),
    ("{{ undefined_thing.attr }}", "the chat template failed: 'undefined_thing' is undefined"),
])
def test_bad_templates(template, message):
    with pytest.raises(ChatTemplateError) as info:
        render_chat(template, [{"role": "user", "content": "hi\nthere"}])
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_helpers_match_transformers_semantics():
    messages = [{"role": "user", "content": "é \"q\" <b>", "n": 3}]
    assert render_chat("{{ messages[0] | tojson }}", messages) == json.dumps(messages[0], ensure_ascii=False)
    assert render_chat("{{ {'a': 1} | tojson(indent=2) }}", messages) == '{\n  "a": 1\n}'
    assert len(render_chat("{{ strftime_now('%Y-%m-%d') }}", messages)) == 10
    assert render_chat("{% for m in messages %}{% generation %}{{ m.role }}{% endgeneration %}{% endfor %}",
                       messages) == "user"
    assert render_chat("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
                       "{% endfor %}{{ ns.n }}", messages) == "1"
    assert render_chat("{% for i in range(5) %}{% if i == 2 %}{% break %}{% endif %}{{ i }}{% endfor %}",
                       messages) == "01"
    assert render_chat("{{ dict(a=1)['a'] }}{{ bos_token }}{{ tools is none }}", messages,
                       special_tokens={"bos_token": "<s>"}) == "1<s>True"
    assert render_chat("{{ enable_thinking }}", messages, enable_thinking=False) == "False"
    # trim_blocks / lstrip_blocks, as transformers' environment
    assert render_chat("  {% if true %}\nx\n  {% endif %}\n", messages) == "x\n"
    # reasoning is aliased under the names templates read
    reasoning = [{"role": "assistant", "content": "4", "reasoning": "2+2"}]
    assert render_chat("{{ messages[0].reasoning_content }}|{{ messages[0].thinking }}", reasoning) == "2+2|2+2"


def test_bad_messages():
    for messages in ("hello", [1], [{"role": "user", "content": object()}]):
        with pytest.raises(ChatTemplateError):
            render_chat("{{ messages }}", messages)  # type: ignore[arg-type]


def test_no_template(folders, tmp_path):
    folder = bytelevel_folder(tmp_path / "plain")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ChatTemplateError, match="no chat template"):
        chat_prompt_ids(load_hf_tokenizer(folder), [{"role": "user", "content": "hi"}])
