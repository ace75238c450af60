"""Everything measured about a trained model, in one pass over the evaluation set.

Parameters, static MACs by two counters, per-sample executed MACs and gate statistics for gated models
(from the gates recorded in each forward), the gate network's own MACs, and latency.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from torch import nn

from bench.data import DeviceLoader
from bench.engine.config import MeasureConfig
from bench.gates import collect
from bench.measure.latency import measure_latency
from bench.measure.macs import (
    executed_from_gates,
    gate_network_macs,
    module_macs,
    static_macs,
    static_macs_fvcore,
)

MACS_COUNTER = f"torch.utils.flop_counter.FlopCounterMode/2 (torch {torch.__version__})"
COUNTER_TOLERANCE = 0.01  # report a disagreement of the two counters above 1%


def is_gated(model: nn.Module) -> bool:
    return any(
        getattr(m, "gate_site", None) is not None or getattr(m, "gate_sites", None) for m in model.modules()
    )


def spread(values: torch.Tensor) -> dict[str, float]:
    values = values.double()
    std = values.std(unbiased=False) if values.numel() > 1 else torch.zeros(())
    return {
        "mean": values.mean().item(),
        "std": std.item(),
        "min": values.min().item(),
        "max": values.max().item(),
    }


@dataclass
class GateStats:
    """Accumulates, per gate site, how often each gate passes, and per sample, the share of open gates."""

    passes: dict[str, torch.Tensor] = field(default_factory=dict)
    active_per_sample: list[torch.Tensor] = field(default_factory=list)
    samples: int = 0

    def add(self, gates: dict[str, torch.Tensor]) -> None:
        for name, gate in gates.items():
            self.passes[name] = self.passes.get(name, 0) + gate.double().sum(0)
        self.active_per_sample.append(torch.cat([g.double() for g in gates.values()], dim=1).mean(1))
        self.samples += next(iter(gates.values())).shape[0]

    def summary(self) -> dict:
        rates = {name: (p / self.samples) for name, p in self.passes.items()}
        every = torch.cat(list(rates.values()))
        return {
            "gates": int(every.numel()),
            "always_on": int((every == 1).sum()),
            "always_off": int((every == 0).sum()),
            "input_dependent": int(((every > 0) & (every < 1)).sum()),
            "active_fraction": spread(torch.cat(self.active_per_sample)),
            "pass_rate": {name: [round(v, 4) for v in r.tolist()] for name, r in rates.items()},
            "active_fraction_per_sample": [round(v, 4) for v in torch.cat(self.active_per_sample).tolist()],
        }


def fvcore_or_none(model: nn.Module, shape: tuple[int, ...]) -> int | None:
    """fvcore's count, or None with a line on stderr saying why (it cannot trace every model)."""
    try:
        return static_macs_fvcore(model, shape)
    except Exception as e:  # noqa: BLE001 - the cross-check is best effort, but never silently absent
        reason = " ".join(str(e).split())[:300]
        print(
            f"static_macs_fvcore: fvcore could not count {type(model).__name__} "
            f"({type(e).__name__}: {reason}); the record keeps static_macs_fvcore None",
            file=sys.stderr,
            flush=True,
        )
        return None


@torch.inference_mode()
def measure_model(
    model: nn.Module,
    data,
    cfg: MeasureConfig,
    device: str = "cpu",
    eval_batch_size: int = 500,
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> tuple[dict, dict | None]:
    """Metrics of `model` (the record's `metrics` fields except accuracy) and its gate statistics.

    `data` is any dataset of bench.data (its `measurement_set()` is measured). MACs are counted in the
    model's own precision; latency is timed as the model trained: under autocast to `dtype` (None: none)
    and in channels_last when asked."""
    model = model.to(device).eval()
    data = data.measurement_set()
    shape = data.input_shape
    metrics = {
        "params": sum(p.numel() for p in model.parameters()),
        "static_macs": static_macs(model, shape),
        "macs_counter": MACS_COUNTER,
        "static_macs_fvcore": fvcore_or_none(model, shape),
    }
    gate_stats = None
    if is_gated(model):
        metrics["executed_macs"], metrics["gate_network_macs"], gate_stats = gate_statistics(
            model, data, eval_batch_size, device
        )
    metrics["latency"] = [
        measure_latency(
            model,
            shape,
            bs,
            device,
            cfg.latency_min_run_time_s,
            cfg.latency_warmup,
            dtype=dtype,
            channels_last=channels_last,
        )
        for bs in cfg.latency_batch_sizes
    ]
    return metrics, gate_stats


@torch.inference_mode()
def gate_statistics(model: nn.Module, data, batch_size: int = 500, device: str = "cpu"):
    """Executed MACs (spread over the evaluation set), the gate network's MACs and the gate summary.

    `data` is any dataset of bench.data: its `measurement_set()` (in memory; a streamed dataset's fixed
    slice of its evaluation split) is what is measured."""
    model = model.to(device).eval()
    data = data.measurement_set()
    mean, std = data.mean_std
    loader = DeviceLoader(data.test_images, data.test_labels, batch_size, mean, std, device=device)
    x, _ = next(iter(loader))
    per_module = module_macs(model, x)  # dense: the same per-sample split for every batch
    stats, executed = GateStats(), []
    for x, _ in loader:
        model(x)
        executed.append(executed_from_gates(model, per_module, x.shape[0]))
        stats.add({name: gate.detach().cpu() for name, (_, gate) in collect(model).items()})
    return spread(torch.cat(executed)), gate_network_macs(model, per_module), stats.summary()


def counters_disagree(metrics: dict) -> float | None:
    """Relative difference of the two static counters when over tolerance, else None."""
    other = metrics.get("static_macs_fvcore")
    if not other:
        return None
    diff = abs(metrics["static_macs"] - other) / metrics["static_macs"]
    return diff if diff > COUNTER_TOLERANCE else None
