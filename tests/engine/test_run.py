"""Preparing a run (engine.training.run): every tokenizer spec, new / fine-tuned / resumed models, and the
command line's flags going through it; the app's training job uses the same function (tests/app)."""
from __future__ import annotations

import dataclasses
import shlex

import pytest
import torch

from engine.checkpoint import load_checkpoint
from engine.cli import build_parser
from engine.cli.train import _run_spec, closest_preset, train_command
from engine.config import PRESETS, ModelConfig, TrainConfig
from engine.data import load_corpus
from engine.events import ProgressEvent, run_job
from engine.model import GPT
from engine.tokenizers import CharTokenizer, get_tokenizer
from engine.training.run import RunSpec, prepare_run
from engine.training.trainer import PROBE_TOKENS, corpus_probe_ids

SHAPE = ModelConfig(vocab_size=256, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
TRAIN = TrainConfig(steps=2, batch_size=2, eval_interval=2, eval_batches=1, sample_interval=0, seed=5)


def prepare(spec: RunSpec):
    seen: list[ProgressEvent] = []
    return run_job(prepare_run(spec), seen.append), seen


def test_a_new_model_on_a_char_tokenizer():
    run, seen = prepare(RunSpec(TRAIN, corpus="copy", model_config=SHAPE))
    assert [e.message for e in seen] == ["Loading corpus copy…", "Building tokenizer char…", "Tokenizing copy…"]
    corpus = load_corpus("copy")
    assert run.corpus.documents == corpus.documents and run.tokenizer_spec == "char"
    assert run.tokenizer.to_dict() == CharTokenizer.from_text(corpus.text()).to_dict()
    trainer = run.trainer
    assert trainer.config == SHAPE.with_changes(vocab_size=run.tokenizer.vocab_size) and trainer.step == 0
    assert trainer.optimizer is not None and not trainer.probe_ids
    assert trainer.state()["tokenizer_spec"] == "char" and trainer.state()["corpus"] == "copy"


def test_bpe_with_the_cl100k_pattern_trains_with_progress():
    run, seen = prepare(RunSpec(TRAIN, corpus="sort", tokenizer="bpe:300:cl100k", model_config=SHAPE))
    expected = get_tokenizer("bpe:300:cl100k", load_corpus("sort").text())
    assert run.tokenizer.name == "bpe-300-cl100k" and run.tokenizer.vocab_size == 300
    assert run.tokenizer.to_dict() == expected.to_dict()
    assert any(e.job == "bpe" for e in seen)  # the BPE's own progress reaches the caller
    assert run.trainer.config.vocab_size == 300 and run.trainer.state()["tokenizer_spec"] == "bpe:300:cl100k"


def test_fine_tuning_trains_the_given_weights_with_their_tokenizer():
    tokenizer = CharTokenizer.from_text(load_corpus("copy").text())
    model = GPT(SHAPE.with_changes(vocab_size=tokenizer.vocab_size))
    run, seen = prepare(RunSpec(TRAIN, corpus="reverse", tokenizer=tokenizer, init=model, probe=True))
    assert run.trainer.model is model and run.tokenizer is tokenizer and run.tokenizer_spec is None
    assert [e.message for e in seen] == ["Loading corpus reverse…", "Tokenizing reverse…"]
    assert run.trainer.probe_ids == corpus_probe_ids(run.corpus, tokenizer, SHAPE.context_length)
    assert 0 < len(run.trainer.probe_ids) <= min(PROBE_TOKENS, SHAPE.context_length)


def test_resume_continues_the_saved_run(tmp_path):
    first, _ = prepare(RunSpec(TRAIN, corpus="copy", model_config=SHAPE))
    list(first.trainer.run())
    path = tmp_path / "run.safetensors"
    first.trainer.save(path)
    run, _ = prepare(RunSpec(dataclasses.replace(TRAIN, steps=4), resume=load_checkpoint(path)))
    assert run.corpus.name == "copy" and run.tokenizer_spec == "char"  # the checkpoint's corpus and spec
    assert run.trainer.step == 2 and run.trainer.history["step"] == [1, 2]
    for a, b in zip(first.trainer.model.parameters(), run.trainer.model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("spec, message", [
    (RunSpec(TRAIN, corpus="copy"), "exactly one"),
    (RunSpec(TRAIN, corpus="copy", model_config=SHAPE, init=GPT(SHAPE)), "exactly one"),
    (RunSpec(TRAIN, corpus="copy", init=GPT(SHAPE)), "needs its tokenizer"),
    (RunSpec(TRAIN, corpus="copy", model_config=SHAPE, tokenizer="bpe:lots"), "bad tokenizer"),
    (RunSpec(TRAIN, corpus="copy", model_config=SHAPE, tokenizer="morse"), "unknown tokenizer"),
    (RunSpec(TRAIN, corpus="copy", tokenizer=CharTokenizer.from_text("abcdefgh"),
             init=GPT(SHAPE.with_changes(vocab_size=4))), "does not fit"),
])
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        prepare(spec)


def _spec_from_words(words: list[str]):
    args = build_parser().parse_args(words)
    return _run_spec(args)[1]


def test_the_command_line_builds_its_run_from_the_same_spec(tmp_path):
    out = str(tmp_path / "m.safetensors")
    spec = _spec_from_words(["train", "--preset", "tiny", "--n-layers", "2", "--corpus", "copy", "--tokenizer",
                             "bpe:300:cl100k", "--steps", "7", "--batch-size", "3", "--out", out])
    assert spec.model_config == PRESETS["tiny"].with_changes(n_layers=2) and spec.tokenizer == "bpe:300:cl100k"
    assert (spec.train_config.steps, spec.train_config.batch_size, spec.corpus) == (7, 3, "copy")


def test_the_export_command_reads_back_as_the_same_run(tmp_path):
    """The words the app exports (train_command) parse back, through the command line, into the same configs."""
    model = PRESETS["small"].with_changes(n_layers=3, emb_dim=192, drop_rate=0.05, vocab_size=999)
    train = TrainConfig(steps=300, batch_size=12, grad_accum=2, lr=6e-4, warmup_steps=30, eval_interval=25,
                        eval_tokens=4096, sample_interval=25, precision="bf16", device="cpu", seed=9)
    words = train_command(model, train, corpus="python-docs", tokenizer="bpe:1024", out=str(tmp_path / "m.st"))
    assert words[:3] == ["train", "--preset", "small"] == ["train", "--preset", closest_preset(model)]
    spec = _spec_from_words(shlex.split(shlex.join(words)))
    assert spec.model_config == model.with_changes(vocab_size=PRESETS["small"].vocab_size)
    assert spec.train_config == train and spec.tokenizer == "bpe:1024" and spec.corpus == "python-docs"
