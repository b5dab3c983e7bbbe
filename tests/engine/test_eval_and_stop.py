"""Evaluation sized by cost, and a Stop that stops: between micro-batches, inside an evaluation or a sample,
with nothing after it, and a run that goes on afterwards as if it had never stopped."""
from __future__ import annotations

import math

import pytest
import torch

from engine.config import PRESETS, ModelConfig, TrainConfig
from engine.data import Dataset, load_corpus
from engine.events import EvalEvent, FinishedEvent, ProgressEvent, SampleEvent, StepEvent
from engine.model import GPT
from engine.tokenizers import CharTokenizer
from engine.training import budget
from engine.training import trainer as trainer_module
from engine.training.budget import EVAL_SHARE, FIRST_EVAL_FLOPS, eval_batches_per_split
from engine.training.trainer import Trainer

CONFIG = ModelConfig(vocab_size=32, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    corpus = load_corpus("copy")
    return Dataset.build(corpus, CharTokenizer.from_text(corpus.text()), CONFIG.context_length)


def tc(**changes) -> TrainConfig:
    base = dict(steps=6, batch_size=4, lr=1e-3, warmup_steps=1, eval_interval=3, sample_interval=0,
                sample_tokens=20, seed=3)
    return TrainConfig(**{**base, **changes})


@pytest.mark.parametrize("interval,accum", [(1, 1), (7, 1), (50, 1), (50, 4), (400, 2), (10_000, 1)])
def test_automatic_evaluation_costs_a_tenth_of_the_training_between_two(interval, accum):
    config = TrainConfig(eval_interval=interval, grad_accum=accum, batch_size=8, eval_batches=50)
    n = eval_batches_per_split(config, 128)
    # cost in forward passes of one batch: the evaluation reads 2 splits; a training step is 3 per micro-batch
    eval_cost, train_cost = 2 * n, 3 * interval * accum
    if n == config.eval_batches:  # capped: cheaper still
        assert eval_cost <= EVAL_SHARE * train_cost * 1.01
    elif n > 1:  # whole batches: within one batch of the share
        assert EVAL_SHARE * train_cost <= eval_cost <= EVAL_SHARE * train_cost + 2
    else:  # at least one batch per split
        assert 1.5 * EVAL_SHARE * interval * accum <= 1


def test_eval_tokens_sets_the_budget_in_tokens(dataset):
    config = tc(eval_tokens=200, eval_interval=3, steps=3)
    assert eval_batches_per_split(config, CONFIG.context_length) == math.ceil(200 / (4 * 16))
    trainer = Trainer(CONFIG, config, dataset)
    events = list(trainer.run())
    per_eval = [e for e in events if isinstance(e, ProgressEvent) and e.job == "eval"]
    assert [e.step for e in events if isinstance(e, EvalEvent)] == [0, 3]
    assert len(per_eval) == 2 * 2 * 4 and per_eval[-1].total == 8


def test_a_costly_first_evaluation_is_left_out(dataset, monkeypatch):
    trainer = Trainer(CONFIG, tc(), dataset)
    assert trainer.first_eval_is_cheap()
    monkeypatch.setattr(budget, "FIRST_EVAL_FLOPS", 0)
    events = list(trainer.run())
    assert isinstance(events[1], StepEvent)  # the first optimizer step comes first
    assert [e.step for e in events if isinstance(e, EvalEvent)] == [3, 6]


def test_a_gpt2_124m_first_evaluation_would_be_costly():
    """At batch 1 and the default interval its first evaluation reads 8 x 1,024 tokens per split: far over
    the bound (a minute on a laptop CPU), so fine-tuning it starts with a step."""
    with torch.device("meta"):
        model = GPT(PRESETS["gpt2-124m"])
    batches = eval_batches_per_split(TrainConfig(batch_size=1), 1024)
    assert batches == 8
    assert 2 * batches * 1024 * model.flops_per_token() / 3 > 10 * FIRST_EVAL_FLOPS


def test_stop_between_micro_batches_drops_the_step_and_the_run_goes_on_exactly(dataset, monkeypatch):
    straight = Trainer(CONFIG, tc(grad_accum=4, eval_interval=100), dataset)
    list(straight.run())

    stopped = Trainer(CONFIG, tc(grad_accum=4, eval_interval=100), dataset)
    calls = {"n": 0}
    real_get_batch = stopped.dataset.get_batch

    def get_batch(split, batch_size, context, generator, device):
        calls["n"] += generator is stopped.batch_generator  # training batches, not evaluation ones
        if calls["n"] == 4 * 2 + 2:  # the second micro-batch of the third step
            stopped.request_stop()
        return real_get_batch(split, batch_size, context, generator, device)

    monkeypatch.setattr(stopped.dataset, "get_batch", get_batch)
    events = list(stopped.run())
    assert isinstance(events[-1], FinishedEvent) and events[-1].reason == "stopped" and events[-1].step == 2
    assert isinstance(events[-2], StepEvent) and events[-2].step == 2
    assert calls["n"] == 4 * 2 + 2  # no micro-batch after the stop
    assert all(p.grad is None for p in stopped.model.parameters())
    monkeypatch.setattr(stopped.dataset, "get_batch", real_get_batch)
    list(stopped.run())  # goes on from step 2, drawing what the dropped step would have drawn
    assert stopped.step == straight.step == 6
    for a, b in zip(straight.model.parameters(), stopped.model.parameters()):
        assert torch.equal(a, b)


def test_stop_inside_an_evaluation_ends_it_and_records_nothing(dataset):
    trainer = Trainer(CONFIG, tc(eval_tokens=640), dataset)
    events = []
    for event in trainer.run():
        events.append(event)
        if isinstance(event, ProgressEvent) and event.job == "eval" and trainer.step == 3 and event.done == 2:
            trainer.request_stop()
    assert isinstance(events[-1], FinishedEvent) and events[-1].reason == "stopped" and events[-1].step == 3
    assert isinstance(events[-2], ProgressEvent) and events[-2].done == 2  # the other batches were not read
    assert trainer.history["val_step"] == [0]


def test_stop_inside_a_sample_ends_it(dataset, monkeypatch):
    trainer = Trainer(CONFIG, tc(sample_interval=3, sample_tokens=50), dataset)
    real = trainer_module.stream_generate
    tokens = {"n": 0}

    def stream_generate(*args, **kwargs):
        for event in real(*args, **kwargs):
            tokens["n"] += 1
            if trainer.step == 3 and tokens["n"] > 60:  # a few tokens into the sample at step 3
                trainer.request_stop()
            yield event

    monkeypatch.setattr(trainer_module, "stream_generate", stream_generate)
    events = list(trainer.run())
    assert [e.step for e in events if isinstance(e, SampleEvent)] == [0]
    assert [e.step for e in events if isinstance(e, EvalEvent)] == [0, 3]  # the sample came after it
    assert events[-1].reason == "stopped" and events[-1].step == 3 and tokens["n"] < 50 + 1 + 15


def test_a_stop_asked_before_the_run_begins_counts(dataset):
    trainer = Trainer(CONFIG, tc(), dataset)
    trainer.request_stop()
    events = list(trainer.run())
    assert [type(e).__name__ for e in events if not isinstance(e, ProgressEvent)] == \
        ["StartedEvent", "FinishedEvent"]
    assert events[-1].reason == "stopped" and trainer.step == 0


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_stop_inside_a_micro_batch_drops_the_step_at_the_next_block(dataset, where):
    """batch x context of a 124M model takes seconds per pass on a laptop CPU: a stop is honoured by the
    next block, forward or backward, not at the end of the micro-batch."""
    straight = Trainer(CONFIG, tc(eval_interval=100), dataset)
    list(straight.run())
    stopped = Trainer(CONFIG, tc(eval_interval=100), dataset)
    reached = []

    def ask_stop(*_args):
        if stopped.step == 2 and stopped.model.training and not reached:
            reached.append(where)
            stopped.request_stop()

    if where == "forward":
        handle = stopped.model.blocks[0].register_forward_hook(ask_stop)
    else:
        handle = stopped.model.blocks[-1].register_full_backward_pre_hook(ask_stop)
    events = list(stopped.run())
    handle.remove()
    assert reached == [where]
    assert events[-1].reason == "stopped" and events[-1].step == 2 and stopped.step == 2
    assert all(p.grad is None for p in stopped.model.parameters())
    assert not stopped.model.blocks[0]._forward_hooks  # the stop hooks are gone with the run
    list(stopped.run())
    for a, b in zip(straight.model.parameters(), stopped.model.parameters()):
        assert torch.equal(a, b)
