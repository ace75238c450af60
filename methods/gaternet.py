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

    training:  y = σ'(logits + n), n ~ N(0, σ²) truncated at ±2σ,  σ'(x) = clip(1.2·sigmoid(x) − 0.1, 0, 1)
               d = 1[y > 0.5], with the straight-through gradient of y
               each example uses d with probability 1/2, otherwise the soft y
    evaluation: d = 1[logits > 0]  (no noise, always binary, deterministic)

The loss adds an L1 penalty on the gates that were applied (`aux_losses`).

Where each gate acts: a gate multiplies a filter's output after the BatchNorm and ReLU that follow the
conv, so a closed gate really zeroes the feature map the next conv reads: `relu(bn1(conv1(x))) * g1`
feeds conv2 (in ResNet-164's pre-activation units, the BN-ReLU that pre-activates the next conv). The
last conv of a block is gated after its BN (ResNet-164: its raw output), before the residual addition,
so the shortcut path is never gated.

There is no official code. Not confirmed by any source reachable here, so these are config fields with
defaults chosen here and listed in `bench_info["unconfirmed"]`:
- the bottleneck width b (default 16 on CIFAR, the value reference/methods.md §1.3 and ResNet-Wider's
  size estimate assume; 256 on ImageNet, where there are 22,656 gates);
- the sparsity weight λ and how the L1 term is normalised (here λ · mean gate value, i.e. λ times the
  fraction of open gates, so λ means the same on every backbone; default 0.1);
- which filters are gated (default: every conv filter of every residual block, as the issue describes;
  `gated_convs="inner"` gates all but the last conv of each block); the stem conv and the projection
  shortcuts (ResNet-164, ResNet-50) are never gated;
- the noise σ (default 1.0, tensor2tensor's `discrete_bottleneck` default; its `isemhash` uses 0.5) and
  whether the hard share ramps up (tensor2tensor ramps it from ~0 to 1/2 over 2·startup_steps with
  `inverse_exp_decay`; default here: no ramp, 1/2 from the first step, `hard_ramp` turns it on);
- the gater's feature extractor on ImageNet (default: torchvision ResNet-18 without its classifier);
- the FC layers have biases and no BatchNorm;
- the initial bias of the gate logits, 1.0: most gates start open (P = Φ(1) ≈ 0.84 for a hard gate
  under σ = 1 noise), so training starts near the plain backbone, while logit + noise stays mostly
  below ln 11 ≈ 2.4, where the saturating sigmoid is flat and passes no gradient. PyTorch's default
  (≈ 0) closes half the filters at random from the first step: on 4,000 Fashion-MNIST images for one
  epoch it reached 28 % test accuracy against 57 % with 1.0 (ResNet-20: 72 %); a bias of 5 saturates
  every gate at 1 and the gater never learns.

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

from dataclasses import asdict, dataclass

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck as TvBottleneck

from baselines.resnet_cifar import BasicBlock, CifarResNet, PreActBottleneck, PreActCifarResNet
from baselines.resnet_imagenet import ImageNetResNet
from bench import sparse
from bench.gates import GateSite
from bench.registry import register

UNCONFIRMED = [
    "b",
    "sparsity_weight",
    "l1_normalisation",
    "gated_convs",
    "noise_std",
    "hard_ramp",
    "gater_arch",
]


@dataclass(frozen=True)
class GaterNetConfig:
    b: int = 16  # bottleneck width of the gater's FC layers (the ImageNet builder: 256)
    sparsity_weight: float = 0.1  # λ of the L1 loss on the gates (times the mean gate value)
    noise_std: float = 1.0  # σ of the SemHash noise (training only)
    hard_fraction: float = 0.5  # share of examples that use the binary gates in training
    hard_ramp: float = 0.0  # fraction of training over which the hard share ramps up (0 = none)
    gated_convs: str = "all"  # "all" convs of every residual block, or "inner" (all but the last)
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
        noise = torch.zeros_like(logits)
        if self.noise_std > 0:
            sigma = self.noise_std
            nn.init.trunc_normal_(noise, mean=0.0, std=sigma, a=-2 * sigma, b=2 * sigma)
        soft = saturating_sigmoid(logits + noise)
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

    def forward(self, x: Tensor) -> Tensor:
        return self.semhash(self.fc2(self.relu(self.fc1(self.features(x)))))


# --- backbone blocks whose filters are switched by the gater ---------------------------------------


def _declare_gates(block: nn.Module, convs: tuple[str, ...], order: tuple[str, ...]) -> None:
    """Record which convs of `block` are gated and declare their gate sites (see the module docstring)."""
    block.gated_convs = convs
    block.gate_widths = [getattr(block, name).out_channels for name in convs]
    block.num_gates = sum(block.gate_widths)
    # a gated conv's closed filters are also missing from the next conv's input; the block's last conv
    # feeds the residual sum, where the identity keeps every channel alive
    block.gate_sites = {
        name: GateSite("channel", produces=(name,), consumes=tuple(order[order.index(name) + 1 :][:1]))
        for name in convs
    }


def _by_conv(block: nn.Module, gates: Tensor) -> dict[str, Tensor]:
    """The block's slice of the gater output, by gated conv name, each [batch, channels]."""
    return dict(zip(block.gated_convs, gates.split(block.gate_widths, dim=1), strict=True))


def _split_gates(block: nn.Module, gates: Tensor) -> dict[str, Tensor]:
    """`_by_conv`, recorded on the block (the gate interface)."""
    split = _by_conv(block, gates)
    block.last_gates = {name: gate.detach() for name, gate in split.items()}
    return split


def _apply(out: Tensor, gates: dict[str, Tensor], conv: str) -> Tensor:
    gate = gates.get(conv)
    return out if gate is None else out * gate[:, :, None, None]


def _active(block: nn.Module, gates: Tensor) -> dict[str, Tensor | None]:
    """One sample's open-filter indices per conv of `block` (None: not gated or all open)."""
    split = _by_conv(block, gates)
    return {name: sparse.active(split[name][0] if name in split else None) for name in block.conv_order}


def _gated_names(kind: str, order: tuple[str, ...]) -> tuple[str, ...]:
    if kind == "all":
        return order
    if kind == "inner":
        return order[:-1]
    raise ValueError(f"gated_convs must be 'all' or 'inner', not {kind!r}")


class GatedBasicBlock(BasicBlock):
    """He et al.'s CIFAR basic block with its filters switched by gates from the gater."""

    conv_order = ("conv1", "conv2")

    def __init__(self, in_planes: int, planes: int, stride: int = 1, gated_convs: str = "all"):
        super().__init__(in_planes, planes, stride)
        _declare_gates(self, _gated_names(gated_convs, self.conv_order), self.conv_order)

    def forward(self, x: Tensor, gates: Tensor) -> Tensor:
        g = _split_gates(self, gates)
        identity = self.shortcut(x)
        out = _apply(self.relu(self.bn1(self.conv1(x))), g, "conv1")
        out = _apply(self.bn2(self.conv2(out)), g, "conv2")
        return self.relu(out + identity)

    def sparse_parameters(self) -> dict:
        return sparse.fold_block(self, 2)

    def forward_sparse(self, x: Tensor, gates: Tensor, folded: dict) -> Tensor:
        i = _active(self, gates)
        identity = self.shortcut(x)
        out = self.relu(sparse.conv(folded["conv1"], x, i["conv1"]))
        out = sparse.conv(folded["conv2"], out, i["conv2"], i["conv1"])
        return self.relu(sparse.scatter_add(identity, i["conv2"], out))


class GatedPreActBottleneck(PreActBottleneck):
    """He et al.'s pre-activation bottleneck (ResNet-164) with its filters switched by the gater.

    conv1's and conv2's gates act after the BN-ReLU that pre-activates the next conv (so that conv reads
    exact zeros), conv3's on its output, before the addition.
    """

    conv_order = ("conv1", "conv2", "conv3")

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, layout: str = "v1", gated_convs: str = "all"
    ):
        super().__init__(in_planes, planes, stride, layout)
        _declare_gates(self, _gated_names(gated_convs, self.conv_order), self.conv_order)

    def forward(self, x: Tensor, gates: Tensor) -> Tensor:
        g = _split_gates(self, gates)
        preact = self.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(preact)
        out = _apply(self.relu(self.bn2(self.conv1(preact))), g, "conv1")
        out = _apply(self.relu(self.bn3(self.conv2(out))), g, "conv2")
        out = _apply(self.conv3(out), g, "conv3")
        return out + identity

    def sparse_parameters(self) -> dict:
        return {"conv1": sparse.fold(self.conv1, self.bn2), "conv2": sparse.fold(self.conv2, self.bn3),
                "conv3": sparse.fold(self.conv3)}  # fmt: skip

    def forward_sparse(self, x: Tensor, gates: Tensor, folded: dict) -> Tensor:
        i = _active(self, gates)
        preact = self.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(preact)
        out = self.relu(sparse.conv(folded["conv1"], preact, i["conv1"]))
        out = self.relu(sparse.conv(folded["conv2"], out, i["conv2"], i["conv1"]))
        out = sparse.conv(folded["conv3"], out, i["conv3"], i["conv2"])
        return sparse.scatter_add(identity, i["conv3"], out)


class GatedBottleneck(TvBottleneck):
    """torchvision's bottleneck (v1.5: stride on the 3×3) with its filters switched by the gater."""

    conv_order = ("conv1", "conv2", "conv3")

    def configure_gates(self, gated_convs: str) -> None:
        _declare_gates(self, _gated_names(gated_convs, self.conv_order), self.conv_order)

    def forward(self, x: Tensor, gates: Tensor) -> Tensor:
        g = _split_gates(self, gates)
        identity = x if self.downsample is None else self.downsample(x)
        out = _apply(self.relu(self.bn1(self.conv1(x))), g, "conv1")
        out = _apply(self.relu(self.bn2(self.conv2(out))), g, "conv2")
        out = _apply(self.bn3(self.conv3(out)), g, "conv3")
        return self.relu(out + identity)

    def sparse_parameters(self) -> dict:
        return sparse.fold_block(self, 3)

    def forward_sparse(self, x: Tensor, gates: Tensor, folded: dict) -> Tensor:
        i = _active(self, gates)
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(sparse.conv(folded["conv1"], x, i["conv1"]))
        out = self.relu(sparse.conv(folded["conv2"], out, i["conv2"], i["conv1"]))
        out = sparse.conv(folded["conv3"], out, i["conv3"], i["conv2"])
        return self.relu(sparse.scatter_add(identity, i["conv3"], out))


class GatedStage(nn.Sequential):
    """A stage of gated blocks; hands each block its slice of the gates."""

    @property
    def num_gates(self) -> int:
        return sum(block.num_gates for block in self)

    def forward(self, x: Tensor, gates: Tensor) -> Tensor:
        for block, block_gates in zip(self, self._by_block(gates), strict=True):
            x = block(x, block_gates)
        return x

    def forward_sparse(self, x: Tensor, gates: Tensor, folded: dict) -> Tensor:
        """One sample through the stage's sparse blocks (`folded`: every block's folded parameters)."""
        for block, block_gates in zip(self, self._by_block(gates), strict=True):
            x = block.forward_sparse(x, block_gates, folded[id(block)])
        return x

    def _by_block(self, gates: Tensor) -> tuple[Tensor, ...]:
        return gates.split([b.num_gates for b in self], dim=1)


# --- gater feature extractors ------------------------------------------------------------------------


def _gater_features(arch: str, in_chans: int) -> tuple[nn.Module, int]:
    """A classifier-less trunk: the network with its last FC replaced by the identity."""
    if arch == "resnet20":
        trunk = CifarResNet(BasicBlock, 3, num_classes=1, in_chans=in_chans)
        trunk.fc = nn.Identity()
        return trunk, 64
    if arch == "resnet18":
        trunk = torchvision.models.resnet18()
        if in_chans != 3:
            trunk.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        trunk.fc = nn.Identity()
        return trunk, 512
    raise ValueError(f"gater_arch must be 'resnet20' or 'resnet18', not {arch!r}")


# --- networks ----------------------------------------------------------------------------------------


class _GaterNetMixin:
    """What both backbones share: the gater, the gating switch and the L1 loss."""

    stages: tuple[str, ...]

    def _init_gaternet(self, cfg: GaterNetConfig, in_chans: int, backbone: str) -> None:
        self.cfg = cfg
        for name in self.stages:
            setattr(self, name, GatedStage(*getattr(self, name)))
        features, dim = _gater_features(cfg.gater_arch, in_chans)
        self.gater = Gater(features, dim, sum(getattr(self, s).num_gates for s in self.stages), cfg)
        self.gating = True  # False: every gate is 1 (the plain backbone, for tests and ablations)
        self._train_gates: Tensor | None = None
        self.bench_info = {
            "method": "gaternet",
            "backbone": backbone,
            "num_gates": self.gater.fc2.out_features,
            "config": asdict(cfg),
            "unconfirmed": UNCONFIRMED,
        }

    def _gates(self, x: Tensor) -> list[Tensor]:
        gates = self.gater(x)
        if not self.gating:
            gates = torch.ones_like(gates)
        self._train_gates = gates if self.training else None
        return list(gates.split([getattr(self, s).num_gates for s in self.stages], dim=1))

    @torch.inference_mode()
    def forward_sparse(self, x: Tensor) -> Tensor:
        """Inference, one sample at a time: only open filters are computed (see `bench.sparse`)."""

        def one(x: Tensor, folded: dict) -> Tensor:
            gates = self._gates(x)
            x = self._sparse_stem(x)
            for name, stage_gates in zip(self.stages, gates, strict=True):
                x = getattr(self, name).forward_sparse(x, stage_gates, folded)
            return self._sparse_head(x)

        return sparse.per_sample(self, x, one)

    def _sparse_head(self, x: Tensor) -> Tensor:
        return self.fc(self.avgpool(x).flatten(1))

    def aux_losses(self, progress: float) -> dict[str, Tensor]:
        self.gater.semhash.progress = progress  # used by the next forward (hard-share ramp)
        if self._train_gates is None:
            return {}
        return {"gate_l1": self.cfg.sparsity_weight * self._train_gates.abs().mean()}


class GaterNetCifar(_GaterNetMixin, CifarResNet):
    """A CIFAR ResNet (He et al., option A) whose block filters are gated by a ResNet-20 gater."""

    stages = ("layer1", "layer2", "layer3")

    def __init__(self, depth_per_stage: int, num_classes: int, in_chans: int, cfg: GaterNetConfig):
        block_kwargs = {"gated_convs": cfg.gated_convs}
        CifarResNet.__init__(
            self, GatedBasicBlock, depth_per_stage, num_classes, in_chans, block_kwargs=block_kwargs
        )
        self._init_gaternet(cfg, in_chans, f"resnet{6 * depth_per_stage + 2}")

    def _sparse_stem(self, x: Tensor) -> Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def forward(self, x: Tensor) -> Tensor:
        g1, g2, g3 = self._gates(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x, g1), g2), g3)
        return self.fc(self.avgpool(x).flatten(1))


