"""CIFAR ResNets of He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §4.2, and the
pre-activation bottleneck ResNet-164 of He et al., "Identity Mappings in Deep Residual Networks",
ECCV 2016 (arXiv 1603.05027).

ResNet-20/32/44/56/110: a 3×3 stem conv with 16 filters, then three stages of n basic blocks with 16, 32
and 64 filters (feature maps 32, 16, 8), global average pooling and a linear classifier: 6n + 2 layers.
Shortcuts are option A of the paper: identity, with stride-2 subsampling and zero-padding of the new
channels when the shape changes, so the shortcuts add no parameters (ResNet-20: 0.27M parameters).

ResNet-164 (9n + 2 layers, n = 18): the same stem and stages, but pre-activation bottleneck units
(BN-ReLU-1×1, BN-ReLU-3×3, BN-ReLU-1×1 with 4× expansion, so stage outputs are 64, 128 and 256) and
a final BN-ReLU before the pooling (1.70M parameters). This is the ResNet-164 GaterNet uses as a
backbone. Where the paper text is silent it follows the Torch re-implementation the authors released
(KaimingHe/resnet-1k-layers, `resnet-pre-act.lua`; the paper's runs used Caffe):
- the stem conv has no BN-ReLU of its own; the first unit's BN-ReLU pre-activates it;
- the unit that changes the shape has a 1×1 projection shortcut (no BN) that, like the residual branch,
  takes the pre-activated input;
- that unit's stride sits on its first 1×1 conv (`layout="v1"`, 244.50M MACs). Most PyTorch ports
  (bearpaw/pytorch-classification, osmr/imgclsmob) put it on the 3×3 instead, as fb.resnet.torch and
  torchvision do for ImageNet ("v1.5"); `layout="v1.5"` builds that variant (247.65M MACs, same
  parameters). The model's `bench_info` records which.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from bench.registry import register


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by `stride` and zero-pad the extra channels (no parameters)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra = out_planes - in_planes

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_planes != planes:
            self.shortcut = ZeroPadShortcut(in_planes, planes, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        identity = self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


LAYOUTS = ("v1", "v1.5")  # bottleneck stride on the first 1×1 (He et al.'s code) or on the 3×3


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck unit of He et al. 2016b (Fig. 1b / Fig. 5): the residual branch is
    BN-ReLU-conv1 (1×1), BN-ReLU-conv2 (3×3), BN-ReLU-conv3 (1×1, ×4 channels); nothing after the addition.

    `planes` is the bottleneck width; the unit outputs `planes * 4` channels. `layout` says which conv of
    a strided unit carries the stride ("v1": conv1, the authors' code; "v1.5": conv2). When the shape changes,
    `shortcut` is a 1×1 projection applied to the pre-activated input (as in the authors' code);
    otherwise it is None and the input itself is added.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, layout: str = "v1"):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS} (where the stride goes), not {layout!r}")
        out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, planes, stride if layout == "v1" else 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, 1 if layout == "v1" else stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (
            conv1x1(in_planes, out_planes, stride) if stride != 1 or in_planes != out_planes else None
        )

    def residual(self, preact: Tensor) -> Tensor:
        """The branch after the first BN-ReLU: conv1, BN-ReLU, conv2, BN-ReLU, conv3."""
        out = self.conv1(preact)
        out = self.conv2(self.relu(self.bn2(out)))
        return self.conv3(self.relu(self.bn3(out)))

    def forward(self, x: Tensor) -> Tensor:
        preact = self.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(preact)
        return self.residual(preact) + identity


def make_stages(
    block: type[nn.Module], depth_per_stage: int, in_planes: int, widths: tuple[int, ...], **block_kwargs
) -> tuple[list[nn.Sequential], int]:
    """`len(widths)` stages of `depth_per_stage` blocks; every stage after the first halves the map.

    Returns the stages and the number of output channels of the last one.
    """
    stages = []
    for i, width in enumerate(widths):
        blocks = []
        for j in range(depth_per_stage):
            stride = 2 if i > 0 and j == 0 else 1
            blocks.append(block(in_planes, width, stride, **block_kwargs))
            in_planes = width * getattr(block, "expansion", 1)
        stages.append(nn.Sequential(*blocks))
    return stages, in_planes


def init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):  # He et al. 2015 initialisation, as the paper states
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class CifarResNet(nn.Module):
    """Stem, three stages of `depth_per_stage` blocks at widths `widths`, pooling, classifier.

    `block_kwargs` go to every block (e.g. SE's reduction, a gate's width).
    """

    def __init__(
        self,
        block: type[nn.Module],
        depth_per_stage: int,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        block_kwargs: dict | None = None,
    ):
        super().__init__()
        self.conv1 = conv3x3(in_chans, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, in_planes = make_stages(block, depth_per_stage, widths[0], widths, **(block_kwargs or {}))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.forward_features(x)).flatten(1)
        return self.fc(x)


class PreActCifarResNet(nn.Module):
    """He et al. 2016b: stem conv (no BN-ReLU), three stages of pre-activation units, BN-ReLU, pooling,
    classifier. `widths` are the bottleneck widths; stage outputs are `widths * block.expansion`.
    """

    def __init__(
        self,
        block: type[nn.Module],
        depth_per_stage: int,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        block_kwargs: dict | None = None,
    ):
        super().__init__()
        self.conv1 = conv3x3(in_chans, widths[0])
        stages, in_planes = make_stages(block, depth_per_stage, widths[0], widths, **(block_kwargs or {}))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(in_planes)  # the final BN-ReLU that pre-activation units leave out
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)
        nn.init.zeros_(self.fc.bias)  # as the authors' code does

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.relu(self.bn(x))

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.forward_features(x)).flatten(1)
        return self.fc(x)


def _cifar_resnet(depth: int):
    if (depth - 2) % 6:
        raise ValueError(f"a basic-block CIFAR ResNet has depth 6n+2, not {depth}")

    def builder(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
        model = CifarResNet(BasicBlock, (depth - 2) // 6, num_classes, in_chans, **kwargs)
        model.bench_info = {"block": "basic", "shortcut": "A (zero-pad)"}
        return model

    builder.__name__ = builder.__qualname__ = f"resnet{depth}"
    builder.__doc__ = f"CIFAR ResNet-{depth}: basic blocks, {(depth - 2) // 6} per stage, option-A shortcuts."
    return builder


def resnet164(num_classes: int = 10, in_chans: int = 3, layout: str = "v1", **kwargs) -> PreActCifarResNet:
    """Pre-activation CIFAR ResNet-164 (He et al. 2016b): bottleneck units, 18 per stage."""
    block_kwargs = {"layout": layout, **kwargs.pop("block_kwargs", {})}
    model = PreActCifarResNet(
        PreActBottleneck, 18, num_classes, in_chans, block_kwargs=block_kwargs, **kwargs
    )
    model.bench_info = {
        "block": "pre-activation bottleneck",
        "layout": layout,
        "shortcut": "B (1x1 projection)",
    }
    return model


for _depth in (20, 32, 44, 56, 110):
    register(f"resnet{_depth}", _cifar_resnet(_depth))
register("resnet164", resnet164)
