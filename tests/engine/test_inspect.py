"""The Inside analyses (engine/inspect) against transformers' GPT2LMHeadModel on the same weights: the logit
lens through ln_f and lm_head, token losses, head ablation by a pre-hook on c_proj, gradient x input and
integrated gradients by torch autograd on the HF model, the head sweep, and the embedding map against a PCA
by SVD."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.events import ProgressEvent
from engine.generation import Ablation
from engine.inspect import (
    GRADIENT_X_INPUT,
    INTEGRATED_GRADIENTS,
    LogitLens,
    ablation_effect,
    attribution,
    describe,
    embedding_map,
    gradient_x_input,
    head_sweep,
    integrated_gradients,
    logit_lens,
    make_ablation,
    parse_head,
    run_attribution,
    run_head_sweep,
    run_logit_lens,
    token_losses,
)

transformers = pytest.importorskip("transformers")
from engine.hf_import import gpt_from_hf  # noqa: E402

IDS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4]
V = 60


@pytest.fixture(scope="module")
def pair():
    """A random transformers GPT-2 (eager attention) and our GPT with the same weights, sharpened so that
    top-k orders, ranks and ablations are clear-cut rather than ties."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=3, n_head=4, n_embd=32, vocab_size=V, n_positions=24,
                                  bos_token_id=None, eos_token_id=None, attn_implementation="eager")
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for block in hf.transformer.h:
            block.attn.c_attn.weight.mul_(8)
        hf.transformer.wte.weight.mul_(6)  # a peaked output distribution: probabilities well above 1/V
    return hf, gpt_from_hf(hf.state_dict(), cfg.to_dict()).eval()


def idx() -> torch.Tensor:
    return torch.tensor([IDS])


def hf_block_outputs(hf, hooks=()):
    """(logits (T, V), [each block's output (T, C)]) of the HF model, with extra forward (pre-)hooks."""
    blocks = []
    handles = [b.register_forward_hook(lambda m, a, out: blocks.append(out[0] if isinstance(out, tuple) else out))
               for b in hf.transformer.h]
    handles += [module.register_forward_pre_hook(fn) for module, fn in hooks]
    try:
        with torch.no_grad():
            logits = hf(idx()).logits[0]
    finally:
        for h in handles:
            h.remove()
    return logits, [b[0] for b in blocks]


def zero_head(hf, layer: int, head: int):
    """A pre-hook on block `layer`'s c_proj zeroing head `head`'s slice of its input."""
    D = hf.transformer.h[layer].attn.head_dim

    def hook(module, args):
        x = args[0].clone()
        x[..., head * D:(head + 1) * D] = 0
        return (x,)
    return hf.transformer.h[layer].attn.c_proj, hook


def hf_token_loss(logits: torch.Tensor) -> np.ndarray:
    loss = torch.nn.functional.cross_entropy(logits[:-1], idx()[0, 1:], reduction="none")
    return np.concatenate([[np.nan], loss.numpy()])


def test_logit_lens_equals_ln_f_and_lm_head_on_each_block(pair):
    hf, ours = pair
    logits, blocks = hf_block_outputs(hf)
    lens = logit_lens(ours, IDS, top_k=5)
    assert lens.top_ids.shape == (3, len(IDS), 5) and lens.top_probs.dtype == np.float32
    for layer, h in enumerate(blocks):
        with torch.no_grad():
            probs = torch.softmax(hf.lm_head(hf.transformer.ln_f(h)), -1)
        top_p, top_i = probs.topk(5, dim=-1)
        np.testing.assert_array_equal(lens.top_ids[layer], top_i.numpy())
        np.testing.assert_allclose(lens.top_probs[layer], top_p.numpy(), atol=1e-4, rtol=0)
        # rank of the actual next token (0 = top) and the entropy, from the same distribution
        nxt = idx()[0, 1:]
        rank = (probs[:-1] > probs[:-1].gather(1, nxt[:, None])).sum(-1)
        np.testing.assert_array_equal(lens.next_rank[layer, :-1], rank.numpy())
        assert lens.next_rank[layer, -1] == -1
        entropy = -(probs * probs.log()).sum(-1)
        np.testing.assert_allclose(lens.entropy[layer], entropy.numpy(), atol=1e-4, rtol=0)
    # the last block's lens is the model's own output
    top_p, top_i = torch.softmax(logits, -1).topk(5, dim=-1)
    np.testing.assert_array_equal(lens.top_ids[-1], top_i.numpy())
    np.testing.assert_allclose(lens.top_probs[-1], top_p.numpy(), atol=1e-4, rtol=0)
    assert lens.top_probs[:, :, 0].max() > 0.3  # peaked: the comparison of orders means something
    assert not np.array_equal(lens.top_ids[0], lens.top_ids[-1])  # and the blocks differ


