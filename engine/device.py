"""Devices and precision: which device to train on, how to autocast there, and how fast it can go.

`peak_flops` measures the device's matmul throughput once with a short probe (the best of several
bursts) and caches the figure per device model, precision, thread count and torch build in the user
cache folder, so MFU compares the model with what *this* machine really does rather than with a
datasheet constant. A run that goes faster than the cached peak has it probed again (`at_least`).
On a GPU of the published table below (`PUBLISHED_BF16_PEAKS`), in bf16 / fp16, MFU is quoted against that
GPU's dense tensor-core peak instead, as papers quote it.
"""
from __future__ import annotations

import contextlib
import json
import platform
import re
import time

import torch

from engine.files import atomic_write_text, cache_dir, read_regular
from engine.validate import parse_json

TRAINING_PRECISIONS = ("fp32", "bf16", "fp16")
INFERENCE_PRECISIONS = ("fp32", "bf16", "fp16", "int8")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

_peak_memo: dict[str, float] = {}
_reprobed: set[str] = set()  # probe keys measured again this process because a run beat the cached peak

# Published dense (no sparsity) bf16 tensor-core peaks, FLOP/s, of common GPUs; fp16's is the same on
# these. A pattern is matched against torch.cuda.get_device_name(), in order: the first match wins.
# A GPU that matches none (H100 NVL, L40S, ...) gets its measured matmul peak instead.
PUBLISHED_BF16_PEAKS: tuple[tuple[str, str, float], ...] = (
    (r"\bH200\b", "H200", 989e12),
    (r"\bH100\b.*\bPCIe\b", "H100 PCIe", 756e12),
    (r"\bH100\b.*(\bSXM|\bHBM3\b)", "H100 SXM", 989e12),
    (r"\bA100\b", "A100", 312e12),
    (r"\bL4\b", "L4", 121e12),
    (r"\bRTX 4090\b", "RTX 4090", 165e12),
)


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


def preferred_training_precision(device: torch.device | str) -> str:
    """The precision a new run starts with on `device`: bf16 (mixed precision) where the hardware runs it
    natively (a CUDA GPU with bf16, or a CPU with AVX512-BF16 / AMX, where it measured about twice as fast as
    fp32 for a 124M model), fp32 elsewhere. fp16 is never preferred: it needs loss scaling to train."""
    device = torch.device(device)
    if device.type in ("cuda", "cpu") and precision_problem("bf16", device) is None:
        return "bf16"
    return "fp32"


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


def _torch_build() -> str:
    """The PyTorch build: version, commit and CUDA/ROCm version (a new build can be faster or slower)."""
    git = (getattr(torch.version, "git_version", "") or "")[:12]
    accel = torch.version.cuda or getattr(torch.version, "hip", None) or "cpu"
    return f"torch {torch.__version__} {git} {accel}"


def _probe_key(device: torch.device, precision: str) -> str:
    """Cache key of a probe: the device's model (the CPU's, with its thread count), precision, torch build."""
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    return f"{device_name(device)}|{precision}|{threads}|{_torch_build()}"


def measure_peak_flops(device: torch.device, precision: str, seconds: float = 0.6, bursts: int = 3,
                       size: int | None = None) -> float:
    """FLOP/s of large square matmuls (size x size) on the device: the best of several short bursts.

    Another program busy for a moment slows one burst, not all of them: the bursts are spread over
    `seconds` with pauses between them, each runs at least one matmul, and the fastest one counts.
    """
    n = size or (2048 if device.type == "cpu" else 8192)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    flops = 2.0 * n ** 3
    (a @ b).sum().item()  # warm-up: first call pays for kernel selection and page faults
    best = 0.0
    burst_s = seconds / bursts / 2
    for burst in range(bursts):
        if burst:
            time.sleep(burst_s)  # let a transient load pass
        deadline = time.perf_counter() + burst_s
        runs = 0
        while runs < 1 or time.perf_counter() < deadline:
            synchronize(device)
            t0 = time.perf_counter()
            c = a @ b
            synchronize(device)
            best = max(best, flops / (time.perf_counter() - t0))
            runs += 1
            if runs >= 20:
                break
    del a, b, c
    return best


def _read_table(path) -> dict[str, float]:
    try:
        loaded = parse_json(read_regular(path, 1 << 20, "cache file").decode("utf-8"), path.name)
    except (OSError, ValueError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {k: float(v) for k, v in loaded.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e20}


def published_peak(gpu_name: str, precision: str) -> tuple[str, float] | None:
    """(the table's name, FLOP/s) of a GPU's published dense bf16/fp16 peak, or None (fp32, or a GPU not in
    PUBLISHED_BF16_PEAKS)."""
    if precision not in ("bf16", "fp16"):
        return None
    for pattern, name, flops in PUBLISHED_BF16_PEAKS:
        if re.search(pattern, gpu_name, flags=re.IGNORECASE):
            return name, flops
    return None


def peak_source(device: torch.device | str, precision: str) -> str:
    """Where `peak_flops` takes its figure from, in words (for benchmark output)."""
    device = torch.device(device)
    if device.type == "cuda":
        published = published_peak(device_name(device), precision)
        if published:
            return f"published {precision} dense peak of the {published[0]}"
    return f"measured {precision} matmul peak of this device"


def _write_table(path, table: dict[str, float]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(table, indent=1))
    except OSError:
        pass  # a cache we cannot write just means we probe again next time


def peak_flops(device: torch.device | str, precision: str, *, refresh: bool = False,
               at_least: float | None = None) -> float:
    """The peak (FLOP/s) MFU is measured against: a GPU's published bf16/fp16 dense peak when the table
    knows it, else the device's measured matmul peak, probed once and cached on disk per device model,
    precision, thread count and torch build.

    A probe taken while other programs were busy reads low, and MFU against it reads above 100%:
    - `refresh=True` (the benchmarks) probes again and keeps the higher of the two figures;
    - `at_least=achieved` (the trainer, when a run went faster than the peak) probes again once per
      process, and the answer is never below `achieved`, so MFU = achieved / peak stays <= 100%.
    A broken cache is ignored.
    """
    device = torch.device(device)
    if device.type == "cuda":
        published = published_peak(device_name(device), precision)
        if published:
            return published[1]
    key = _probe_key(device, precision)
    value = _peak_memo.get(key)
    too_low = at_least is not None and (value is None or value < at_least)
    if value is not None and not refresh and not too_low:
        return value
    path = cache_dir() / "peak_flops.json"
    table = _read_table(path)
    value = max(value or 0.0, table.get(key, 0.0))
    probe = refresh or not value or (too_low and value < at_least and key not in _reprobed)
    if probe:
        if too_low:
            _reprobed.add(key)  # one extra probe per process: after it, `at_least` alone lifts the figure
        value = max(value, measure_peak_flops(device, precision))
    if at_least is not None:
        value = max(value, float(at_least))
    if value != table.get(key):
        table[key] = value
        _write_table(path, table)
    _peak_memo[key] = value
    return value
