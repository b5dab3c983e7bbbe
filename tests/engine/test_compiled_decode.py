"""Compiled static-cache decoding (engine/generation/compiled.py) against the eager decoding it replaces.

The compiled step is the real thing: torch.compile, mode "reduce-overhead", inductor's C++ backend on the
CPU (the same code that is captured as CUDA graphs on a GPU). Compiling is slow on a small CPU, so each
model shape and batch size is compiled once here (compiled steps are shared by shape, precision and
batch size), on tiny models whose context of 16 makes every run cross several sliding-window refills.
"""
from __future__ import annotations

import json
import types

import pytest
import torch

from engine.checkpoint import save_checkpoint
from engine.cli import main
from engine.config import ModelConfig, RopeScaling
from engine.events import ProgressEvent
from engine.generation import GenerationDoneEvent, SamplingConfig, decoder_for, stream_generate
from engine.generation.compiled import (
    STEPS_PER_DECODER,
    compile_by_default,
    compile_problem,
    compiled_step_for,
    use_compiled,
)
from engine.model import GPT
from engine.tokenizers import CharTokenizer

pytestmark = pytest.mark.slow

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,\n"
CONTEXT = 16
NEW_TOKENS = 40  # 5-token prompt + 40 > 16: the window refills four times


def _noisy(model: GPT, scale: float) -> GPT:
    """Weights far from their init, so tokens vary from step to step (an untrained tiny GPT repeats one)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_compile_thread():
    """Compile in this process: a pool of compile workers costs more than it saves on two cores."""
    inductor = pytest.importorskip("torch._inductor.config")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(inductor, "compile_threads", 1)
        yield


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.from_text(ALPHABET)


@pytest.fixture(scope="module")
def gpt2(tokenizer):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, context_length=CONTEXT, emb_dim=32, n_heads=2, n_layers=2,
                         drop_rate=0.0)
    return _noisy(GPT(config), 0.3)


@pytest.fixture(scope="module")
def llama(tokenizer):
    """The llama family at its most varied: rotary positions with Llama 3 scaling, grouped-query attention
    (4 query heads on 2 key/value heads), q/k/v biases, SwiGLU and an untied head."""
    torch.manual_seed(0)
    scaling = RopeScaling("llama3", 4.0, original_max_position_embeddings=8, low_freq_factor=1.0, high_freq_factor=4.0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, context_length=CONTEXT, emb_dim=32, n_heads=4, n_kv_heads=2,
                         n_layers=2, drop_rate=0.0, arch="llama", qkv_bias=True, tie_embeddings=False,
                         rope_scaling=scaling)
    return _noisy(GPT(config), 0.3)


def _run(model, tokenizer, configs, compile, precision="fp32"):
    events = list(stream_generate(model, tokenizer, "the q", configs, precision=precision, compile=compile))
    done = events[-1]
    assert isinstance(done, GenerationDoneEvent)
    return done, [e for e in events if isinstance(e, ProgressEvent)]


GREEDY = SamplingConfig(greedy=True, max_new_tokens=NEW_TOKENS)
SAMPLED = SamplingConfig(temperature=1.0, seed=7, max_new_tokens=NEW_TOKENS)
COLUMNS = [
    SamplingConfig(greedy=True, max_new_tokens=NEW_TOKENS),
    SamplingConfig(temperature=1.2, top_k=12, seed=3, max_new_tokens=NEW_TOKENS),
    SamplingConfig(temperature=0.9, top_p=0.9, repetition_penalty=1.3, seed=3, max_new_tokens=NEW_TOKENS - 7),
]


def test_the_fixed_shape_step_equals_the_eager_step(gpt2):
    """Decoder.step (masking by position over the whole cache, index_copy_ at a position tensor) computes what
    Decoder.forward computes by slicing, also with stale but finite values past the position; uncompiled."""
    decoder = decoder_for(gpt2)
    ids = torch.randint(0, gpt2.config.vocab_size, (2, CONTEXT), generator=torch.Generator().manual_seed(1))
    positions = torch.arange(CONTEXT)
    with torch.inference_mode():
        eager = decoder.new_cache(2)
        static = decoder.new_cache(2)
        for t in (*static.keys, *static.values):
            t.normal_()  # what an earlier generation left: masked, so it must not matter
        decoder.forward(ids[:, :3], eager)
        decoder.forward(ids[:, :3], static)
        for p in range(3, CONTEXT):
            expected = decoder.forward(ids[:, p:p + 1], eager)
            got = decoder.step(ids[:, p:p + 1], torch.tensor([p]), static, positions)
            torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


def test_compiled_decoding_gives_the_eager_tokens_at_batch_one(gpt2, tokenizer):
    eager, _ = _run(gpt2, tokenizer, [GREEDY], compile=False)
    compiled, progress = _run(gpt2, tokenizer, [GREEDY], compile=True)
    assert len(set(eager.ids[0])) > 5  # a run where a wrong position or mask would show
    assert compiled.ids == eager.ids
    # The first use compiled, and said so before and after; the time is not in tokens/s.
    assert [(e.job, e.done) for e in progress] == [("compile", 0), ("compile", 1)]
    assert compiled.compile_seconds > 0 and compiled.tokens_per_s > 0
    # Sampled with the same seed: the same draws, the same tokens; no second compile.
    eager, _ = _run(gpt2, tokenizer, [SAMPLED], compile=False)
    compiled, progress = _run(gpt2, tokenizer, [SAMPLED], compile=True)
    assert compiled.ids == eager.ids and len(set(eager.ids[0])) > 5
    assert progress == [] and compiled.compile_seconds == 0


def test_compiled_decoding_gives_the_eager_tokens_of_batched_columns(gpt2, tokenizer):
    """Greedy and sampled columns side by side (two sharing a seed, one stopping early, one with a repetition
    penalty) across the sliding window's refills."""
    eager, _ = _run(gpt2, tokenizer, COLUMNS, compile=False)
    compiled, _ = _run(gpt2, tokenizer, COLUMNS, compile=True)
    assert compiled.ids == eager.ids
    assert [len(ids) for ids in compiled.ids] == [NEW_TOKENS, NEW_TOKENS, NEW_TOKENS - 7]


