"""The llama family (Llama, Qwen2, Mistral) from Hugging Face folders, against transformers throughout.

The models are small transformers models trained here for a few seconds (tests/engine/llama_fixtures.py):
Llama with grouped-query attention, a tied head and Llama 3 rope scaling; Qwen2 with q/k/v biases, an untied
head and an embedding table padded past its tokenizer; Mistral. Each is saved with save_pretrained beside a
tokenizer.json trained here, with chat special tokens and a chat template.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub here: never try it
transformers = pytest.importorskip("transformers")

from hf_fixtures import CORPUS  # noqa: E402
from llama_fixtures import KINDS, llama_folder, trained_model  # noqa: E402
from safetensors import safe_open  # noqa: E402

from engine.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from engine.config import ModelConfig, RopeScaling, TrainConfig  # noqa: E402
from engine.data import Corpus, Dataset  # noqa: E402
from engine.events import StepEvent  # noqa: E402
from engine.generation import (  # noqa: E402
    Ablation,
    GenerationDoneEvent,
    attention_maps,
    decoder_for,
    generate,
    stream_generate,
    weights_memory_bytes,
)
from engine.hf_import import HFImportError, config_from_hf  # noqa: E402
from engine.hf_llama import context_note  # noqa: E402
from engine.inspect import gradient_x_input, logit_lens  # noqa: E402
from engine.model import GPT  # noqa: E402
from engine.sampling import SamplingConfig  # noqa: E402
from engine.sources import describe_source, open_model, open_tokenizer  # noqa: E402
from engine.tokenizers import chat_prompt_ids  # noqa: E402
from engine.training.trainer import Trainer  # noqa: E402

PROMPTS = ["Hello world! The", "def main", "Café naïve", "User: what is"]
MESSAGES = [{"role": "user", "content": "what is 2+2?"}, {"role": "assistant", "content": "2+2 is 4."},
            {"role": "user", "content": "and 3+3?"}]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: on a busy shared CPU two OpenMP threads waiting on each other only slow every step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    return {kind: llama_folder(kind, tmp_path_factory.mktemp(kind)) for kind in KINDS}


@pytest.fixture(scope="module")
def opened(folders):
    return {kind: open_model(folder) for kind, folder in folders.items()}


@pytest.fixture(scope="module")
def hf_models():
    return {kind: trained_model(kind) for kind in KINDS}


@pytest.fixture(scope="module")
def hf_tokenizers(folders):
    return {kind: transformers.AutoTokenizer.from_pretrained(str(folder)) for kind, folder in folders.items()}


def hf_greedy(model, ids: list[int], n: int, penalty: float = 1.0) -> list[int]:
    """transformers' greedy generate(): the new ids (no end-of-text stop)."""
    config = transformers.GenerationConfig(do_sample=False, max_new_tokens=n, eos_token_id=None, pad_token_id=0,
                                           repetition_penalty=penalty)
    model.generation_config.eos_token_id = None
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(x, generation_config=config, attention_mask=torch.ones_like(x))
    return out[0, len(ids):].tolist()


def test_configs_map_onto_the_family(opened):
    llama, qwen2, mistral = (opened[k].model.config for k in KINDS)
    for c in (llama, qwen2, mistral):
        assert (c.arch, c.n_heads, c.n_kv_heads, c.head_dim, c.hidden_dim, c.n_layers) == ("llama", 4, 2, 16, 96, 2)
    assert llama.tie_embeddings and llama.rope_theta == 500000.0 and not llama.qkv_bias
    assert llama.rope_scaling == RopeScaling("llama3", 4.0, 32, 1.0, 4.0)
    assert not qwen2.tie_embeddings and qwen2.qkv_bias and qwen2.norm_eps == 1e-6 and qwen2.rope_scaling is None
    assert not mistral.tie_embeddings and mistral.context_length == 128  # its window (4096) is longer
    # Qwen's embedding table is padded past its tokenizer: accepted.
    assert opened["qwen2"].tokenizer.vocab_size < qwen2.vocab_size == 448
    model = opened["llama"].model
    assert model.head.weight is model.tok_emb.weight and model.pos_emb is None
    assert opened["qwen2"].model.head.weight is not opened["qwen2"].model.tok_emb.weight


