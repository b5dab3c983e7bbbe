"""Generation: KV-cache decoding against transformers, batched decoders, streaming text, edge cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.config import ModelConfig
from engine.generation import (
    TOP_CANDIDATES,
    GenerationDoneEvent,
    GenerationStepEvent,
    decoder_for,
    generate,
    prompt_token_ids,
    stream_generate,
    window_length,
)
from engine.model import GPT
from engine.sampling import SamplingConfig, next_token_probs
from engine.tokenizers import CharTokenizer, Tokenizer

transformers = pytest.importorskip("transformers")
from engine.generation.stream import _TextStream  # noqa: E402
from engine.hf_import import gpt_from_hf  # noqa: E402

VOCAB = 101


class ByteTokenizer(Tokenizer):
    """One token per byte (ids 0..255) plus an end-of-text id 256: splits UTF-8 characters apart."""

    name = "bytes"

    def __init__(self, eot: bool = True):
        self.eot_id = 256 if eot else None

    @property
    def vocab_size(self) -> int:
        return 257

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id]) if token_id < 256 else b"<|endoftext|>"

    def to_dict(self):
        return {"type": "bytes"}


@pytest.fixture(scope="module")
def hf_pair():
    """A random transformers GPT-2 and the same weights in our GPT."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=VOCAB, n_positions=64,
                                  bos_token_id=None, eos_token_id=None, initializer_range=0.2)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # move LayerNorms and biases off 1/0 so every weight matters
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = gpt_from_hf(hf.state_dict(), cfg.to_dict())
    return hf, ours


@pytest.fixture(scope="module")
def byte_model():
    torch.manual_seed(1)
    return GPT(ModelConfig(vocab_size=257, context_length=32, emb_dim=64, n_heads=4, n_layers=2, drop_rate=0.0))


def hf_greedy(hf, prompt: list[int], n: int, penalty: float = 1.0) -> list[int]:
    idx = torch.tensor([prompt])
    with torch.no_grad():
        out = hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=n, do_sample=False,
                          repetition_penalty=penalty, pad_token_id=0, eos_token_id=None)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("penalty", [1.0, 1.5])
def test_greedy_ids_equal_transformers(hf_pair, penalty):
    hf, ours = hf_pair
    prompt = [5, 17, 3, 99, 42, 42, 7]
    expected = hf_greedy(hf, prompt, 40, penalty)
    cfg = SamplingConfig(greedy=True, repetition_penalty=penalty, max_new_tokens=40)
    result = generate(ours, CharTokenizer("ab"), "", cfg, prompt_ids=prompt)
    assert result.ids == expected
    assert result.prompt_ids == prompt
    # Several greedy rows in one batch (the few-rows matmul layout) give the same ids.
    events = list(stream_generate(ours, CharTokenizer("ab"), "", [cfg, cfg, cfg], prompt_ids=prompt))
    assert all(list(row) == expected for row in events[-1].ids)


def test_penalty_changes_the_output(hf_pair):
    hf, ours = hf_pair
    prompt = [1, 2, 3]
    assert hf_greedy(hf, prompt, 30, 1.0) != hf_greedy(hf, prompt, 30, 1.5)  # the test above can fail


