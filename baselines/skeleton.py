"""What the CIFAR and ImageNet skeletons share: a ResNet is stem -> stages -> head.

torchvision's `ResNet._forward_impl` in three parts, so that sparse paths (`bench.sparse`) and
segmentation backbones (`baselines.pspnet`) run the parts instead of probing attributes:

    forward(x) = forward_head(forward_stages(forward_stem(x)))

A network defines `forward_stem` and `stages()` (its `layer1..N`); the head is global average pooling
and the classifier `fc` unless the network says otherwise (the pre-activation ResNet's final BN-ReLU).
"""

from __future__ import annotations

from typing import Self

from torch import Tensor, nn


class Described:
    """`describe(**facts)`: what every network of this package has for the record (mixed into nn.Module)."""

    def describe(self, **facts) -> Self:
        """Add `facts` to `bench_info` (what a record keeps about this network); returns the network."""
        self.bench_info = {**getattr(self, "bench_info", {}), **facts}
        return self


class ResNetSkeleton(Described, nn.Module):
    """Stem, stages, head. `features_only = True`: forward returns every stage's output instead (a
    segmentation backbone)."""

    features_only = False

    def stages(self) -> list[nn.Sequential]:
        raise NotImplementedError

    def forward_stem(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_stages(self, x: Tensor) -> Tensor:
        for stage in self.stages():
            x = stage(x)
        return x

    def stage_outputs(self, x: Tensor) -> list[Tensor]:
        """The output of every stage, after the stem."""
        outs = []
        x = self.forward_stem(x)
        for stage in self.stages():
            x = stage(x)
            outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        """The feature map the head pools."""
        return self.forward_stages(self.forward_stem(x))

    def forward_head(self, x: Tensor) -> Tensor:
        return self.fc(self.avgpool(x).flatten(1))

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        if self.features_only:
            return self.stage_outputs(x)
        return self.forward_head(self.forward_stages(self.forward_stem(x)))