@pytest.mark.parametrize("kind", KINDS)
def test_logits_equal_transformers_prefill_and_step_by_step(kind, opened, hf_models):
    hf = hf_models[kind]
    model = opened[kind].model
    idx = torch.randint(0, 400, (2, 100), generator=torch.Generator().manual_seed(0))
    decoder = decoder_for(model)
    with torch.inference_mode():
        expected = hf(idx).logits
        assert (model(idx)[0] - expected).abs().max().item() <= 1e-4  # the training forward
        cache = decoder.new_cache(2)
        assert (decoder.forward(idx[:, :40], cache) - expected[:, 39]).abs().max().item() <= 1e-4
        for t in range(40, 100):  # one token at a time from the KV cache, past the llama3 original context (32)
            assert (decoder.forward(idx[:, t:t + 1], cache) - expected[:, t]).abs().max().item() <= 1e-4, t


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_continuations_equal_generate(kind, penalty, opened, hf_models, hf_tokenizers):
    hf = hf_models[kind]
    model, tokenizer = opened[kind].model, opened[kind].tokenizer
    distinct = set()
    for prompt in PROMPTS:
        ours = generate(model, tokenizer, prompt,
                        SamplingConfig(greedy=True, repetition_penalty=penalty, max_new_tokens=30))
        # The prompt as transformers' tokenizer(prompt) gives it (a BOS first for the SentencePiece ones).
        assert ours.prompt_ids == hf_tokenizers[kind](prompt)["input_ids"]
        assert ours.ids == hf_greedy(hf, ours.prompt_ids, 30, penalty), prompt
        distinct |= set(ours.ids)
    # trained: greedy decoding follows the text, it does not repeat one token (how many distinct tokens depends on
    # the fixture's few training steps, which vary a little with what ran before them in the process: 6 to 10+)
    assert len(distinct) >= 5


def test_side_by_side_decoders_equal_single_runs(opened):
    model, tokenizer = opened["llama"].model, opened["llama"].tokenizer
    configs = [SamplingConfig(greedy=True, max_new_tokens=20),
               SamplingConfig(greedy=True, repetition_penalty=1.3, max_new_tokens=12),
               SamplingConfig(temperature=0.9, top_k=20, seed=7, max_new_tokens=20)]
    done = [e for e in stream_generate(model, tokenizer, "def main", configs) if isinstance(e, GenerationDoneEvent)][0]
    for config, ids in zip(configs, done.ids):
        assert list(ids) == generate(model, tokenizer, "def main", config).ids


@pytest.mark.parametrize("kind", KINDS)
def test_token_ids_equal_tokenizers(kind, folders):
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(folders[kind] / "tokenizer.json"))
    ours = open_tokenizer(folders[kind])
    texts = [*CORPUS[:4], "<|im_start|>user\nhi<|im_end|>\n", "a </s> b <s>", "", " \t\n😀 日本語"]
    for text in texts:
        assert ours.encode(text) == reference.encode(text, add_special_tokens=False).ids, text
        assert ours.encode(text, add_special=True) == reference.encode(text).ids, text


@pytest.mark.parametrize("kind", KINDS)
def test_chat_prompt_ids_equal_apply_chat_template(kind, folders, hf_tokenizers):
    reference = hf_tokenizers[kind]
    ours = open_tokenizer(folders[kind])
    for messages in (MESSAGES[:1], MESSAGES, [{"role": "system", "content": "Be brief."}, *MESSAGES]):
        expected = reference.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        expected = expected["input_ids"] if hasattr(expected, "keys") else expected
        assert chat_prompt_ids(ours, messages) == list(expected)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_checkpoint_round_trip(kind, opened, tmp_path):
    model, tokenizer = opened[kind].model, opened[kind].tokenizer
    path = save_checkpoint(tmp_path / f"{kind}.safetensors", model, tokenizer)
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        config = json.loads(f.metadata()["model_config"])
    assert config["arch"] == "llama"
    assert ("head.weight" in names) == (kind == "qwen2")  # a tied head is stored once, as tok_emb
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    assert (loaded.model.head.weight is loaded.model.tok_emb.weight) == model.config.tie_embeddings
    idx = torch.arange(30).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(loaded.model(idx)[0], model(idx)[0])
    assert loaded.tokenizer.chat_template == tokenizer.chat_template
    assert chat_prompt_ids(loaded.tokenizer, MESSAGES) == chat_prompt_ids(tokenizer, MESSAGES)


def test_checkpoints_written_before_the_families_read_as_gpt2():
    shipped = Path(__file__).resolve().parents[2] / "resources" / "models" / "default.safetensors"
    with safe_open(str(shipped), framework="pt") as f:
        assert "arch" not in json.loads(f.metadata()["model_config"])  # written before this field existed
    checkpoint = load_checkpoint(shipped)
    assert checkpoint.config.arch == "gpt2" and checkpoint.model.pos_emb is not None
    assert generate(checkpoint.model, checkpoint.tokenizer, "The", SamplingConfig(greedy=True, max_new_tokens=5)).ids


