"""The Inside tab: the logit lens grid, per-token surprise (of the text and over training), attribution,
ablation with a head sweep, the embedding map, jobs that show progress and stop, and themes."""
from __future__ import annotations

import math
import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication, QHeaderView, QStyle

from app import theme
from app.state import AppState
from app.tabs.inside import ablation as ablation_module
from app.tabs.inside.logit_lens import MODE_ENTROPY, MODE_RANK
from app.tabs.inside.tab import InsideTab
from app.worker import JobRunner
from engine import ProgressEvent
from engine.config import ModelConfig
from engine.events import AttentionProbeEvent
from engine.generation import decoder_for
from engine.inspect import head_sweep, logit_lens, token_losses
from engine.model import GPT
from engine.tokenizers import CharTokenizer

TEXT = "abcdef|abcdef\nghijkl|ghijkl\n"


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
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, context_length=48, emb_dim=32, n_heads=4, n_layers=3,
                            drop_rate=0.0))
    state.set_model(model, tok)
    tab = InsideTab(state, runner)
    tab.text.setPlainText(TEXT)
    qtbot.addWidget(tab)
    tab.resize(1280, 720)
    tab.show()
    qtbot.waitExposed(tab)
    qtbot.waitUntil(lambda: tab.lens is not None and not tab.busy, timeout=20_000)  # shown: it runs by itself
    return tab


def wait_idle(qtbot, tab) -> None:
    qtbot.waitUntil(lambda: not tab.busy, timeout=30_000)


def ids_of(tab) -> list[int]:
    return tab.state.tokenizer.encode(TEXT)


def test_run_shows_a_grid_of_blocks_by_positions_whose_last_row_is_the_model(qtbot, tab):
    model = tab.lens_panel.model
    T = len(ids_of(tab))
    assert (model.rowCount(), model.columnCount()) == (3, T)
    expected = logit_lens(tab.state.model, ids_of(tab))
    np.testing.assert_array_equal(tab.lens.top_ids, expected.top_ids)
    # the last row is the model's own next-token prediction
    with torch.inference_mode():
        logits = decoder_for(tab.state.model).forward(torch.tensor([ids_of(tab)]), None).squeeze(0)
    top = int(logits.argmax())
    render = tab.state.tokenizer.render_token
    assert model.index(2, T - 1).data().split("\n")[0] == render(top)[:6].replace(" ", "\u2423")
    assert "model’s output" in model.index(2, T - 1).data(Qt.ItemDataRole.ToolTipRole)
    assert model.headerData(2, Qt.Orientation.Vertical) == "block 2 = output"
    # toggles: the rank of the actual next token, the entropy
    tab.lens_panel.mode.setCurrentIndex(tab.lens_panel.mode.findData(MODE_RANK))
    assert model.index(0, 0).data() == f"#{expected.next_rank[0, 0] + 1:,}" and model.index(0, T - 1).data() == "—"
    tab.lens_panel.mode.setCurrentIndex(tab.lens_panel.mode.findData(MODE_ENTROPY))
    assert model.index(1, 3).data() == f"{expected.entropy[1, 3]:.2f}"
    # cells are tinted: a sure cell darker than an unsure one (light or dark theme alike)
    background = model.index(0, 0).data(Qt.ItemDataRole.BackgroundRole)
    assert background.isValid()


def test_surprise_tints_each_token_by_its_loss_and_shows_the_perplexity(qtbot, tab):
    panel = tab.surprise_panel
    expected = token_losses(tab.state.model, ids_of(tab))
    np.testing.assert_allclose(panel.view.values, expected, atol=1e-6)
    ppl = float(np.exp(np.nanmean(expected)))
    assert f"Perplexity {ppl:.2f}" in panel.summary.text()
    assert panel.view.scale == pytest.approx(math.log(tab.state.config.vocab_size))
    assert "loss" in panel.view.tooltips[3] and "first token" in panel.view.tooltips[0]


