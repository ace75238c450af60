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
departs from it (reference/methods.md §6.1):
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
  executed MACs come from the recorded gates (`bench.gates`). The gate heads are `is_gate_network` and
  their cost is always counted.
The official `--lrfact` (a separate learning rate for the gates' last FC) defaults to 1 and has no
counterpart here.

Sparse inference (`forward_sparse`, `bench.sparse`): each sample's gates are computed first, and a block
whose gate is closed runs only its shortcut; an open block runs its convs with the BatchNorms folded in.
Its outputs equal `forward`'s in eval mode to floating-point tolerance (tests/test_sparse.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet as tv

from baselines.resnet_cifar import CifarResNet, conv1x1, conv3x3
from baselines.resnet_imagenet import BottleneckV1, ImageNetResNet
from bench import sparse
from bench.gates import GateSite
from bench.registry import register

GATE_HIDDEN = 16
INIT_BIAS = (0.1, 2.0)  # logits (skip, execute) at initialisation: P(execute) = σ(1.9) ≈ 0.87

# the README's per-layer schedules, as functions of t
README_SCHEDULES = {
    50: lambda t: [1, 1, 0.8, 1, t, t, t, 1, t, t, t, t, t, 1, 0.7, 1],
    101: lambda t: [1] * 8 + [t] * 25,
}


class AIGGate(nn.Module):
    """Execute (1) or skip (0) a block, from its input: GAP, FC-BN-ReLU, FC to (skip, execute) logits."""

    is_gate_network = True

    def __init__(self, in_planes: int, hidden: int = GATE_HIDDEN, tau: float = 1.0):
        super().__init__()
        self.fc1 = nn.Linear(in_planes, hidden)
        self.fc1bn = nn.BatchNorm1d(hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, 2)
        self.tau = tau
        nn.init.normal_(self.fc2.weight, 0.0, 0.001)
        with torch.no_grad():
            self.fc2.bias.copy_(torch.tensor(INIT_BIAS))

    def logits(self, x: Tensor) -> Tensor:
        return self.fc2(self.relu(self.fc1bn(self.fc1(x.mean((2, 3))))))

    def forward(self, x: Tensor) -> Tensor:
        """The gate [batch, 1]: exactly 0 or 1; in training it carries the straight-through gradient."""
        logits = self.logits(x)
        return gumbel_gate(logits, self.tau) if self.training else argmax_gate(logits)


def gumbel_gate(logits: Tensor, tau: float = 1.0) -> Tensor:
    """Straight-through Gumbel-softmax sample of the 'execute' class of (skip, execute) logits, [batch, 1]."""
    soft = F.gumbel_softmax(logits, tau=tau)[:, 1:]
    hard = (soft > 0.5).to(soft.dtype)  # the argmax of the two classes of the same sample
    return hard + (soft - soft.detach())  # value exactly `hard`, gradient of `soft`


def argmax_gate(logits: Tensor) -> Tensor:
    """The test-time decision: execute where the 'execute' logit is the larger, [batch, 1]."""
    return (logits[:, 1] > logits[:, 0]).to(logits.dtype).unsqueeze(1)


class _GatedBlock(nn.Module):
    """What the gated blocks share: the gate interface, the gate the loss needs, and the sparse path."""

    n_convs: int  # convolutions on the residual branch, conv1 .. conv{n_convs}
    # and projection(): the shortcut's conv + BN, or None for an identity shortcut

    def record(self, gate: Tensor) -> None:
        self.last_gate = gate.detach()  # the gate interface: [batch, 1], 0/1
        self.gate_value = gate  # with its gradient, until the target-rate loss takes it

    def take_gate(self) -> Tensor:
        gate = self.gate_value if self.gate_value is not None else self.last_gate
        self.gate_value = None  # drop the graph reference once the loss has it
        return gate

    def sparse_parameters(self) -> dict:
        folded = sparse.fold_block(self, self.n_convs)
        projection = self.projection()
        if projection is not None:
            folded["shortcut"] = sparse.fold(projection[0], projection[1])
        return folded

    def forward_sparse(self, x: Tensor, folded: dict) -> Tensor:
        """One sample: the shortcut alone when the gate is closed, else the branch (BN folded)."""
        gate = self.gate(x)
        identity = sparse.conv(folded["shortcut"], x) if "shortcut" in folded else x
        if not bool(gate[0, 0]):
            return self.relu(identity)
        out = x
        for k in range(1, self.n_convs):
            out = self.relu(sparse.conv(folded[f"conv{k}"], out))
        return self.relu(identity + sparse.conv(folded[f"conv{self.n_convs}"], out))


class AIGBasicBlock(_GatedBlock):
    """He et al.'s basic block with an option-B shortcut and a gate on its residual branch."""

    expansion = 1
    n_convs = 2

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, gate_hidden: int = GATE_HIDDEN, tau: float = 1.0
    ):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes))
        else:
            self.shortcut = nn.Identity()
        self.gate = AIGGate(in_planes, gate_hidden, tau)
        self.gate_site = GateSite("block", produces=("conv1", "conv2"))
        self.last_gate = self.gate_value = None

    def forward(self, x: Tensor) -> Tensor:
        gate = self.gate(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.shortcut(x) + out * gate[:, :, None, None]
        self.record(gate)
        return self.relu(out)

    def projection(self) -> nn.Sequential | None:
        return self.shortcut if isinstance(self.shortcut, nn.Sequential) else None


class AIGBottleneck(_GatedBlock, tv.Bottleneck):
    """torchvision's bottleneck (v1.5) with a gate on its residual branch."""

    # class attributes: torchvision's ResNet passes its blocks positional arguments only
    gate_hidden = GATE_HIDDEN
    tau = 1.0
    n_convs = 3

    def __init__(self, inplanes: int, planes: int, *args, **kwargs):
        super().__init__(inplanes, planes, *args, **kwargs)
        self.gate = AIGGate(inplanes, self.gate_hidden, self.tau)
        self.gate_site = GateSite("block", produces=("conv1", "conv2", "conv3"))
        self.last_gate = self.gate_value = None

    def forward(self, x: Tensor) -> Tensor:
        gate = self.gate(x)
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = identity + out * gate[:, :, None, None]
        self.record(gate)
        return self.relu(out)

    def projection(self) -> nn.Sequential | None:
        return self.downsample


class AIGBottleneckV1(AIGBottleneck, BottleneckV1):
    """The same with the stride on the first 1×1 (He et al.'s layout; not the official AIG model)."""


def target_rate_loss(rates: Tensor, targets: Tensor) -> Tensor:
    """(1 / L) Σ_{l: t_l < 1} (t_l − r_l)² for per-layer execution rates `rates` and targets `targets`."""
    trained = targets < 1
    return ((targets - rates) ** 2 * trained).sum() / len(rates)


class TargetRateMixin:
    """The target-rate loss of a network whose residual blocks are `_GatedBlock`s."""

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

    def gated_blocks(self) -> list[_GatedBlock]:
        return [m for m in self.modules() if isinstance(m, _GatedBlock)]

    def execution_rates(self) -> Tensor:
        """Per block, the fraction of the last batch that ran its residual branch."""
        return torch.stack([b.last_gate.float().mean() for b in self.gated_blocks()])

    def aux_losses(self, progress: float) -> dict[str, Tensor]:
        rates = torch.stack([b.take_gate().mean() for b in self.gated_blocks()])
        return {"target_rate": self.lossfact * target_rate_loss(rates, self.target_rates.to(rates.dtype))}

    @torch.inference_mode()
    def forward_sparse(self, x: Tensor) -> Tensor:
        """Inference, one sample at a time: closed blocks run only their shortcut (see `bench.sparse`)."""
        return sparse.forward_blocks(self, x)


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
    """CIFAR ResNet (6n + 2 layers) of `AIGBasicBlock`s."""

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
        block_kwargs = {"gate_hidden": gate_hidden, "tau": tau}
        super().__init__(
            AIGBasicBlock, depth_per_stage, num_classes, in_chans, block_kwargs=block_kwargs, **kwargs
        )
        targets = self.set_targets(target, lossfact)
        self.bench_info = _info(targets, lossfact, tau, gate_hidden, shortcut="B (1x1 conv + BN)")


class AIGImageNetResNet(TargetRateMixin, ImageNetResNet):
    """torchvision's bottleneck ResNet of `AIGBottleneck`s."""

    def __init__(
        self,
        layers: list[int],
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
        if layout not in ("v1", "v1.5"):
            raise ValueError(
                f"layout must be 'v1' or 'v1.5' (where the bottleneck stride goes), not {layout!r}"
            )
        block = AIGBottleneckV1 if layout == "v1" else AIGBottleneck
        if (gate_hidden, tau) != (block.gate_hidden, block.tau):
            block = type(block.__name__, (block,), {"gate_hidden": gate_hidden, "tau": tau})
        super().__init__(block, layers, num_classes, in_chans, **kwargs)
        depth = 3 * sum(layers) + 2
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


def _aig_cifar(depth: int):
    def builder(num_classes: int = 10, in_chans: int = 3, **kwargs) -> AIGCifarResNet:
        return AIGCifarResNet((depth - 2) // 6, num_classes, in_chans, **kwargs)

    builder.__name__ = builder.__qualname__ = f"aig_resnet{depth}"
    builder.__doc__ = f"ConvNet-AIG on the CIFAR ResNet-{depth} (option-B shortcuts), target 0.6, lossfact 2."
    return builder


def _aig_imagenet(depth: int, layers: list[int]):
    def builder(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> AIGImageNetResNet:
        return AIGImageNetResNet(layers, num_classes, in_chans, **kwargs)

    builder.__name__ = builder.__qualname__ = f"aig_resnet{depth}"
    builder.__doc__ = f"ConvNet-AIG on torchvision's ResNet-{depth}, target 0.7, lossfact 1."
    return builder


for _depth in (20, 56, 110):
    register(f"aig_resnet{_depth}", _aig_cifar(_depth))
register("aig_resnet50", _aig_imagenet(50, [3, 4, 6, 3]))
register("aig_resnet101", _aig_imagenet(101, [3, 4, 23, 3]))