def test_a_fine_tuning_step_runs_and_learns(opened):
    ours = open_model(opened["qwen2"].source.path, dtype="fp32").model
    ours.load_state_dict({k: v.clone() for k, v in ours.state_dict().items()})  # own memory, not the file's
    tokenizer = opened["qwen2"].tokenizer
    corpus = Corpus(name="facts", documents=["The capital of France is Paris. " * 200])
    dataset = Dataset.build(corpus, tokenizer, 32)
    config = TrainConfig(steps=4, batch_size=4, lr=3e-3, warmup_steps=0, eval_interval=4, eval_batches=1,
                         sample_interval=0, seed=0)
    trainer = Trainer(ours.config, config, dataset, model=ours)
    events = list(trainer.run())
    losses = [e.loss for e in events if isinstance(e, StepEvent)]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert trainer.model.config.arch == "llama"


def test_attention_maps_are_per_query_head_and_equal_transformers(opened):
    hf = transformers.LlamaForCausalLM.from_pretrained(str(opened["llama"].source.path),
                                                       attn_implementation="eager").eval()
    ids = torch.tensor([[1, 50, 60, 70, 80, 90, 100, 110]])
    maps = attention_maps(opened["llama"].model, ids[0])
    assert maps.shape == (2, 4, 8, 8)  # one map per query head (4), though only 2 key/value heads
    with torch.no_grad():
        expected = torch.stack(hf(ids, output_attentions=True).attentions)[:, 0]
    assert torch.allclose(torch.from_numpy(maps), expected, atol=1e-5)


def test_bf16_and_int8_generate(opened):
    model, tokenizer = opened["llama"].model, opened["llama"].tokenizer
    reference = generate(model, tokenizer, "Hello world! The", SamplingConfig(greedy=True, max_new_tokens=8)).ids
    for precision in ("bf16", "int8"):
        got = generate(model, tokenizer, "Hello world! The", SamplingConfig(greedy=True, max_new_tokens=8),
                       precision=precision)
        assert len(got.ids) == 8
        assert got.ids[0] == reference[0], precision  # the first choice survives the rounding
    assert weights_memory_bytes(model, "bf16") * 2 == weights_memory_bytes(model, "fp32")
    assert weights_memory_bytes(model, "int8") < weights_memory_bytes(model, "bf16")


@pytest.mark.parametrize("rope", [{"rope_type": "linear", "factor": 2.0}, {"rope_type": "dynamic", "factor": 2.0}])
def test_linear_and_dynamic_rope_scaling_equal_transformers(rope):
    hf_config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=24,
                                         rope_parameters={**rope, "rope_theta": 10000.0})
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    config = config_from_hf(hf_config.to_dict()).with_changes(context_length=64)  # decode past the 24 it knows
    ours = GPT(config)
    from engine.hf_llama import llama_names

    ours.load_state_dict({our: hf.state_dict()[name] for name, our, _ in llama_names(config)}
                         | ({"head.weight": hf.state_dict()["lm_head.weight"]} if config.tie_embeddings else {}))
    idx = torch.randint(0, 64, (1, 60), generator=torch.Generator().manual_seed(1))
    decoder = decoder_for(ours.eval())
    with torch.inference_mode():
        cache = decoder.new_cache(1)
        decoder.forward(idx[:, :10], cache)
        for t in range(10, 60):  # dynamic scaling changes the frequencies at every step past 24, as transformers
            logits = decoder.forward(idx[:, t:t + 1], cache)
            expected = hf(idx[:, :t + 1]).logits[:, -1] if rope["rope_type"] == "linear" else None
            if expected is not None:
                assert (logits - expected).abs().max().item() <= 1e-4, t
        if rope["rope_type"] == "dynamic":
            x = idx[:, :40]
            out = hf.generate(x, max_new_tokens=20, do_sample=False, attention_mask=torch.ones_like(x),
                              pad_token_id=0, eos_token_id=None)[0, 40:].tolist()
            cache = decoder.new_cache(1)
            step = decoder.forward(x, cache)
            got = []
            for _ in range(20):
                got.append(int(step.argmax()))
                step = decoder.forward(torch.tensor([[got[-1]]]), cache)
            assert got == out


