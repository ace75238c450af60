"""GaterNet of Chen, Li, Bengio and Si, "You Look Twice: GaterNet for Dynamic Filter Selection in CNNs",
CVPR 2019 (arXiv 1811.11205; v1 titled "GaterNet: Dynamic Filter Selection in Convolutional Neural
Network via a Dedicated Global Gating Network").

A backbone CNN does the work; a separate, global *gater* network looks at the same image and emits one
binary gate per backbone filter. A gate of 0 switches that filter's output feature map off for that
image. The gater is a feature extractor E (ResNet-20 without its classifier, for CIFAR) followed by two
fully-connected layers with a bottleneck of width b:

    f = E(x);  h = ReLU(FC1(f)) ∈ R^b;  logits = FC2(h) ∈ R^c;  gates = SemHash(logits) ∈ {0, 1}^c

where c is the number of gated filters. The backbones: the CIFAR ResNet-20/56/110 of He et al. (basic
blocks, option-A shortcuts), the pre-activation bottleneck ResNet-164 of He et al. 2016b, and
torchvision's ResNet-50 (v1.5: stride on the 3×3), from `baselines`, whose parameter names they keep.
The gates are made binary with Improved SemHash (Kaiser & Bengio 2018), as tensor2tensor's
`discretization.discrete_bottleneck(bottleneck_kind="semhash")` implements it:

    training:  y = σ'(logits + n), n ~ N(0, σ²),  σ'(x) = clip(1.2·sigmoid(x) − 0.1, 0, 1)
               d = 1[y > 0.5], with the straight-through gradient of y
               each example uses d with probability 1/2, otherwise the soft y
    evaluation: d = 1[logits > 0]  (no noise, always binary, deterministic)

The loss adds an L1 penalty on the gates that were applied (`aux_losses`).

Where each gate acts: a gate multiplies a filter's output after the BatchNorm and ReLU that follow the
conv, so a closed gate really zeroes the feature map the next conv reads: `relu(bn1(conv1(x))) * g1`
feeds conv2 (in ResNet-164's pre-activation units, the BN-ReLU that pre-activates the next conv). The
last conv of a block is gated after its BN (ResNet-164: its raw output), before the residual addition,
so the shortcut path is never gated.

The authors released evaluation code and checkpoints for ResNet-20 and ResNet-56 on CIFAR-10
(`google-research/google-research`, folder `gaternet/`: `backbone_resnet.py`, `gater_resnet.py`), but no
training code. Taken from that code (defaults here):
- the gated filters: the output filters of the *last* conv of every residual block, gated after its
  BatchNorm and before the residual addition (`gated_convs="last"`): 336 gates for ResNet-20 and 1,008
  for ResNet-56 (the code prints "Total number of gates needed");
- the bottleneck width b = 8 for the ResNet-20 gater (`bottleneck_size=8`);
- the noise: N(0, 1) added to the logits in training, not truncated; the saturating sigmoid; the step at
  0.49999 with the straight-through gradient; half of the examples (a per-example coin) use the hard
  gates in training, no ramp; hard gates at evaluation.
Known differences kept on purpose: the official backbone and gater use 1×1-conv projection shortcuts;
here the backbone is the He et al. ResNet (option A shortcuts) of `baselines`, identical to the plain
ResNet it is compared with, and the gater's trunk is that same ResNet-20. The official code zeroes every
Linear bias; here the gate logits start at `gate_bias_init` (see below).

The paper's count for ResNet-164, 7,200 gates, matches no whole-conv set of the pre-activation
bottleneck ResNet-164 (18 units per stage, widths 16/32/64, expansion 4): the last conv of every unit
gives 8,064, every conv 12,096, all but the last 4,032, and no per-unit choice used in every stage gives
7,200 (tests/test_gaternet.py lists the counts). `gated_convs` keeps `"all"` and `"inner"` as options.

Not confirmed by any source reachable here, so these are config fields with defaults chosen here and
listed in `bench_info["unconfirmed"]`:
- the sparsity weight λ and how the L1 term is normalised (here λ · mean gate value, i.e. λ times the
  fraction of open gates, so λ means the same on every backbone; default 0.1); λ is the method's
  sparsity knob. Proxy runs on Fashion-MNIST (20k images, 4 epochs, bf16; top-1 / executed share of
  static MACs, the gater included / gates always on, always off, input-dependent of 336): λ = 0.1:
  86.86 % / 87.9 % / 143, 120, 73; λ = 2 (`gaternet_resnet20_sparse`): 86.24 % / 79.9 % / 68, 263, 5
  (ResNet-20 on the same proxy: 88.97 %);
- the gater's feature extractor on ImageNet (default: torchvision ResNet-18 without its classifier,
  b = 256);
- the initial bias of the gate logits, 1.0: most gates start open (P = Φ(1) ≈ 0.84 for a hard gate
  under σ = 1 noise), so training starts near the plain backbone, while logit + noise stays mostly
  below ln 11 ≈ 2.4, where the saturating sigmoid is flat and passes no gradient. PyTorch's default
  (≈ 0, and the official code's zeroed biases) closes half the filters at random from the first step,
  and a bias of 5 saturates every gate at 1 so that the gater never learns (docs/methods.md has the
  runs that showed both).

How it sits in the ResNet: the gater runs first in the network's forward and hands each block's gate
slot (`baselines.slots`) its slice of the gates; every block forward is then a plain `forward(x)`.

Gate interface (`bench.gates`): each gated block carries one site per gated conv (`gate_sites`):
it produces that conv's filters and is consumed by the block's next conv (conv1 -> conv2, conv2 ->
conv3); the block's last conv feeds the residual sum, so its gate removes no input channel of the
next block. The gater is marked
`is_gate_network`: its cost (about one ResNet-20 on CIFAR) is always counted.

Sparse inference (`forward_sparse`, `bench.sparse`): per sample, the gater runs first; then every gated
conv computes only its open filters (BatchNorm folded in), the next conv of the block reads only those
channels, and the block's last conv adds its open channels into the shortcut. Its outputs equal
`forward`'s in eval mode to floating-point tolerance (tests/test_sparse.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from baselines.resnet_cifar import BasicBlock, CifarResNet, PreActBottleneck, PreActCifarResNet
from baselines.resnet_imagenet import ARCHS, Bottleneck, ImageNetResNet
from baselines.resnet_imagenet import BasicBlock as ImageNetBasicBlock
from baselines.slots import GatedNetwork
from bench.gates import GateSite
from bench.registry import register_model

GATED_CONVS = ("last", "all", "inner")  # which convs of a residual block have their filters gated

UNCONFIRMED = ["sparsity_weight", "l1_normalisation", "gater_arch", "gate_bias_init"]


@dataclass(frozen=True)
class GaterNetConfig:
    b: int = (
        8  # bottleneck width of the gater's FC layers (official CIFAR code: 8; the ImageNet builder: 256)
    )
    sparsity_weight: float = 0.1  # λ of the L1 loss on the gates (times the mean gate value)
    noise_std: float = 1.0  # σ of the SemHash noise (training only)
    hard_fraction: float = 0.5  # share of examples that use the binary gates in training
    hard_ramp: float = 0.0  # fraction of training over which the hard share ramps up (0 = none)
    gated_convs: str = "last"  # "last" conv of every residual block (official code), "all", or "inner"
    gater_arch: str = "resnet20"  # the gater's feature extractor: "resnet20" (CIFAR) or "resnet18"
    gate_bias_init: float = 1.0  # initial bias of the gate logits (see the module docstring)


def saturating_sigmoid(x: Tensor) -> Tensor:
    return torch.clamp(1.2 * torch.sigmoid(x) - 0.1, 0.0, 1.0)


class ImprovedSemHash(nn.Module):
    """Gate logits -> gates in [0, 1] (training) or {0, 1} (evaluation), per Kaiser & Bengio 2018."""

    def __init__(self, noise_std: float = 1.0, hard_fraction: float = 0.5, hard_ramp: float = 0.0):
        super().__init__()
        self.noise_std = noise_std
        self.hard_fraction = hard_fraction
        self.hard_ramp = hard_ramp
        self.progress = 0.0  # set by the model from the train loop's progress
        self.last_hard_rows: Tensor | None = None  # [batch, 1]: which examples used binary gates

    def hard_probability(self) -> float:
        if self.hard_ramp <= 0:
            return self.hard_fraction
        # tensor2tensor's inverse_exp_decay: 0.01 ** (1 - t), from 0.01 up to 1 at the end of the ramp
        t = min(1.0, self.progress / self.hard_ramp)
        return self.hard_fraction * 0.01 ** (1.0 - t)

    def forward(self, logits: Tensor) -> Tensor:
        if not self.training:
            self.last_hard_rows = None
            return (logits > 0).to(logits.dtype)
        soft = saturating_sigmoid(logits + self.noise_std * torch.randn_like(logits))
        hard = (soft > 0.5).to(soft.dtype)
        hard = hard + (soft - soft.detach())  # straight-through: forward d (exactly), gradient of y
        rows = torch.rand(logits.shape[0], 1, device=logits.device) < self.hard_probability()
        self.last_hard_rows = rows
        return torch.where(rows, hard, soft)


class Gater(nn.Module):
    """E(x) -> FC(b) -> ReLU -> FC(c) -> Improved SemHash: one gate per backbone filter."""

    is_gate_network = True

    def __init__(self, features: nn.Module, feature_dim: int, num_gates: int, cfg: GaterNetConfig):
        super().__init__()
        self.features = features
        self.fc1 = nn.Linear(feature_dim, cfg.b)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(cfg.b, num_gates)
        nn.init.constant_(self.fc2.bias, cfg.gate_bias_init)
        self.semhash = ImprovedSemHash(cfg.noise_std, cfg.hard_fraction, cfg.hard_ramp)
        self.enabled = True  # False: every gate is 1 (the plain backbone, for tests and ablations)

    def forward(self, x: Tensor) -> Tensor:
        gates = self.semhash(self.fc2(self.relu(self.fc1(self.features(x)))))
        return gates if self.enabled else torch.ones_like(gates)


# --- the blocks' gate slot: the block's slice of the gater output ---------------------------------------


class GaterSlice(nn.Module):
    """A block's gate slot: no parameters; returns, per gated conv, the slice of the gater's output
    that the network handed it (`give`) before the block runs."""

    def __init__(self, block: nn.Module, gated: str):
        super().__init__()
        order = block.convs
        if gated not in GATED_CONVS:
            raise ValueError(f"gated_convs must be one of {', '.join(GATED_CONVS)}, not {gated!r}")
        convs = {"last": order[-1:], "all": order, "inner": order[:-1]}[gated]
        self.convs = convs
        self.widths = [getattr(block, name).out_channels for name in convs]
        self.num_gates = sum(self.widths)
        # a gated conv's closed filters are also missing from the next conv's input; the block's last conv
        # feeds the residual sum, where the identity keeps every channel alive
        self.sites = {
            name: GateSite("channel", produces=(name,), consumes=tuple(order[order.index(name) + 1 :][:1]))
            for name in convs
        }
        self.gates: Tensor | None = None

    def give(self, gates: Tensor) -> None:
        self.gates = gates

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if self.gates is None:
            raise RuntimeError("a GaterNet block runs inside its network, whose gater hands it its gates")
        return dict(zip(self.convs, self.gates.split(self.widths, dim=1), strict=True))


# --- gater feature extractors ------------------------------------------------------------------------


def _gater_features(arch: str, in_chans: int) -> tuple[nn.Module, int]:
    """A classifier-less trunk: the network with its last FC replaced by the identity."""
    if arch == "resnet20":
        trunk = CifarResNet(BasicBlock, 3, num_classes=1, in_chans=in_chans)
        trunk.fc = nn.Identity()
        return trunk, 64
    if arch == "resnet18":
        trunk = ImageNetResNet(ImageNetBasicBlock, [2, 2, 2, 2], in_chans=in_chans)
        trunk.fc = nn.Identity()
        return trunk, 512
    raise ValueError(f"gater_arch must be 'resnet20' or 'resnet18', not {arch!r}")


# --- networks ----------------------------------------------------------------------------------------


class GaterNetMixin(GatedNetwork):
    """What every backbone shares: the gater that runs first and the L1 loss (and, from GatedNetwork,
    the gating switch and the sparse path, before whose blocks the gater hands out the gates)."""

    def _init_gaternet(self, cfg: GaterNetConfig, in_chans: int, backbone: str) -> None:
        self.cfg = cfg
        features, dim = _gater_features(cfg.gater_arch, in_chans)
        self.gater = Gater(features, dim, sum(s.num_gates for s in self.gate_slices()), cfg)
        self._train_gates: Tensor | None = None
        self.describe_gating("gaternet", backbone, self.gater.fc2.out_features, cfg, UNCONFIRMED)

    def gate_slices(self) -> list[GaterSlice]:
        return [m for m in self.modules() if isinstance(m, GaterSlice)]

    def before_blocks(self, x: Tensor) -> None:
        """Run the gater on `x` and give every block's gate slot its slice."""
        gates = self.gater(x)
        self._train_gates = gates if self.training else None
        slices = self.gate_slices()
        for slot, part in zip(slices, gates.split([s.num_gates for s in slices], dim=1), strict=True):
            slot.give(part)

    def forward(self, x: Tensor) -> Tensor:
        self.before_blocks(x)
        return super().forward(x)

    def aux_losses(self, progress: float) -> dict[str, Tensor]:
        self.gater.semhash.progress = progress  # used by the next forward (hard-share ramp)
        if self._train_gates is None:
            return {}
        return {"gate_l1": self.cfg.sparsity_weight * self._train_gates.abs().mean()}


