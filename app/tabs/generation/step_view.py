"""The distribution view's data for the selected step of the Generation tab.

The step's logits are what the engine's own inference forward gives for the tokens it saw then
(computed here for a small model, in a job for a big one, and cached); the column's current settings
filter them (engine.filter_stages), so moving a slider shows at once what it would change.
"""
from __future__ import annotations

import html
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from PySide6.QtCore import QObject, Slot

from app.tabs.generation.distribution import DistributionData, DistributionView
from app.tabs.generation.jobs import logits_job, sampling_config, step_logits
from app.worker import Job
from engine import filter_stages, window_length

TOP_CANDIDATES = 20
LOGITS_CACHE = 64  # recomputed raw logits kept for quick re-selection
LOGITS_JOB_NAME = "generate-distribution"
# A step's forward pass costing more than this (2 x params x tokens) runs in a job, not on the GUI thread.
INLINE_FLOPS = 5e8


class StepDistribution(QObject):
    """Feeds the DistributionView for the tab's selected (column, step). `owner` is the GenerationTab:
    its state, runner, run, columns and selection."""

    def __init__(self, owner: Any, view: DistributionView):
        super().__init__(owner)
        self.owner = owner
        self.view = view
        self.cache: OrderedDict[tuple[int, int, int], torch.Tensor] = OrderedDict()
        self._job: Job | None = None
        self._wanted: tuple[tuple[int, int, int], list[int]] | None = None

    def forget(self) -> None:
        """A new model: nothing cached or wanted belongs to it."""
        self.cache.clear()
        self._wanted = None

    def refresh(self) -> None:
        """Recompute the distribution view for the selected step with its column's current settings."""
        owner = self.owner
        run, selection, model = owner.run, owner._selection, owner.state.model
        if run is None or selection is None or model is None:
            return
        col, step = selection
        if col >= len(run.ids) or step >= len(run.ids[col]):
            return
        key = (id(model), col, step)
        logits = self.cache.get(key)
        if logits is None:
            window_ids = self._window_ids(col, step)
            if 2 * model.config.num_params() * len(window_ids) > INLINE_FLOPS:
                self._request_logits(key, window_ids)  # a big model: one forward would freeze the window
                return
            try:
                logits = step_logits(model, run.precision, window_ids)
            except (ValueError, RuntimeError) as e:
                self.view.clear(f"Cannot show this step: {e}")
                return
            self._remember_logits(key, logits)
        prev_ids = run.prompt_ids + run.ids[col][:step]
        try:
            stages = filter_stages(logits, sampling_config(self.owner.columns[col].settings(), 1, 0), prev_ids)
        except ValueError as e:
            self.view.clear(f"Cannot show this step: {e}")
            return
        self.view.show_data(self._data(col, step, stages))

    def _window_ids(self, col: int, step: int) -> list[int]:
        """The tokens the engine's forward saw when it chose this step's token."""
        run = self.owner.run
        ids = run.prompt_ids + run.ids[col][:step]
        return ids[-window_length(len(run.prompt_ids), step, self.owner.state.config.context_length):]

    def _remember_logits(self, key: tuple[int, int, int], logits: torch.Tensor) -> None:
        self.cache[key] = logits
        self.cache.move_to_end(key)
        if len(self.cache) > LOGITS_CACHE:
            self.cache.popitem(last=False)

    def _request_logits(self, key: tuple[int, int, int], window_ids: list[int]) -> None:
        """Compute a step's logits in a job; only the latest request matters while one runs."""
        self._wanted = (key, window_ids)
        self.view.summary.setText("Computing the distribution of this step…")
        if self._job is not None:
            return
        job = self.owner.runner.start(LOGITS_JOB_NAME, logits_job(self.owner.state.model, self.owner.run.precision, key,
                                                                    window_ids))
        job.events.connect(self._on_logits_events)
        job.failed.connect(self._on_logits_failed)
        job.finished.connect(self._on_logits_finished)
        self._job = job

    @Slot(list)
    def _on_logits_events(self, batch: list) -> None:
        for event in batch:
            self._remember_logits(event.key, event.logits)
            owner = self.owner
            if owner.state.model is not None and owner._selection is not None \
                    and event.key == (id(owner.state.model), *owner._selection):
                self.refresh()

    @Slot(str)
    def _on_logits_failed(self, message: str) -> None:
        self.view.clear(f"Cannot show this step: {message}")

    @Slot()
    def _on_logits_finished(self) -> None:
        self._job = None
        wanted, self._wanted = self._wanted, None
        owner = self.owner
        if wanted is not None and wanted[0] not in self.cache and owner.run is not None \
                and owner.state.model is not None and wanted[0][0] == id(owner.state.model):
            self._request_logits(*wanted)

    def _data(self, col: int, step: int, stages: Any) -> DistributionData:
        run = self.owner.run
        tokenizer = self.owner.state.tokenizer
        column = self.owner.columns[col]
        raw, final = stages.raw, stages.final
        order = np.argsort(-raw, kind="stable")[:TOP_CANDIDATES]
        chosen_id = run.ids[col][step]
        if chosen_id not in order:
            order = np.append(order[:-1], chosen_id)
        labels = [_token_label(tokenizer.render_token(int(t))) for t in order]
        chosen = int(np.flatnonzero(order == chosen_id)[0])
        kept = int((final > 0).sum())
        counts = {key: int((stages.removed_by == key).sum()) for key in ("top_k", "top_p", "min_p", "greedy")}
        counts["penalty"] = int(stages.penalised.sum())
        record = run.records[col][step]
        before = _context(tokenizer.decode((run.prompt_ids + run.ids[col][:step])[-24:]))
        chosen_text = html.escape(_token_label(tokenizer.render_token(chosen_id)))
        parts = [f"{counts[k]:,} by {name}" for k, name in
                 (("top_k", "top-k"), ("top_p", "top-p"), ("min_p", "min-p"), ("greedy", "greedy decoding"))
                 if counts.get(k)]
        summary = (f"After “{before}” it chose “{chosen_text}” (p = {float(record.prob):.3f} when generated). "
                   f"With the column's current settings {kept:,} of {len(raw):,} tokens remain"
                   + (f"; removed {', '.join(parts)}" if parts else "")
                   + (f"; the repetition penalty lowered {counts['penalty']:,} seen tokens." if counts["penalty"]
                      else "."))
        title = f"Next-token distribution · {column.name} · step {step + 1}"
        return DistributionData(labels=labels, raw=raw[order], final=final[order],
                                removed_by=[str(r) for r in stages.removed_by[order]],
                                penalised=[bool(p) for p in stages.penalised[order]],
                                chosen=chosen, title=title, summary=summary, removed_counts=counts,
                                colour=column.colour)


def _token_label(text: str) -> str:
    """A token for a label: spaces shown as ␣ (render_token already escapes newlines and tabs)."""
    return text.replace(" ", "␣")


def _context(text: str) -> str:
    """Text before a step, on one line, HTML-safe."""
    return html.escape(text.replace("\n", "↵").replace("\t", "→"))
