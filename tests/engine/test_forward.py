"""The one inference forward and its options, against transformers' GPT-2 (eager attention) on the same
weights and against our training forward: all-position logits, the residual stream (logit lens),
attention weights, head / attention / MLP ablation (zero and mean) and gradients through the embeddings."""
from __future__ import annotations

import pytest
import torch

from engine.generation import Ablation, AblationMeans, ForwardOptions, decoder_for
from engine.model import GPT

transformers = pytest.importorskip("transformers")
from engine.hf_import import gpt_from_hf  # noqa: E402

IDS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7]


@pytest.fixture(scope="module")
def pair():
    """A random transformers GPT-2 with eager attention and our GPT holding the same weights."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=3, n_head=4, n_embd=32, vocab_size=50, n_positions=16,
                                  bos_token_id=None, eos_token_id=None, attn_implementation="eager")
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # sharp attention and every weight off its init value, so each comparison means something
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for block in hf.transformer.h:
            block.attn.c_attn.weight.mul_(8)
    return hf, gpt_from_hf(hf.state_dict(), cfg.to_dict())


def ids(batch: int = 1) -> torch.Tensor:
    return torch.tensor([IDS] * batch)


def hf_logits(hf, idx, hooks=()):
    handles = [module.register_forward_pre_hook(fn) if pre else module.register_forward_hook(fn)
               for module, fn, pre in hooks]
    try:
        with torch.no_grad():
            return hf(idx).logits
    finally:
        for h in handles:
            h.remove()


def zero_head_slice(layer_hf, head: int, value: torch.Tensor | None = None):
    """A pre-hook on c_proj that sets one head's slice of its input (the merged heads) to 0 or a value."""
    D = layer_hf.attn.head_dim

    def hook(module, args):
        (x,) = args
        x = x.clone()
        x[..., head * D:(head + 1) * D] = 0 if value is None else value
        return (x,)
    return (layer_hf.attn.c_proj, hook, True)


def run(decoder, idx, **options):
    with torch.inference_mode():
        return decoder.forward(idx, None, ForwardOptions(**options))


def test_all_position_logits_equal_the_training_forward_in_eval_mode(pair):
    _, ours = pair
    model = ours.train()  # dropout would change the training forward; the decoder never drops
    decoder = decoder_for(model)
    idx = torch.randint(0, 50, (2, 13), generator=torch.Generator().manual_seed(1))
    out = run(decoder, idx, logits="all")
    model.eval()
    with torch.no_grad():
        expected, _ = model(idx)
    assert out.logits.shape == (2, 13, 50) and out.logits.dtype == torch.float32
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=0)
    last = run(decoder, idx).logits  # the default: the last position's
    torch.testing.assert_close(last, expected[:, -1], atol=1e-5, rtol=0)
    with torch.inference_mode():  # no options: the decoding path, its plain tensor
        plain = decoder.forward(idx, decoder.new_cache(2))
    torch.testing.assert_close(plain, expected[:, -1], atol=1e-5, rtol=0)
    assert run(decoder, idx, logits="none").logits is None


def test_decoding_step_by_step_equals_the_whole_sequence(pair):
    _, model = pair
    decoder = decoder_for(model)
    idx = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full, _ = model.eval()(idx)
    with torch.inference_mode():
        cache = decoder.new_cache(2)
        steps = [decoder.forward(idx[:, :5], cache)]
        steps += [decoder.forward(idx[:, t:t + 1], cache) for t in range(5, 12)]
        # options on a decoding step: the attention row of the new token over every cached position
        cache.pos = 11
        out = decoder.forward(idx[:, 11:], cache, ForwardOptions(capture_attention=True))
    torch.testing.assert_close(torch.stack(steps, dim=1), full[:, 4:], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits, full[:, -1], atol=1e-5, rtol=0)
    assert cache.pos == 12 and out.attentions[0].shape == (2, 4, 1, 12)
    with pytest.raises(ValueError, match="empty cache"):
        decoder.forward(idx[:, :2], cache)


