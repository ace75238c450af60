"""The model contract: what the harness reads from a model beyond `nn.Module`, in one place.

A model is a plain `nn.Module` whose `forward(x)` returns logits (or, for segmentation in training,
`{"out": ..., "aux": ...}`). Every other member is optional, and the harness looks each one up by
name; a method defines the ones its paper needs. `check_model` verifies the members a model does
define, so a plugin or a refactor that breaks the contract fails one named check.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from bench.gates import GateSite, collect


@runtime_checkable
class BenchModel(Protocol):
    """Optional hooks of any model (each one may be absent)."""

    bench_info: dict  # facts for the record: layout, config, what is unconfirmed

    def aux_losses(self, progress: float) -> dict[str, Tensor]:
        """Extra loss terms of the last training forward, weighted; `progress` in [0, 1] drives curricula."""

    def no_weight_decay(self) -> set[str]:
        """Parameter names the optimiser must not decay."""


@runtime_checkable
class GatedModel(Protocol):
    """A model with input-dependent gates. Its gated modules carry `gate_site` and, after a forward,
    `last_gate` ([batch, channels] or [batch, 1], exactly 0/1 in eval) — or `gate_sites` /
    `last_gates`, dicts of the same, for a module that applies several gates. Modules that compute
    gates set `is_gate_network = True`, so their own cost is always counted."""

    def set_gating(self, enabled: bool) -> None:
        """False: every gate open (the plain backbone, for tests and ablations); True: gate again."""

    def forward_sparse(self, x: Tensor) -> Tensor:
        """Inference that computes only the open channels / blocks; equals `forward` in eval mode.
        (Where a method has a sparse path: `bench perf gated` times it.)"""


def has_gates(model: nn.Module) -> bool:
    return any(
        getattr(m, "gate_site", None) is not None or getattr(m, "gate_sites", None) is not None
        for m in model.modules()
    )


def check_model(model: nn.Module, x: Tensor) -> list[str]:
    """The contract violations of `model` on input `x` (empty when it holds). Runs one eval forward."""
    problems = []
    info = getattr(model, "bench_info", {})
    if not isinstance(info, dict):
        problems.append(f"bench_info is a {type(info).__name__}, not a dict")
    for hook in ("aux_losses", "no_weight_decay", "set_gating", "forward_sparse"):
        if hasattr(model, hook) and not callable(getattr(model, hook)):
            problems.append(f"{hook} is not callable")
    gated = has_gates(model)
    if gated:
        problems += [] if hasattr(model, "set_gating") else ["a gated model needs set_gating()"]
    model.eval()
    out = model(x)
    if not isinstance(out, Tensor) or out.shape[0] != x.shape[0]:
        problems.append("eval forward must return a tensor with the batch first")
    if gated:
        names = dict(model.named_modules())
        for label, (site, gate) in collect(model).items():
            if not isinstance(site, GateSite):
                problems.append(f"{label}: gate site is a {type(site).__name__}")
                continue
            missing = [n for n in (*site.produces, *site.consumes) if n not in names]
            if missing:
                problems.append(f"{label}: gate site names no module {missing}")
            if gate.shape[0] != x.shape[0] or not bool(((gate == 0) | (gate == 1)).all()):
                problems.append(f"{label}: last gate must be [batch, ...] and exactly 0/1 in eval")
    return problems
