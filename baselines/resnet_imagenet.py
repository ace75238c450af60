"""ImageNet ResNets of He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Table 1:
ResNet-18/34 (basic blocks) and ResNet-50/101 (bottleneck blocks), as torchvision defines them.

The networks are torchvision's own `ResNet`, `BasicBlock` and `Bottleneck`; this module adds only what
the benchmark needs around them:
- the bottleneck layout. torchvision puts the stride of a down-sampling bottleneck on its 3×3 conv
  ("v1.5", from fb.resnet.torch; ResNet-50 4.089G MACs). The paper's Caffe models put it on the first
  1×1 ("v1"; 3.858G MACs, the "3.8×10⁹ FLOPs" of the paper's Table 1). `resnet50` / `resnet101` are
  v1.5, `resnet50_v1` / `resnet101_v1` are v1; parameters are identical. `bench_info["layout"]` records
  which; basic-block ResNets have no such choice ("basic").
- `in_chans`: a stem for other than 3 input channels.
- `widths`: the output widths of the stem and the four stages (`planes` of torchvision, default
  64/128/256/512), for ResNet-Wider, which scales every layer.
The names `resnet18/34/50/101` are also timm model names; `timm.create_model` keeps giving timm's own.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet as tv

from bench.registry import register

TORCHVISION_WIDTHS = (64, 128, 256, 512)
LAYOUTS = ("v1", "v1.5")


class BottleneckV1(tv.Bottleneck):
    """torchvision's bottleneck with the stride moved from the 3×3 to the first 1×1 (He et al.'s layout)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *args, **kwargs):
        super().__init__(inplanes, planes, stride, *args, **kwargs)
        if stride != 1:
            self.conv1 = tv.conv1x1(inplanes, self.conv1.out_channels, stride)
            self.conv2.stride = (1, 1)


class ImageNetResNet(tv.ResNet):
    """torchvision's ResNet with `in_chans` and per-stage `widths` (stem width = `widths[0]`)."""

    def __init__(
        self,
        block: type[nn.Module],
        layers: list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: tuple[int, int, int, int] = TORCHVISION_WIDTHS,
        **kwargs,
    ):
        # torchvision hard-codes the widths; `_make_layer` below maps each of its `planes` to ours.
        self._widths = dict(zip(TORCHVISION_WIDTHS, widths, strict=True))
        self._stem_width = widths[0]
        super().__init__(block, layers, num_classes, **kwargs)
        if in_chans != 3 or widths[0] != TORCHVISION_WIDTHS[0]:
            self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = self._norm_layer(widths[0])
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        if self.fc.in_features != self.inplanes:
            self.fc = nn.Linear(self.inplanes, num_classes)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False):
        if self._stem_width is not None:  # first stage: its input is the (re-sized) stem
            self.inplanes, self._stem_width = self._stem_width, None
        return super()._make_layer(block, self._widths[planes], blocks, stride, dilate)

    def forward_features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def block_for(block: str, layout: str) -> type[nn.Module]:
    if layout not in LAYOUTS:
        raise ValueError(
            f"layout must be one of {LAYOUTS} (where the bottleneck stride goes), not {layout!r}"
        )
    if block == "basic":
        return tv.BasicBlock
    return BottleneckV1 if layout == "v1" else tv.Bottleneck


ARCHS = {  # depth -> block kind, blocks per stage (He et al. Table 1)
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
}


def _imagenet_resnet(depth: int):
    kind, layers = ARCHS[depth]

    def builder(num_classes: int = 1000, in_chans: int = 3, layout: str = "v1.5", **kwargs) -> ImageNetResNet:
        model = ImageNetResNet(block_for(kind, layout), layers, num_classes, in_chans, **kwargs)
        model.bench_info = {"definition": "torchvision", "layout": "basic" if kind == "basic" else layout}
        return model

    builder.__name__ = builder.__qualname__ = f"resnet{depth}"
    builder.__doc__ = (
        f"ImageNet ResNet-{depth} (torchvision's definition); `layout` for bottlenecks: v1 or v1.5."
    )
    return builder


for _depth in ARCHS:
    register(f"resnet{_depth}", _imagenet_resnet(_depth))
register("resnet50_v1", _imagenet_resnet(50), layout="v1")
register("resnet101_v1", _imagenet_resnet(101), layout="v1")