def test_surprise_over_training_follows_the_probes(qtbot, tab):
    panel = tab.surprise_panel
    assert not panel.over_training.check.isEnabled()
    tokens = tuple("abc|abc")
    probes = [AttentionProbeEvent(step=s, tokens=tokens, maps=np.zeros((3, 4, 7, 7), np.float32),
                                  heldout_tokens=tokens, heldout_loss=np.array([np.nan] + [3.0 - s / 100] * 6, np.float32))
              for s in (0, 100)]
    tab.state.set_attention_probes(probes)
    assert panel.over_training.check.isEnabled() and panel.over_training.slider.maximum() == 1
    panel.over_training.check.setChecked(True)
    assert panel.view.pieces == list(tokens) and panel.view.values[1] == pytest.approx(2.0)
    assert "step 100" in panel.over_training.label.text()
    panel.over_training.slider.setValue(0)
    assert panel.view.values[1] == pytest.approx(3.0) and "training step 0" in panel.summary.text()
    tab.state.add_attention_probe(AttentionProbeEvent(step=200, tokens=tokens, maps=probes[0].maps))
    assert panel.over_training.slider.maximum() == 1  # a probe without held-out losses is not a surprise probe
    tab.state.set_attention_probes([])
    assert not panel.over_training.check.isChecked() and not panel.over_training.check.isEnabled()


def test_attribution_runs_both_methods(qtbot, tab):
    panel = tab.attribution_panel
    panel._on_token_clicked(9)
    assert panel.position.value() == 9
    panel.run()
    wait_idle(qtbot, tab)
    assert panel.result is not None and panel.result.position == 9 and panel.result.scores.shape == (10,)
    assert panel.view.shown_until == 9 and "Gradient × input" in panel.summary.text()
    panel.method.setCurrentIndex(panel.method.findData("integrated_gradients"))
    panel.steps.setValue(16)
    panel.target.setCurrentIndex(1)
    panel.chosen.setText("ab")  # two tokens: refused with a message, no job
    panel.run()
    assert not tab.busy and "not one" in tab.status.text()
    panel.chosen.setText("c")
    panel.run()
    wait_idle(qtbot, tab)
    assert panel.result.steps == 16 and panel.result.target == tab.state.tokenizer.encode("c")[0]
    assert "add up to" in panel.summary.text()


def test_ablation_and_the_head_sweep(qtbot, tab):
    panel = tab.ablation_panel
    assert (panel.grid.rowCount(), panel.grid.columnCount()) == (3, 6)
    panel.run_ablation()  # nothing ticked: a message, no job
    assert not tab.busy and "Tick" in tab.status.text()
    panel.grid._toggle(1, 2)  # head 1.2
    panel.grid._toggle(0, 5)  # block 0's MLP
    assert panel.grid.selected() == ([(1, 2)], [], [0])
    panel.mean.setChecked(True)
    panel.run_ablation()
    wait_idle(qtbot, tab)
    effect = panel.effect
    assert effect is not None and effect.what == "head 1.2 · MLP 0 (mean)"
    np.testing.assert_allclose(panel.view.values[1:], effect.loss_change[1:])
    assert panel.dist.rowCount() > 0 and "KL" in panel.dist_label.text()
    panel.set_position(4)
    assert "after token 4" in panel.dist_label.text()
    panel.zero.setChecked(True)
    panel.run_sweep()
    wait_idle(qtbot, tab)
    expected = head_sweep(tab.state.model, ids_of(tab))
    assert panel.ranking.rowCount() == 12
    layer, head, change = expected.ranking()[0]
    assert panel.ranking.item(0, 0).text() == f"{layer}.{head}"
    assert panel.grid.item(layer, head).text() == f"{change:+.2f}"  # the grid is tinted by the sweep
    # The cells keep fixed sizes (headers that fit their contents re-measured every cell on the GUI thread),
    # wide enough for the check box and the widest value shown.
    grid = panel.grid
    assert grid.horizontalHeader().sectionResizeMode(0) == QHeaderView.ResizeMode.Fixed
    widest = max(grid.fontMetrics().horizontalAdvance(grid.item(r, c).text())
                 for r in range(grid.rowCount()) for c in range(grid.columnCount() - 2))
    indicator = grid.style().pixelMetric(QStyle.PixelMetric.PM_IndicatorWidth, None, grid)
    assert grid.columnWidth(0) >= widest + indicator + 8
    assert grid.rowHeight(0) >= max(grid.fontMetrics().height(), indicator)
    panel._ablate_ranked(0, 0)  # double-click: ablate that head alone
    wait_idle(qtbot, tab)
    assert panel.effect.what == f"head {layer}.{head} (zero)"


