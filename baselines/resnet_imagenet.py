"""ImageNet ResNets of He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Table 1:
ResNet-18/34 (basic blocks) and ResNet-50/101 (bottleneck blocks), as torchvision defines them.

The blocks and the network are torchvision's (`torchvision.models.resnet`, v0.29), restated with slots
(`baselines.slots`): the same parameter names (conv1, bn1, layer1.0.conv1, ..., downsample.0/.1, fc),
so torchvision's weight files load, and the same construction and initialisation order (stem, then per
stage the downsample projection before the first block, then pooling and classifier, then one pass of
kaiming_normal_(fan_out, relu) over the convs and 1/0 over the norms), so a seeded model is
bit-identical to torchvision's. Beyond torchvision:
- the bottleneck layout. torchvision puts the stride of a down-sampling bottleneck on its 3×3 conv
  ("v1.5", from fb.resnet.torch; ResNet-50 4.089G MACs). The paper's Caffe models put it on the first
  1×1 ("v1"; 3.858G MACs, the "3.8×10⁹ FLOPs" of the paper's Table 1). `resnet50` / `resnet101` are
  v1.5, `resnet50_v1` / `resnet101_v1` are v1; parameters are identical. `bench_info["layout"]` records
  which; basic-block ResNets have no such choice ("basic").
- `in_chans`: a stem for other than 3 input channels.
- `widths`: the output widths of the stem and the four stages (`planes` of torchvision, default
  64/128/256/512), for ResNet-Wider, which scales every layer.
- `replace_stride_with_dilation` as torchvision's (PSPNet's output stride 8), `stage_outputs(x)` (the
  four stages' features) and `features_only=True` (forward returns them: a segmentation backbone).
The names `resnet18/34/50/101` are also timm model names; `timm.create_model` keeps giving timm's own.
"""

from __future__ import annotations

from torch import Tensor, nn

from baselines.resnet_cifar import sparse_basic
from baselines.skeleton import ResNetSkeleton
from baselines.slots import GateSlot, apply_mask, fold_projection, replay_init_draw
from bench import sparse
from bench.registry import register_model

TORCHVISION_WIDTHS = (64, 128, 256, 512)
LAYOUTS = ("v1", "v1.5")


def conv3x3(
    in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1
) -> nn.Conv2d:
    return nn.Conv2d(
        in_planes, out_planes, 3, stride, padding=dilation, groups=groups, bias=False, dilation=dilation
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class TorchvisionBlock(GateSlot, nn.Module):
    """What torchvision's two blocks share: the constructor (torchvision's arguments, then `layout` and the
    slots), the projection shortcut `downsample` (or None), the slots `attn_layer` (after the last norm,
    before the addition) and `gate_layer`, and the sparse parameters. A block builds its convs and norms,
    in torchvision's order, in `make_branch`. torchvision's `groups` and `base_width` (ResNeXt, Wide
    ResNet) are left out: no model here uses them."""

    expansion: int
    convs: tuple[str, ...]

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
        norm_layer=nn.BatchNorm2d,
        layout: str = "v1.5",
        attn_layer=None,
        gate_layer=None,
    ):
        super().__init__()
        self.make_branch(inplanes, planes, stride, dilation, norm_layer, layout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.attn = attn_layer(planes * self.expansion) if attn_layer is not None else nn.Identity()
        self.init_gate(gate_layer)

    def make_branch(self, inplanes: int, planes: int, stride: int, dilation: int, norm_layer, layout: str):
        raise NotImplementedError

    def shortcut(self, x: Tensor) -> Tensor:
        return x if self.downsample is None else self.downsample(x)

    def sparse_parameters(self) -> dict:
        folded = sparse.fold_block(self, len(self.convs))
        folded["shortcut"] = fold_projection(self.downsample)
        return folded


class BasicBlock(TorchvisionBlock):
    """torchvision's basic block (ResNet-18/34): conv1-bn1-ReLU, conv2-bn2, `attn`, + downsample, ReLU;
    `gate_layer` masks at "conv1", "conv2" or "branch". `layout` does not apply."""

    expansion = 1
    convs = ("conv1", "conv2")

    def make_branch(self, inplanes: int, planes: int, stride: int, dilation: int, norm_layer, layout: str):
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)

    def forward(self, x: Tensor) -> Tensor:
        masks, identity = self.masks_and_identity(x, self.shortcut)
        out = apply_mask(self.relu(self.bn1(self.conv1(x))), masks, "conv1")
        out = apply_mask(self.attn(self.bn2(self.conv2(out))), masks, "conv2")
        return self.relu(apply_mask(out, masks, "branch") + identity)

    def forward_sparse(self, x: Tensor, folded: dict) -> Tensor:
        return sparse_basic(self, x, self.downsample, folded)


