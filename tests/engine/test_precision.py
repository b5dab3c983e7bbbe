"""Precisions for generation: copies never touch the model, memory figures, agreement with fp32."""
from __future__ import annotations

import pytest
import torch

from engine import device as device_module
from engine.config import ModelConfig
from engine.device import (
    INFERENCE_PRECISIONS,
    TRAINING_PRECISIONS,
    available_devices,
    pick_device,
    precision_options,
    precision_problem,
    preferred_training_precision,
)
from engine.generation import generate, greedy_agreement, prepare_for_inference, weights_memory_bytes
from engine.model import GPT
from engine.sampling import SamplingConfig
from engine.tokenizers import CharTokenizer

TEXT = "abcdefghijklmnopqrstuvwxyz .,\n"


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.from_text(TEXT)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=tokenizer.vocab_size, context_length=32, emb_dim=64, n_heads=4, n_layers=2,
                        drop_rate=0.0)).eval()
    with torch.no_grad():  # decisive logits, as a trained model has: precision noise rarely flips the arg-max
        m.tok_emb.weight.mul_(25)
    return m


def test_memory_per_precision():
    config = ModelConfig(vocab_size=100, context_length=8, emb_dim=16, n_heads=2, n_layers=1, qkv_bias=True)
    model = GPT(config)
    n = model.num_params()
    assert weights_memory_bytes(model, "fp32") == 4 * n
    assert weights_memory_bytes(model, "bf16") == weights_memory_bytes(model, "fp16") == 2 * n
    d = 16
    linear = 3 * d * d + d * d + 4 * d * d + 4 * d * d + 100 * d  # qkv, out, fc, proj, head (tied copy)
    linear_bias = 3 * d + d + 4 * d + d
    embeddings = 100 * d + 8 * d  # token and position tables, one int8 byte each ...
    expected = (linear + 5 * 8) + 4 * linear_bias + (embeddings + (100 + 8) * 8) + 4 * (3 * 2 * d)
    assert weights_memory_bytes(model, "int8") == expected
    with pytest.raises(ValueError, match="precision"):
        weights_memory_bytes(model, "fp64")


def test_prepare_never_changes_the_model(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert prepare_for_inference(model, "fp32") is model
    bf16 = prepare_for_inference(model, "bf16")
    int8 = prepare_for_inference(model, "int8")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    assert bf16.head.weight is bf16.tok_emb.weight
    assert type(int8.head).__module__.startswith("torch.ao.nn.quantized")
    assert type(int8.tok_emb).__module__.startswith("torch.ao.nn.quantized")
    assert model.head.weight is model.tok_emb.weight
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, before[k])
    with pytest.raises(ValueError, match="CUDA"):
        prepare_for_inference(model, "fp16")


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_generation_in_lower_precision_follows_fp32(model, tokenizer, precision):
    cfg = SamplingConfig(greedy=True, max_new_tokens=20)
    reference = generate(model, tokenizer, "hello", cfg)
    other = generate(model, tokenizer, "hello", cfg, precision=precision)
    assert len(other.ids) == 20
    report = greedy_agreement(model, tokenizer, "hello", precision, n_tokens=40)
    assert report.n_tokens == 40 and 0 <= report.first_divergence <= 40
    assert report.teacher_forced >= 0.9
    assert report.first_divergence == next((i for i, (a, b) in enumerate(zip(reference.ids, other.ids)) if a != b),
                                           report.first_divergence)
    # Sampling works too, and a seed repeats in every precision.
    sampled = SamplingConfig(temperature=1.0, top_k=5, seed=4, max_new_tokens=10)
    assert generate(model, tokenizer, "ab", sampled, precision).ids == generate(model, tokenizer, "ab", sampled,
                                                                                  precision).ids


def test_fp32_agrees_with_itself(model, tokenizer):
    report = greedy_agreement(model, tokenizer, "", "fp32", n_tokens=50)  # runs past the 32-token context
    assert (report.teacher_forced, report.first_divergence, report.free_run_match) == (1.0, 50, 1.0)


