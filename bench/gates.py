"""How measurement sees a gate, whatever the method.

A gated module carries `gate_site: GateSite` and, after each forward, `last_gate`: a tensor of shape
[batch, channels] (kind "channel") or [batch, 1] (kind "block"), exactly 0/1 in eval mode. A module
that applies several gates (a bottleneck gating each of its convs) carries `gate_sites` and
`last_gates` instead, dicts with the same keys. The names in a site are relative to the module that
carries it (so a gated block can sit anywhere in a network); `collect` makes them absolute. The ResNet
blocks of `baselines` set both from the gate module in their gate slot (`baselines.slots`). Modules
that compute gates (a gater network, per-block gate heads) set `is_gate_network = True` so their own
cost can be reported on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from torch import Tensor, nn


@dataclass(frozen=True)
class GateSite:
    kind: Literal["channel", "block"]  # per-channel gate, or execute/skip a whole block
    produces: tuple[str, ...]  # convs whose OUTPUT channels it switches ("block": the block's modules)
    consumes: tuple[str, ...] = ()  # convs whose INPUT channels it switches

    def __post_init__(self) -> None:
        if self.kind not in ("channel", "block"):
            raise ValueError(f"GateSite.kind must be 'channel' or 'block', not {self.kind!r}")


def _qualify(prefix: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{prefix}.{n}" if prefix and n else (prefix or n) for n in names)


def collect(model: nn.Module) -> dict[str, tuple[GateSite, Tensor]]:
    """Module name -> (site with absolute module names, gate of the last forward)."""
    found = {}
    for name, module in model.named_modules():
        sites, gates = _sites_of(module)
        for key, site in sites.items():
            gate = gates.get(key) if gates else None
            label = f"{name}:{key}" if key else name  # "block:conv2"
            if gate is None:
                raise RuntimeError(f"gated module {label or type(module).__name__!r} has run no forward yet")
            found[label] = (
                replace(site, produces=_qualify(name, site.produces), consumes=_qualify(name, site.consumes)),
                gate,
            )
    return found


def _sites_of(module: nn.Module) -> tuple[dict[str, GateSite], dict[str, Tensor] | None]:
    if getattr(module, "gate_sites", None) is not None:
        return module.gate_sites, getattr(module, "last_gates", None)
    if getattr(module, "gate_site", None) is not None:
        gate = getattr(module, "last_gate", None)
        return {"": module.gate_site}, None if gate is None else {"": gate}
    return {}, None


def gate_networks(model: nn.Module) -> list[str]:
    """Names of the modules that compute gates (outermost only)."""
    names = [n for n, m in model.named_modules() if getattr(m, "is_gate_network", False)]
    return [n for n in names if not any(n.startswith(p + ".") for p in names if p != n)]
