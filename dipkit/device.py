"""Device choice, seeding, deterministic kernels, and the wait for queued kernels that timings need."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import random
import re
from typing import Any

import numpy as np
import torch

from .errors import RunError


DEVICE_NAMES = re.compile(r"auto|cpu|mps|cuda(:\d+)?")  # what the scripts run on (torch knows more: meta, xpu, ...)


def check_device_name(name: str) -> None:
    """A RunError unless `name` is a device the scripts support: auto, cpu, cuda, cuda:N or mps."""
    if not DEVICE_NAMES.fullmatch(name):
        raise RunError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)")


def choose_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU; any other name must be supported and available here."""
    check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device '{name}' asked for, but CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise RunError(f"device '{name}' asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RunError(f"device '{name}' asked for, but Apple MPS is not available on this machine")
    return device


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # the x86 flags of native bfloat16 arithmetic (Linux's names)


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (/proc/cpuinfo); empty where they cannot be read."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 natively: CUDA's is_bf16_supported, a CPU with avx512_bf16 or
    amx_bf16 (elsewhere torch emulates bfloat16 on the CPU, several times slower than float32), Apple MPS no."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(cpu_flags() & set(BF16_CPU_FLAGS))
    return False


def warn_if_emulated_bf16(bf16: bool, device: torch.device) -> None:
    """One line on stderr when bf16 is asked of a device without native bfloat16: it runs, emulated and slow."""
    if bf16 and not native_bf16(device):
        import sys

        print(f"warning: bf16 on {device}, which has no native bfloat16 arithmetic ({' or '.join(BF16_CPU_FLAGS)} "
              "on a CPU): it is emulated, and slower than float32", file=sys.stderr, flush=True)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); `deterministic` also asks torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that wall-clock timings on a GPU measure the work and not the launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def keep_freed_memory() -> None:
    """Ask glibc to keep freed image-sized buffers instead of returning each one to the operating system.

    By default glibc unmaps every freed block above 128 KiB, so each temporary tensor of an iterative solver
    costs fresh page faults: a third of the wall time of ADP.py on a CPU. Harmless where it does not apply.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows, musl)
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 512 * 1024 * 1024)


def to_device(value: Any, device: torch.device | str) -> Any:
    """Every tensor in `value` (nested dicts, lists, tuples, dataclasses) moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: to_device(getattr(value, f.name), device)
                                             for f in dataclasses.fields(value) if f.init})
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


def to_cpu(value: Any) -> Any:
    """Every tensor in `value` moved to the CPU: what a run keeps, or sends back from a worker."""
    return to_device(value, "cpu")