class GaterNetCifar(GaterNetMixin, CifarResNet):
    """A CIFAR ResNet (He et al., option A) whose block filters are gated by a ResNet-20 gater."""

    def __init__(self, depth_per_stage: int, num_classes: int, in_chans: int, cfg: GaterNetConfig):
        block_kwargs = {"gate_layer": partial(GaterSlice, gated=cfg.gated_convs)}
        super().__init__(BasicBlock, depth_per_stage, num_classes, in_chans, block_kwargs=block_kwargs)
        self._init_gaternet(cfg, in_chans, f"resnet{6 * depth_per_stage + 2}")


class GaterNetPreAct(GaterNetMixin, PreActCifarResNet):
    """The pre-activation bottleneck ResNet-164 (He et al. 2016b) gated by a ResNet-20 gater."""

    def __init__(self, num_classes: int, in_chans: int, cfg: GaterNetConfig, layout: str = "v1"):
        block_kwargs = {"layout": layout, "gate_layer": partial(GaterSlice, gated=cfg.gated_convs)}
        super().__init__(PreActBottleneck, 18, num_classes, in_chans, block_kwargs=block_kwargs)
        self._init_gaternet(cfg, in_chans, "resnet164")
        self.describe(layout=layout)


class GaterNetImageNet(GaterNetMixin, ImageNetResNet):
    """torchvision's bottleneck ResNet (v1.5 layout) with its block filters gated by the gater."""

    def __init__(
        self, layers: list[int], num_classes: int, in_chans: int, cfg: GaterNetConfig, backbone: str
    ):
        block_kwargs = {"gate_layer": partial(GaterSlice, gated=cfg.gated_convs)}
        super().__init__(Bottleneck, layers, num_classes, in_chans, block_kwargs=block_kwargs)
        self._init_gaternet(cfg, in_chans, backbone)
        self.describe(layout="v1.5")


