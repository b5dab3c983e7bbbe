"""Devices and precision: which device to train on, how to autocast there, and how fast it can go.

`peak_flops` measures the device's matmul throughput once with a short probe and caches the figure
(per device, precision and thread count) in the user cache folder, so MFU compares the model with
what *this* machine really does rather than with a datasheet constant.
"""
from __future__ import annotations

import contextlib
import json
import platform
import time

import torch

from engine.files import atomic_write_text, cache_dir

TRAINING_PRECISIONS = ("fp32", "bf16", "fp16")
INFERENCE_PRECISIONS = ("fp32", "bf16", "fp16", "int8")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

_peak_memo: dict[str, float] = {}


def pick_device(name: str = "auto") -> torch.device:
    """auto = CUDA, then Apple MPS, then CPU; an explicit device must exist here."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError("CUDA was asked for, but this PyTorch build or machine has no CUDA GPU")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"there is no GPU {name}; this machine has {torch.cuda.device_count()}")
        return device
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("MPS was asked for, but this machine has no Apple GPU available to PyTorch")
        return torch.device("mps")
    raise ValueError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")


def available_devices() -> list[str]:
    """The device choices that exist here, as pick_device takes them: auto, cpu, then the GPUs."""
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
        if torch.cuda.device_count() > 1:
            devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def device_name(device: torch.device | str) -> str:
    """A human name: the GPU's model, or the CPU's with its thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU ({_cpu_model()}, {torch.get_num_threads()} threads)"


def cpu_supports_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX512-BF16 / AMX); elsewhere bf16 is emulated and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def precision_problem(precision: str, device: torch.device | str, use: str = "training") -> str | None:
    """Why `precision` cannot run on `device` for `use` ("training" or "inference"), or None if it can."""
    device = torch.device(device)
    allowed = TRAINING_PRECISIONS if use == "training" else INFERENCE_PRECISIONS
    if precision not in allowed:
        return f"unknown precision {precision!r}; choose {', '.join(allowed)}"
    if precision == "fp16" and device.type != "cuda":
        if use == "training":
            return "fp16 training needs a CUDA GPU (it relies on loss scaling); use bf16 or fp32"
        return "fp16 generation needs a CUDA GPU; on this machine use fp32, bf16 or int8"
    if precision == "int8" and device.type != "cpu":
        return "int8 (dynamic quantization) runs on the CPU only; use bf16 or fp16 on a GPU"
    if precision == "bf16" and use == "training":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return "this GPU has no bf16 support; use fp16 or fp32"
        if device.type == "cpu" and not cpu_supports_bf16():
            return "this CPU has no native bf16 support (AVX512-BF16 or AMX); use fp32"
    return None


def check_precision(precision: str, device: torch.device | str, use: str = "training") -> None:
    """Raise a ValueError saying why a precision cannot be used on a device (see `precision_problem`)."""
    problem = precision_problem(precision, device, use)
    if problem:
        raise ValueError(problem)


def precision_options(device: torch.device | str, use: str = "training") -> dict[str, str | None]:
    """Every precision for `use`, mapped to None where it runs on `device`, else the reason it does not."""
    allowed = TRAINING_PRECISIONS if use == "training" else INFERENCE_PRECISIONS
    return {p: precision_problem(p, device, use) for p in allowed}


def autocast_context(device: torch.device | str, precision: str):
    """The context that runs matmuls in the given precision (fp32: nothing to do)."""
    device = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


def enable_fast_math(device: torch.device) -> None:
    """TF32 matmuls on CUDA: ~free speed for training, no visible accuracy cost."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _probe_key(device: torch.device, precision: str) -> str:
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    return f"{device_name(device)}|{precision}|{threads}|torch {torch.__version__}"


def measure_peak_flops(device: torch.device, precision: str, seconds: float = 0.6) -> float:
    """FLOP/s of large square matmuls on the device: the best of several timed runs."""
    n = 2048 if device.type == "cpu" else 8192
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    flops = 2.0 * n ** 3
    (a @ b).sum().item()  # warm-up: first call pays for kernel selection and page faults
    best = 0.0
    deadline = time.perf_counter() + seconds
    runs = 0
    while runs < 3 or time.perf_counter() < deadline:
        synchronize(device)
        t0 = time.perf_counter()
        c = a @ b
        synchronize(device)
        dt = time.perf_counter() - t0
        best = max(best, flops / dt)
        runs += 1
        if runs >= 50:
            break
    del a, b, c
    return best


def peak_flops(device: torch.device | str, precision: str, *, refresh: bool = False) -> float:
    """The device's measured matmul peak (FLOP/s), probed once and cached on disk.

    A probe taken while other programs were busy reads low, so `refresh=True` (the benchmarks) probes
    again and keeps the higher of the two figures. A broken cache is ignored; a cache we cannot write
    just means we probe again next time.
    """
    device = torch.device(device)
    key = _probe_key(device, precision)
    if key in _peak_memo and not refresh:
        return _peak_memo[key]
    path = cache_dir() / "peak_flops.json"
    table: dict[str, float] = {}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            table = {k: float(v) for k, v in loaded.items() if isinstance(v, (int, float))}
    except (OSError, ValueError):
        pass
    value = table.get(key)
    if not value or value <= 0 or refresh:
        value = max(value or 0.0, measure_peak_flops(device, precision))
        table[key] = value
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(table, indent=1))
        except OSError:
            pass
    _peak_memo[key] = value
    return value