def _edited(folder: Path, tmp_path: Path, **changes) -> Path:
    copy = Path(shutil.copytree(folder, tmp_path / "edited"))
    config = json.loads((copy / "config.json").read_text())
    config.update(changes)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_mistral_sliding_window_caps_the_context(folders, tmp_path):
    folder = _edited(folders["mistral"], tmp_path, sliding_window=64)
    assert open_model(folder).model.config.context_length == 64
    info = describe_source(folder)
    assert info["model_config"]["context_length"] == 64
    base = json.loads((folders["qwen2"] / "config.json").read_text())
    assert context_note({**base, "use_sliding_window": True, "sliding_window": 100}) == \
        "context capped at the sliding window of 100 tokens (the model takes 128)"
    assert config_from_hf({**base, "use_sliding_window": False, "sliding_window": 100}).context_length == 128
    assert config_from_hf({**base, "max_position_embeddings": 131072}).context_length == 32768


@pytest.mark.parametrize("changes, words", [
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}, "rope scaling 'yarn'"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"attention_bias": True}, "attention_bias"),
    ({"partial_rotary_factor": 0.5}, "partial rotary"),
    ({"num_key_value_heads": 3}, "multiple of n_kv_heads"),
    ({"num_hidden_layers": 10**6}, "n_layers must be between"),
    ({"intermediate_size": 200}, "shape"),
    ({"tie_word_embeddings": False}, "lm_head.weight"),
])
def test_bad_llama_configs_are_one_line(changes, words, folders, tmp_path):
    folder = _edited(folders["llama"], tmp_path, **changes)
    with pytest.raises(HFImportError) as info:
        open_model(folder)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_old_rope_scaling_dialect_reads_the_same(folders):
    config = json.loads((folders["llama"] / "config.json").read_text())
    params = config.pop("rope_parameters")
    old = {**config, "rope_theta": params.pop("rope_theta"), "rope_scaling": {**params, "type": params["rope_type"]}}
    old["rope_scaling"].pop("rope_type")
    assert config_from_hf(old) == config_from_hf({**config, "rope_parameters": {**params, "rope_theta": 500000.0}})
    assert isinstance(config_from_hf(old), ModelConfig)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_inside_analyses_equal_transformers(kind, opened, hf_models):
    """The Inside view on the llama family: the logit lens is each decoder layer's output through the final RMSNorm
    and lm_head, a zeroed head is its slice of o_proj's input, and gradient x input is autograd on the HF model."""
    hf, model = hf_models[kind], opened[kind].model
    ids = torch.randint(0, 400, (1, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
    lens = logit_lens(model, ids[0].tolist(), top_k=4)
    assert lens.top_ids.shape == (2, 24, 4)
    # hidden_states[-1] is already normed by transformers; the blocks' raw outputs are the ones before it
    block_outputs = [*out.hidden_states[1:-1], None]
    for layer, h in enumerate(block_outputs):
        logits = out.logits[0] if h is None else hf.lm_head(hf.model.norm(h))[0]
        top = torch.softmax(logits.detach(), -1).topk(4, dim=-1)
        torch.testing.assert_close(torch.from_numpy(lens.top_probs[layer]), top.values, atol=1e-4, rtol=0)
    loss = torch.nn.functional.cross_entropy(out.logits[0, :-1], ids[0, 1:], reduction="none")
    torch.testing.assert_close(torch.from_numpy(lens.token_loss[1:]), loss, atol=1e-4, rtol=0)

    # head 1 of block 1 zeroed: its head_dim slice of o_proj's input (4 query heads; 2 share each key/value head)
    layer, head, width = 1, 1, model.config.head_dim
    o_proj = hf.model.layers[layer].self_attn.o_proj

    def zero(_module, args):
        x = args[0].clone()
        x[..., head * width:(head + 1) * width] = 0
        return (x,)

    handle = o_proj.register_forward_pre_hook(zero)
    try:
        with torch.no_grad():
            ablated = hf(ids).logits[0]
        embeds = hf.model.embed_tokens(ids).detach().requires_grad_(True)
        logits = hf(inputs_embeds=embeds).logits
    finally:
        handle.remove()
    ablation = Ablation(heads=((layer, head),))
    ours = logit_lens(model, ids[0].tolist(), top_k=4, ablation=ablation)
    top = torch.softmax(ablated, -1).topk(4, dim=-1)
    torch.testing.assert_close(torch.from_numpy(ours.top_probs[-1]), top.values, atol=1e-4, rtol=0)
    assert not torch.allclose(ablated, out.logits[0], atol=1e-3)  # the ablation changed something
    position = 15
    target = int(logits[0, position].argmax())
    logits[0, position, target].backward()
    expected = (embeds.grad * embeds).norm(dim=-1)[0, :position + 1].detach()
    result = gradient_x_input(model, ids[0].tolist(), position, ablation=ablation)
    assert result.target == target
    torch.testing.assert_close(torch.from_numpy(result.scores), expected, atol=1e-5, rtol=1e-4)
