"""ConvNet-AIG of Veit & Belongie, "Convolutional Networks with Adaptive Inference Graphs", ECCV 2018
(IJCV 2019; arXiv 1711.11503).

A ResNet in which every residual block decides, per image, whether to run its residual branch:

    g = Gate(x) ∈ {0, 1};   y = ReLU(shortcut(x) + g · F(x))

The gate looks at the block's input: global average pooling, FC to 16 units with BatchNorm and ReLU,
FC to two logits (skip, execute). In training the decision is a Gumbel-softmax sample made hard with the
straight-through estimator (forward: the one-hot argmax; backward: the gradient of the soft sample); at
test time it is the argmax of the logits. A target-rate loss pulls the mean execution rate of every
block l over the batch, r_l, toward a target t_l:

    L_target = lossfact · (1 / L) · Σ_{l: t_l < 1} (t_l − r_l)²

returned by `aux_losses`. Blocks with target 1 are left out of the sum (but not of L), as in the official
ImageNet code; the official CIFAR code has no such layers.

Where this follows the official code (andreasveit/convnet-aig @ 47633cd) rather than the paper text, or
departs from it:
- gate: the two FCs have biases (1×1 convs there, `nn.Linear` here: the same parameters and MACs); the
  second FC starts with weights N(0, 0.001) and biases (skip, execute) = (0.1, 2), "an initial opening
  rate of about 85 %"; the hidden width 16 is a builder argument `gate_hidden`;
- Gumbel temperature τ = 1 (the code ignores its temperature argument; `tau` is a builder argument);
- CIFAR: option-B shortcuts (1×1 conv + BN) where the shape changes, not He et al.'s option A, so
  `aig_resnet110` has 1,766,630 parameters at 10 classes like the official `ResNet110_cifar`;
  `lossfact` 2, uniform target 0.6 (`train.py` defaults);
- ImageNet: torchvision's ResNet (the official model has the same "v1.5" layout, stride on the 3×3);
  `lossfact` 1, uniform target 0.7 (`train_img.py` defaults: the released script uses the same target
  for every layer). `schedule="readme"` gives the per-layer schedules of the README instead: ResNet-50
  [1, 1, 0.8, 1, t, t, t, 1, t, t, t, t, t, 1, 0.7, 1], ResNet-101 eight 1s then 25 t's;
- departure: the official code adds Gumbel noise at test time too, which makes evaluation random (its
  issue #5); here evaluation is the deterministic argmax, as the gate interface requires;
- departure: the official CIFAR model keeps PyTorch's default conv initialisation; here the convs get He
  initialisation, as in this package's ResNet baselines (the official ImageNet model does the same);
- the residual branch is always computed and multiplied by the gate (as in the official code); the
  executed MACs come from the recorded gates (`bench.gates`). The gate heads fill the blocks' gate slot
  (`baselines.slots`, position "branch"), are `is_gate_network` and their cost is always counted.
The official `--lrfact` (a separate learning rate for the gates' last FC) defaults to 1 and has no
counterpart here.

Sparse inference (`forward_sparse`, `bench.sparse`): each sample's gates are computed first, and a block
whose gate is closed runs only its shortcut; an open block runs its convs with the BatchNorms folded in
(the blocks' own sparse path).
Its outputs equal `forward`'s in eval mode to floating-point tolerance (tests/test_sparse.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.resnet_cifar import BasicBlock, CifarResNet
from baselines.resnet_imagenet import ARCHS, LAYOUTS, Bottleneck, ImageNetResNet
from baselines.slots import GatedNetwork
from bench.gates import GateSite
from bench.registry import register_model

GATE_HIDDEN = 16
INIT_BIAS = (0.1, 2.0)  # logits (skip, execute) at initialisation: P(execute) = σ(1.9) ≈ 0.87

# the README's per-layer schedules, as functions of t
README_SCHEDULES = {
    50: lambda t: [1, 1, 0.8, 1, t, t, t, 1, t, t, t, t, t, 1, 0.7, 1],
    101: lambda t: [1] * 8 + [t] * 25,
}


class AIGGate(nn.Module):
    """Execute (1) or skip (0) a block, from its input: GAP, FC-BN-ReLU, FC to (skip, execute) logits.

    The gate slot of a block (`convs`: the block's residual convs, which a closed gate skips)."""

    is_gate_network = True
    position = "branch"

    def __init__(self, in_planes: int, hidden: int = GATE_HIDDEN, tau: float = 1.0, convs=("conv1", "conv2")):
        super().__init__()
        self.fc1 = nn.Linear(in_planes, hidden)
        self.fc1bn = nn.BatchNorm1d(hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, 2)
        self.tau = tau
        nn.init.normal_(self.fc2.weight, 0.0, 0.001)
        with torch.no_grad():
            self.fc2.bias.copy_(torch.tensor(INIT_BIAS))
        self.site = GateSite("block", produces=tuple(convs))
        self.enabled = True  # False: every block runs (the plain ResNet)
        self.value: Tensor | None = None  # the last gate with its gradient, until the loss takes it
        self.last: Tensor | None = None  # the last gate, detached

    def logits(self, x: Tensor) -> Tensor:
        return self.fc2(self.relu(self.fc1bn(self.fc1(x.mean((2, 3))))))

    def forward(self, x: Tensor) -> Tensor:
        """The gate [batch, 1]: exactly 0 or 1; in training it carries the straight-through gradient."""
        logits = self.logits(x)
        gate = gumbel_gate(logits, self.tau) if self.training else argmax_gate(logits)
        if not self.enabled:
            gate = torch.ones_like(gate)
        self.value, self.last = gate, gate.detach()
        return gate

    def take(self) -> Tensor:
        """The last gate with its gradient, once (the graph reference is dropped); then the detached one."""
        gate = self.value if self.value is not None else self.last
        self.value = None
        return gate


def aig_gate(block: nn.Module, hidden: int = GATE_HIDDEN, tau: float = 1.0) -> AIGGate:
    """The gate slot of a block: an AIGGate on the block input that skips all its residual convs."""
    return AIGGate(block.conv1.in_channels, hidden, tau, block.convs)


def gumbel_gate(logits: Tensor, tau: float = 1.0) -> Tensor:
    """Straight-through Gumbel-softmax sample of the 'execute' class of (skip, execute) logits, [batch, 1]."""
    soft = F.gumbel_softmax(logits, tau=tau)[:, 1:]
    hard = (soft > 0.5).to(soft.dtype)  # the argmax of the two classes of the same sample
    return hard + (soft - soft.detach())  # value exactly `hard`, gradient of `soft`


def argmax_gate(logits: Tensor) -> Tensor:
    """The test-time decision: execute where the 'execute' logit is the larger, [batch, 1]."""
    return (logits[:, 1] > logits[:, 0]).to(logits.dtype).unsqueeze(1)


def target_rate_loss(rates: Tensor, targets: Tensor) -> Tensor:
    """(1 / L) Σ_{l: t_l < 1} (t_l − r_l)² for per-layer execution rates `rates` and targets `targets`."""
    trained = targets < 1
    return ((targets - rates) ** 2 * trained).sum() / len(rates)


class TargetRateMixin(GatedNetwork):
    """The target-rate loss of a network whose residual blocks carry `AIGGate`s, the gating switch and
    the sparse path."""

    def set_targets(self, targets: float | Sequence[float], lossfact: float) -> list[float]:
        n = len(self.gated_blocks())
        targets = [float(targets)] * n if isinstance(targets, int | float) else [float(t) for t in targets]
        if len(targets) != n:
            raise ValueError(
                f"{len(targets)} target rates given for {n} gated blocks; give one per block or one"
            )
        if not all(0 <= t <= 1 for t in targets):
            raise ValueError(f"target rates must lie in [0, 1], got {targets}")
        self.register_buffer("target_rates", torch.tensor(targets), persistent=False)
        self.lossfact = lossfact
        return targets

    def gated_blocks(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(getattr(m, "gate", None), AIGGate)]

    def gates(self) -> list[AIGGate]:
        return [m for m in self.modules() if isinstance(m, AIGGate)]

    def execution_rates(self) -> Tensor:
        """Per block, the fraction of the last batch that ran its residual branch."""
        return torch.stack([b.last_gate.float().mean() for b in self.gated_blocks()])

    def aux_losses(self, progress: float) -> dict[str, Tensor]:
        rates = torch.stack([g.take().mean() for g in self.gates()])
        return {"target_rate": self.lossfact * target_rate_loss(rates, self.target_rates.to(rates.dtype))}


def _info(targets: list[float], lossfact: float, tau: float, gate_hidden: int, **extra) -> dict:
    return {
        **extra,
        "target_rates": targets,
        "lossfact": lossfact,
        "tau": tau,
        "gate_hidden": gate_hidden,
        "eval_gates": "deterministic argmax (the official code also samples Gumbel noise at test time)",
    }


class AIGCifarResNet(TargetRateMixin, CifarResNet):
    """CIFAR ResNet (6n + 2 layers) of basic blocks with option-B shortcuts and an `AIGGate` each."""

    def __init__(
        self,
        depth_per_stage: int,
        num_classes: int = 10,
        in_chans: int = 3,
        target: float | Sequence[float] = 0.6,
        lossfact: float = 2.0,
        gate_hidden: int = GATE_HIDDEN,
        tau: float = 1.0,
        **kwargs,
    ):
        block_kwargs = {"shortcut": "B", "gate_layer": partial(aig_gate, hidden=gate_hidden, tau=tau)}
        super().__init__(
            BasicBlock, depth_per_stage, num_classes, in_chans, block_kwargs=block_kwargs, **kwargs
        )
        targets = self.set_targets(target, lossfact)
        self.bench_info = _info(targets, lossfact, tau, gate_hidden, shortcut="B (1x1 conv + BN)")


class AIGImageNetResNet(TargetRateMixin, ImageNetResNet):
    """torchvision's bottleneck ResNet with an `AIGGate` in every block."""

    def __init__(
        self,
        depth: int,
        num_classes: int = 1000,
        in_chans: int = 3,
        target: float | Sequence[float] = 0.7,
        schedule: str = "uniform",
        lossfact: float = 1.0,
        gate_hidden: int = GATE_HIDDEN,
        tau: float = 1.0,
        layout: str = "v1.5",
        **kwargs,
    ):
        if layout not in LAYOUTS:
            raise ValueError(
                f"layout must be 'v1' or 'v1.5' (where the bottleneck stride goes), not {layout!r}"
            )
        block_kwargs = {"layout": layout, "gate_layer": partial(aig_gate, hidden=gate_hidden, tau=tau)}
        super().__init__(
            Bottleneck, ARCHS[depth][1], num_classes, in_chans, block_kwargs=block_kwargs, **kwargs
        )
        if schedule == "readme":
            if depth not in README_SCHEDULES or not isinstance(target, int | float):
                raise ValueError(
                    f"schedule='readme' exists for ResNet-50 and -101 (not {depth}) and takes one target t"
                )
            target = README_SCHEDULES[depth](target)
        elif schedule != "uniform":
            raise ValueError(f"schedule must be 'uniform' or 'readme', not {schedule!r}")
        targets = self.set_targets(target, lossfact)
        info = {"definition": "torchvision", "layout": layout, "schedule": schedule}
        self.bench_info = _info(targets, lossfact, tau, gate_hidden, **info)


@register_model
def aig_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> AIGCifarResNet:
    """ConvNet-AIG on the CIFAR ResNet-20 (option-B shortcuts), target 0.6, lossfact 2."""
    return AIGCifarResNet(3, num_classes, in_chans, **kwargs)


@register_model
def aig_resnet20_sparse(num_classes: int = 10, in_chans: int = 3, **kwargs) -> AIGCifarResNet:
    """aig_resnet20 at a sparser operating point: target rate 0.4 (the official CIFAR default: 0.6)."""
    return AIGCifarResNet(3, num_classes, in_chans, **{"target": 0.4, **kwargs})


@register_model
def aig_resnet56(num_classes: int = 10, in_chans: int = 3, **kwargs) -> AIGCifarResNet:
    """ConvNet-AIG on the CIFAR ResNet-56 (option-B shortcuts), target 0.6, lossfact 2."""
    return AIGCifarResNet(9, num_classes, in_chans, **kwargs)


@register_model
def aig_resnet110(num_classes: int = 10, in_chans: int = 3, **kwargs) -> AIGCifarResNet:
    """ConvNet-AIG on the CIFAR ResNet-110 (option-B shortcuts), target 0.6, lossfact 2."""
    return AIGCifarResNet(18, num_classes, in_chans, **kwargs)


@register_model
def aig_resnet50(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> AIGImageNetResNet:
    """ConvNet-AIG on torchvision's ResNet-50, target 0.7, lossfact 1."""
    return AIGImageNetResNet(50, num_classes, in_chans, **kwargs)


@register_model
def aig_resnet101(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> AIGImageNetResNet:
    """ConvNet-AIG on torchvision's ResNet-101, target 0.7, lossfact 1."""
    return AIGImageNetResNet(101, num_classes, in_chans, **kwargs)