def test_token_loss_and_perplexity_equal_transformers(pair):
    hf, ours = pair
    logits, _ = hf_block_outputs(hf)
    expected = hf_token_loss(logits)
    lens = logit_lens(ours, IDS)
    np.testing.assert_allclose(lens.token_loss, expected, atol=1e-4, rtol=0)  # NaN at 0 in both
    np.testing.assert_allclose(token_losses(ours, IDS), expected, atol=1e-4, rtol=0)
    assert lens.perplexity == pytest.approx(float(np.exp(np.nanmean(expected))), rel=1e-4)
    with torch.no_grad():  # HF's own mean loss is the log of the perplexity
        hf_loss = hf(idx(), labels=idx()).loss
    assert np.log(lens.perplexity) == pytest.approx(float(hf_loss), abs=1e-4)


def test_logit_lens_is_a_job_with_progress_per_block(pair):
    _, ours = pair
    events = list(run_logit_lens(ours, IDS[:4], top_k=3))
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert [e.done for e in progress] == [0, 1, 2, 3] and progress[0].total == 4
    assert isinstance(events[-1], LogitLens) and events[-1].top_ids.shape == (3, 4, 3)
    one = logit_lens(ours, IDS[:1])  # one token: no loss, no next token
    assert np.isnan(one.token_loss).all() and np.isnan(one.perplexity) and one.next_rank.tolist() == [[-1]] * 3


