"""MobileNetV2 of Sandler, Howard, Zhu, Zhmoginov and Chen, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018 (arXiv 1801.04381), width ×1.0, as torchvision defines it
(`torchvision.models.mobilenet_v2`, v0.29): 3,504,872 parameters and 0.30 G MACs at 224×224 for 1000
classes.

The network is torchvision's, restated with the re-weighting slot of this package's ResNets
(`baselines.slots`), so SE and Channel Equilibrium fill the same slot here as there:
- the same module and parameter names (features.0 ... features.18, features.N.conv.M, classifier.1), so
  torchvision's weight files load, and the same construction and initialisation (kaiming_normal_
  fan_out over the convs, 1/0 over the norms, N(0, 0.01) over the classifier);
- `attn_layer(channels)`: a module on each inverted residual's output, after its last norm (the linear
  bottleneck's projection BN) and before the addition, like the ResNets' `attn` (nn.Identity when
  unused, so the plain network's state is torchvision's);
- the stem's `attn` slot (`features[0].attn`, `baselines.slots.ConvNormAttnAct`): after the stem's BN,
  before its ReLU6 (CE fills it, as the CE ResNets' `stem_attn`);
- `in_chans`: a stem for other than 3 input channels;
- `stages()`: the blocks grouped by output resolution (112², 56², 28², 14², 7² at 224×224 input), so a
  rule such as CE's "not in the last stage" reads the same as on a ResNet. The forward stays
  torchvision's (`features`, pooling, `classifier`): every module is called by the module that owns
  it, as the MAC counter needs.
- `bench_info["layout"]` is "torchvision" (the definition a paper-reported number is compared with).

`se_mobilenet_v2` puts an SE module (timm's `SEModule`, reduction 16, as in SE-ResNet) in that slot of
every block. Neither the SE paper nor the CE paper's sources reachable here say where SE goes in
MobileNetV2; this placement (the residual branch's output, before the addition, as in SE-ResNet) is our
choice and recorded as unconfirmed in `bench_info`.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

from baselines.se_resnet import REDUCTION, se_module
from baselines.skeleton import Described
from baselines.slots import ConvNormAttnAct
from bench.registry import register_model

# expansion t, output channels c, blocks n, first stride s (the paper's Table 2, torchvision's setting)
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STAGE_ENDS = (2, 4, 7, 14, 18)  # features[1:2], [2:4], [4:7], [7:14], [14:18]: one output resolution each


class InvertedResidual(nn.Module):
    """torchvision's inverted residual: 1×1 expansion (unless t = 1) with BN and ReLU6, 3×3 depthwise with
    BN and ReLU6, 1×1 linear projection with BN (`conv`), then `attn`, then the identity added where the
    shape allows (stride 1, same width)."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, attn_layer=None):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2 instead of {stride}")
        self.stride = stride
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden_dim, kernel_size=1, activation_layer=nn.ReLU6))
        layers += [
            Conv2dNormActivation(
                hidden_dim, hidden_dim, stride=stride, groups=hidden_dim, activation_layer=nn.ReLU6
            ),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup
        self.attn_channels = oup  # the width `attn_layer` is built for (CE reads it)
        self.attn = attn_layer(oup) if attn_layer is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.attn(self.conv(x))
        return x + out if self.use_res_connect else out


class MobileNetV2(Described, nn.Module):
    """torchvision's MobileNetV2 (×1.0) with `in_chans`, the blocks' `attn_layer` slot and the stem's `attn`
    slot (`features[0].attn`). Its forward is torchvision's: `features`, average pooling, `classifier`."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.2, attn_layer=None):
        super().__init__()
        input_channel, self.last_channel = 32, 1280
        features: list[nn.Module] = [
            ConvNormAttnAct(in_chans, input_channel, stride=2, activation_layer=nn.ReLU6)
        ]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                features.append(InvertedResidual(input_channel, c, s if i == 0 else 1, t, attn_layer))
                input_channel = c
        features.append(
            Conv2dNormActivation(input_channel, self.last_channel, kernel_size=1, activation_layer=nn.ReLU6)
        )
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def stem(self) -> ConvNormAttnAct:
        """The stem conv-BN-ReLU6 and its `attn` slot."""
        return self.features[0]

    def stages(self) -> list[list[InvertedResidual]]:
        """The inverted residuals grouped by output resolution (112², 56², 28², 14², 7² at 224×224)."""
        starts = (1,) + STAGE_ENDS[:-1]
        return [list(self.features[a:b]) for a, b in zip(starts, STAGE_ENDS, strict=True)]

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


@register_model
def mobilenet_v2(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV2:
    """MobileNetV2 ×1.0 (torchvision's definition)."""
    model = MobileNetV2(num_classes, in_chans, **kwargs)
    return model.describe(definition="torchvision", layout="torchvision")


@register_model
def se_mobilenet_v2(
    num_classes: int = 1000, in_chans: int = 3, reduction: int = REDUCTION, **kwargs
) -> MobileNetV2:
    """MobileNetV2 ×1.0 with SE (r = 16) on every inverted residual's output, before the addition."""
    model = MobileNetV2(num_classes, in_chans, attn_layer=partial(se_module, reduction=reduction), **kwargs)
    return model.describe(
        definition="torchvision + SE",
        layout="torchvision",
        se_reduction=reduction,
        placement="each inverted residual after its projection BN, before the addition",
        unconfirmed=["SE placement in MobileNetV2 (no source reachable here states it): our choice"],
    )