def test_attention_weights_equal_transformers_eager(pair):
    hf, ours = pair
    with torch.no_grad():
        expected = hf(ids(2), output_attentions=True).attentions
    out = run(decoder_for(ours), ids(2), capture_attention=True)
    assert len(out.attentions) == 3
    for mine, theirs in zip(out.attentions, expected):
        assert mine.shape == (2, 4, 14, 14) and mine.dtype == torch.float32
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
    assert torch.stack(out.attentions).std() > 0.05  # sharp, not uniform: the comparison means something
    torch.testing.assert_close(out.logits, hf_logits(hf, ids(2))[:, -1], atol=1e-4, rtol=0)


def test_residual_stream_and_logit_lens(pair):
    hf, ours = pair
    blocks = []
    hooks = [(block, lambda m, a, out: blocks.append(out[0] if isinstance(out, tuple) else out), False)
             for block in hf.transformer.h]
    reference = hf_logits(hf, ids(), hooks)
    decoder = decoder_for(ours)
    out = run(decoder, ids(), capture_residuals=True, logits="all")
    assert [r.shape for r in out.residuals] == [(1, 14, 32)] * 3
    for mine, theirs in zip(out.residuals, blocks):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
    with torch.inference_mode():
        lens = [decoder.unembed(r) for r in out.residuals]
    # each block's lens is ln_f and the head on its output; the last one is the model's own logits
    with torch.no_grad():
        for mine, theirs in zip(lens, blocks):
            torch.testing.assert_close(mine, hf.lm_head(hf.transformer.ln_f(theirs)), atol=1e-4, rtol=0)
    torch.testing.assert_close(lens[-1], out.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.logits, reference, atol=1e-4, rtol=0)
    assert not torch.allclose(lens[0], lens[-1], atol=1e-2)


@pytest.mark.parametrize("heads", [[(0, 2)], [(1, 0), (1, 3), (2, 1)]])
def test_zero_ablated_heads_equal_transformers_with_a_c_proj_pre_hook(pair, heads):
    hf, ours = pair
    hooks = [zero_head_slice(hf.transformer.h[layer], head) for layer, head in heads]
    expected = hf_logits(hf, ids(), hooks)
    out = run(decoder_for(ours), ids(), logits="all", ablation=Ablation(heads=tuple(heads)))
    torch.testing.assert_close(out.logits, expected, atol=1e-4, rtol=0)
    assert not torch.allclose(expected, hf_logits(hf, ids()), atol=1e-2)  # the ablation changed something


def test_zero_ablated_attention_and_mlp_layers_equal_transformers(pair):
    hf, ours = pair
    zero = lambda module, args, out: (torch.zeros_like(out[0]), *out[1:]) if isinstance(out, tuple) \
        else torch.zeros_like(out)  # noqa: E731
    hooks = [(hf.transformer.h[0].attn, zero, False), (hf.transformer.h[2].mlp, zero, False)]
    expected = hf_logits(hf, ids(), hooks)
    out = run(decoder_for(ours), ids(), logits="all", ablation=Ablation(attention=(0,), mlp=(2,)))
    torch.testing.assert_close(out.logits, expected, atol=1e-4, rtol=0)


def test_mean_ablation_uses_the_means_of_a_reference_text(pair):
    hf, ours = pair
    decoder = decoder_for(ours)
    reference = torch.tensor([[7, 8, 9, 10, 11, 12, 13, 2, 3]])
    # The means, by hand from transformers: c_proj's input per head, the attention and MLP outputs.
    seen: dict[str, list[torch.Tensor]] = {"heads": [], "attention": [], "mlp": []}
    hooks = []
    for block in hf.transformer.h:
        hooks.append((block.attn.c_proj, lambda m, a: seen["heads"].append(a[0]), True))
        hooks.append((block.attn, lambda m, a, out: seen["attention"].append(out[0]), False))
        hooks.append((block.mlp, lambda m, a, out: seen["mlp"].append(out), False))
    hf_logits(hf, reference, hooks)
    with torch.inference_mode():
        means = decoder.ablation_means(reference)
    assert means.heads.shape == (3, 4, 8) and means.attention.shape == means.mlp.shape == (3, 32)
    for layer in range(3):
        torch.testing.assert_close(means.heads[layer], seen["heads"][layer][0].mean(0).view(4, 8), atol=1e-5, rtol=0)
        torch.testing.assert_close(means.attention[layer], seen["attention"][layer][0].mean(0), atol=1e-5, rtol=0)
        torch.testing.assert_close(means.mlp[layer], seen["mlp"][layer][0].mean(0), atol=1e-5, rtol=0)

    ablation = Ablation(heads=((1, 2),), mlp=(0,), means=means)
    mean_out = lambda value: lambda m, a, out: value.expand_as(out)  # noqa: E731
    hooks = [zero_head_slice(hf.transformer.h[1], 2, means.heads[1, 2]),
             (hf.transformer.h[0].mlp, mean_out(means.mlp[0]), False)]
    expected = hf_logits(hf, ids(), hooks)
    out = run(decoder, ids(), logits="all", ablation=ablation)
    torch.testing.assert_close(out.logits, expected, atol=1e-4, rtol=0)
    zeroed = run(decoder, ids(), logits="all", ablation=Ablation(heads=((1, 2),), mlp=(0,)))
    assert not torch.allclose(out.logits, zeroed.logits, atol=1e-3)  # mean is not zero