def test_step_records_match_the_model(hf_pair):
    _, ours = hf_pair
    prompt = [4, 8, 15, 16, 23, 42]
    cfg = SamplingConfig(temperature=0.9, top_k=10, top_p=0.9, repetition_penalty=1.2, seed=3, max_new_tokens=3)
    result = generate(ours, CharTokenizer("ab"), "", cfg, prompt_ids=prompt)
    with torch.no_grad():
        logits = ours(torch.tensor([prompt]))[0][:, -1]
    raw = logits.softmax(-1)[0]
    final = next_token_probs(logits, cfg, torch.tensor([prompt]))[0]
    first = result.steps[0]
    assert len(first.top_ids) == TOP_CANDIDATES
    assert list(first.top_ids) == raw.topk(TOP_CANDIDATES).indices.tolist()
    np.testing.assert_allclose(first.top_raw, raw[list(first.top_ids)].numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(first.top_final, final[list(first.top_ids)].numpy(), rtol=1e-4, atol=1e-6)
    assert final[first.token_id] > 0
    assert first.prob == pytest.approx(final[first.token_id].item(), rel=1e-4)
    assert first.raw_prob == pytest.approx(raw[first.token_id].item(), rel=1e-4)
    assert [s.done for s in result.steps] == [False, False, True]


def test_seed_repeats_and_differs(hf_pair):
    _, ours = hf_pair
    tok = CharTokenizer("ab")
    cfg = SamplingConfig(temperature=1.5, seed=123, max_new_tokens=30)
    a = generate(ours, tok, "", cfg, prompt_ids=[1, 2])
    b = generate(ours, tok, "", cfg, prompt_ids=[1, 2])
    c = generate(ours, tok, "", SamplingConfig(temperature=1.5, seed=124, max_new_tokens=30), prompt_ids=[1, 2])
    assert a.ids == b.ids and a.seed == 123
    assert a.ids != c.ids
    unseeded = generate(ours, tok, "", SamplingConfig(temperature=1.5, max_new_tokens=30), prompt_ids=[1, 2])
    again = generate(ours, tok, "", SamplingConfig(temperature=1.5, seed=unseeded.seed, max_new_tokens=30),
                     prompt_ids=[1, 2])
    assert again.ids == unseeded.ids  # the reported seed repeats an unseeded run


def test_batched_rows_equal_each_row_run_alone(hf_pair):
    _, ours = hf_pair
    tok = CharTokenizer("ab")
    configs = [
        SamplingConfig(greedy=True, max_new_tokens=25),
        SamplingConfig(temperature=0.8, top_k=5, seed=1, max_new_tokens=25),
        SamplingConfig(temperature=1.2, top_p=0.9, seed=2, max_new_tokens=18),
        SamplingConfig(min_p=0.1, repetition_penalty=1.3, seed=1, max_new_tokens=25),
    ]
    events = list(stream_generate(ours, tok, "", configs, prompt_ids=[9, 8, 7, 6]))
    done = events[-1]
    assert isinstance(done, GenerationDoneEvent)
    for config, ids in zip(configs, done.ids):
        assert list(ids) == generate(ours, tok, "", config, prompt_ids=[9, 8, 7, 6]).ids
    assert [len(ids) for ids in done.ids] == [25, 25, 18, 25]
    steps = [e for e in events if isinstance(e, GenerationStepEvent)]
    assert len(steps) == 25
    assert steps[17].rows[2].done and all(s.rows[2] is None for s in steps[18:])
    assert done.new_tokens == 93 and done.tokens_per_s > 0


def test_shared_seed_means_shared_draws(hf_pair):
    _, ours = hf_pair
    # Same seed, same settings: identical columns; a top-k of the whole vocabulary is no filter at all.
    configs = [SamplingConfig(seed=5, max_new_tokens=20), SamplingConfig(seed=5, top_k=VOCAB, max_new_tokens=20)]
    done = list(stream_generate(ours, CharTokenizer("ab"), "", configs, prompt_ids=[3]))[-1]
    assert done.ids[0] == done.ids[1]


def test_streaming_text_equals_the_final_decode_and_never_splits_a_character(byte_model):
    tok = ByteTokenizer(eot=False)
    configs = [SamplingConfig(temperature=2.0, seed=s, max_new_tokens=60) for s in range(3)]
    events = list(stream_generate(byte_model, tok, "é", configs))
    done = events[-1]
    for r in range(3):
        pieces = "".join(e.rows[r].piece for e in events[:-1] if e.rows[r] is not None)
        assert pieces == done.texts[r] == tok.decode(list(done.ids[r]))


def test_text_stream_waits_for_the_rest_of_a_character(byte_model):

    text = "héllo ✓ 😀!"
    stream = _TextStream(ByteTokenizer())
    pieces = [stream.push(b) for b in text.encode("utf-8")] + [stream.flush()]
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)
    assert pieces[1] == "" and pieces[2] == "é"  # é is two bytes: nothing shown after the first


def test_empty_prompt_starts_from_eot_or_a_newline(byte_model):
    tok = ByteTokenizer(eot=True)
    result = generate(byte_model, tok, "", SamplingConfig(greedy=True, max_new_tokens=5))
    assert result.prompt_ids == [256] and len(result.ids) == 5
    char = CharTokenizer("ab\ncd")
    assert prompt_token_ids(char, "", byte_model.config) == char.encode("\n")


