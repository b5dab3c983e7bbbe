"""Sampling filters against Hugging Face transformers' own logits processors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.sampling import (
    FilterStages,
    SamplingConfig,
    filter_stages,
    next_token_probs,
    sample_inverse_cdf,
)

transformers_lp = pytest.importorskip("transformers.generation.logits_process")


def hf_probs(logits: torch.Tensor, config: SamplingConfig, prev_ids: torch.Tensor | None) -> torch.Tensor:
    """What transformers' generate() would draw from: processors, then warpers, then softmax."""
    scores = logits.clone().unsqueeze(0)
    if config.repetition_penalty != 1.0 and prev_ids is not None and prev_ids.numel():
        scores = transformers_lp.RepetitionPenaltyLogitsProcessor(float(config.repetition_penalty))(
            prev_ids.unsqueeze(0), scores)
    if config.is_greedy:
        out = torch.zeros_like(scores)
        out[0, scores.argmax()] = 1.0
        return out[0]
    dummy = torch.zeros(1, 1, dtype=torch.long)
    if config.temperature != 1.0:
        scores = transformers_lp.TemperatureLogitsWarper(float(config.temperature))(dummy, scores)
    if config.top_k:
        scores = transformers_lp.TopKLogitsWarper(config.top_k)(dummy, scores)
    if config.top_p < 1.0:
        scores = transformers_lp.TopPLogitsWarper(config.top_p)(dummy, scores)
    if config.min_p:
        scores = transformers_lp.MinPLogitsWarper(config.min_p)(dummy, scores)
    return scores.softmax(dim=-1)[0]


configs = st.builds(
    SamplingConfig,
    greedy=st.sampled_from([False, False, False, True]),
    temperature=st.sampled_from([0.0, 0.3, 0.7, 1.0, 1.3, 2.0]) | st.floats(0.05, 3.0),
    top_k=st.sampled_from([0, 0, 1, 2, 3, 5, 10, 100]),
    top_p=st.sampled_from([1.0, 1.0, 0.0, 0.1, 0.5, 0.9, 0.95]) | st.floats(0.0, 1.0),
    min_p=st.sampled_from([0.0, 0.0, 0.05, 0.1, 0.5, 1.0]) | st.floats(0.0, 1.0),
    repetition_penalty=st.sampled_from([1.0, 1.0, 0.5, 1.1, 1.3, 2.0]) | st.floats(0.2, 3.0),
)


@st.composite
def batches(draw):
    batch = draw(st.integers(1, 4))
    vocab = draw(st.integers(2, 60))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    scale = draw(st.sampled_from([0.1, 1.0, 3.0, 10.0]))
    logits = torch.randn(batch, vocab, generator=g) * scale
    if draw(st.booleans()):  # coarse logits: many exact ties (top-k ties, top-p and min-p edges)
        logits = torch.round(logits * 2) / 2
    prev_len = draw(st.integers(0, 12))
    prev = torch.randint(0, vocab, (batch, prev_len), generator=g)
    rows = draw(st.lists(configs, min_size=batch, max_size=batch))
    return logits, rows, prev


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_next_token_probs_equal_transformers(case):
    logits, rows, prev = case
    ours = next_token_probs(logits, rows, prev)
    for i, config in enumerate(rows):
        expected = hf_probs(logits[i], config, prev[i])
        # The same tokens survive every filter, and they carry the same probabilities.
        assert torch.equal(ours[i] > 0, expected > 0), config
        torch.testing.assert_close(ours[i], expected, rtol=1e-5, atol=1e-7)


def test_one_config_applies_to_every_row_and_rows_are_independent():
    logits = torch.randn(3, 20, generator=torch.Generator().manual_seed(0))
    cfg = SamplingConfig(temperature=0.7, top_k=5)
    together = next_token_probs(logits, cfg)
    for i in range(3):
        torch.testing.assert_close(together[i], next_token_probs(logits[i:i + 1], cfg)[0])


def test_top_k_keeps_ties_at_the_kth_value():
    logits = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0]])
    probs = next_token_probs(logits, SamplingConfig(top_k=2))[0]
    assert (probs > 0).tolist() == [True, True, True, True, False]


