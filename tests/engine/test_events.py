"""Events are classes: dispatch by class, JSON names kept exactly, a misspelling fails loudly."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import engine
from engine import events
from engine.events import Event, ProgressEvent, StepEvent, run_job
from engine.hub import HubDownloadProgress
from engine.tokenizers import BPETrainedEvent, CharTokenizer

# The "event" field of `--json` output is an interface: these names must never change.
JSON_NAMES = {
    events.StartedEvent: "started", events.StepEvent: "step", events.EvalEvent: "eval",
    events.SampleEvent: "sample", events.AttentionProbeEvent: "attention_probe", events.CheckpointEvent: "checkpoint",
    events.ProgressEvent: "progress", events.FinishedEvent: "finished", events.ErrorEvent: "error",
    BPETrainedEvent: "bpe_trained", HubDownloadProgress: "progress",
}


def test_json_names_are_the_interface():
    for cls, name in JSON_NAMES.items():
        assert cls.json_name == name, cls
    step = StepEvent(step=1, total_steps=2, loss=1.5, lr=1e-3, grad_norm=0.5, tokens_seen=64, tokens_per_s=10.0,
                     mfu=0.1, elapsed_s=1.0, eta_s=1.0)
    assert step.to_json() == {"event": "step", **dataclasses.asdict(step)}
    probe = events.AttentionProbeEvent(step=3, tokens=("a", "b"), maps=np.zeros((1, 1, 2, 2), np.float32))
    # numpy arrays are left out of the JSON; the held-out probe fields (the Inside view's) stay, empty here.
    assert json.loads(json.dumps(probe.to_json())) == {"event": "attention_probe", "step": 3, "tokens": ["a", "b"],
                                                       "heldout_tokens": [], "heldout_loss": None,
                                                       "embedding_points": None}
    done = BPETrainedEvent(CharTokenizer.from_text("ab"), 0.5)
    assert done.to_json()["event"] == "bpe_trained"


def test_every_public_event_subclasses_event():
    public = [getattr(engine, name) for name in engine.__all__ if name.endswith("Event")]
    assert len(public) >= 12
    assert all(isinstance(cls, type) and issubclass(cls, Event) for cls in public)


def test_a_misspelt_event_fails_loudly():
    with pytest.raises(AttributeError):
        events.StepEvnt  # noqa: B018 - the point is that the lookup raises
    with pytest.raises(ImportError):
        from engine.events import EvalEvnt  # noqa: F401
    # The old string names are gone, so code still dispatching on them fails at once instead of matching nothing.
    with pytest.raises(AttributeError):
        ProgressEvent("job", 0, 1).kind  # noqa: B018


def test_events_dispatch_by_class_with_match():
    def what(event: Event) -> str:
        match event:
            case ProgressEvent(job="eval"):
                return "evaluating"
            case ProgressEvent():
                return "progress"
            case StepEvent():
                return "step"
            case _:
                raise TypeError(type(event).__name__)

    assert what(ProgressEvent("eval", 1, 2)) == "evaluating"
    assert what(HubDownloadProgress("download x", 1, 2)) == "progress"  # a subclass is still a ProgressEvent
    with pytest.raises(TypeError):
        what(events.CheckpointEvent(step=1, path="x"))


def test_a_json_name_belongs_to_one_class():
    with pytest.raises(TypeError, match="already belongs to StepEvent"):
        @dataclasses.dataclass(frozen=True)
        class Impostor(Event):
            json_name = "step"


def test_events_that_stay_in_the_process_have_no_json_form():
    @dataclasses.dataclass(frozen=True)
    class Local(Event):
        value: int

    with pytest.raises(TypeError, match="not written as JSON"):
        Local(1).to_json()


def test_run_job_hands_over_the_events_and_returns_the_result():
    def job():
        yield ProgressEvent("x", 0, 2)
        yield ProgressEvent("x", 1, 2)
        return "result"

    seen = []
    assert run_job(job(), seen.append) == "result"
    assert [e.done for e in seen] == [0, 1]
    assert run_job(job()) == "result"
