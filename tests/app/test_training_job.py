"""The app's training job prepares its run with the engine's prepare_run: every spec the command line takes."""
from __future__ import annotations

import copy

import torch

from app.jobs.training import PreparedEvent, TrainingJob, copy_model
from engine import (
    GPT,
    FinishedEvent,
    ModelConfig,
    ProgressEvent,
    RunSpec,
    StepEvent,
    TrainConfig,
)

SHAPE = ModelConfig(vocab_size=256, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
TRAIN = TrainConfig(steps=2, batch_size=2, eval_interval=2, eval_batches=1, sample_interval=0, seed=5)


def test_the_job_takes_a_bpe_spec_with_the_cl100k_pattern():
    job = TrainingJob(RunSpec(TRAIN, corpus="sort", tokenizer="bpe:300:cl100k", model_config=SHAPE, probe=True))
    events = list(job.events())
    prepared = next(e for e in events if isinstance(e, PreparedEvent))
    assert prepared.vocab_size == 300 and prepared.tokenizer.startswith("bpe-300-cl100k")
    assert job.tokenizer.name == "bpe-300-cl100k"  # the same tokenizer as get_tokenizer's: tests/engine/test_run.py
    assert any(isinstance(e, ProgressEvent) and e.job == "bpe" for e in events)  # the BPE's progress is shown
    assert [e.step for e in events if isinstance(e, StepEvent)] == [1, 2] and isinstance(events[-1], FinishedEvent)
    assert job.trained_steps == 2 and job.trainer.state()["tokenizer_spec"] == "bpe:300:cl100k"


def test_fine_tuning_trains_the_copy_it_is_given():
    first = TrainingJob(RunSpec(TRAIN, corpus="copy", model_config=SHAPE))
    list(first.events())
    model = first.trainer.model
    before = copy.deepcopy(model.state_dict())
    job = TrainingJob(RunSpec(TRAIN, corpus="reverse", tokenizer=first.tokenizer, init=copy.deepcopy(model)))
    list(job.events())
    assert job.fine_tune and job.trainer.model is not model and job.trained_steps == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched


def test_copy_model_is_an_independent_equal_model_with_its_ties():
    torch.manual_seed(0)
    model = GPT(SHAPE.with_changes(drop_rate=0.1)).eval()
    clone = copy_model(model)
    x = torch.randint(0, SHAPE.vocab_size, (2, 8))
    assert torch.equal(model(x)[0], clone(x)[0]) and not clone.training
    assert clone.head.weight is clone.tok_emb.weight  # the tied head stays tied
    for (name, a), b in zip(model.state_dict().items(), clone.state_dict().values()):
        assert a.data_ptr() != b.data_ptr(), name
    with torch.no_grad():
        clone.tok_emb.weight.add_(1.0)
    assert not torch.equal(model(x)[0], clone(x)[0])


def test_with_copy_init_the_job_copies_the_model_itself():
    first = TrainingJob(RunSpec(TRAIN, corpus="copy", model_config=SHAPE))
    list(first.events())
    model = first.trainer.model
    before = copy.deepcopy(model.state_dict())
    job = TrainingJob(RunSpec(TRAIN, corpus="reverse", tokenizer=first.tokenizer, init=model), copy_init=True)
    events = list(job.events())
    assert isinstance(events[-1], FinishedEvent) and job.trained_steps == 2 and job.trainer.model is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