def test_embedding_map_with_the_residual_stream(qtbot, tab):
    panel = tab.map_panel
    panel.run()
    wait_idle(qtbot, tab)
    result = panel.result
    V = tab.state.config.vocab_size
    assert result is not None and result.points.shape == (V, 2) and result.stream.shape[0] == 4
    assert len(panel.table_points.data) == V
    assert panel.layer.maximum() == 3 and panel.layer_label.text() == "after block 2"
    panel.layer.setValue(0)
    x, _ = panel.stream_path.getData()
    np.testing.assert_allclose(x, result.points[ids_of(tab), 0], atol=1e-5)  # layer 0: the table points
    panel.search.setText("c")
    assert len(panel.matches.data) == 1 and "1 tokens contain" in panel.hover_label.text()
    # over training: the maps recorded at evaluations
    probe = AttentionProbeEvent(step=50, tokens=("a",), maps=np.zeros((3, 4, 1, 1), np.float32),
                                embedding_points=np.ones((V, 2), np.float32))
    tab.state.set_attention_probes([probe])
    panel.over_training.check.setChecked(True)
    assert np.array_equal(panel.points, probe.embedding_points) and "step 50" in panel.over_training.label.text()


def test_stop_ends_a_running_analysis(qtbot, tab, monkeypatch):
    started = []

    def slow_sweep(model, ids, mean=False):  # a big model: one head after another, each taking a while
        for i in range(10_000):
            started.append(i)
            yield ProgressEvent(job="head_sweep", done=i, total=10_000, message=f"ablating head {i}")
            time.sleep(0.01)
    monkeypatch.setattr(ablation_module, "run_head_sweep", slow_sweep)
    tab.ablation_panel.run_sweep()
    assert tab.busy and not tab.run_button.isEnabled()
    qtbot.waitUntil(lambda: tab.progress.maximum() == 1000 and "ablating head" in tab.status.text(), timeout=10_000)
    assert tab.stop_button.isVisible()
    tab.stop_button.click()
    wait_idle(qtbot, tab)
    assert len(started) < 10_000 and tab.status.text() == "Stopped." and tab.run_button.isEnabled()
    assert tab.ablation_panel.ranking.rowCount() == 0


def test_a_new_model_clears_and_reruns(qtbot, tab):
    old = tab.lens
    tok = tab.state.tokenizer
    torch.manual_seed(5)
    tab.state.set_model(GPT(tab.state.config.with_changes(n_layers=2, n_heads=2)), tok)
    qtbot.waitUntil(lambda: tab.lens is not None and tab.lens is not old and not tab.busy, timeout=20_000)
    assert tab.lens.top_ids.shape[0] == 2 and tab.ablation_panel.grid.rowCount() == 2


def test_no_model_is_a_message(qtbot, runner):
    tab = InsideTab(AppState(), runner)
    qtbot.addWidget(tab)
    tab.run()
    assert not tab.busy and "No model" in tab.status.text()


def test_readable_in_both_themes(qtbot, tab):
    app = QApplication.instance()
    try:
        for name in ("dark", "light"):
            theme.apply_theme(app, name)
            qtbot.wait(10)
            base = tab.palette().color(QPalette.ColorRole.Base)
            cell = tab.lens_panel.model.index(0, 0)
            bg = cell.data(Qt.ItemDataRole.BackgroundRole)
            fg = cell.data(Qt.ItemDataRole.ForegroundRole)
            # the tint is laid over this theme's base colour, and the text contrasts with it
            p = float(tab.lens.top_probs[0, 0, 0])
            assert abs(bg.lightnessF() - base.lightnessF()) < 0.9 * p + 0.05
            assert abs(fg.lightnessF() - bg.lightnessF()) > 0.35
    finally:
        theme.apply_theme(app, "system")