def gaternet_cifar(
    depth: int, num_classes: int = 10, in_chans: int = 3, layout: str = "v1", **kwargs
) -> GaterNetCifar | GaterNetPreAct:
    """GaterNet with a CIFAR ResNet backbone of `depth` (6n + 2, or the pre-activation ResNet-164 with
    its bottleneck stride at `layout`) and a ResNet-20 gater."""
    if depth == 164:
        return GaterNetPreAct(num_classes, in_chans, GaterNetConfig(**kwargs), layout)
    return GaterNetCifar((depth - 2) // 6, num_classes, in_chans, GaterNetConfig(**kwargs))


def gaternet_imagenet(depth: int, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> GaterNetImageNet:
    """GaterNet with torchvision's bottleneck ResNet of `depth` (v1.5 layout) and, unless `kwargs` say
    otherwise, a ResNet-18 gater and bottleneck width b = 256."""
    kwargs = {"b": 256, "gater_arch": "resnet18", **kwargs}
    return GaterNetImageNet(
        ARCHS[depth][1], num_classes, in_chans, GaterNetConfig(**kwargs), f"resnet{depth}"
    )


@register_model
def gaternet_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> GaterNetCifar:
    """GaterNet with a CIFAR ResNet-20 backbone and a ResNet-20 gater."""
    return gaternet_cifar(20, num_classes, in_chans, **kwargs)


SPARSE_POINT = {"sparsity_weight": 2.0}  # the second operating point of the accuracy-MACs curve


@register_model
def gaternet_resnet20_sparse(num_classes: int = 10, in_chans: int = 3, **kwargs) -> GaterNetCifar:
    """gaternet_resnet20 at a sparser operating point: L1 weight λ = 2 (the default: 0.1)."""
    return gaternet_cifar(20, num_classes, in_chans, **{**SPARSE_POINT, **kwargs})


@register_model
def gaternet_resnet56(num_classes: int = 10, in_chans: int = 3, **kwargs) -> GaterNetCifar:
    """GaterNet with a CIFAR ResNet-56 backbone and a ResNet-20 gater."""
    return gaternet_cifar(56, num_classes, in_chans, **kwargs)


@register_model
def gaternet_resnet110(num_classes: int = 10, in_chans: int = 3, **kwargs) -> GaterNetCifar:
    """GaterNet with a CIFAR ResNet-110 backbone and a ResNet-20 gater."""
    return gaternet_cifar(110, num_classes, in_chans, **kwargs)


@register_model
def gaternet_resnet164(num_classes: int = 10, in_chans: int = 3, **kwargs) -> GaterNetPreAct:
    """GaterNet with the pre-activation bottleneck ResNet-164 backbone and a ResNet-20 gater."""
    return gaternet_cifar(164, num_classes, in_chans, **kwargs)


@register_model
def gaternet_resnet50(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> GaterNetImageNet:
    """GaterNet with a torchvision ResNet-50 backbone (v1.5 layout) and a ResNet-18 gater."""
    return gaternet_imagenet(50, num_classes, in_chans, **kwargs)
