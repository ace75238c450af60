"""The environment a result was measured in: library versions, device, and the code's commit."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

import bench

CODE_ROOT = Path(bench.__file__).resolve().parent.parent
# The store and the leaderboard change while a suite runs; they are outputs, not code.
NOT_CODE = (":!results", ":!leaderboard")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=CODE_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name from /proc/cpuinfo where there is one."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX). Without it, bf16 autocast on the CPU
    is emulated and slower than float32, so CPU training runs in float32 there (the record says which)."""
    try:
        flags = next(
            (line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), ""
        ).split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def require_device(device: str) -> None:
    """A CUDA run asked for where torch sees no GPU fails before any work, naming the fix."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu")


def environment(device: str = "cpu") -> dict:
    dev = torch.device(device)
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE)
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": dev.type,
        "device_name": device_name(dev),
        "num_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "channelbench": bench.__version__,
        "commit": _git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
    }
