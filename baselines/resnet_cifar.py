"""CIFAR ResNets of He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §4.2.

The network is a 3×3 stem conv with 16 filters, then three stages of n basic blocks with 16, 32 and 64
filters (feature maps 32, 16, 8), global average pooling and a linear classifier: 6n + 2 layers.
Shortcuts are option A of the paper: identity, with stride-2 subsampling and zero-padding of the new
channels when the shape changes, so the shortcuts add no parameters (ResNet-20: 0.27M parameters).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from bench.registry import register


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


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


class CifarResNet(nn.Module):
    """Stem, three stages of `depth_per_stage` blocks at widths `widths`, pooling, classifier."""

    def __init__(
        self,
        block: type[nn.Module],
        depth_per_stage: int,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
    ):
        super().__init__()
        self.conv1 = conv3x3(in_chans, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        in_planes = widths[0]
        stages = []
        for i, width in enumerate(widths):
            blocks = []
            for j in range(depth_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(in_planes, width, stride))
                in_planes = width * getattr(block, "expansion", 1)
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He et al. 2015 initialisation, as the paper states
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.forward_features(x)).flatten(1)
        return self.fc(x)


def _cifar_resnet(depth: int):
    if (depth - 2) % 6:
        raise ValueError(f"a basic-block CIFAR ResNet has depth 6n+2, not {depth}")

    def builder(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
        return CifarResNet(BasicBlock, (depth - 2) // 6, num_classes, in_chans, **kwargs)

    builder.__name__ = builder.__qualname__ = f"resnet{depth}"
    builder.__doc__ = f"CIFAR ResNet-{depth}: basic blocks, {(depth - 2) // 6} per stage, option-A shortcuts."
    return builder


for _depth in (20, 32, 44, 56, 110):
    register(f"resnet{_depth}", _cifar_resnet(_depth))
