"""A GGUF file as our GPT and tokenizer.

engine.gguf_reader turns the file into the parts a Hugging Face folder gives (a config.json dict, tensors under
Hugging Face's names dequantized once to the chosen precision, a tokenizer.json, BOS/EOS/EOT ids, the chat
template); engine.hf_import builds the model from them exactly as from a folder, taking the tensors as they are
(no second copy). The tokenizer is an HFTokenizer: BOS added as the file says (`tokenizer.ggml.add_bos_token`),
generation ends at EOS and EOT (end of turn), the chat template is `tokenizer.chat_template`.

Precision "auto" is bf16 when every matrix of the file is stored in BF16, fp32 otherwise (quantized blocks and
F16 are dequantized to fp32: CPUs compute F16 slowly).
"""
from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import torch

from engine.config import ModelConfig
from engine.events import ProgressEvent
from engine.gguf_reader import GGUFError, GGUFModel, read_gguf, read_gguf_job, read_gguf_summary
from engine.hf_import import HFImportError, build_gpt_job, config_from_hf, family_title
from engine.model import GPT
from engine.tokenizers.hf import HFTokenizer, HFTokenizerConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def gguf_dtype(path: str | os.PathLike, dtype: str = "auto") -> torch.dtype:
    """The torch dtype to dequantize to (see the module docstring for "auto")."""
    if dtype != "auto":
        if dtype not in DTYPES:
            raise GGUFError(f"dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}")
        return DTYPES[dtype]
    kinds = set(read_gguf_summary(path).quant_summary) - {"F32"}  # F32: norms and biases, in every file
    return torch.bfloat16 if kinds == {"BF16"} else torch.float32


def gguf_tokenizer(parts: GGUFModel, name: str) -> HFTokenizer:
    """The HFTokenizer of a read GGUF file (its tokenizer.json, special tokens, end-of-turn ids, chat template)."""
    from tokenizers import Tokenizer as RustTokenizer

    rust = RustTokenizer.from_str(parts.tokenizer_json)
    special = {key: rust.id_to_token(i) for key, i in (("bos_token", parts.bos_id), ("eos_token", parts.eos_id))
               if i is not None}
    eos_ids = tuple(dict.fromkeys(i for i in (parts.eos_id, parts.eot_id) if i is not None))
    config = HFTokenizerConfig(special_tokens=special, add_bos=parts.add_bos_token, chat_template=parts.chat_template,
                               eos_ids=eos_ids)
    try:
        return HFTokenizer(parts.tokenizer_json, config, name=name)
    except ValueError as e:
        raise GGUFError(f"{Path(name).name}: cannot rebuild the tokenizer: {e}") from None


def load_gguf_job(path: str | os.PathLike, *, dtype: str = "auto"
                  ) -> Generator[ProgressEvent, None, tuple[GPT, HFTokenizer]]:
    """Open a GGUF file: yields ProgressEvents while its tensors are dequantized, returns (GPT, HFTokenizer) with
    the model in eval mode on the CPU. Any problem is one line (GGUFError or HFImportError) naming the file."""
    path = Path(path).expanduser()
    label = path.name
    torch_dtype = gguf_dtype(path, dtype)
    job = read_gguf_job(path, torch_dtype)
    while True:
        try:
            done, total = next(job)
        except StopIteration as stop:
            parts: GGUFModel = stop.value
            break
        yield ProgressEvent(job="open", done=done, total=total, message=f"dequantizing {label} ({done}/{total})")
    tokenizer = gguf_tokenizer(parts, f"gguf:{label}")
    try:
        model = yield from build_gpt_job(parts.config, parts.tensors, label=label)
    except HFImportError as e:
        raise GGUFError(f"{label}: {e}") from None
    return model, tokenizer


def load_gguf_tokenizer(path: str | os.PathLike) -> HFTokenizer:
    """Only the tokenizer of a GGUF file (no tensor is read)."""
    path = Path(path).expanduser()
    return gguf_tokenizer(read_gguf(path, tensors=False), f"gguf:{path.name}")


def describe_gguf(path: str | os.PathLike) -> dict[str, Any]:
    """What a GGUF file holds, without reading its tensors: architecture, our config (or why it can't be opened),
    parameters, quantization types and their share of the parameters, tokenizer."""
    path = Path(path).expanduser()
    summary = read_gguf_summary(path)
    info: dict[str, Any] = {
        "kind": "gguf", "path": str(path), "name": summary.name or path.name, "architecture": summary.architecture,
        "file_bytes": summary.file_bytes, "num_params": summary.n_params, "quantization": summary.quant_summary,
        "family": None, "model_config": None, "problem": None, "tokenizer": None,
    }
    try:
        parts = read_gguf(path, tensors=False)
        info["family"] = family_title(parts.config)
        config: ModelConfig = config_from_hf(parts.config)
        info["model_config"] = config.to_dict()
        tokenizer = gguf_tokenizer(parts, f"gguf:{path.name}")
        info["tokenizer"] = {"type": tokenizer.type_name, "name": tokenizer.name, "vocab_size": tokenizer.vocab_size,
                             "description": tokenizer.describe(), "chat_template": bool(tokenizer.chat_template),
                             "eos_ids": sorted(tokenizer.eos_ids)}
    except (GGUFError, HFImportError) as e:
        info["problem"] = str(e)
    return info