@pytest.mark.parametrize("heads", [[(0, 2)], [(1, 0), (2, 3)]])
def test_ablation_equals_a_c_proj_pre_hook(pair, heads):
    hf, ours = pair
    intact_logits, _ = hf_block_outputs(hf)
    logits, blocks = hf_block_outputs(hf, [zero_head(hf, layer, head) for layer, head in heads])
    ablation = Ablation(heads=tuple(heads))
    effect = ablation_effect(ours, IDS, ablation, top_k=6)
    np.testing.assert_allclose(effect.ablated_loss, hf_token_loss(logits), atol=1e-4, rtol=0)
    np.testing.assert_allclose(effect.intact_loss, hf_token_loss(intact_logits), atol=1e-4, rtol=0)
    probs, intact_probs = torch.softmax(logits, -1), torch.softmax(intact_logits, -1)
    top_p, top_i = probs.topk(6, dim=-1)
    np.testing.assert_array_equal(effect.ablated_top_ids, top_i.numpy())
    np.testing.assert_allclose(effect.ablated_top_probs, top_p.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(effect.intact_probs_of_ablated_top, intact_probs.gather(1, top_i).numpy(), atol=1e-4)
    i_top = torch.as_tensor(effect.intact_top_ids)
    np.testing.assert_allclose(effect.ablated_probs_of_intact_top, probs.gather(1, i_top).numpy(), atol=1e-4)
    kl = (intact_probs * (intact_probs.log() - probs.log())).sum(-1)
    np.testing.assert_allclose(effect.kl, kl.numpy(), atol=1e-4, rtol=0)
    assert np.nanmax(np.abs(effect.loss_change)) > 1e-2  # the ablation changed something
    # the lens of the ablated model is the ablated model's blocks through ln_f and lm_head
    lens = logit_lens(ours, IDS, top_k=3, ablation=ablation)
    for layer, h in enumerate(blocks):
        with torch.no_grad():
            top = torch.softmax(hf.lm_head(hf.transformer.ln_f(h)), -1).topk(3, dim=-1)
        np.testing.assert_allclose(lens.top_probs[layer], top.values.numpy(), atol=1e-4, rtol=0)


def test_layer_and_mean_ablation_and_their_names(pair):
    _, ours = pair
    zero = make_ablation(ours, IDS, heads=[(1, 2)], mlp=[0])
    mean = make_ablation(ours, IDS, heads=[(1, 2)], mlp=[0], mean=True)
    assert zero.means is None and mean.means is not None and mean.means.heads.shape == (3, 4, 8)
    assert describe(zero) == "head 1.2 · MLP 0 (zero)" and describe(mean).endswith("(mean)")
    a, b = ablation_effect(ours, IDS, zero), ablation_effect(ours, IDS, mean)
    assert not np.allclose(a.ablated_loss[1:], b.ablated_loss[1:], atol=1e-4)
    whole = ablation_effect(ours, IDS, make_ablation(ours, IDS, attention=[0, 1, 2]))
    assert whole.mean_loss_change != 0 and whole.what == "attention 0, 1, 2 (zero)"
    with pytest.raises(ValueError, match="no head 3.0"):
        make_ablation(ours, IDS, heads=[(3, 0)])
    assert parse_head("2.11") == (2, 11)
    for bad in ("2", "a.b", "1.-1", ""):
        with pytest.raises(ValueError, match="LAYER.HEAD"):
            parse_head(bad)


def test_head_sweep_equals_one_hooked_transformers_run_per_head(pair):
    hf, ours = pair
    with torch.no_grad():
        intact = float(hf(idx(), labels=idx()).loss)
    expected = np.zeros((3, 4))
    for layer in range(3):
        for head in range(4):
            module, hook = zero_head(hf, layer, head)
            handle = module.register_forward_pre_hook(hook)
            try:
                with torch.no_grad():
                    expected[layer, head] = float(hf(idx(), labels=idx()).loss) - intact
            finally:
                handle.remove()
    sweep = head_sweep(ours, IDS)
    assert sweep.intact_loss == pytest.approx(intact, abs=1e-4)
    np.testing.assert_allclose(sweep.loss_change, expected, atol=1e-4, rtol=0)
    ranking = sweep.ranking()
    assert len(ranking) == 12 and ranking[0][2] == pytest.approx(expected.max(), abs=1e-4)
    assert [r[2] for r in ranking] == sorted((r[2] for r in ranking), reverse=True)
    # a job: one progress event per head (stoppable between heads), then the result
    events = list(run_head_sweep(ours, IDS, mean=True))
    assert sum(isinstance(e, ProgressEvent) for e in events) == 13 and events[-1].mean
    with pytest.raises(ValueError, match="at least two tokens"):
        head_sweep(ours, IDS[:1])


def hf_embeds_and_logits(hf, n: int, scale: float | torch.Tensor = 1.0):
    embeds = (hf.transformer.wte(idx()[:, :n]).detach() * scale).requires_grad_()
    return embeds, hf(inputs_embeds=embeds).logits


def test_gradient_x_input_equals_autograd_on_transformers(pair):
    hf, ours = pair
    position = 11
    result = gradient_x_input(ours, IDS, position)
    embeds, logits = hf_embeds_and_logits(hf, len(IDS))
    target = int(logits[0, position].argmax())
    logits[0, position, target].backward()
    expected = (embeds.grad * embeds).norm(dim=-1)[0, :position + 1].detach()
    assert result.target == target and result.method == GRADIENT_X_INPUT and result.scores.shape == (position + 1,)
    np.testing.assert_allclose(result.scores, expected.numpy(), atol=1e-5, rtol=1e-4)
    assert result.target_prob == pytest.approx(float(torch.softmax(logits[0, position].detach(), -1)[target]), abs=1e-5)
    # a chosen target, and the ablated model
    chosen = gradient_x_input(ours, IDS, position, target=7, ablation=Ablation(heads=((2, 1),)))
    module, hook = zero_head(hf, 2, 1)
    handle = module.register_forward_pre_hook(hook)
    try:
        embeds, logits = hf_embeds_and_logits(hf, position + 1)
        logits[0, position, 7].backward()
    finally:
        handle.remove()
    np.testing.assert_allclose(chosen.scores, (embeds.grad * embeds).norm(dim=-1)[0].detach().numpy(),
                               atol=1e-5, rtol=1e-4)
    for bad, match in ((len(IDS), "outside the text"), (-1, "outside the text")):
        with pytest.raises(ValueError, match=match):
            gradient_x_input(ours, IDS, bad)
    with pytest.raises(ValueError, match="target token"):
        gradient_x_input(ours, IDS, 3, target=V)


def test_integrated_gradients_equal_transformers_and_add_up_to_the_logit_change(pair, monkeypatch):
    hf, ours = pair
    position, steps = 9, 20
    monkeypatch.setattr(attribution, "MAX_PATH_BATCH", 8)
    events = list(run_attribution(ours, IDS, position, method=INTEGRATED_GRADIENTS, steps=steps))
    monkeypatch.undo()
    result = events[-1]
    assert [e.done for e in events[:-1]] == [0, 8, 16]  # one progress event per batch of path points
    total = torch.zeros(position + 1, 32)
    for k in range(steps):
        alpha = (k + 0.5) / steps
        embeds, logits = hf_embeds_and_logits(hf, position + 1, alpha)
        logits[0, position, result.target].backward()
        total += embeds.grad[0]  # d logit / d embeddings at alpha x
    x = hf.transformer.wte(idx()[0, :position + 1]).detach()
    expected = (total / steps * x).sum(-1)
    assert result.method == INTEGRATED_GRADIENTS and result.steps == steps
    np.testing.assert_allclose(result.scores, expected.numpy(), atol=1e-4, rtol=1e-3)
    # completeness: the scores add up to logit(text) - logit(zero embeddings), closer with more steps (this
    # sharpened model is steep along the path: 64 steps miss by ~20%, 1024 by < 1%)
    coarse, fine = (integrated_gradients(ours, IDS, position, steps=n) for n in (64, 1024))
    gap = fine.target_logit - fine.baseline_logit
    assert abs(gap) > 0.1 and float(fine.scores.sum()) == pytest.approx(gap, rel=0.01)
    assert abs(fine.scores.sum() - gap) < abs(coarse.scores.sum() - gap)
    with pytest.raises(ValueError, match="1 to"):
        integrated_gradients(ours, IDS, position, steps=0)


def test_embedding_map_is_the_tables_pca_and_the_stream_lies_on_its_axes(pair):
    hf, ours = pair
    table = hf.transformer.wte.weight.detach().double().numpy()
    centered = table - table.mean(0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    result = embedding_map(ours, IDS)
    assert result.points.shape == (V, 2) and result.stream.shape == (4, len(IDS), 2)
    for axis in range(2):  # the same axes up to sign; the sign rule: the largest loading is positive
        reference = centered @ vt[axis]
        np.testing.assert_allclose(np.abs(result.points[:, axis]), np.abs(reference), atol=1e-4, rtol=1e-4)
        assert result.axes[axis, np.abs(result.axes[axis]).argmax()] > 0
    np.testing.assert_allclose(result.explained, (s[:2] ** 2) / (s ** 2).sum(), atol=1e-5)
    # layer 0: the text's tokens sit on their table points; layer l: block l - 1's output on the same axes
    np.testing.assert_allclose(result.stream[0], result.points[IDS], atol=1e-4)
    _, blocks = hf_block_outputs(hf)
    for layer, h in enumerate(blocks, start=1):
        projected = (h.double().numpy() - table.mean(0)) @ result.axes.T.astype(np.float64)
        np.testing.assert_allclose(result.stream[layer], projected, atol=1e-3, rtol=1e-4)
    # with an earlier map's axes flipped as the reference, the new axes follow them
    flipped = embedding_map(ours, reference=-result.axes)
    np.testing.assert_allclose(flipped.points, -result.points, atol=1e-5)


def test_every_analysis_refuses_bad_ids_in_one_line(pair):
    _, ours = pair
    for bad, match in (([], "no tokens"), ([0] * 25, "do not fit"), ([V], "between 0 and")):
        with pytest.raises(ValueError, match=match):
            logit_lens(ours, bad)
        with pytest.raises(ValueError, match=match):
            token_losses(ours, bad)
    with pytest.raises(ValueError, match="top-k"):
        logit_lens(ours, IDS, top_k=0)
