"""The model card's training memory: the engine's estimate for the chosen batch and context, shown before Start,
and a run that cannot fit the free memory refused with how to fit it; the evaluation budget in the form."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.formatting import format_bytes
from app.state import AppState
from app.tabs.training import model_panel as model_panel_module
from app.tabs.training.model_panel import ModelPanel
from app.tabs.training.train_form import TrainSettingsForm
from engine import TrainConfig, training_memory_bytes


def test_the_card_shows_the_estimate_for_the_batch_and_refuses_what_cannot_fit(qtbot, monkeypatch):
    panel = ModelPanel(AppState())
    qtbot.addWidget(panel)
    assert panel.memory_problem() is None and "–" in panel.training_memory_label.text()  # no settings yet
    small, big = TrainConfig(batch_size=2, device="cpu"), TrainConfig(batch_size=64, device="cpu")
    estimates = {}
    for train in (small, big):
        panel.set_train_config(train)
        estimates[train.batch_size] = training_memory_bytes(panel.config(), train)
        assert format_bytes(estimates[train.batch_size]) in panel.training_memory_label.text()
        assert "activations" in panel.training_memory_label.toolTip()
    assert estimates[64] > estimates[2]  # activations grow with the batch
    assert panel.memory_problem() is None  # a tiny model fits this machine

    monkeypatch.setattr(model_panel_module, "available_memory_bytes", lambda device: estimates[64] // 2)
    panel.set_train_config(big)
    problem = panel.memory_problem()
    assert problem is not None and "\n" not in problem
    assert "batch size" in problem and "gradient accumulation" in problem and "bf16" in problem
    assert panel.training_memory_label.objectName() == "errorLabel"
    panel.set_train_config(small)  # a smaller batch fits again
    assert panel.memory_problem() is None and panel.training_memory_label.objectName() == "mutedLabel"


def test_the_train_form_sets_the_evaluation_budget_in_tokens(qtbot):
    form = TrainSettingsForm()
    qtbot.addWidget(form)
    assert form.eval_tokens.text() == "auto" and form.train_config().eval_tokens == 0  # automatic by default
    form.eval_tokens.setValue(4096)
    assert form.train_config().eval_tokens == 4096 and form.values()["eval_tokens"] == 4096
    form.set_values({"eval_tokens": 10**12})  # a checkpoint's value the box cannot hold: clamped, and said so
    assert form.eval_tokens.value() == form.eval_tokens.maximum()
