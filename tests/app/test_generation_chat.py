"""The Generation tab on a Hugging Face model (pytest-qt, offscreen): chat mode on a small GPT-2 with a ChatML
template, and a bf16 model generating in bf16. In chat mode the prompt is the
conversation rendered by the template, every column streams its own reply and stops at the end-of-turn token,
and the conversation goes on with the reply the person keeps."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
from hf_fixtures import gpt2_folder

from app.state import AppState
from app.tabs.generation.tab import GenerationTab
from app.worker import JobRunner
from engine.config import ModelConfig
from engine.generation import decoder_for
from engine.model import GPT
from engine.sources import open_model
from engine.tokenizers import CharTokenizer, chat_prompt_ids

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return gpt2_folder(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture
def tab(qtbot, folder):
    state, runner = AppState(), JobRunner()
    widget = GenerationTab(state, runner)
    qtbot.addWidget(widget)
    opened = open_model(folder)
    state.set_model(opened.model, opened.tokenizer)
    yield widget
    runner.stop_all()


def window(ids: list[int]) -> list[int]:
    """What the engine feeds the model (context 64): the last 63 tokens."""
    return ids[-63:]


def send(qtbot, tab: GenerationTab, message: str) -> None:
    tab.prompt.setPlainText(message)
    with qtbot.waitSignal(tab.generation_finished, timeout=30000):
        tab.generate()


def test_chat_turns_render_the_template_and_stop_at_end_of_turn(qtbot, tab, folder):
    chat = tab.chat
    assert chat.enabled_box.isEnabled() and not chat.active()
    chat.enabled_box.setChecked(True)
    assert chat.system.isVisibleTo(tab) and "message" in tab.prompt.placeholderText()
    chat.system.setText("Be brief.")
    tab.max_tokens.setValue(80)
    tab.columns[1].apply_preset("Greedy")
    tab.columns[1].rows["repetition_penalty"].setValue(1.5)  # the second column answers differently

    send(qtbot, tab, "what is 2+2?")
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "what is 2+2?"}]
    expected = reference.apply_chat_template(first, add_generation_prompt=True, tokenize=True)
    assert tab.run.prompt_ids == window(list(expected["input_ids"] if hasattr(expected, "keys") else expected))
    done = tab.run.done
    assert done.stop_reasons[0] == "eot" and len(done.ids[0]) < 80  # the end-of-turn token ended column 1
    assert "stopped at end of text" in tab.columns[0].info.text()
    assert not tab.columns[0].output.generated_text().startswith("<|im_start|>")  # replies only, no prompt
    assert tab.prompt.toPlainText() == ""  # ready for the next message
    tokenizer = tab.state.tokenizer
    replies = [tokenizer.decode(ids[:-1] if ids[-1] in (0, 2) else ids) for ids in done.ids]
    assert "what is 2+2?" in chat.transcript.toPlainText() and replies[0] in chat.transcript.toPlainText()

    # Next turn: the history holds column 1's reply unless another is kept.
    chat.keep.setCurrentIndex(1)
    assert replies[1] in chat.transcript.toPlainText()
    send(qtbot, tab, "and 3+3?")
    history = [{"role": "user", "content": "what is 2+2?"}, {"role": "assistant", "content": replies[1]},
               {"role": "user", "content": "and 3+3?"}]
    assert tab.run.prompt_ids == window(chat_prompt_ids(tokenizer, history, system="Be brief."))

    # An empty message answers the last one again: the conversation before it stays.
    send(qtbot, tab, "")
    assert tab.run.prompt_ids == window(chat_prompt_ids(tokenizer, history, system="Be brief."))
    assert len(chat.history) == 2

    chat.new_button.click()
    assert chat.history == [] and chat.pending is None
    send(qtbot, tab, "hi")
    assert tab.run.prompt_ids == chat_prompt_ids(tokenizer, [{"role": "user", "content": "hi"}], system="Be brief.")


def test_models_without_a_template_have_no_chat_mode(qtbot, tab):
    chat = tab.chat
    chat.enabled_box.setChecked(True)
    tokenizer = CharTokenizer.from_text("abc ")

    tab.state.set_model(GPT(ModelConfig(vocab_size=tokenizer.vocab_size, context_length=16, emb_dim=16, n_heads=2,
                                        n_layers=1)), tokenizer)
    assert not chat.enabled_box.isEnabled() and not chat.active()
    assert "no chat template" in chat.enabled_box.toolTip()
    send(qtbot, tab, "abc")  # plain completion again
    assert tab.run.prompt_ids == tokenizer.encode("abc") and not tab.run.chat


def test_a_bf16_model_generates_in_bf16_without_a_copy(qtbot, tab, tmp_path):
    import torch


    opened = open_model(gpt2_folder(tmp_path / "bf16", dtype=torch.bfloat16))
    tab.state.set_model(opened.model, opened.tokenizer)
    assert tab.precision.currentData() == "bf16"
    send(qtbot, tab, "Hello")
    assert tab.run.precision == "bf16" and len(tab.run.ids[0]) > 0
    decoder = decoder_for(opened.model, "bf16")
    assert decoder.tok_emb.data_ptr() == opened.model.tok_emb.weight.data_ptr()  # the model's own weights