def test_top_p_keeps_the_token_that_crosses_p():
    probs_in = torch.tensor([0.5, 0.3, 0.15, 0.05])
    probs = next_token_probs(probs_in.log().unsqueeze(0), SamplingConfig(top_p=0.6))[0]
    # 0.5 < 0.6, so the second token (crossing 0.6) is kept, the rest dropped.
    assert (probs > 0).tolist() == [True, True, False, False]
    torch.testing.assert_close(probs[:2], torch.tensor([0.5, 0.3]) / 0.8)
    tiny = next_token_probs(probs_in.log().unsqueeze(0), SamplingConfig(top_p=0.0))[0]
    assert (tiny > 0).tolist() == [True, False, False, False]  # always at least one token


def test_min_p_threshold_scales_with_the_top_probability():
    probs_in = torch.tensor([0.6, 0.25, 0.1, 0.05])
    probs = next_token_probs(probs_in.log().unsqueeze(0), SamplingConfig(min_p=0.2))[0]
    assert (probs > 0).tolist() == [True, True, False, False]  # threshold 0.12


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    cfg = SamplingConfig(greedy=True, repetition_penalty=2.0)
    seen = torch.tensor([[0, 1, 0]])  # token 0 twice still penalised once
    stages = filter_stages(logits[0], cfg, seen[0])
    expected = torch.tensor([1.0, -4.0, 1.0, 0.5]).softmax(-1).numpy()
    np.testing.assert_allclose(stages.penalty, expected, rtol=1e-6)
    assert stages.penalised.tolist() == [True, True, False, False]
    # Greedy picks the arg-max after the penalty: token 0 and 2 tie at 1.0, the first wins.
    assert stages.final.tolist() == [1.0, 0.0, 0.0, 0.0]


def test_greedy_and_temperature_zero_are_one_hot():
    logits = torch.randn(2, 30, generator=torch.Generator().manual_seed(1))
    for cfg in (SamplingConfig(greedy=True, top_k=3), SamplingConfig(temperature=0.0)):
        probs = next_token_probs(logits, cfg)
        assert torch.equal(probs.argmax(-1), logits.argmax(-1))
        assert torch.equal(probs.sum(-1), torch.ones(2))
        assert int((probs > 0).sum()) == 2


