"""Number formats for generation: fp32, bf16, fp16 and int8, their memory, and what they cost in accuracy.

- fp32: the weights as trained.
- bf16 / fp16: a copy of the model cast to 16-bit floats (half the memory). fp16 needs a CUDA GPU;
  bf16 also runs on CPUs (slowly where the CPU lacks bf16 instructions).
- int8: PyTorch's `quantize_dynamic` (CPU only): every `nn.Linear` gets int8 weights with one scale per
  matrix (activations quantized on the fly), and the embedding tables int8 rows with one scale and
  offset per row (weight-only). The output head shares its weights with the token embedding; quantized,
  they become two int8 copies (the head's packed for matmuls, the table's for lookups), which
  `weights_memory_bytes` counts.

`prepare_for_inference` never changes the model it is given (the app may be training it).
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn

from engine.device import INFERENCE_PRECISIONS, check_precision

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _quantize_dynamic(model: nn.Module) -> nn.Module:
    try:
        from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig, quantize_dynamic
    except ImportError:  # pragma: no cover - a future torch without the eager-mode API
        raise ValueError("this PyTorch build has no dynamic quantization; int8 is unavailable") from None
    spec = {nn.Linear: default_dynamic_qconfig, nn.Embedding: float_qparams_weight_only_qconfig}
    with warnings.catch_warnings():
        # torch 2.10+ marks eager-mode quantization deprecated (moving to torchao); it still works.
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, spec, dtype=torch.qint8)


def prepare_for_inference(model: nn.Module, precision: str) -> nn.Module:
    """The model to generate with in a precision: the model itself when it is already in that format
    (fp32, or a bf16/fp16 model), otherwise a copy (cast to bf16/fp16, or with int8 Linear layers). A copy is in
    eval mode; the model itself keeps its train/eval flag (generation never uses dropout)."""
    device = model_device(model)
    check_precision(precision, device, use="inference")
    if precision == "fp32":
        if next(model.parameters()).dtype != torch.float32:
            return copy.deepcopy(model).float().eval()
        return model
    if precision in ("bf16", "fp16") and all(p.dtype == DTYPES[precision] for p in model.parameters()):
        return model  # already in that format (e.g. a bf16 model opened as it is): no second copy
    clone = copy.deepcopy(model).eval()  # deepcopy keeps the head tied to the embedding
    if precision == "int8":
        return _quantize_dynamic(clone.float())
    return clone.to(DTYPES[precision])


def weights_memory_bytes(model: nn.Module, precision: str) -> int:
    """Bytes the model's weights take in a precision (tied weights counted once per copy).

    int8 counts what `prepare_for_inference` really keeps: each Linear weight as int8 plus a scale
    (the head as its own copy of the tied embedding), embedding tables as int8 rows plus a scale and
    offset per row, biases and LayerNorms in fp32.
    """
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
    if precision in ("fp32", "bf16", "fp16"):
        seen: set[int] = set()
        total = 0
        for p in model.parameters():  # parameters() yields a tied tensor once
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        return total * torch.tensor([], dtype=DTYPES[precision]).element_size()
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            total += module.weight.numel() + 8  # int8 values plus one scale and zero point
            if module.bias is not None:
                total += module.bias.numel() * 4
        elif isinstance(module, nn.Embedding):
            total += module.weight.numel() + module.weight.shape[0] * 8  # int8 rows, fp32 scale and offset each
        else:
            total += sum(p.numel() * 4 for p in module.parameters(recurse=False))
    return total
