"""SE-ResNets of Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018 / TPAMI (arXiv 1709.01507).

Every residual block re-scales the channels of its residual branch before the addition (Fig. 3 of the
paper): global average pooling (squeeze), FC to C/r, ReLU, FC back to C, sigmoid (excitation), channel-wise
product; r = 16 everywhere, as in all of the paper's models. The SE module is timm's `SEModule` (its FCs
are 1×1 convs with bias). The networks are this package's ResNets with SE added and nothing else changed:
- CIFAR `se_resnet20/56/110`: basic blocks with option-A shortcuts; `se_resnet164`: pre-activation
  bottlenecks (SE on the unit's last 1×1 output, before the addition). The paper's CIFAR experiments
  (TPAMI version) give no more detail than "SE blocks in the ResNet"; r = 16 on CIFAR's 16-channel
  stage leaves one hidden unit (C // r, at least 1). That is the count osmr/imgclsmob's SE-ResNet-20 has
  (their 274,847 = their ResNet-20 + the same 2,373 SE parameters); it is not confirmed by the paper.
- ImageNet `se_resnet50/101`: torchvision's ResNet (v1.5 layout by default, like timm's `seresnet50`,
  28,088,024 parameters; `layout="v1"` moves the stride to the first 1×1 as in the paper's models).
"""

from __future__ import annotations

from timm.layers import SEModule
from torch import Tensor, nn
from torchvision.models import resnet as tv

from baselines.resnet_cifar import BasicBlock, CifarResNet, PreActBottleneck, PreActCifarResNet
from baselines.resnet_imagenet import BottleneckV1, ImageNetResNet
from bench.registry import register

REDUCTION = 16


def se_module(channels: int, reduction: int = REDUCTION) -> SEModule:
    return SEModule(channels, rd_channels=max(1, channels // reduction))


class SEBasicBlock(BasicBlock):
    """CIFAR basic block; SE on the second conv's BN output, before the addition."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, reduction: int = REDUCTION):
        super().__init__(in_planes, planes, stride)
        self.se = se_module(planes, reduction)

    def forward(self, x: Tensor) -> Tensor:
        identity = self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class SEPreActBottleneck(PreActBottleneck):
    """Pre-activation bottleneck; SE on the last 1×1 conv's output, before the addition."""

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, layout: str = "v1", reduction: int = REDUCTION
    ):
        super().__init__(in_planes, planes, stride, layout)
        self.se = se_module(planes * self.expansion, reduction)

    def residual(self, preact: Tensor) -> Tensor:
        return self.se(super().residual(preact))


class SEBottleneck(tv.Bottleneck):
    """torchvision's bottleneck (v1.5); SE on bn3's output, before the addition."""

    reduction = REDUCTION  # a class attribute: torchvision's ResNet passes blocks positional arguments only

    def __init__(self, inplanes: int, planes: int, *args, **kwargs):
        super().__init__(inplanes, planes, *args, **kwargs)
        self.se = se_module(self.conv3.out_channels, self.reduction)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


class SEBottleneckV1(SEBottleneck, BottleneckV1):
    """The same with the stride on the first 1×1 (He et al.'s layout, the SE paper's ResNet-50)."""


def _se_cifar(depth: int):
    def builder(num_classes: int = 10, in_chans: int = 3, reduction: int = REDUCTION, **kwargs) -> nn.Module:
        if depth == 164:
            block_kwargs = {"layout": kwargs.pop("layout", "v1"), "reduction": reduction}
            model = PreActCifarResNet(
                SEPreActBottleneck, 18, num_classes, in_chans, block_kwargs=block_kwargs, **kwargs
            )
            model.bench_info = {"block": "pre-activation bottleneck + SE", "layout": block_kwargs["layout"]}
        else:
            if (depth - 2) % 6:
                raise ValueError(f"a basic-block CIFAR ResNet has depth 6n+2, not {depth}")
            block_kwargs = {"reduction": reduction}
            model = CifarResNet(
                SEBasicBlock, (depth - 2) // 6, num_classes, in_chans, block_kwargs=block_kwargs, **kwargs
            )
            model.bench_info = {"block": "basic + SE", "shortcut": "A (zero-pad)"}
        model.bench_info["se_reduction"] = reduction
        return model

    builder.__name__ = builder.__qualname__ = f"se_resnet{depth}"
    builder.__doc__ = f"CIFAR SE-ResNet-{depth}: ResNet-{depth} with an SE module (r = 16) in every block."
    return builder


def _se_imagenet(depth: int, layers: list[int]):
    def builder(
        num_classes: int = 1000, in_chans: int = 3, layout: str = "v1.5", reduction: int = REDUCTION, **kwargs
    ) -> ImageNetResNet:
        if layout not in ("v1", "v1.5"):
            raise ValueError(
                f"layout must be 'v1' or 'v1.5' (where the bottleneck stride goes), not {layout!r}"
            )
        block = SEBottleneckV1 if layout == "v1" else SEBottleneck
        if reduction != block.reduction:
            block = type(block.__name__, (block,), {"reduction": reduction})
        model = ImageNetResNet(block, layers, num_classes, in_chans, **kwargs)
        model.bench_info = {"definition": "torchvision + SE", "layout": layout, "se_reduction": reduction}
        return model

    builder.__name__ = builder.__qualname__ = f"se_resnet{depth}"
    builder.__doc__ = (
        f"ImageNet SE-ResNet-{depth}: torchvision's ResNet-{depth} with SE (r = 16) in every block."
    )
    return builder


for _depth in (20, 56, 110, 164):
    register(f"se_resnet{_depth}", _se_cifar(_depth))
register("se_resnet50", _se_imagenet(50, [3, 4, 6, 3]))
register("se_resnet101", _se_imagenet(101, [3, 4, 23, 3]))