def test_long_prompt_keeps_its_end_and_generation_slides_past_the_context(byte_model):
    tok = ByteTokenizer(eot=False)
    context = byte_model.config.context_length
    prompt = "".join(chr(97 + i % 26) for i in range(100))
    result = generate(byte_model, tok, prompt, SamplingConfig(greedy=True, max_new_tokens=70))
    assert result.prompt_ids == tok.encode(prompt)[-(context - 1):]
    assert len(result.ids) == 70
    # The same rule computed with the plain model: when the window is full, keep its last half.
    seq, start = list(result.prompt_ids), 0
    with torch.no_grad():
        for step in range(70):
            if len(seq) - start > context:
                start = len(seq) - context // 2
            # the engine's public rule (the Generation tab's distribution view asks it) says the same
            assert window_length(len(result.prompt_ids), step, context) == len(seq) - start
            logits = byte_model(torch.tensor([seq[start:]]))[0][0, -1]
            seq.append(int(logits.argmax()))
    assert seq[len(result.prompt_ids):] == result.ids


def test_max_new_tokens_zero_gives_nothing(byte_model):
    events = list(stream_generate(byte_model, ByteTokenizer(), "hi", [SamplingConfig(max_new_tokens=0)]))
    assert len(events) == 1 and events[0].ids == ((),) and events[0].texts == ("",)


def test_stop_conditions_end_a_row_early(byte_model):
    free = generate(byte_model, ByteTokenizer(eot=False), "ab", SamplingConfig(greedy=True, max_new_tokens=30))
    # stop_strings: stop at the first occurrence of a piece of the free-running text.
    needle = free.text[5:7]
    cut = free.text.index(needle) + len(needle)
    stopped = generate(byte_model, ByteTokenizer(eot=False), "ab",
                       SamplingConfig(greedy=True, max_new_tokens=30, stop_strings=[needle]))
    assert stopped.text == free.text[:cut] and stopped.stop_reason == "stop_string"

    class EotAt(ByteTokenizer):  # pretend the 4th greedy token is the end-of-text token
        def __init__(self):
            super().__init__(eot=False)
            self.eot_id = free.ids[3]
    tok = EotAt()
    ended = generate(byte_model, tok, "ab", SamplingConfig(greedy=True, max_new_tokens=30, stop_at_eot=True))
    first = free.ids.index(tok.eot_id)
    assert ended.ids == free.ids[:first + 1] and ended.stop_reason == "eot"
    kept = generate(byte_model, tok, "ab", SamplingConfig(greedy=True, max_new_tokens=30))
    assert kept.ids == free.ids  # without stop_at_eot the token is just a token


def test_invalid_requests_give_clear_errors(byte_model):
    tok = ByteTokenizer()
    with pytest.raises(ValueError, match="CUDA"):
        generate(byte_model, tok, "a", SamplingConfig(), precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        generate(byte_model, tok, "a", SamplingConfig(), precision="fp8")
    with pytest.raises(ValueError, match="SamplingConfig"):
        list(stream_generate(byte_model, tok, "a", [{"temperature": 1.0}]))
    with pytest.raises(ValueError, match="at least one"):
        list(stream_generate(byte_model, tok, "a", []))
    small = GPT(ModelConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1))
    with pytest.raises(ValueError, match="don't belong together"):
        generate(small, tok, "zzz", SamplingConfig())


def test_decoder_follows_weight_updates(byte_model):
    model = GPT(byte_model.config)
    model.load_state_dict(byte_model.state_dict())
    tok = ByteTokenizer(eot=False)
    cfg = SamplingConfig(greedy=True, max_new_tokens=10)
    before = generate(model, tok, "ab", cfg).ids
    assert decoder_for(model) is decoder_for(model)
    with torch.no_grad():  # an in-place update, as an optimizer step makes
        model.tok_emb.weight.mul_(-1.0)
    after = generate(model, tok, "ab", cfg).ids
    with torch.no_grad():
        expected = model(torch.tensor([tok.encode("ab")]))[0][0, -1].argmax().item()
    assert after[0] == expected and after != before


def test_decoding_ignores_dropout_of_a_model_in_training_mode(byte_model):
    model = GPT(byte_model.config.with_changes(drop_rate=0.5))
    model.load_state_dict(byte_model.state_dict())
    model.train()
    cfg = SamplingConfig(greedy=True, max_new_tokens=15)
    a = generate(model, ByteTokenizer(), "xy", cfg).ids
    assert a == generate(byte_model, ByteTokenizer(), "xy", cfg).ids
    assert model.training  # left as it was


def test_decoder_cache_does_not_keep_a_dropped_model_alive(byte_model):
    import gc
    import weakref

    model = GPT(byte_model.config)
    generate(model, ByteTokenizer(), "ab", SamplingConfig(greedy=True, max_new_tokens=3))
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
