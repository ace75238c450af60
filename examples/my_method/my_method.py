"""A ChannelBench plugin to copy: a channel-gated CIFAR ResNet-20 with a threshold gate rule.

This file is a template, not a published method. Copy the folder, rename the builder (its function name
is the registered model name) and change the gate rule; `bench run --plugin path/to/my_method.py` then
trains, measures and stores it like the built-in models (docs/walkthrough.md). Replace this docstring
with your paper's citation and list, as the built-in models do, every default the paper does not state.

The method. Every basic block of He et al.'s CIFAR ResNet-20 gets a gate that reads the block input and
emits one gate per output channel of the block's first conv:

    g = 1[W · GAP(x) + b > 0]                       one linear layer, no hidden layer
    out = relu(bn1(conv1(x))) * g;  out = bn2(conv2(out));  y = relu(out + shortcut(x))

so a closed gate removes its channel from conv1's output and from conv2's input. In training the hard
0/1 gate is used forward and sigmoid(W · GAP(x) + b)'s gradient backward (straight-through). A
target-rate loss pulls the share of open gates, over the batch and every gate of the network, towards
`target_rate`:

    L_rate = rate_weight · min(1, progress / ramp_end) · (mean(sigmoid(logits)) − target_rate)²

It is switched on gradually over the first `ramp_end` of training (a curriculum: the harness passes
`progress` = step / total steps to `aux_losses`). The gate weights start at zero and the bias at
`open_bias` > 0, so training starts from the plain ResNet-20 with every gate open. All four defaults
are this template's own choices, checked only in one run of the quick suite (one epoch, 312 steps on
Fashion-MNIST: 91% of the gates open on average, 102 of 336 input-dependent; docs/walkthrough.md) and
not tuned: they are listed in `bench_info["unconfirmed"]`.

How it is built: the ResNet is `baselines.resnet_cifar.CifarResNet` as it is; the method fills the
blocks' gate slot (`gate_layer`, `baselines.slots`) with `ThresholdGate`. The block calls its gate once
per forward on its input, multiplies the output of the conv named by `position` by it, and records it
for measurement. What the harness reads from a model (the whole contract):
- the builder `def name(num_classes, in_chans, **kwargs) -> nn.Module`, registered by name at import
  with `@register_model` (`@register_model(key=value)` stores defaults that a suite's
  `[model_args.<name>]` can override);
- on every gated block, `gate_site` (which convs the gate switches, names relative to the block) and
  `last_gate` after each forward ([batch, channels], exactly 0/1 in eval mode): the block sets both
  from its gate's `site`. The forward always computes densely and multiplies by the gate: executed
  MACs are derived from the gates;
- `is_gate_network = True` on modules that compute gates: their MACs get their own column;
- optional on the model: `aux_losses(progress) -> {name: weighted loss}`, added to the cross-entropy
  after every training forward; `no_weight_decay() -> {parameter names}`; `bench_info` (a dict stored
  with every record); `set_gating(enabled)` (the gating switch of the built-in gated models).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import Tensor, nn

from baselines.resnet_cifar import BasicBlock, CifarResNet
from baselines.slots import set_gating
from bench.gates import GateSite
from bench.registry import register_model


@dataclass(frozen=True)
class GateConfig:
    target_rate: float = 0.6  # share of open gates the rate loss pulls towards
    # Weight of the rate loss once ramped up. Its gradient per gate is this over the number of gates
    # (336 in ResNet-20): a weak weight leaves every gate open.
    rate_weight: float = 10.0
    ramp_end: float = 0.2  # the rate loss rises linearly from 0 over this share of training
    # Initial gate bias: every hard gate starts open (logit > 0), and sigmoid(1) = 0.73 leaves the
    # straight-through gradient room to act (at +3 the gates barely move in a short run).
    open_bias: float = 1.0


class ThresholdGate(nn.Module):
    """GAP -> Linear -> 1[logit > 0], with the sigmoid's gradient in training (straight-through): the gate
    slot of a basic block, on the output channels of its conv1."""

    is_gate_network = True  # its MACs are reported on their own ("gate network MACs")
    position = "conv1"  # the block multiplies relu(bn1(conv1(x))) by the gate
    site = GateSite("channel", produces=("conv1",), consumes=("conv2",))  # the convs it switches

    def __init__(self, block: nn.Module, open_bias: float):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(block.conv1.in_channels, block.conv1.out_channels)
        nn.init.zeros_(self.fc.weight)
        nn.init.constant_(self.fc.bias, open_bias)
        self.enabled = True  # set_gating(False): every gate 1
        self.prob: Tensor | None = None  # sigmoid(logits) of the last forward: what the rate loss reads

    def forward(self, x: Tensor) -> Tensor:
        logits = self.fc(self.pool(x).flatten(1))
        self.prob = torch.sigmoid(logits)
        hard = (logits > 0).to(logits.dtype)
        gate = hard if not self.training else hard + (self.prob - self.prob.detach())  # forward 0/1
        return gate if self.enabled else torch.ones_like(gate)


class GatedResNet(CifarResNet):
    """A CIFAR ResNet (option-A shortcuts) whose basic blocks carry threshold gates, and its loss."""

    def __init__(self, depth_per_stage: int, num_classes: int, in_chans: int, cfg: GateConfig):
        gate = partial(ThresholdGate, open_bias=cfg.open_bias)
        super().__init__(
            BasicBlock, depth_per_stage, num_classes, in_chans, block_kwargs={"gate_layer": gate}
        )
        self.cfg = cfg
        self.bench_info = {
            "method": "threshold_gate (template plugin)",
            "backbone": f"resnet{6 * depth_per_stage + 2}",
            "num_gates": sum(g.fc.out_features for g in self.gates()),
            "config": asdict(cfg),
            "unconfirmed": sorted(asdict(cfg)),  # every default above is a guess: say so
        }

    def gates(self) -> list[ThresholdGate]:
        return [m for m in self.modules() if isinstance(m, ThresholdGate)]

    def set_gating(self, enabled: bool) -> None:
        set_gating(self, enabled)

    def aux_losses(self, progress: float) -> dict[str, Tensor]:
        """Called by the train loop right after every training forward; values are already weighted."""
        probs = [gate.prob for gate in self.gates()]
        if any(p is None for p in probs):
            return {}
        open_share = torch.cat(probs, dim=1).mean()
        ramp = min(1.0, progress / self.cfg.ramp_end) if self.cfg.ramp_end > 0 else 1.0
        return {"rate": self.cfg.rate_weight * ramp * (open_share - self.cfg.target_rate) ** 2}

    def no_weight_decay(self) -> set[str]:
        """Keep the gate biases out of weight decay, so they do not drift towards 'half the gates open'."""
        return {name for name, _ in self.named_parameters() if name.endswith("gate.fc.bias")}


@register_model  # the registered name is the function's: rename it (unique, lower_snake, not one of timm's)
def my_gate_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> GatedResNet:
    """ResNet-20 with threshold channel gates; `kwargs` are `GateConfig` fields."""
    return GatedResNet(3, num_classes, in_chans, GateConfig(**kwargs))
