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

from baselines.skeleton import ResNetSkeleton
from baselines.slots import GateSlot, apply_mask, fold_projection
from bench import sparse
from bench.registry import register_model


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


SHORTCUTS = ("A", "B")  # where the shape changes: zero-pad (no parameters) or 1×1 conv + norm


class BasicBlock(GateSlot, nn.Module):
    """He et al.'s basic block: conv1-BN-ReLU, conv2-BN, `attn`, + shortcut, ReLU.

    Slots (`baselines.slots`): `conv_layer` (the two 3×3 convs), `norm_layer`, `attn_layer` (after bn2,
    before the addition), `gate_layer` (masks at "conv1", "conv2" or "branch"). `shortcut` is the
    option used where the shape changes: "A" zero-pads, "B" projects with a 1×1 conv + norm.
    """

    expansion = 1
    convs = ("conv1", "conv2")

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        shortcut: str = "A",
        conv_layer=conv3x3,
        norm_layer=nn.BatchNorm2d,
        attn_layer=None,
        gate_layer=None,
    ):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, not {shortcut!r}")
        self.conv1 = conv_layer(in_planes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv_layer(planes, planes, 1)
        self.bn2 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        if stride == 1 and in_planes == planes:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(in_planes, planes, stride)
        else:
            self.shortcut = nn.Sequential(conv1x1(in_planes, planes, stride), norm_layer(planes))
        self.attn = attn_layer(planes) if attn_layer is not None else nn.Identity()
        self.init_gate(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        masks, identity = self.masks_and_identity(x, self.shortcut)
        out = apply_mask(self.relu(self.bn1(self.conv1(x))), masks, "conv1")
        out = apply_mask(self.attn(self.bn2(self.conv2(out))), masks, "conv2")
        return self.relu(apply_mask(out, masks, "branch") + identity)

    def sparse_parameters(self) -> dict:
        folded = sparse.fold_block(self, 2)
        folded["shortcut"] = fold_projection(self.shortcut)
        return folded

    def forward_sparse(self, x: Tensor, folded: dict) -> Tensor:
        return sparse_basic(self, x, self.shortcut, folded)


def sparse_basic(block: nn.Module, x: Tensor, shortcut: nn.Module | None, folded: dict) -> Tensor:
    """One sample through a basic block (CIFAR or ImageNet), computing only the open channels."""
    is_open, idx = block.sparse_indices(x)
    if folded["shortcut"] is not None:
        identity = sparse.conv(folded["shortcut"], x)
    else:
        identity = x if shortcut is None else shortcut(x)
    if not is_open:
        return block.relu(identity)
    out = block.relu(sparse.conv(folded["conv1"], x, idx["conv1"]))
    out = sparse.conv(folded["conv2"], out, idx["conv2"], idx["conv1"])
    return block.relu(sparse.scatter_add(identity, idx["conv2"], out))


LAYOUTS = ("v1", "v1.5")  # bottleneck stride on the first 1×1 (He et al.'s code) or on the 3×3


class PreActBottleneck(GateSlot, nn.Module):
    """Pre-activation bottleneck unit of He et al. 2016b (Fig. 1b / Fig. 5): the residual branch is
    BN-ReLU-conv1 (1×1), BN-ReLU-conv2 (3×3), BN-ReLU-conv3 (1×1, ×4 channels); nothing after the addition.

    `planes` is the bottleneck width; the unit outputs `planes * 4` channels. `layout` says which conv of
    a strided unit carries the stride ("v1": conv1, the authors' code; "v1.5": conv2). When the shape
    changes, `shortcut` is a 1×1 projection applied to the pre-activated input (as in the authors' code);
    otherwise it is None and the input itself is added.

    Slots: `attn_bn1` after bn1, before its ReLU (in the network's first unit this BN-ReLU pre-activates
    the stem conv: CE's stem position); `attn_bn3` after bn3, before its ReLU and conv3 (the unit's last
    norm: CE's position); `attn` on conv3's output, before the addition (SE's position, from
    `attn_layer`); all nn.Identity when unused. `gate_layer`: masks at "conv1" / "conv2" (after the
    BN-ReLU that pre-activates the next conv, so it reads exact zeros), "conv3" (its output) or "branch".
    """

    expansion = 4
    convs = ("conv1", "conv2", "conv3")

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        layout: str = "v1",
        attn_layer=None,
        gate_layer=None,
    ):
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
        self.attn_bn1 = nn.Identity()
        self.attn_bn3 = nn.Identity()
        self.attn = attn_layer(out_planes) if attn_layer is not None else nn.Identity()
        self.init_gate(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        masks = self.masks(x)
        preact = self.relu(self.attn_bn1(self.bn1(x)))
        identity = x if self.shortcut is None else self.shortcut(preact)
        out = apply_mask(self.relu(self.bn2(self.conv1(preact))), masks, "conv1")
        out = apply_mask(self.relu(self.attn_bn3(self.bn3(self.conv2(out)))), masks, "conv2")
        out = apply_mask(self.attn(self.conv3(out)), masks, "conv3")
        return apply_mask(out, masks, "branch") + identity

    def sparse_parameters(self) -> dict:
        return {
            "conv1": sparse.fold(self.conv1, self.bn2),
            "conv2": sparse.fold(self.conv2, self.bn3),
            "conv3": sparse.fold(self.conv3),
        }

    def forward_sparse(self, x: Tensor, folded: dict) -> Tensor:
        """One sample, only the open channels (BN folded into the conv it follows)."""
        is_open, idx = self.sparse_indices(x)
        preact = self.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(preact)
        if not is_open:
            return identity
        out = self.relu(sparse.conv(folded["conv1"], preact, idx["conv1"]))
        out = self.relu(sparse.conv(folded["conv2"], out, idx["conv2"], idx["conv1"]))
        out = sparse.conv(folded["conv3"], out, idx["conv3"], idx["conv2"])
        return sparse.scatter_add(identity, idx["conv3"], out)


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


class CifarResNet(ResNetSkeleton):
    """Stem (conv-BN-ReLU, `stem_attn` after the BN), three stages of `depth_per_stage` blocks at widths
    `widths`, pooling, classifier.

    `block_kwargs` go to every block (the slots: SE's attention, a gate, the shortcut option);
    `conv_layer` and `norm_layer` build the stem's and the basic blocks' 3×3 convs and norms.
    `make_stem` and `make_head` build what comes before and after the stages (a subclass's own).
    """

    def __init__(
        self,
        block: type[nn.Module],
        depth_per_stage: int,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        block_kwargs: dict | None = None,
        conv_layer=conv3x3,
        norm_layer=nn.BatchNorm2d,
    ):
        super().__init__()
        block_kwargs = dict(block_kwargs or {})
        if conv_layer is not conv3x3:
            block_kwargs["conv_layer"] = conv_layer
        if norm_layer is not nn.BatchNorm2d:
            block_kwargs["norm_layer"] = norm_layer
        self.make_stem(in_chans, widths[0], conv_layer, norm_layer)
        stages, in_planes = make_stages(block, depth_per_stage, widths[0], widths, **block_kwargs)
        self.layer1, self.layer2, self.layer3 = stages
        self.make_head(in_planes, num_classes)
        init_weights(self)

    def make_stem(self, in_chans: int, width: int, conv_layer, norm_layer) -> None:
        self.conv1 = conv_layer(in_chans, width, 1)
        self.bn1 = norm_layer(width)
        self.stem_attn = nn.Identity()  # a slot after the stem's BN (CE fills it)
        self.relu = nn.ReLU(inplace=True)

    def make_head(self, in_planes: int, num_classes: int) -> None:
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3]

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.relu(self.stem_attn(self.bn1(self.conv1(x))))


class PreActCifarResNet(CifarResNet):
    """He et al. 2016b: stem conv (no BN-ReLU), three stages of pre-activation units, BN-ReLU, pooling,
    classifier. `widths` are the bottleneck widths; stage outputs are `widths * block.expansion`.
    """

    def make_stem(self, in_chans: int, width: int, conv_layer, norm_layer) -> None:
        self.conv1 = conv_layer(in_chans, width, 1)  # its BN-ReLU is the first unit's pre-activation

    def make_head(self, in_planes: int, num_classes: int) -> None:
        self.bn = nn.BatchNorm2d(in_planes)  # the final BN-ReLU that pre-activation units leave out
        self.relu = nn.ReLU(inplace=True)
        super().make_head(in_planes, num_classes)
        nn.init.zeros_(self.fc.bias)  # as the authors' code does

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.conv1(x)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.forward_stages(self.forward_stem(x))))

    def forward_head(self, x: Tensor) -> Tensor:
        return super().forward_head(self.relu(self.bn(x)))


