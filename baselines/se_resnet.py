"""SE-ResNets of Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018 / TPAMI (arXiv 1709.01507).

Every residual block re-scales the channels of its residual branch before the addition (Fig. 3 of the
paper): global average pooling (squeeze), FC to C/r, ReLU, FC back to C, sigmoid (excitation), channel-wise
product; r = 16 everywhere, as in all of the paper's models. The SE module is timm's `SEModule` (its FCs
are 1×1 convs with bias). The networks are this package's ResNets with SE in the blocks' `attn` slot and nothing else changed:
- CIFAR `se_resnet20/56/110`: basic blocks with option-A shortcuts; `se_resnet164`: pre-activation
  bottlenecks (SE on the unit's last 1×1 output, before the addition). The paper's CIFAR experiments
  (TPAMI version) give no more detail than "SE blocks in the ResNet"; r = 16 on CIFAR's 16-channel
  stage leaves one hidden unit (C // r, at least 1). That is the count osmr/imgclsmob's SE-ResNet-20 has
  (their 274,847 = their ResNet-20 + the same 2,373 SE parameters); it is not confirmed by the paper.
- ImageNet `se_resnet50/101`: torchvision's ResNet (v1.5 layout by default, like timm's `seresnet50`,
  28,088,024 parameters; `layout="v1"` moves the stride to the first 1×1 as in the paper's models).
- ImageNet `se_resnet18`: torchvision's ResNet-18 with SE after bn2 of each basic block (the SE paper
  has no ResNet-18; the CE paper's table compares BN, SE and CE on it), 11,778,592 parameters: C/16
  hidden units as in every other SE model here (timm's `seresnet18` rounds 64/16 up to 8: +1,032).
"""

from __future__ import annotations

from functools import partial

from timm.layers import SEModule

from baselines.resnet_cifar import CifarResNet, PreActCifarResNet, cifar_resnet
from baselines.resnet_imagenet import ImageNetResNet, imagenet_resnet
from bench.registry import register_model

REDUCTION = 16


def se_module(channels: int, reduction: int = REDUCTION) -> SEModule:
    return SEModule(channels, rd_channels=max(1, channels // reduction))


def se_imagenet_resnet(
    depth: int,
    num_classes: int = 1000,
    in_chans: int = 3,
    layout: str = "v1.5",
    reduction: int = REDUCTION,
    **kwargs,
) -> ImageNetResNet:
    """torchvision's ResNet of `depth` with SE in every block."""
    block_kwargs = {"attn_layer": partial(se_module, reduction=reduction)}
    model = imagenet_resnet(depth, num_classes, in_chans, layout, block_kwargs, **kwargs)
    layout = model.bench_info["layout"]  # "basic" for ResNet-18/34
    model.bench_info = {"definition": "torchvision + SE", "layout": layout, "se_reduction": reduction}
    return model


def se_cifar_resnet(
    depth: int, num_classes: int = 10, in_chans: int = 3, reduction: int = REDUCTION, **kwargs
) -> CifarResNet:
    """A CIFAR ResNet of `depth` (6n + 2 basic blocks, or 164: pre-activation bottlenecks) with SE."""
    block_kwargs = {"attn_layer": partial(se_module, reduction=reduction)}
    model = cifar_resnet(depth, num_classes, in_chans, block_kwargs=block_kwargs, **kwargs)
    return model.describe(block=model.bench_info["block"] + " + SE", se_reduction=reduction)


@register_model
def se_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """CIFAR SE-ResNet-20: ResNet-20 with an SE module (r = 16) in every block."""
    return se_cifar_resnet(20, num_classes, in_chans, **kwargs)


@register_model
def se_resnet56(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """CIFAR SE-ResNet-56: ResNet-56 with an SE module (r = 16) in every block."""
    return se_cifar_resnet(56, num_classes, in_chans, **kwargs)


@register_model
def se_resnet110(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """CIFAR SE-ResNet-110: ResNet-110 with an SE module (r = 16) in every block."""
    return se_cifar_resnet(110, num_classes, in_chans, **kwargs)


@register_model
def se_resnet164(num_classes: int = 10, in_chans: int = 3, **kwargs) -> PreActCifarResNet:
    """CIFAR SE-ResNet-164: the pre-activation ResNet-164 with SE (r = 16) on every unit's conv3 output."""
    return se_cifar_resnet(164, num_classes, in_chans, **kwargs)


@register_model
def se_resnet18(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ImageNetResNet:
    """ImageNet SE-ResNet-18: torchvision's ResNet-18 with SE (r = 16) in every basic block (after bn2)."""
    return se_imagenet_resnet(18, num_classes, in_chans, **kwargs)


@register_model
def se_resnet50(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ImageNetResNet:
    """ImageNet SE-ResNet-50: torchvision's ResNet-50 with SE (r = 16) in every block."""
    return se_imagenet_resnet(50, num_classes, in_chans, **kwargs)


@register_model
def se_resnet101(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ImageNetResNet:
    """ImageNet SE-ResNet-101: torchvision's ResNet-101 with SE (r = 16) in every block."""
    return se_imagenet_resnet(101, num_classes, in_chans, **kwargs)
