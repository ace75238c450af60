"""The slots of this package's residual blocks, shared by the CIFAR and ImageNet skeletons.

A method changes a ResNet by filling slots, given to the block constructors (`block_kwargs`), never by
subclassing a block and rewriting its forward:

- `attn_layer(channels) -> nn.Module`: a re-weighting module on the residual branch, after its last
  norm and before the addition (SE, CE). The block stores it as `attn` (nn.Identity when unused).
- `conv_layer(in_planes, out_planes, stride) -> nn.Conv2d`: the 3×3 convs of the CIFAR blocks and stem
  (DCNet's decoupled operator); `norm_layer(channels)` their norms (nn.Identity for DCNet's no-BN net).
- `stem_attn` (ImageNet ResNets) and `ConvNormAttnAct.attn` (the stems of MobileNetV2 and ShuffleNetV2):
  the same kind of module after the stem's norm, before its activation (CE fills it).
- `gate_layer(block) -> nn.Module`: built last, from the finished block (its convs' widths). The block
  calls it once per forward on its own input. It returns
  - a Tensor: one mask, [batch, C] or [batch, 1], applied at the position `gate.position`, recorded for
    `bench.gates` as the block's `gate_site = gate.site` / `last_gate`; or
  - a dict position -> mask, recorded as the block's `gate_sites = gate.sites` / `last_gates`.
  Positions: "conv1", "conv2", "conv3" multiply that conv's output where the block has finished it
  (after its norm and activation; the last conv after its norm and `attn`, before the addition);
  "branch" multiplies the whole residual branch before the addition. A gate module that computes
  gates sets `is_gate_network = True` (its cost is counted on its own) and honours `enabled`
  (`set_gating`); GaterNet's per-block slot only hands out the slice the network's gater computed.

Each block kind has one sparse path (`forward_sparse(x, folded)`, `bench.sparse`): convs over the open
output channels of their masks, the next conv over those input channels, a closed "branch" mask skips
the branch.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

from bench import sparse

NO_MASKS: dict[str, Tensor] = {}


def apply_mask(out: Tensor, masks: dict[str, Tensor], position: str) -> Tensor:
    mask = masks.get(position)
    return out if mask is None else out * mask[:, :, None, None]


class GateSlot:
    """Mixin of the blocks: the gate slot and its record for `bench.gates`."""

    gate: nn.Module | None

    def init_gate(self, gate_layer) -> None:
        self.gate = gate_layer(self) if gate_layer is not None else None
        if self.gate is None:
            return
        if hasattr(self.gate, "sites"):
            self.gate_sites, self.last_gates = dict(self.gate.sites), None
        else:
            self.gate_site, self.last_gate = self.gate.site, None

    def masks(self, x: Tensor) -> dict[str, Tensor]:
        """Run the gate on the block input `x`; position -> mask, recorded for measurement."""
        if self.gate is None:
            return NO_MASKS
        out = self.gate(x)
        if isinstance(out, dict):
            self.last_gates = {name: out[name].detach() for name in self.gate_sites}
            return out
        self.last_gate = out.detach()
        return {self.gate.position: out}

    def masks_and_identity(self, x: Tensor, shortcut) -> tuple[dict[str, Tensor], Tensor]:
        """The gate's masks and `shortcut(x)`, in the order each method's reference code reads `x`: a
        block gate ("branch", ConvNet-AIG) decides before the shortcut runs, a channel gate after it.
        The order fixes the order in which autograd sums the gradients of `x`, so seeded trainings
        reproduce their stored results bit for bit."""
        if getattr(self.gate, "position", None) == "branch":
            masks = self.masks(x)
            return masks, shortcut(x)
        identity = shortcut(x)
        return self.masks(x), identity

    def sparse_indices(self, x: Tensor) -> tuple[bool, dict[str, Tensor | None]]:
        """One sample: (is the branch open?, open output channels per conv, None = all)."""
        masks = self.masks(x)
        branch = masks.get("branch")
        if branch is not None and branch.shape[1] != 1:
            raise NotImplementedError("the sparse path takes a 'branch' mask of one gate per sample")
        idx = {name: sparse.active(masks[name][0]) if name in masks else None for name in self.convs}
        return branch is None or bool(branch[0, 0]), idx


class ConvNormAttnAct(nn.Sequential):
    """torchvision's `Conv2dNormActivation` (children 0: conv, 1: norm, 2: activation, so its parameter
    names and construction order are torchvision's) with an `attn` slot between the norm and the
    activation: the stems of MobileNetV2 and ShuffleNetV2, where CE goes "after the norm, before the
    activation" as in the CE ResNets' `stem_attn`. `attn_channels` is the slot's width."""

    def __init__(self, *args, **kwargs):
        super().__init__(*Conv2dNormActivation(*args, **kwargs))
        self.attn_channels = self[1].num_features
        self.attn = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self[2](self.attn(self[1](self[0](x))))


def set_gating(model: nn.Module, enabled: bool) -> None:
    """Every gate network of `model` on (learned gates) or off (every gate 1: the plain network)."""
    for module in model.modules():
        if getattr(module, "is_gate_network", False):
            module.enabled = enabled


class GatedNetwork:
    """What every gated network shares (mixed into a ResNet skeleton): the gating switch, the sparse
    path over its blocks, and its facts for the record."""

    def set_gating(self, enabled: bool) -> None:
        """False: every gate open (the plain network); True: the learned gates again."""
        set_gating(self, enabled)

    @torch.inference_mode()
    def forward_sparse(self, x: Tensor) -> Tensor:
        """Inference, one sample at a time: closed channels and blocks are not computed (`bench.sparse`)."""
        return sparse.forward_blocks(self, x, before=self.before_blocks)

    def before_blocks(self, x: Tensor) -> None:
        """Called with each sample before its blocks run (GaterNet hands out its gates here)."""

    def describe_gating(
        self, method: str, backbone: str, num_gates: int, cfg, unconfirmed: list[str]
    ) -> None:
        config = dataclasses.asdict(cfg)
        self.describe(
            method=method, backbone=backbone, num_gates=num_gates, config=config, unconfirmed=unconfirmed
        )


def fold_projection(shortcut: nn.Module | None) -> sparse.FoldedConv | None:
    """A 1×1 conv + BN projection shortcut, folded; None for any other shortcut."""
    if isinstance(shortcut, nn.Sequential) and len(shortcut) == 2 and isinstance(shortcut[0], nn.Conv2d):
        return sparse.fold(shortcut[0], shortcut[1])
    return None


def replay_init_draw(conv: nn.Conv2d) -> None:
    """Draw from the global RNG what constructing `conv` draws (nn.Conv2d's kaiming_uniform_ weight),
    and discard it. Where the first version of a model built a conv twice (built, then replaced), this
    keeps the RNG stream, and so the seeded init and training noise, bit-identical (tests/test_golden.py)."""
    nn.init.kaiming_uniform_(torch.empty_like(conv.weight), a=math.sqrt(5))
