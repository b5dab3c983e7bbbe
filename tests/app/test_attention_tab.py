"""The Attention tab: heatmap, overview, rollout, per-token view, probes over training, export."""
from __future__ import annotations

import csv
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest
import torch
from PySide6.QtCore import QPointF, Qt

from app.state import AppState
from app.tabs.attention import tab as attention_module
from app.tabs.attention.groups import kv_group, kv_group_label
from app.tabs.attention.jobs import AttentionResult, RolloutResult
from app.tabs.attention.overview import MEAN, thumbnails
from app.tabs.attention.tab import AttentionTab
from app.tabs.attention.view_controls import MODE_HEAD, MODE_MEAN, MODE_ROLLOUT
from app.widgets.text_run_bar import default_text
from app.worker import JobRunner
from engine.config import ModelConfig
from engine.data import Corpus
from engine.events import AttentionProbeEvent, ProgressEvent
from engine.generation.attention import attention_rollout
from engine.model import GPT
from engine.tokenizers import CharTokenizer

TEXT = "abcdef|abcdef\nghijkl|ghijkl\n"
CONTEXT = 48


def tiny_model(tok: CharTokenizer, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=tok.vocab_size, context_length=CONTEXT, emb_dim=32, n_heads=4, n_layers=3,
                         drop_rate=0.0)
    return GPT(config)


@pytest.fixture
def runner():
    runner = JobRunner()
    yield runner
    assert runner.stop_all(5000)