class Bottleneck(TorchvisionBlock):
    """torchvision's bottleneck: conv1 (1×1), conv2 (3×3), conv3 (1×1, ×4), each with its norm; `layout`
    "v1.5" (torchvision) strides the 3×3, "v1" (He et al.) the first 1×1. `attn` after bn3, before the
    addition; `gate_layer` masks at "conv1", "conv2", "conv3" or "branch"."""

    expansion = 4
    convs = ("conv1", "conv2", "conv3")

    def make_branch(self, inplanes: int, planes: int, stride: int, dilation: int, norm_layer, layout: str):
        if layout not in LAYOUTS:
            raise ValueError(
                f"layout must be one of {LAYOUTS} (where the bottleneck stride goes), not {layout!r}"
            )
        v1 = layout == "v1" and stride != 1
        self.conv1 = conv1x1(inplanes, planes, stride if v1 else 1)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, 1 if v1 else stride, dilation=dilation)
        self.bn2 = norm_layer(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        if v1:  # the first version built torchvision's block, then replaced conv1 by a strided one
            replay_init_draw(self.conv1)

    def forward(self, x: Tensor) -> Tensor:
        masks, identity = self.masks_and_identity(x, self.shortcut)
        out = apply_mask(self.relu(self.bn1(self.conv1(x))), masks, "conv1")
        out = apply_mask(self.relu(self.bn2(self.conv2(out))), masks, "conv2")
        out = apply_mask(self.attn(self.bn3(self.conv3(out))), masks, "conv3")
        return self.relu(apply_mask(out, masks, "branch") + identity)

    def forward_sparse(self, x: Tensor, folded: dict) -> Tensor:
        """One sample, only the open channels (BN folded into each conv)."""
        is_open, idx = self.sparse_indices(x)
        shortcut = folded["shortcut"]
        identity = x if shortcut is None else sparse.conv(shortcut, x)
        if not is_open:
            return self.relu(identity)
        out = self.relu(sparse.conv(folded["conv1"], x, idx["conv1"]))
        out = self.relu(sparse.conv(folded["conv2"], out, idx["conv2"], idx["conv1"]))
        out = sparse.conv(folded["conv3"], out, idx["conv3"], idx["conv2"])
        return self.relu(sparse.scatter_add(identity, idx["conv3"], out))


class ImageNetResNet(ResNetSkeleton):
    """torchvision's ResNet with `in_chans`, per-stage `widths` (stem width = `widths[0]`) and
    `block_kwargs` for every block (`layout`, the slots)."""

    def __init__(
        self,
        block: type[nn.Module],
        layers: list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: tuple[int, int, int, int] = TORCHVISION_WIDTHS,
        replace_stride_with_dilation: list[bool] | None = None,
        block_kwargs: dict | None = None,
        features_only: bool = False,
    ):
        super().__init__()
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = widths[0]
        self.dilation = 1
        replace_stride_with_dilation = replace_stride_with_dilation or [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError("replace_stride_with_dilation should be None or a 3-element list")
        self.block_kwargs = dict(block_kwargs or {})
        self.features_only = features_only
        self.conv1 = nn.Conv2d(in_chans, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2, replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2, replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, widths[3], layers[3], 2, replace_stride_with_dilation[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        self.stem_attn = nn.Identity()  # a slot after the stem's BN (CE fills it)

    def _make_layer(
        self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False
    ) -> nn.Sequential:
        norm_layer = self._norm_layer
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), norm_layer(planes * block.expansion)
            )
        kw = {"norm_layer": norm_layer, **self.block_kwargs}
        layers = [block(self.inplanes, planes, stride, downsample, dilation=previous_dilation, **kw)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, dilation=self.dilation, **kw))
        return nn.Sequential(*layers)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.stem_attn(self.bn1(self.conv1(x)))))


def block_for(kind: str) -> type[nn.Module]:
    return BasicBlock if kind == "basic" else Bottleneck


ARCHS = {  # depth -> block kind, blocks per stage (He et al. Table 1)
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
}


def imagenet_resnet(
    depth: int,
    num_classes: int = 1000,
    in_chans: int = 3,
    layout: str = "v1.5",
    block_kwargs: dict | None = None,
    **kwargs,
) -> ImageNetResNet:
    """The ImageNet ResNet of `depth` (`layout` for bottlenecks; `kwargs` go to `ImageNetResNet`)."""
    kind, layers = ARCHS[depth]
    if layout not in LAYOUTS:
        raise ValueError(
            f"layout must be one of {LAYOUTS} (where the bottleneck stride goes), not {layout!r}"
        )
    block_kwargs = dict(block_kwargs or {})
    if kind == "bottleneck":
        block_kwargs["layout"] = layout
    model = ImageNetResNet(
        block_for(kind), layers, num_classes, in_chans, block_kwargs=block_kwargs, **kwargs
    )
    model.bench_info = {"definition": "torchvision", "layout": "basic" if kind == "basic" else layout}
    return model


LAYOUT_DEFAULTS = {"v1": {"layout": "v1"}}  # registry defaults of the builders named `*_v1`


@register_model
def resnet18(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ImageNetResNet:
    """ImageNet ResNet-18 (torchvision's definition)."""
    return imagenet_resnet(18, num_classes, in_chans, **kwargs)


@register_model
def resnet34(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ImageNetResNet:
    """ImageNet ResNet-34 (torchvision's definition)."""
    return imagenet_resnet(34, num_classes, in_chans, **kwargs)


@register_model
def resnet50(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ImageNetResNet:
    """ImageNet ResNet-50 (torchvision's definition); `layout` v1 or v1.5."""
    return imagenet_resnet(50, num_classes, in_chans, **kwargs)


@register_model
def resnet101(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ImageNetResNet:
    """ImageNet ResNet-101 (torchvision's definition); `layout` v1 or v1.5."""
    return imagenet_resnet(101, num_classes, in_chans, **kwargs)


@register_model(**LAYOUT_DEFAULTS["v1"])
def resnet50_v1(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ImageNetResNet:
    """ImageNet ResNet-50 with the stride on the first 1×1 of a bottleneck (He et al.'s layout)."""
    return imagenet_resnet(50, num_classes, in_chans, **kwargs)


@register_model(**LAYOUT_DEFAULTS["v1"])
def resnet101_v1(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ImageNetResNet:
    """ImageNet ResNet-101 with the stride on the first 1×1 of a bottleneck (He et al.'s layout)."""
    return imagenet_resnet(101, num_classes, in_chans, **kwargs)
