"""ShuffleNetV2 of Ma, Zhang, Zheng and Sun, "ShuffleNet V2: Practical Guidelines for Efficient CNN
Architecture Design", ECCV 2018 (arXiv 1807.11164), ×1.0, as torchvision defines it
(`torchvision.models.shufflenet_v2_x1_0`, v0.29): 2,278,604 parameters and 0.145 G MACs at 224×224 for
1000 classes.

The network is torchvision's, restated with the re-weighting slot of this package's ResNets
(`baselines.slots`):
- the same module and parameter names (conv1, stage2..4, branch1 / branch2, conv5, fc), so torchvision's
  weight files load, and the same construction (torchvision leaves PyTorch's default initialisation);
- `attn_layer(channels)`: a module on each unit's computed branch (`branch2`) after its last norm, before
  its ReLU and the concatenation with the other half, like the ResNets' `attn` (after the last norm,
  before the merge). A positive per-channel scale (SE) commutes with that ReLU, so for SE "before" and
  "after" the ReLU are the same network. In the down-sampling units `branch1` is left as it is;
- the stem's `attn` slot (`conv1.attn`, `baselines.slots.ConvNormAttnAct`): after the stem's BN, before
  its ReLU (CE fills it, as the CE ResNets' `stem_attn`);
- `in_chans`: a stem for other than 3 input channels;
- `baselines.skeleton`'s stem -> stages -> head split: stage2, stage3, stage4 (28², 14², 7² at 224×224);
- `bench_info["layout"]` is "torchvision" (the definition a paper-reported number is compared with).

`se_shufflenet_v2_x1_0` puts an SE module (timm's `SEModule`, reduction 16) in that slot of every unit.
The placement is our choice (no source reachable here states where the CE paper puts SE or CE in
ShuffleNetV2) and is recorded as unconfirmed in `bench_info`.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models.shufflenetv2 import channel_shuffle

from baselines.se_resnet import REDUCTION, se_module
from baselines.skeleton import ResNetSkeleton
from baselines.slots import ConvNormAttnAct
from bench.registry import register_model

X1_0 = {"stages_repeats": (4, 8, 4), "stages_out_channels": (24, 116, 232, 464, 1024)}


def depthwise_conv(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, bias=False, groups=channels)


class ShuffleUnit(nn.Module):
    """torchvision's ShuffleNetV2 unit. Stride 1: half the channels pass, the other half runs `branch2`
    (1×1-BN-ReLU, 3×3 depthwise-BN, 1×1-BN, `attn`, ReLU). Stride 2: both halves of the output are
    computed, `branch1` (3×3 depthwise s2-BN, 1×1-BN-ReLU) and `branch2` on the whole input. The two
    halves are concatenated and their channels shuffled (2 groups)."""

    def __init__(self, inp: int, oup: int, stride: int, attn_layer=None):
        super().__init__()
        if not 1 <= stride <= 3:
            raise ValueError("illegal stride value")
        self.stride = stride
        branch = oup // 2
        if stride == 1 and inp != branch << 1:
            raise ValueError(f"stride 1 needs inp == oup, got inp {inp} and oup {oup}")
        if stride > 1:
            self.branch1 = nn.Sequential(
                depthwise_conv(inp, stride),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch, 1, 1, 0, bias=False),
                nn.BatchNorm2d(branch),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        # torchvision's branch2 without its final ReLU (no parameters: the state keys are the same)
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else branch, branch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch),
            nn.ReLU(inplace=True),
            depthwise_conv(branch, stride),
            nn.BatchNorm2d(branch),
            nn.Conv2d(branch, branch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch),
        )
        self.attn_channels = branch  # the width `attn_layer` is built for (CE reads it)
        self.attn = attn_layer(branch) if attn_layer is not None else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward_branch2(self, x: Tensor) -> Tensor:
        return self.relu(self.attn(self.branch2(x)))

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.forward_branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.forward_branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(ResNetSkeleton):
    """torchvision's ShuffleNetV2 with `in_chans`, the units' `attn_layer` slot and the stem's `attn` slot."""

    def __init__(
        self,
        stages_repeats: tuple[int, int, int],
        stages_out_channels: tuple[int, int, int, int, int],
        num_classes: int = 1000,
        in_chans: int = 3,
        attn_layer=None,
    ):
        super().__init__()
        if len(stages_repeats) != 3 or len(stages_out_channels) != 5:
            raise ValueError("expected 3 stage repeats and 5 stage widths")
        width = stages_out_channels[0]
        self.conv1 = ConvNormAttnAct(in_chans, width, 3, 2)  # conv, BN, `attn`, ReLU
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (repeats, out) in enumerate(zip(stages_repeats, stages_out_channels[1:4], strict=True)):
            units = [ShuffleUnit(width, out, 2, attn_layer)]
            units += [ShuffleUnit(out, out, 1, attn_layer) for _ in range(repeats - 1)]
            setattr(self, f"stage{i + 2}", nn.Sequential(*units))
            width = out
        last = stages_out_channels[-1]
        self.conv5 = nn.Sequential(
            nn.Conv2d(width, last, 1, 1, 0, bias=False), nn.BatchNorm2d(last), nn.ReLU(inplace=True)
        )
        self.fc = nn.Linear(last, num_classes)

    def stem(self) -> ConvNormAttnAct:
        """The stem conv-BN-ReLU and its `attn` slot."""
        return self.conv1

    def stages(self) -> list[nn.Sequential]:
        return [self.stage2, self.stage3, self.stage4]

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.conv1(x))

    def forward_head(self, x: Tensor) -> Tensor:
        return self.fc(self.conv5(x).mean([2, 3]))


@register_model
def shufflenet_v2_x1_0(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ShuffleNetV2:
    """ShuffleNetV2 ×1.0 (torchvision's definition)."""
    model = ShuffleNetV2(**X1_0, num_classes=num_classes, in_chans=in_chans, **kwargs)
    return model.describe(definition="torchvision", layout="torchvision")


@register_model
def se_shufflenet_v2_x1_0(
    num_classes: int = 1000, in_chans: int = 3, reduction: int = REDUCTION, **kwargs
) -> ShuffleNetV2:
    """ShuffleNetV2 ×1.0 with SE (r = 16) on every unit's branch2, after its last BN."""
    attn_layer = partial(se_module, reduction=reduction)
    model = ShuffleNetV2(**X1_0, num_classes=num_classes, in_chans=in_chans, attn_layer=attn_layer, **kwargs)
    return model.describe(
        definition="torchvision + SE",
        layout="torchvision",
        se_reduction=reduction,
        placement="each unit's branch2 after its last BN, before its ReLU and the concatenation",
        unconfirmed=["SE placement in ShuffleNetV2 (no source reachable here states it): our choice"],
    )
