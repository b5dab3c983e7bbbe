"""The training loop: event stream, schedule, accumulation, stopping, errors, and learning a task."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from engine import device as device_module
from engine.config import ModelConfig, TrainConfig
from engine.data import Dataset, load_corpus
from engine.device import cpu_supports_bf16
from engine.events import (
    AttentionProbeEvent,
    ErrorEvent,
    EvalEvent,
    FinishedEvent,
    ProgressEvent,
    SampleEvent,
    StartedEvent,
    StepEvent,
)
from engine.generation import SamplingConfig, attention_maps, generate
from engine.model import GPT
from engine.tokenizers import CharTokenizer
from engine.training.trainer import PROBE_TOKENS, Trainer, corpus_probe_ids, lr_at

CONFIG = ModelConfig(vocab_size=32, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    corpus = load_corpus("copy")
    return Dataset.build(corpus, CharTokenizer.from_text(corpus.text()), CONFIG.context_length)


def tc(**changes) -> TrainConfig:
    base = dict(steps=4, batch_size=4, lr=1e-3, warmup_steps=1, eval_interval=2, eval_batches=2,
                sample_interval=0, sample_tokens=20, seed=3)
    return TrainConfig(**{**base, **changes})


def test_event_stream(dataset):
    trainer = Trainer(CONFIG, tc(sample_interval=2), dataset, probe_text="abcdef|abcdef\n")
    events = list(trainer.run())
    kinds = [type(e) for e in events if not isinstance(e, ProgressEvent)]
    assert kinds[0] is StartedEvent and kinds[-1] is FinishedEvent
    assert [e.step for e in events if isinstance(e, StepEvent)] == [1, 2, 3, 4]
    assert [e.step for e in events if isinstance(e, EvalEvent)] == [0, 2, 4]
    assert [e.step for e in events if isinstance(e, SampleEvent)] == [0, 2, 4]
    # each evaluation yields between batches, so a GUI can pause or stop inside it
    assert sum(isinstance(e, ProgressEvent) for e in events) == 3 * 2 * trainer.eval_batches
    step = next(e for e in events if isinstance(e, StepEvent))
    assert step.tokens_seen == 4 * 16 and step.tokens_per_s > 0 and 0 <= step.mfu and step.eta_s >= 0
    assert math.isfinite(step.grad_norm) and step.lr == pytest.approx(1e-3)
    probe = next(e for e in events if isinstance(e, AttentionProbeEvent))
    assert probe.maps.dtype == np.float32 and probe.maps.shape == (2, 4, 14, 14)
    assert probe.tokens[:3] == ("a", "b", "c")
    np.testing.assert_allclose(probe.maps.sum(-1), 1.0, rtol=1e-5)
    sample = next(e for e in events if isinstance(e, SampleEvent))
    assert isinstance(sample.text, str) and len(sample.text) == 20
    finished = events[-1]
    assert finished.reason == "completed" and finished.step == 4
    for e in events:  # nothing live crosses a thread: every event is JSON-able
        json.dumps(e.to_json())
    json.dumps(trainer.state())
    assert trainer.state()["history"]["val_step"] == [0, 2, 4]


def test_long_probe_text_is_cut_to_the_context(dataset):
    trainer = Trainer(CONFIG, tc(steps=1), dataset, probe_text="abc|abc\n" * 20)
    probe = next(e for e in trainer.run() if isinstance(e, AttentionProbeEvent))
    assert probe.maps.shape[-1] == CONFIG.context_length


def test_probe_ids_follow_one_rule(dataset):
    corpus, tok = dataset.corpus, dataset.tokenizer
    ids = corpus_probe_ids(corpus, tok, 1024)
    assert ids == tok.encode(corpus.sample_passage())[:PROBE_TOKENS] and len(ids) == PROBE_TOKENS
    assert corpus_probe_ids(corpus, tok, 10) == ids[:10]
    trainer = Trainer(CONFIG, tc(steps=1), dataset, probe_ids=ids)
    assert trainer.probe_ids == ids[:CONFIG.context_length]
    probe = trainer.attention_probe()
    np.testing.assert_allclose(probe.maps, attention_maps(trainer.model, trainer.probe_ids))
    with pytest.raises(ValueError, match="probe token ids"):
        Trainer(CONFIG, tc(steps=1), dataset, probe_ids=[1, 2, CONFIG.vocab_size])


def test_samples_come_from_the_engines_generate(dataset):
    """The run's samples are the engine's generate at temperature 0.8, top-k 40 and the run's seed, with its
    prompt rules (an empty prompt starts from a newline here) and its sliding window (40 tokens > context 16)."""
    trainer = Trainer(CONFIG, tc(steps=1), dataset)
    list(trainer.run())
    tok = dataset.tokenizer
    for prompt in ("abc|", ""):
        expected = generate(trainer.model, tok, prompt, SamplingConfig(temperature=0.8, top_k=40, seed=3,
                                                                       max_new_tokens=40))
        text = trainer.sample(prompt, 40)
        assert text == expected.text and len(text) == 40
        assert trainer.sample(prompt, 40) == text  # the same model gives the same sample


def test_learning_rate_schedule():
    config = tc(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, config) == pytest.approx(1e-4)
    assert lr_at(9, config) == pytest.approx(1e-3)
    assert lr_at(10, config) == pytest.approx(1e-3)
    assert lr_at(55, config) == pytest.approx(0.55e-3)
    assert lr_at(100, config) == pytest.approx(1e-4)
    values = [lr_at(s, config) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_grad_accumulation_equals_a_bigger_batch(dataset):
    """4 x 2 accumulated micro-batches == one batch of 8 (the same rows, drawn in the same order)."""
    big = Trainer(CONFIG, tc(steps=1, batch_size=8), dataset)
    acc = Trainer(CONFIG, tc(steps=1, batch_size=4, grad_accum=2), dataset)
    list(big.run())
    list(acc.run())
    assert big.history["loss"][0] == pytest.approx(acc.history["loss"][0], abs=1e-5)
    for a, b in zip(big.model.parameters(), acc.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_samples_and_evaluation_leave_training_unchanged(dataset):
    quiet = Trainer(CONFIG, tc(eval_interval=100), dataset)
    busy = Trainer(CONFIG, tc(eval_interval=1, sample_interval=1), dataset, probe_text="abc|abc")
    list(quiet.run())
    list(busy.run())
    for a, b in zip(quiet.model.parameters(), busy.model.parameters()):
        assert torch.equal(a, b)


def test_request_stop(dataset):
    trainer = Trainer(CONFIG, tc(steps=50, eval_interval=100), dataset)
    events = []
    for event in trainer.run():
        events.append(event)
        if isinstance(event, StepEvent) and event.step == 2:
            trainer.request_stop()
    assert isinstance(events[-1], FinishedEvent) and events[-1].reason == "stopped" and events[-1].step == 2
    assert isinstance(events[-2], StepEvent)  # no last evaluation or sample: Stop stops
    assert trainer.history["val_step"] == [0]
    evaluation = list(trainer.evaluate())  # the user can evaluate afterwards
    assert [e.step for e in evaluation if isinstance(e, EvalEvent)] == [2] and trainer.history["val_step"] == [0, 2]


def test_closing_the_generator_is_safe(dataset):
    trainer = Trainer(CONFIG, tc(steps=3, eval_interval=100), dataset)
    run = trainer.run()
    for event in run:
        if isinstance(event, StepEvent):
            break
    run.close()
    assert trainer.step == 1 and not trainer.model.training
    events = list(trainer.run())  # a new run continues from there
    assert isinstance(events[-1], FinishedEvent) and [e.step for e in events if isinstance(e, StepEvent)] == [2, 3]


def test_non_finite_loss_keeps_last_good_weights(dataset):
    trainer = Trainer(CONFIG, tc(steps=10, eval_interval=100), dataset)
    original_forward = trainer.model.forward
    calls = {"n": 0}

    def poisoned(idx, targets=None, **kw):
        logits, loss = original_forward(idx, targets, **kw)
        if targets is not None and trainer.model.training:
            calls["n"] += 1
            if calls["n"] == 3:
                loss = loss * float("nan")
        return logits, loss

    trainer.model.forward = poisoned
    snapshot = None
    events = []
    for event in trainer.run():
        events.append(event)
        if isinstance(event, StepEvent) and event.step == 2:
            snapshot = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    error = events[-1]
    assert isinstance(error, ErrorEvent) and "nan" in error.message and error.hint
    assert not any(isinstance(e, FinishedEvent) for e in events)
    assert trainer.step == 2
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, snapshot[name]), name


def test_out_of_memory_is_reported(dataset, monkeypatch):
    trainer = Trainer(CONFIG, tc(steps=5), dataset)

    def oom(lr):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(trainer, "_train_step", oom)
    events = list(trainer.run())
    assert isinstance(events[-1], ErrorEvent) and "out of GPU memory" in events[-1].message
    assert "smaller batch" in events[-1].hint


def test_fine_tuning_starts_from_given_weights(dataset):
    torch.manual_seed(0)
    model = GPT(CONFIG)
    before = model.tok_emb.weight.detach().clone()
    trainer = Trainer(ModelConfig(), tc(steps=1), dataset, model=model)  # the model's own config wins
    assert trainer.model is model and trainer.config == CONFIG
    assert torch.equal(trainer.model.tok_emb.weight, before)
    list(trainer.run())
    assert not torch.equal(trainer.model.tok_emb.weight, before)


def test_bad_settings_are_refused(dataset):
    with pytest.raises(ValueError, match="fp16"):
        Trainer(CONFIG, tc(precision="fp16", device="cpu"), dataset)
    with pytest.raises(ValueError, match="vocab_size"):
        Trainer(CONFIG.with_changes(vocab_size=5), tc(), dataset)
    with pytest.raises(ValueError, match="too short"):
        Trainer(CONFIG.with_changes(context_length=30_000), tc(), dataset)
    with pytest.raises(ValueError):
        tc(batch_size=0)


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16")
def test_bf16_autocast_on_cpu(dataset):
    trainer = Trainer(CONFIG, tc(precision="bf16"), dataset)
    events = list(trainer.run())
    assert isinstance(events[-1], FinishedEvent)
    assert all(math.isfinite(e.loss) for e in events if isinstance(e, StepEvent))
    assert trainer.model.tok_emb.weight.dtype == torch.float32  # master weights stay fp32


def test_peak_flops_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_PLAYGROUND_CACHE", str(tmp_path))
    monkeypatch.setattr(device_module, "_peak_memo", {})
    calls = []
    monkeypatch.setattr(device_module, "measure_peak_flops", lambda d, p: calls.append(p) or 1e11)
    cpu = torch.device("cpu")
    assert device_module.peak_flops(cpu, "fp32") == 1e11
    monkeypatch.setattr(device_module, "_peak_memo", {})  # a new process: reads the cache file
    assert device_module.peak_flops(cpu, "fp32") == 1e11
    assert calls == ["fp32"] and (tmp_path / "peak_flops.json").exists()
    # A probe taken on a busy machine reads low: a refresh (the benchmarks) keeps the higher figure.
    monkeypatch.setattr(device_module, "measure_peak_flops", lambda d, p: 3e11)
    assert device_module.peak_flops(cpu, "fp32", refresh=True) == 3e11
    monkeypatch.setattr(device_module, "measure_peak_flops", lambda d, p: 2e11)
    assert device_module.peak_flops(cpu, "fp32", refresh=True) == 3e11
    monkeypatch.setattr(device_module, "_peak_memo", {})
    assert device_module.peak_flops(cpu, "fp32") == 3e11  # and the cache file has it


def test_mfu_never_above_100_percent_after_a_bogus_cached_peak(dataset, tmp_path, monkeypatch):
    """A peak probed under load (here: 1 kFLOP/s in the cache file) makes the run re-probe, and MFU <= 1."""
    monkeypatch.setenv("LLM_PLAYGROUND_CACHE", str(tmp_path))
    monkeypatch.setattr(device_module, "_peak_memo", {})
    monkeypatch.setattr(device_module, "_reprobed", set())
    cpu = torch.device("cpu")
    key = device_module._probe_key(cpu, "fp32")
    (tmp_path / "peak_flops.json").write_text(json.dumps({key: 1e3}))
    probes = []
    real = device_module.measure_peak_flops
    monkeypatch.setattr(device_module, "measure_peak_flops",
                        lambda d, p: probes.append(p) or real(d, p, seconds=0.1, bursts=2, size=512))
    events = list(Trainer(CONFIG, tc(steps=6, eval_interval=100), dataset).run())
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert steps and all(0 < e.mfu <= 1.0 for e in steps)
    assert probes == ["fp32"]  # probed again once, not at every step
    cached = json.loads((tmp_path / "peak_flops.json").read_text())[key]
    assert cached > 1e6  # the bogus figure is gone from the cache


def test_a_peak_below_what_a_run_achieves_is_raised_to_it(tmp_path, monkeypatch):
    """Even when the new probe also reads low (a machine busy all along), MFU cannot pass 100%."""
    monkeypatch.setenv("LLM_PLAYGROUND_CACHE", str(tmp_path))
    monkeypatch.setattr(device_module, "_peak_memo", {})
    monkeypatch.setattr(device_module, "_reprobed", set())
    calls = []
    monkeypatch.setattr(device_module, "measure_peak_flops", lambda d, p: calls.append(p) or 1e9)
    cpu = torch.device("cpu")
    assert device_module.peak_flops(cpu, "fp32") == 1e9
    assert device_module.peak_flops(cpu, "fp32", at_least=5e8) == 1e9  # below the peak: nothing to do
    assert calls == ["fp32"]
    assert device_module.peak_flops(cpu, "fp32", at_least=3e9) == 3e9  # probed again (1e9), raised to 3e9
    assert device_module.peak_flops(cpu, "fp32", at_least=4e9) == 4e9  # no third probe in this process
    assert calls == ["fp32", "fp32"]


def test_the_peak_cache_is_keyed_by_device_model_and_torch_build():
    key = device_module._probe_key(torch.device("cpu"), "fp32")
    assert device_module._cpu_model() in key and torch.__version__ in key
    assert f"|{torch.get_num_threads()}|" in key