@pytest.fixture
def tab(qtbot, runner, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_PLAYGROUND_SETTINGS", str(tmp_path / "settings.ini"))
    state = AppState()
    tok = CharTokenizer.from_text(TEXT + "xyz")
    state.set_model(tiny_model(tok), tok)
    tab = AttentionTab(state, runner)
    qtbot.addWidget(tab)
    tab.resize(1200, 800)
    tab.show()
    qtbot.waitExposed(tab)
    return tab


def run_on(qtbot, tab: AttentionTab, text: str) -> None:
    tab.text.setPlainText(text)
    tab.run()
    assert tab.busy
    qtbot.waitUntil(lambda: not tab.busy, timeout=20_000)


def test_heatmap_is_one_image_the_size_of_the_token_count(qtbot, tab):
    run_on(qtbot, tab, TEXT)
    T = len(tab.state.tokenizer.encode(TEXT))
    assert tab.heatmap.image.image.shape == (T, T)
    assert len(tab.heatmap.bottom_axis.labels) == T
    assert tab.heatmap.tokens == [tab.state.tokenizer.render_token(i) for i in tab.state.tokenizer.encode(TEXT)]
    # fixed levels, so heads are comparable by eye
    assert tuple(tab.heatmap.image.getLevels()) == (0.0, 1.0)
    # and a single head's row is a causal softmax
    m = tab.heatmap.matrix
    assert np.allclose(m.sum(axis=1), 1.0, atol=1e-4)
    assert np.allclose(np.triu(m, k=1), 0.0)


def test_text_longer_than_the_context_is_cut_and_said_so(qtbot, tab):
    run_on(qtbot, tab, TEXT * 5)
    assert tab.heatmap.image.image.shape == (CONTEXT, CONTEXT)
    assert f"cut from {len(TEXT) * 5}" in tab.status.text()


def test_clicking_an_overview_cell_opens_that_layer_and_head(qtbot, tab):
    run_on(qtbot, tab, TEXT)
    maps = tab.shown.maps
    for layer, head in ((2, 1), (0, 3)):
        point = tab.overview.mapFromScene(tab.overview.cell_rect(layer, head).center())
        qtbot.mouseClick(tab.overview.viewport(), Qt.MouseButton.LeftButton, pos=point)
        assert (tab.view_mode, tab.controls.layer.value(), tab.controls.head.value()) == (MODE_HEAD, layer, head)
        assert np.array_equal(tab.heatmap.matrix, maps[layer, head])
        assert tab.overview._selected == (layer, head)
    # the last column is the layer's mean over heads
    qtbot.mouseClick(tab.overview.viewport(), Qt.MouseButton.LeftButton,
                     pos=tab.overview.mapFromScene(tab.overview.cell_rect(1, MEAN).center()))
    assert (tab.view_mode, tab.controls.layer.value()) == (MODE_MEAN, 1)
    assert np.allclose(tab.heatmap.matrix, maps[1].mean(axis=0))


def test_rollout_and_mean_rows_sum_to_one(qtbot, tab):
    run_on(qtbot, tab, TEXT)
    for mode in (MODE_MEAN, MODE_ROLLOUT):
        tab.controls.mode.setCurrentIndex(tab.controls.mode.findData(mode))
        shown = tab.heatmap.matrix
        assert shown.shape == (len(TEXT), len(TEXT))
        assert np.allclose(shown.sum(axis=1), 1.0, atol=1e-4), mode
        assert np.allclose(np.triu(shown, k=1), 0.0, atol=1e-6), mode
    assert "rollout" in tab.current_title().lower()
    assert np.allclose(tab.heatmap.matrix, tab.shown.get_rollout())
    assert not tab.controls.layer.isEnabled() and not tab.controls.head.isEnabled()


def test_maps_show_before_the_rollout_arrives(tab):
    rng = np.random.default_rng(1)
    maps = np.tril(rng.random((3, 4, 6, 6), dtype=np.float32))
    maps /= maps.sum(-1, keepdims=True)
    tab.controls.mode.setCurrentIndex(tab.controls.mode.findData(MODE_ROLLOUT))
    tab._on_job_events([AttentionResult(maps, thumbnails(maps), tuple("abcdef"), tuple("abcdef"), 0)])
    assert tab.heatmap.matrix is None and "rollout" in tab.heatmap.plot.titleLabel.text.lower()
    tab.controls.mode.setCurrentIndex(tab.controls.mode.findData(MODE_HEAD))
    assert np.array_equal(tab.heatmap.matrix, maps[0, 0])  # the heads are there already
    tab.controls.mode.setCurrentIndex(tab.controls.mode.findData(MODE_ROLLOUT))
    tab._on_job_events([RolloutResult(attention_rollout(maps))])
    assert np.allclose(tab.heatmap.matrix, attention_rollout(maps))


def test_per_token_view_tints_by_the_query_row(qtbot, tab):
    run_on(qtbot, tab, TEXT)
    tab.open_cell(1, 2)
    q = 10
    tab.set_query(q)
    row = tab.shown.maps[1, 2, q]
    weights = tab.text_view.weights_shown()
    assert sorted(weights) == list(range(q + 1))  # only the query and the tokens before it
    assert np.allclose([weights[k] for k in range(q + 1)], row[: q + 1])
    # clicking a row of the heatmap picks that query
    tab.heatmap.query_clicked.emit(4)
    assert tab.text_view.query == 4
    assert "Query 4" in tab.query_label.text()


def test_attention_over_training_slider_shows_each_recorded_step(qtbot, tab):
    rng = np.random.default_rng(0)
    tokens = tuple("ab|ab")
    probes = []
    for step in (0, 100, 200):
        m = np.tril(rng.random((3, 4, 5, 5), dtype=np.float32))
        probes.append(AttentionProbeEvent(step=step, tokens=tokens, maps=m / m.sum(-1, keepdims=True)))
    tab.state.set_attention_probes(probes[:2])
    assert tab.probes.check.isEnabled() and tab.probes.slider.maximum() == 1
    # with no run of its own to show (e.g. opened during training), the tab shows the probes
    assert tab.probes.check.isChecked()
    tab.open_cell(2, 3)
    tab.probes.slider.setValue(0)
    assert np.array_equal(tab.heatmap.matrix, probes[0].maps[2, 3])
    assert "step 0" in tab.current_title()
    tab.probes.slider.setValue(1)
    assert np.array_equal(tab.heatmap.matrix, probes[1].maps[2, 3])
    # a probe arriving during training is followed when the slider sits at the end
    tab.state.add_attention_probe(probes[2])
    assert tab.probes.slider.value() == 2
    assert np.array_equal(tab.heatmap.matrix, probes[2].maps[2, 3])
    assert tab.heatmap.tokens == list(tokens)
    # a new run clears them
    tab.state.set_attention_probes([])
    assert not tab.probes.check.isChecked() and not tab.probes.check.isEnabled()


def test_export_csv_and_png(qtbot, tab, tmp_path):
    run_on(qtbot, tab, TEXT)
    tab.open_cell(0, 1)
    path = tmp_path / "a.csv"
    tab.export_csv(str(path))
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    T = len(TEXT)
    assert len(rows) == T + 1 and len(rows[0]) == T + 1
    assert rows[0][1:] == tab.heatmap.tokens and [r[0] for r in rows[1:]] == tab.heatmap.tokens
    values = np.array([[float(x) for x in r[1:]] for r in rows[1:]])
    assert np.allclose(values, tab.shown.maps[0, 1], atol=1e-5)
    png = tmp_path / "a.png"
    tab.export_png(str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_change_clears_and_reruns_when_visible(qtbot, tab):
    run_on(qtbot, tab, TEXT)
    before = tab.text_maps
    tok = tab.state.tokenizer
    tab.state.set_model(tiny_model(tok, seed=1), tok)
    assert tab.busy  # re-running on the new weights
    qtbot.waitUntil(lambda: not tab.busy, timeout=20_000)
    assert tab.text_maps is not None and tab.text_maps is not before
    assert not np.allclose(tab.text_maps.maps, before.maps)


def test_no_model_gives_a_message_not_a_job(qtbot, runner):
    state = AppState()
    tab = AttentionTab(state, runner)
    qtbot.addWidget(tab)
    tab.run()
    assert not tab.busy
    assert "No model" in tab.status.text()


def test_default_text_is_a_pattern_for_synthetic_tasks():
    corpus = Corpus("copy", ["abcdef|abcdef\nqwerty|qwerty\n" * 20], source="copy")
    text = default_text(corpus)
    assert text.startswith("abcdef|abcdef\n") and len(text) <= 120
    prose = Corpus("prose", ["short", "A much longer document that is long enough to be a passage. " * 20])
    assert default_text(prose).startswith("A much longer document")


def test_run_button_stops_a_run_in_progress(qtbot, tab, monkeypatch):
    import time


    real_job = attention_module.attention_job

    def slow_job(*args):  # a big model: the forward takes a while before the maps arrive
        yield ProgressEvent(job="attention", done=0, total=1, message="working")
        time.sleep(0.5)
        yield from real_job(*args)

    monkeypatch.setattr(attention_module, "attention_job", slow_job)
    tab.text.setPlainText(TEXT)
    tab.run_button.click()
    assert tab.busy and tab.run_button.text() == "Stop" and tab.run_button.isEnabled()
    tab.run_button.click()
    qtbot.waitUntil(lambda: not tab.busy, timeout=20_000)
    assert tab.text_maps is None  # the stopped run shows nothing
    assert "Stopped" in tab.status.text() and tab.run_button.text() == "Run"
    run_on(qtbot, tab, TEXT)  # and the next run works
    assert tab.text_maps is not None


def test_every_token_can_be_labelled_and_hovered(qtbot, tab):
    """Past ~30 tokens the fitted view thins its labels and says so; "Read tokens" zooms until every
    token on both axes has its own label, and hovering any cell names its query and key."""
    text = (TEXT * 3)[:CONTEXT]
    run_on(qtbot, tab, text)
    heatmap = tab.heatmap
    heatmap.resize(300, 300)  # a small map: 48 tokens cannot all be labelled at this size
    heatmap.reset_zoom()
    qtbot.wait(50)
    assert heatmap.labels_step() > 1 and "one token in" in heatmap.info.text()
    tab.set_query(40)
    tab.controls.read_button.click()
    qtbot.wait(50)
    assert heatmap.labels_step() == 1
    (x0, x1), _ = heatmap.plot.getViewBox().viewRange()
    assert x0 <= 40 <= x1  # around the chosen query
    ticks = heatmap.bottom_axis.tickValues(x0, x1, heatmap.plot.getViewBox().width())
    assert ticks[0][0] == 1.0  # every token between x0 and x1 has a tick and its label
    q, k = 40, int(x0) + 2  # a cell in view
    scene = heatmap.plot.getViewBox().mapViewToScene(QPointF(k, q))
    heatmap._on_mouse_moved(scene)
    assert heatmap.info.text().startswith(f"query {q} {tab.heatmap.tokens[q]!r}  →  key {k}")


def test_grouped_query_attention_names_the_key_value_groups():
    config = ModelConfig(vocab_size=16, context_length=8, emb_dim=32, n_heads=8, n_layers=1)
    assert kv_group_label(config, 5) == ""  # GPT: every head has its own keys and values
    object.__setattr__(config, "n_kv_heads", 2)  # the Llama family's field
    assert kv_group_label(config, 5) == "kv group 1 (heads 4–7 share its keys and values)"
    assert kv_group(3, 8, 2) == 0 and kv_group(3, 8, 8) is None and kv_group(3, 8, None) is None


def test_gqa_titles_and_overview_labels(qtbot, tab):
    run_on(qtbot, tab, TEXT)
    object.__setattr__(tab.state.config, "n_kv_heads", 2)  # 4 query heads, 2 key/value groups
    tab.open_cell(1, 3)
    assert "kv group 1 (heads 2–3 share its keys and values)" in tab.current_title()
    tab.overview.set_groups(4, 2)
    top = dict((round(v), s) for v, s in tab.overview.plot.getAxis("top")._tickLevels[0])
    assert "H3·g1" in top.values() and "H0·g0" in top.values()
    assert "key/value group 1" in tab.overview.describe(1, 3)


def test_characters_the_tokenizer_lacks_are_noted(qtbot, tab):
    run_on(qtbot, tab, "abc|日本|abc")
    assert "2 characters not in the vocabulary (日, 本)" in tab.status.text()
    run_on(qtbot, tab, "abc|abc")
    assert "vocabulary" not in tab.status.text()


def test_a_new_model_leaves_nothing_of_the_old_text_on_screen(qtbot, tab):
    run_on(qtbot, tab, TEXT)
    tab.set_query(5)
    assert tab.query_label.text().startswith("Query 5")
    tab.hide()  # not visible: the new model's run waits for the tab to be shown
    tok = CharTokenizer.from_text(TEXT + "xyz")
    tab.state.set_model(tiny_model(tok, seed=1), tok)
    assert not tab.query_label.text().startswith("Query")
    assert tab.text_view.pieces == [] and tab.heatmap.matrix is None


def test_a_llama_family_model_shows_one_map_per_query_head_with_its_group(qtbot, runner, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_PLAYGROUND_SETTINGS", str(tmp_path / "settings.ini"))
    tok = CharTokenizer.from_text(TEXT + "xyz")
    torch.manual_seed(0)
    config = ModelConfig(arch="llama", vocab_size=tok.vocab_size, context_length=CONTEXT, emb_dim=32, n_heads=4,
                         n_kv_heads=2, n_layers=2, drop_rate=0.0)
    state = AppState()
    state.set_model(GPT(config), tok)
    tab = AttentionTab(state, runner)
    qtbot.addWidget(tab)
    tab.resize(1200, 800)
    tab.show()
    run_on(qtbot, tab, TEXT)
    tab.open_cell(1, 3)
    assert "kv group 1 (heads 2–3 share its keys and values)" in tab.current_title()
    assert "key/value group 1" in tab.overview.describe(1, 3)