class GaterNetPreAct(_GaterNetMixin, PreActCifarResNet):
    """The pre-activation bottleneck ResNet-164 (He et al. 2016b) gated by a ResNet-20 gater."""

    stages = ("layer1", "layer2", "layer3")

    def __init__(self, num_classes: int, in_chans: int, cfg: GaterNetConfig, layout: str = "v1"):
        block_kwargs = {"layout": layout, "gated_convs": cfg.gated_convs}
        PreActCifarResNet.__init__(
            self, GatedPreActBottleneck, 18, num_classes, in_chans, block_kwargs=block_kwargs
        )
        self._init_gaternet(cfg, in_chans, "resnet164")
        self.bench_info["layout"] = layout

    def _sparse_stem(self, x: Tensor) -> Tensor:
        return self.conv1(x)

    def _sparse_head(self, x: Tensor) -> Tensor:
        return self.fc(self.avgpool(self.relu(self.bn(x))).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        g1, g2, g3 = self._gates(x)
        x = self.layer3(self.layer2(self.layer1(self.conv1(x), g1), g2), g3)
        x = self.relu(self.bn(x))
        return self.fc(self.avgpool(x).flatten(1))


class GaterNetImageNet(_GaterNetMixin, ImageNetResNet):
    """torchvision's bottleneck ResNet (v1.5 layout) with its block filters gated by the gater."""

    stages = ("layer1", "layer2", "layer3", "layer4")

    def __init__(
        self, layers: list[int], num_classes: int, in_chans: int, cfg: GaterNetConfig, backbone: str
    ):
        ImageNetResNet.__init__(self, GatedBottleneck, layers, num_classes, in_chans)
        for module in self.modules():
            if isinstance(module, GatedBottleneck):
                module.configure_gates(cfg.gated_convs)
        self._init_gaternet(cfg, in_chans, backbone)
        self.bench_info["layout"] = "v1.5"

    def _sparse_stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: Tensor) -> Tensor:
        g1, g2, g3, g4 = self._gates(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x, g1), g2), g3), g4)
        return self.fc(self.avgpool(x).flatten(1))


