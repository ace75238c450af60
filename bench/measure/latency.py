"""Inference latency: median and spread of repeated timed runs after warm-up.

On CPU, `torch.utils.benchmark.Timer` (blocked autorange, thread count stated); on GPU, CUDA events
around each run. glibc's allocator makes CPU timings 30-45% slower and noisy unless
MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ are set high before the process starts; whether they
were is recorded with every latency.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable

import torch
from torch import Tensor, nn

from bench.engine.env import device_name

MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def malloc_tuned() -> bool:
    return all(os.environ.get(k) for k in MALLOC_ENV)


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    device: str = "cpu",
    min_run_time_s: float = 1.0,
    warmup: int = 5,
    forward: Callable[[Tensor], Tensor] | None = None,
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict:
    """Latency of `model` on a batch of random inputs, in milliseconds per batch. `forward` times
    another entry point of the model (e.g. `model.forward_sparse`) instead of `model(x)`. `dtype` and
    `channels_last` time it as it trained: under autocast to `dtype` (None: full precision), with the
    model and its input in channels_last."""
    dev = torch.device(device)
    model = model.to(dev).eval()
    x = torch.randn(batch_size, *input_shape, device=dev)
    if channels_last and x.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    forward = as_trained(forward or model, dev, dtype)
    for _ in range(warmup):
        forward(x)
    if dev.type == "cuda":
        times_ms = _cuda_event_times(forward, x, min_run_time_s)
    else:
        # imported here: importing it prints a CUDA_HOME warning on CPU machines
        from torch.utils import benchmark

        timer = benchmark.Timer(
            "forward(x)", globals={"forward": forward, "x": x}, num_threads=torch.get_num_threads()
        )
        m = timer.blocked_autorange(min_run_time=min_run_time_s)
        times_ms = [t * 1e3 for t in m.times]
    q = statistics.quantiles(times_ms, n=10, method="inclusive") if len(times_ms) > 1 else [times_ms[0]] * 9
    return {
        "batch_size": batch_size,
        "median_ms": statistics.median(times_ms),
        "p10_ms": q[0],
        "p90_ms": q[-1],
        "repeats": len(times_ms),
        "warmup": warmup,
        "device": dev.type,
        "device_name": device_name(dev),
        "num_threads": torch.get_num_threads(),
        "timer": "cuda_events" if dev.type == "cuda" else "torch.utils.benchmark",
        "malloc_tuned": malloc_tuned(),
    }


def as_trained(forward: Callable[[Tensor], Tensor], device: torch.device, dtype: torch.dtype | None):
    """`forward` under autocast to `dtype` on `device` (itself when `dtype` is None)."""
    if dtype is None:
        return forward

    def autocast_forward(x: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=dtype):
            return forward(x)

    return autocast_forward


def _cuda_event_times(forward: Callable[[Tensor], Tensor], x: Tensor, min_run_time_s: float) -> list[float]:
    times, spent = [], 0.0
    while spent < min_run_time_s * 1e3 or len(times) < 10:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        forward(x)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
        spent += times[-1]
    return times