def test_parts_add_up_to_the_residual_stream(pair):
    _, ours = pair
    out = run(decoder_for(ours), ids(), capture_parts=True, capture_residuals=True)
    assert out.head_outputs[0].shape == (1, 14, 4, 8)
    # block 1's output = block 0's output + its attention + its MLP
    torch.testing.assert_close(out.residuals[1], out.residuals[0] + out.attention_outputs[1] + out.mlp_outputs[1],
                               atol=1e-5, rtol=0)


def test_gradients_through_token_embeddings_equal_autograd_on_the_training_forward(pair):
    _, model = pair
    model.eval()
    decoder = decoder_for(model)
    idx, position = ids(), 9
    embeds = decoder.token_embeddings(idx).detach().requires_grad_()
    out = decoder.forward(idx, None, ForwardOptions(logits="all", token_embeds=embeds))
    target = int(out.logits[0, position].argmax())
    out.logits[0, position, target].backward()

    captured = []

    def keep_grad(module, args, output):  # the token embeddings inside GPT.forward, before positions
        output.retain_grad()
        captured.append(output)
    handle = model.tok_emb.register_forward_hook(keep_grad)
    try:
        logits, _ = model(idx)
    finally:
        handle.remove()
    logits[0, position, target].backward()
    model.zero_grad(set_to_none=True)
    reference = captured[0].grad
    torch.testing.assert_close(embeds.grad, reference, atol=1e-5, rtol=1e-4)
    assert embeds.grad[0, position + 1:].abs().max() == 0  # causal: later tokens do not matter
    assert embeds.grad[0, :position + 1].abs().sum(-1).gt(0).all()  # every earlier token matters
    # gradient x input, the attribution the Inside tab shows: one L2 norm per input position
    attribution = (embeds.grad * embeds).norm(dim=-1)[0, :position + 1]
    assert attribution.shape == (position + 1,) and attribution.sum() > 0


def test_bad_options_are_refused_in_one_line(pair):
    _, ours = pair
    decoder = decoder_for(ours)
    with pytest.raises(ValueError, match="no head 3.0"):
        run(decoder, ids(), ablation=Ablation(heads=((3, 0),)))
    with pytest.raises(ValueError, match="no layer 5"):
        run(decoder, ids(), ablation=Ablation(mlp=(5,)))
    bad_means = AblationMeans(heads=torch.zeros(3, 4, 8), attention=torch.zeros(3, 31), mlp=torch.zeros(3, 32))
    with pytest.raises(ValueError, match="attention have shape"):
        run(decoder, ids(), ablation=Ablation(attention=(0,), means=bad_means))
    with pytest.raises(ValueError, match="token_embeds must have shape"):
        run(decoder, ids(), token_embeds=torch.zeros(1, 3, 32))
    with pytest.raises(ValueError, match="logits must be one of"):
        ForwardOptions(logits="first")


def test_a_model_of_another_shape(pair):
    """No hidden assumption of the fixture's shape: one head, one layer, T = 1."""
    torch.manual_seed(3)
    model = GPT(pair[1].config.with_changes(n_heads=1, n_layers=1)).eval()
    out = run(decoder_for(model), torch.tensor([[4]]), logits="all", capture_attention=True,
              ablation=Ablation(heads=((0, 0),)))
    assert out.attentions[0].shape == (1, 1, 1, 1) and out.attentions[0].item() == pytest.approx(1.0)
    assert out.logits.shape == (1, 1, 50)