def _cifar_builder(depth: int):
    def builder(num_classes: int = 10, in_chans: int = 3, **kwargs) -> GaterNetCifar:
        return GaterNetCifar((depth - 2) // 6, num_classes, in_chans, GaterNetConfig(**kwargs))

    builder.__name__ = builder.__qualname__ = f"gaternet_resnet{depth}"
    builder.__doc__ = f"GaterNet with a CIFAR ResNet-{depth} backbone and a ResNet-20 gater."
    return builder


def gaternet_resnet164(
    num_classes: int = 10, in_chans: int = 3, layout: str = "v1", **kwargs
) -> GaterNetPreAct:
    """GaterNet with the pre-activation bottleneck ResNet-164 backbone and a ResNet-20 gater."""
    return GaterNetPreAct(num_classes, in_chans, GaterNetConfig(**kwargs), layout)


def gaternet_resnet50(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> GaterNetImageNet:
    """GaterNet with a torchvision ResNet-50 backbone (v1.5 layout) and a ResNet-18 gater."""
    kwargs = {"b": 256, "gater_arch": "resnet18", **kwargs}
    return GaterNetImageNet([3, 4, 6, 3], num_classes, in_chans, GaterNetConfig(**kwargs), "resnet50")


for _depth in (20, 56, 110):
    register(f"gaternet_resnet{_depth}", _cifar_builder(_depth))
register("gaternet_resnet164", gaternet_resnet164)
register("gaternet_resnet50", gaternet_resnet50)