def test_compiled_decoding_gives_the_eager_tokens_on_the_llama_family(llama, tokenizer):
    """Rotary positions read from the position tensor, grouped key/value heads in the static cache: the same
    tokens as eager decoding, batched greedy and sampled columns across the window's refills."""
    assert compile_problem(decoder_for(llama)) is None
    eager, _ = _run(llama, tokenizer, COLUMNS, compile=False)
    compiled, _ = _run(llama, tokenizer, COLUMNS, compile=True)
    assert len(set(eager.ids[0])) > 5
    assert compiled.ids == eager.ids


def test_dynamic_rope_scaling_is_refused_with_its_reason(llama):
    config = llama.config.with_changes(rope_scaling=RopeScaling("dynamic", 2.0, original_max_position_embeddings=8))
    problem = compile_problem(decoder_for(GPT(config).eval()))
    assert problem is not None and "dynamic rope scaling" in problem


def test_a_retrained_model_of_the_same_shape_reuses_the_compiled_step(gpt2, tokenizer):
    """Weights are inputs of the compiled graph, not constants: new weights (training, loading) of a shape
    already compiled need no new compile, and the tokens follow the new weights."""
    dynamo_counters = pytest.importorskip("torch._dynamo.utils").counters
    model = GPT(gpt2.config)
    model.load_state_dict(gpt2.state_dict())
    model = _noisy(model, 0.2)
    graphs = dynamo_counters["stats"]["unique_graphs"]
    eager, _ = _run(model, tokenizer, [GREEDY], compile=False)
    compiled, _ = _run(model, tokenizer, [GREEDY], compile=True)
    assert compiled.ids == eager.ids
    assert dynamo_counters["stats"]["unique_graphs"] == graphs
    assert compiled.ids != _run(gpt2, tokenizer, [GREEDY], compile=False)[0].ids


def test_cli_generate_compile(gpt2, tokenizer, tmp_path, capsys):
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, gpt2, tokenizer)
    argv = ["generate", str(path), "--prompt", "the q", "--max-new-tokens", str(NEW_TOKENS), "--temperature", "1.0",
            "--seed", "7", "--device", "cpu", "--json"]
    assert main([*argv, "--compile"]) == 0
    compiled = json.loads(capsys.readouterr().out)
    assert main([*argv, "--no-compile"]) == 0
    eager = json.loads(capsys.readouterr().out)
    assert compiled["new_ids"] == eager["new_ids"] and compiled["text"] == eager["text"]
    # int8 cannot be compiled: one line, exit 2.
    assert main([*argv, "--compile", "--precision", "int8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: int8") and len(err.strip().splitlines()) == 1


def test_compiled_steps_are_kept_per_decoder_and_batch_size(gpt2):
    decoder = decoder_for(gpt2)
    first = compiled_step_for(decoder, 1)
    assert compiled_step_for(decoder, 1) is first
    others = [compiled_step_for(decoder, b) for b in range(2, 3 + STEPS_PER_DECODER)]
    assert len(set(map(id, others))) == len(others)
    assert compiled_step_for(decoder, 1) is not first  # the oldest batch size was let go (its cache with it)
    fresh = others[-1].cache  # preallocated to the context and zeroed (masked entries must be finite)
    assert fresh.capacity == CONTEXT and all(float(t.abs().sum()) == 0 for t in (*fresh.keys, *fresh.values))


def _fake_decoder(device: str, quantized: bool = False):
    return types.SimpleNamespace(device=torch.device(device), quantized=quantized, config=None)


def test_compiled_by_default_on_cuda_only():
    """The device rule, with fake decoders (no GPU needed): CUDA compiles unless told not to or unable."""
    assert compile_by_default("cuda") and compile_by_default(torch.device("cuda", 1))
    assert not compile_by_default("cpu") and not compile_by_default("mps")
    assert use_compiled(_fake_decoder("cuda"), None)
    assert not use_compiled(_fake_decoder("cuda"), False)
    assert not use_compiled(_fake_decoder("cpu"), None) and use_compiled(_fake_decoder("cpu"), True)
    # Where it cannot compile: quietly eager by default, one clear error when asked for.
    assert not use_compiled(_fake_decoder("cpu", quantized=True), None)
    with pytest.raises(ValueError, match="int8"):
        use_compiled(_fake_decoder("cpu", quantized=True), True)
    assert compile_problem(_fake_decoder("mps")) is not None
    with pytest.raises(ValueError, match="mps"):
        use_compiled(_fake_decoder("mps"), True)