def cifar_resnet(
    depth: int,
    num_classes: int = 10,
    in_chans: int = 3,
    layout: str = "v1",
    block_kwargs: dict | None = None,
    **kwargs,
) -> CifarResNet:
    """The CIFAR ResNet of `depth`: 6n + 2 with basic blocks and option-A shortcuts, or 164 with
    pre-activation bottlenecks (`layout`: where their stride goes). `block_kwargs` go to every block,
    `kwargs` to the network."""
    if depth == 164:
        block_kwargs = {"layout": layout, **(block_kwargs or {})}
        model = PreActCifarResNet(
            PreActBottleneck, 18, num_classes, in_chans, block_kwargs=block_kwargs, **kwargs
        )
        info = {"block": "pre-activation bottleneck", "layout": layout, "shortcut": "B (1x1 projection)"}
    elif depth > 2 and (depth - 2) % 6 == 0:
        model = CifarResNet(
            BasicBlock, (depth - 2) // 6, num_classes, in_chans, block_kwargs=block_kwargs, **kwargs
        )
        info = {"block": "basic", "shortcut": "A (zero-pad)"}
    else:
        raise ValueError(f"a CIFAR ResNet has depth 6n+2 (basic blocks) or 164, not {depth}")
    return model.describe(**info)


@register_model
def resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """CIFAR ResNet-20: basic blocks, 3 per stage, option-A shortcuts."""
    return cifar_resnet(20, num_classes, in_chans, **kwargs)


@register_model
def resnet32(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """CIFAR ResNet-32: basic blocks, 5 per stage, option-A shortcuts."""
    return cifar_resnet(32, num_classes, in_chans, **kwargs)


@register_model
def resnet44(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """CIFAR ResNet-44: basic blocks, 7 per stage, option-A shortcuts."""
    return cifar_resnet(44, num_classes, in_chans, **kwargs)


@register_model
def resnet56(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """CIFAR ResNet-56: basic blocks, 9 per stage, option-A shortcuts."""
    return cifar_resnet(56, num_classes, in_chans, **kwargs)


@register_model
def resnet110(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """CIFAR ResNet-110: basic blocks, 18 per stage, option-A shortcuts."""
    return cifar_resnet(110, num_classes, in_chans, **kwargs)


@register_model
def resnet164(num_classes: int = 10, in_chans: int = 3, layout: str = "v1", **kwargs) -> PreActCifarResNet:
    """Pre-activation CIFAR ResNet-164 (He et al. 2016b): bottleneck units, 18 per stage."""
    return cifar_resnet(164, num_classes, in_chans, layout, **kwargs)