def test_devices_and_precision_options_come_from_one_rule(monkeypatch):
    devices = available_devices()
    assert devices[:2] == ["auto", "cpu"] and all(pick_device(d) is not None for d in devices)
    cpu = precision_options("cpu", use="inference")
    assert list(cpu) == list(INFERENCE_PRECISIONS) and cpu["fp32"] is None and cpu["int8"] is None
    assert cpu["fp16"] == precision_problem("fp16", "cpu", "inference") and "CUDA" in cpu["fp16"]
    cuda = precision_options(torch.device("cuda"), use="inference")  # the rule, asked without a GPU
    assert cuda["fp16"] is None and "CPU only" in cuda["int8"]
    monkeypatch.setattr(device_module, "cpu_supports_bf16", lambda: False)
    training = precision_options("cpu")
    assert list(training) == list(TRAINING_PRECISIONS) and "bf16" in training["bf16"] and "CUDA" in training["fp16"]


def test_runs_start_in_bf16_only_where_the_hardware_has_it(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_supports_bf16", lambda: True)
    assert preferred_training_precision("cpu") == "bf16"
    monkeypatch.setattr(device_module, "cpu_supports_bf16", lambda: False)
    assert preferred_training_precision("cpu") == "fp32"  # emulated bf16 is slower than fp32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert preferred_training_precision(torch.device("cuda")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert preferred_training_precision(torch.device("cuda")) == "fp32"  # never fp16: it needs loss scaling
    assert preferred_training_precision(torch.device("mps")) == "fp32"


def _fake_gpus(monkeypatch, count: int, name: str = "NVIDIA H100 80GB HBM3", mps: bool = False) -> None:
    """A machine with `count` CUDA GPUs as far as engine.device can tell (no GPU needed)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


def test_pick_device_with_fake_device_lists(monkeypatch):
    _fake_gpus(monkeypatch, 2)
    assert available_devices() == ["auto", "cpu", "cuda", "cuda:0", "cuda:1"]
    assert pick_device("auto") == torch.device("cuda") and pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="no GPU cuda:2; this machine has 2"):
        pick_device("cuda:2")
    _fake_gpus(monkeypatch, 0, mps=True)
    assert pick_device("auto") == torch.device("mps")
    with pytest.raises(ValueError, match="CUDA was asked for"):
        pick_device("cuda")
    _fake_gpus(monkeypatch, 0)
    assert pick_device("auto") == torch.device("cpu") and pick_device(" CPU ") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu")


@pytest.mark.parametrize("name, precision, expected", [
    ("NVIDIA H100 80GB HBM3", "bf16", ("H100 SXM", 989e12)),
    ("NVIDIA H100 PCIe", "bf16", ("H100 PCIe", 756e12)),
    ("NVIDIA H200", "fp16", ("H200", 989e12)),
    ("NVIDIA A100-SXM4-80GB", "bf16", ("A100", 312e12)),
    ("NVIDIA A100 80GB PCIe", "bf16", ("A100", 312e12)),
    ("NVIDIA L4", "bf16", ("L4", 121e12)),
    ("NVIDIA GeForce RTX 4090", "bf16", ("RTX 4090", 165e12)),
    ("NVIDIA L40S", "bf16", None),  # not an L4
    ("NVIDIA H100 NVL", "bf16", None),  # another H100: measured, not guessed
    ("NVIDIA H100 80GB HBM3", "fp32", None),  # the table is for 16-bit tensor-core maths
])
def test_published_peaks(name, precision, expected):
    assert device_module.published_peak(name, precision) == expected


def test_mfu_peak_on_a_known_gpu_is_published_and_measured_elsewhere(monkeypatch):
    _fake_gpus(monkeypatch, 1, name="NVIDIA H200")
    monkeypatch.setattr(device_module, "measure_peak_flops", lambda device, precision: pytest.fail("no probe"))
    assert device_module.peak_flops("cuda", "bf16") == 989e12
    assert device_module.peak_source("cuda", "bf16") == "published bf16 dense peak of the H200"
    _fake_gpus(monkeypatch, 1, name="Some Future GPU")
    monkeypatch.setattr(device_module, "_peak_memo", {})
    monkeypatch.setattr(device_module, "measure_peak_flops", lambda device, precision: 123e12)
    assert device_module.peak_flops("cuda", "bf16") == 123e12
    assert device_module.peak_source("cuda", "bf16").startswith("measured bf16")
