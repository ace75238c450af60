"""Multiply-accumulates of convolution and linear layers (and other matrix products), per sample.

Static MACs are counted at dispatch level with torch's `FlopCounterMode` (FLOPs / 2), so functional
convolutions are seen too; fvcore's conv + linear entries (from a jit trace, another mechanism) are the
independent cross-check. (ptflops' aten backend is no third one: it intercepts the same aten ops as
FlopCounterMode, and its count was that count plus one add per output of a biased conv or linear, exactly,
on ResNet-20 and the gated models: 40,551,050 = 40,551,040 + 10 on ResNet-20.) Neither
counter understands gates: a masked channel counts as computed. Executed MACs therefore start from the
per-module static count and scale each module by the gates recorded in the same forward
(`bench.gates`): a gated output channel removes that channel from the conv that produces it and from the
conv that consumes it; a skipped block removes every module of its residual branch. The gate network's
own cost is never scaled: it always runs.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from bench.gates import collect, gate_networks

FVCORE_MATRIX_OPS = ("conv", "linear", "matmul", "bmm", "einsum", "addmm", "mm", "baddbmm")


def _in_subtree(name: str, root: str) -> bool:
    return root == "" or name == root or name.startswith(root + ".")


@dataclass(frozen=True)
class ModuleMacs:
    """MACs of one forward, split by module. `exclusive[name]` excludes the module's children."""

    batch: int
    total: int
    exclusive: dict[str, int]

    def within(self, roots: list[str]) -> int:
        return sum(m for n, m in self.exclusive.items() if any(_in_subtree(n, r) for r in roots))


@torch.no_grad()
def module_macs(model: nn.Module, x: Tensor) -> ModuleMacs:
    """Run `model(x)` under FlopCounterMode and attribute every MAC to exactly one module."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    inclusive = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        name = key.split(".", 1)[1] if "." in key else ""  # keys start with the root's class name
        inclusive[name] = sum(ops.values()) // 2
    total = counter.get_total_flops() // 2
    exclusive = {}
    for name, macs in inclusive.items():
        children = [c for c in inclusive if c != name and c.rsplit(".", 1)[0] == name]
        if name == "":
            children = [c for c in inclusive if c and "." not in c]
        exclusive[name] = macs - sum(inclusive[c] for c in children)
    if any(v < 0 for v in exclusive.values()) or sum(exclusive.values()) != total:
        raise RuntimeError(
            "MACs could not be attributed to modules: a module is called from outside its parent. "
            "Call submodules only from the module that owns them."
        )
    return ModuleMacs(x.shape[0], total, exclusive)


def model_device(model: nn.Module) -> torch.device:
    """Where `model`'s parameters (else buffers) live: the device an input for it is built on."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def sample_input(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1) -> Tensor:
    """Zeros of shape (batch, *input_shape) on the model's device."""
    return torch.zeros(batch, *input_shape, device=model_device(model))


def static_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Conv + linear MACs of one sample of shape `input_shape` (C, H, W), all gates open."""
    was_training = model.training
    model.eval()
    try:
        return module_macs(model, sample_input(model, input_shape)).total
    finally:
        model.train(was_training)


@torch.no_grad()
def static_macs_fvcore(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """The cross-check: fvcore's conv/linear/matmul entries (its total also counts BatchNorm)."""
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fvcore traces with torch.jit, which warns on every call
            logging.getLogger("fvcore").setLevel(logging.ERROR)
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(model, (sample_input(model, input_shape),))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            by_op = analysis.by_operator()
        return int(sum(by_op.get(op, 0) for op in FVCORE_MATRIX_OPS))
    finally:
        model.train(was_training)


def _active_fraction(gate: Tensor, site_name: str) -> Tensor:
    if not bool(((gate == 0) | (gate == 1)).all()):
        raise ValueError(f"gate {site_name!r} is not 0/1: executed MACs are defined in eval mode only")
    return gate.double().mean(dim=1)


def executed_from_gates(model: nn.Module, macs: ModuleMacs, batch: int) -> Tensor:
    """Per-sample executed MACs [batch] of the forward that just ran, from the gates it recorded.

    `macs` is the dense per-module split of a forward of the same input shape (any batch size): dense
    execution costs the same per sample, so it is counted once and reused for every batch.
    """
    factors = {name: torch.ones(batch, dtype=torch.float64) for name in macs.exclusive}
    for site_name, (site, gate) in collect(model).items():
        fraction = _active_fraction(gate.detach().cpu(), site_name)
        for root in site.produces + site.consumes:
            hit = [n for n in factors if _in_subtree(n, root)]
            if not hit:
                raise ValueError(f"gate {site_name!r} names {root!r}, which ran no conv or linear layer")
            for n in hit:
                factors[n] = factors[n] * fraction
    executed = torch.zeros(batch, dtype=torch.float64)
    for name, factor in factors.items():
        executed += macs.exclusive[name] / macs.batch * factor
    return executed


def executed_macs(model: nn.Module, x: Tensor) -> Tensor:
    """Per-sample executed MACs [batch] of `model(x)`; run the model in eval mode for 0/1 gates."""
    return executed_from_gates(model, module_macs(model, x), x.shape[0])


def gate_network_macs(model: nn.Module, macs: ModuleMacs) -> int:
    """Per-sample MACs of the modules that compute gates (`is_gate_network`)."""
    return macs.within(gate_networks(model)) // macs.batch