def test_filter_stages_show_what_each_filter_removed():
    logits = torch.tensor([5.0, 4.0, 3.5, 3.0, 1.0, 0.0])
    cfg = SamplingConfig(temperature=1.0, top_k=5, top_p=0.9, min_p=0.3)
    s = filter_stages(logits, cfg)
    assert isinstance(s, FilterStages)
    assert s.removed_by[5] == "top_k"
    # top-p over the 5 left: 5,4,3.5,3 -> cumulative from the top crosses 0.9 by token 2 or 3
    assert set(s.removed_by.tolist()) <= {"", "top_k", "top_p", "min_p"}
    kept = s.removed_by == ""
    assert np.array_equal(kept, s.final > 0)
    np.testing.assert_allclose(s.final, next_token_probs(logits.unsqueeze(0), cfg)[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(s.raw, logits.softmax(-1).numpy(), rtol=1e-6)
    # Each stage's removals are exactly the tokens that vanish between its input and output.
    assert np.array_equal(s.removed_by == "top_k", (s.temperature > 0) & (s.top_k == 0))
    assert np.array_equal(s.removed_by == "top_p", (s.top_k > 0) & (s.top_p == 0))
    assert np.array_equal(s.removed_by == "min_p", (s.top_p > 0) & (s.min_p == 0))
    for stage in (s.raw, s.penalty, s.temperature, s.top_k, s.top_p, s.min_p, s.final):
        assert stage.dtype == np.float32 and abs(float(stage.sum()) - 1) < 1e-5


def test_filter_stages_greedy_marks_every_other_token():
    s = filter_stages(np.array([0.1, 0.9, 0.3], dtype=np.float32), SamplingConfig(greedy=True))
    assert s.removed_by.tolist() == ["greedy", "", "greedy"]


def test_inverse_cdf_sampling_follows_the_distribution_and_never_draws_zeros():
    probs = torch.tensor([[0.0, 0.2, 0.5, 0.0, 0.3]])
    # Sorted from most probable: token 2 (0..0.5), token 4 (0.5..0.8), token 1 (0.8..1).
    for u, expected in ((0.0, 2), (0.49, 2), (0.51, 4), (0.79, 4), (0.81, 1), (1 - 1e-9, 1)):
        assert sample_inverse_cdf(probs, torch.tensor([u])).item() == expected
    g = torch.Generator().manual_seed(0)
    draws = sample_inverse_cdf(probs.expand(20000, -1), torch.rand(20000, generator=g))
    freq = torch.bincount(draws, minlength=5).float() / 20000
    torch.testing.assert_close(freq, probs[0], atol=0.015, rtol=0)


def reference_draw(probs: torch.Tensor, u: float) -> int:
    """Inverse CDF over the whole row sorted by (probability desc, id asc), in plain Python."""
    p = probs.tolist()
    order = sorted(range(len(p)), key=lambda i: (-p[i], i))
    target = u * sum(p)
    cumulative = 0.0
    for i in order:
        cumulative += p[i]
        if cumulative > target and p[i] > 0:
            return i
    return max((i for i in order if p[i] > 0), key=order.index)


@pytest.mark.parametrize("kind", ["flat", "peaked", "filtered", "ties"])
def test_fast_draw_equals_the_full_sort(kind):
    g = torch.Generator().manual_seed(hash(kind) % 1000)
    vocab = 500
    if kind == "flat":
        logits = torch.randn(6, vocab, generator=g) * 0.1
    elif kind == "peaked":
        logits = torch.randn(6, vocab, generator=g) * 4
    elif kind == "filtered":
        logits = torch.randn(6, vocab, generator=g).masked_fill(torch.rand(6, vocab, generator=g) < 0.95, -1e9)
    else:  # whole blocks of equal probability, straddling the 64th place
        logits = torch.randint(0, 3, (6, vocab), generator=g).float()
    probs = logits.double().softmax(-1)  # float64: the reference's Python sums match exactly
    for _ in range(40):
        u = torch.rand(6, generator=g, dtype=torch.float64)
        drawn = sample_inverse_cdf(probs, u).tolist()
        assert drawn == [reference_draw(probs[r], float(u[r])) for r in range(6)]


def test_shared_uniform_picks_the_same_token_when_the_settings_agree_on_it():
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(3)).expand(3, -1)
    rows = [SamplingConfig(), SamplingConfig(top_k=10), SamplingConfig(greedy=True)]
    probs = next_token_probs(logits, rows)
    top = logits[0].argmax().item()
    # A uniform below the top token's probability in every row draws the top token in all rows.
    u = float(probs[:2, top].min()) * 0.5
    assert sample_inverse_cdf(probs, torch.full((3,), u)).tolist() == [top, top, top]


@pytest.mark.parametrize("field, value, words", [
    ("temperature", -0.1, "temperature"),
    ("temperature", float("nan"), "temperature"),
    ("temperature", 1e9, "temperature"),
    ("top_k", -1, "top_k"),
    ("top_k", 2.5, "top_k"),
    ("top_p", 1.5, "top_p"),
    ("top_p", -0.01, "top_p"),
    ("min_p", 2.0, "min_p"),
    ("repetition_penalty", 0.0, "repetition_penalty"),
    ("repetition_penalty", float("inf"), "repetition_penalty"),
    ("max_new_tokens", -1, "max_new_tokens"),
    ("max_new_tokens", 10**9, "max_new_tokens"),
    ("seed", -5, "seed"),
    ("greedy", "yes", "greedy"),
    ("stop_strings", ("",), "stop_strings"),
])
def test_out_of_range_settings_raise_a_clear_error(field, value, words):
    with pytest.raises(ValueError, match=words):
        SamplingConfig(**{field: value})


def test_config_round_trips_through_a_dict():
    cfg = SamplingConfig(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repetition_penalty=1.2,
                         max_new_tokens=7, seed=3, stop_at_eot=True, stop_strings=["\n\n"])
    assert cfg.stop_strings == ("\n\n",)
    assert SamplingConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown sampling setting"):
        SamplingConfig.from_dict({"temprature": 1.0})


def test_next_token_probs_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="rows"):
        next_token_probs(torch.zeros(2, 5), [SamplingConfig()] * 3)
    with pytest.raises(ValueError, match="batch, vocab"):
        next_token_probs(torch.zeros(5), SamplingConfig())
    with pytest.raises(ValueError, match="token ids"):
        next_token_probs(torch.zeros(1, 5), SamplingConfig(repetition_penalty=1.2), torch.tensor([[7]]))
