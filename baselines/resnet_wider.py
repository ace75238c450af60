"""ResNet-Wider: the parameter-matched control of GaterNet (Chen, Li, Bengio, Si, CVPR 2019, arXiv 1811.11205).

GaterNet adds a whole gater network to its backbone, so the paper compares it with a ResNet of the same
depth whose layers all have more filters, until it has about as many parameters as backbone + gater.
Here every stage width (and the stem, which has the first stage's width) is scaled by one multiplier
m: w → round(m · w). The builder searches m for the network whose parameter count is closest to
`target_params`. Widths are integers, so the counts come in steps (about 2/w₀ of the count per step of
the widest width w₀, ≈1 % for ResNet-56-wider) and the count reached can miss the target by half a step.
`bench_info` records the target, where it came from, the count reached, the multiplier and the widths.

Not confirmed by the paper (which is not readable here): its multipliers, and the exact target. The
default target is GaterNet's size on the same backbone, as `methods.gaternet` builds it with its defaults
(those of the authors' released code): the backbone's own parameters plus a gater made of a ResNet-20
trunk without classifier (269,072 parameters) and two FC layers with bias, 64 → b → c_gated, with b = 8
and c_gated = the output filters of the last conv of every residual block. For ResNet-20 at 10 classes
this is 269,722 + 272,616 = 542,338, the parameter count of `gaternet_resnet20`, and so for every CIFAR
base, class count and input-channel count (tests/test_resnet_wider.py checks they agree). ImageNet bases
take `target_params`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache, partial

import torch
from torch import nn

from baselines.resnet_cifar import CifarResNet, cifar_resnet
from baselines.resnet_imagenet import ARCHS, TORCHVISION_WIDTHS, ImageNetResNet, imagenet_resnet
from bench.registry import register_model

CIFAR_WIDTHS = (16, 32, 64)
GATER_TRUNK_PARAMS = (
    269_072  # CIFAR ResNet-20 without its classifier, 3 input channels (its 3×3 stem: 16·9 a channel)
)
GATER_BOTTLENECK = 8  # b of the official code


def gaternet_gater_params(gated_filters: int, b: int = GATER_BOTTLENECK, in_chans: int = 3) -> int:
    """Parameters of a GaterNet gater: ResNet-20 trunk + FC(64, b) + FC(b, gated_filters)."""
    return GATER_TRUNK_PARAMS - (3 - in_chans) * 16 * 9 + (64 + 1) * b + (b + 1) * gated_filters


def gated_filters(model: nn.Module) -> int:
    """The filters GaterNet gates by default: those of the last conv of every residual block."""
    return sum(getattr(m, m.convs[-1]).out_channels for m in model.modules() if hasattr(m, "convs"))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def base_network(
    depth: int, num_classes: int, in_chans: int, **kwargs
) -> tuple[Callable, tuple[int, ...], dict]:
    """A function widths -> network for the ResNet of `depth`, its usual widths, and facts for bench_info."""
    if depth in ARCHS:
        make, base_widths = (
            partial(imagenet_resnet, depth, num_classes, in_chans, **kwargs),
            TORCHVISION_WIDTHS,
        )
    elif depth == 164 or (depth > 2 and (depth - 2) % 6 == 0):
        make, base_widths = partial(cifar_resnet, depth, num_classes, in_chans, **kwargs), CIFAR_WIDTHS
    else:
        raise ValueError(
            f"no ResNet-Wider for depth {depth}: use a CIFAR resnet<6n+2>, resnet164 or resnet18/34/50/101"
        )
    with torch.device("meta"):  # the builder's facts (block, layout); shapes only, no RNG drawn
        info = make(widths=base_widths).bench_info
    return lambda w: make(widths=w), base_widths, info


def scaled_widths(base_widths: tuple[int, ...], multiplier: float) -> tuple[int, ...]:
    return tuple(max(1, round(w * multiplier)) for w in base_widths)


def multiplier_for(make: Callable, base_widths: tuple[int, ...], target_params: int) -> float:
    """The width multiplier whose network's parameter count is closest to `target_params`.

    A width round(m·w) changes only where m·w crosses a half-integer, so (the base widths dividing the
    widest one, w₀) every distinct network is reached by an m = (t + ½) / (2·w₀) for an integer t,
    a point where no width is a tie. Parameters grow with t: bracket the target near the m² guess,
    then bisect.
    """
    steps = 2 * max(base_widths)

    @cache
    def params(t: int) -> int:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            return n_params(make(scaled_widths(base_widths, (t + 0.5) / steps)))

    base = params(steps)  # m just above 1: the base network itself
    if base > target_params:
        raise ValueError(
            f"target_params={target_params:,} is below the unwidened network's {base:,} parameters; "
            "ResNet-Wider only widens"
        )
    guess = int(steps * math.sqrt(target_params / base))  # parameters grow about as m²
    lo, hi = max(steps, guess - 4), guess + 4
    while lo > steps and params(lo) >= target_params:  # bracket the target ...
        lo = max(steps, 2 * lo - hi)
    while params(hi) < target_params:
        hi = 2 * hi - lo
    while hi - lo > 1:  # ... then bisect
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if params(mid) < target_params else (lo, mid)
    best = min((lo, hi), key=lambda t: abs(params(t) - target_params))
    return (best + 0.5) / steps


def wider_resnet(
    depth: int, num_classes: int = 10, in_chans: int = 3, target_params: int | None = None, **kwargs
) -> CifarResNet | ImageNetResNet:
    """The ResNet of `depth` (`base_network`) with every layer widened by one multiplier to about
    `target_params` parameters.

    `target_params=None` uses the GaterNet estimate of this module's docstring (CIFAR bases only).
    """
    base = f"resnet{depth}"
    make, base_widths, info = base_network(depth, num_classes, in_chans, **kwargs)
    if target_params is None:
        if base_widths != CIFAR_WIDTHS:
            raise ValueError(
                f"{base}_wider needs target_params: there is no GaterNet size estimate for ImageNet"
            )
        with torch.device("meta"):
            backbone = make(base_widths)
        gater = gaternet_gater_params(gated_filters(backbone), in_chans=in_chans)
        target_params, source = n_params(backbone) + gater, f"GaterNet estimate: backbone + gater ({gater:,})"
    else:
        source = "given"
    multiplier = multiplier_for(make, base_widths, target_params)
    widths = scaled_widths(base_widths, multiplier)
    model = make(widths)
    facts = {"target_params": int(target_params), "target_source": source, "params": n_params(model)}
    return model.describe(base=base, **info, **facts, width_multiplier=multiplier, widths=list(widths))


@register_model
def resnet20_wider(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """resnet20 widened to `target_params` (default: the GaterNet-resnet20 size estimate)."""
    return wider_resnet(20, num_classes, in_chans, **kwargs)


@register_model
def resnet56_wider(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """resnet56 widened to `target_params` (default: the GaterNet-resnet56 size estimate)."""
    return wider_resnet(56, num_classes, in_chans, **kwargs)


@register_model
def resnet110_wider(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """resnet110 widened to `target_params` (default: the GaterNet-resnet110 size estimate)."""
    return wider_resnet(110, num_classes, in_chans, **kwargs)


@register_model
def resnet164_wider(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """resnet164 widened to `target_params` (default: the GaterNet-resnet164 size estimate)."""
    return wider_resnet(164, num_classes, in_chans, **kwargs)
