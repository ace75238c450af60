"""Decoupled Networks on ImageNet: the official code's "modified ResNet-18" (wy1iu/DCNets e603777,
`dcnet_imagenet/DCNet_modified_ResNet.py`, `train_DCNet.py`), the network of the paper's ImageNet result.

It is not torchvision's ResNet-18. As the code builds it (TensorFlow 1.x), at 224×224 input:
- stem: a 7×7 stride-2 decoupled conv to 128 channels, BN, PReLU, 3×3 stride-2 max pooling (56²);
- four stages of widths 128 / 256 / 512 / 1024 with 1, 2, 3, 1 residual units (56², 28², 14², 7²); a unit
  is 3×3 conv-BN-PReLU, 3×3 conv-BN, plus the identity, and no activation after the addition;
- between the stages a stride-2 3×3 decoupled "transition" conv with BN and PReLU changes the width,
  so no unit needs a projection shortcut (the code has none);
- global average pooling and a bias-free linear classifier (the code's 1×1 "score" conv);
- every conv but the classifier is decoupled, TanhConv with the cosine angular function (the operator
  of `methods.decoupled`, with its official-code choices: ρ relative to the batch-mean input norm,
  filters re-normalised every 100 training steps, orthogonality penalty 1e-5 on every decoupled conv);
- PReLU with one slope per channel, starting at 0 (the code's `prelu`);
- initialisation as the code's: units' filters N(0, 0.01); stem, transitions and classifier Glorot
  uniform (`xavier_initializer`); BN γ 1, β 0; radii 1.

Weight decay 1e-4 in the code reaches only the BN parameters and the classifier (`get_bias`, `reg=True`);
`no_weight_decay()` names the rest (decoupled filters, radii, PReLU slopes). Where ours differs: the
code pads "SAME" (asymmetric at stride 2; ours pads (k − 1) / 2 on every side, as torchvision), its BN has
ε = 1e-3 and decay 0.999 (ours: PyTorch's defaults), its input-norm average adds 1e-6.

The recipe (batch 40, SGD momentum 0.9, lr 0.1, ÷10 at 200k / 375k / 550k of 700k iterations, label
smoothing 0.01) is the imagenet suite's override for this model; the code's training log ends at top-1
0.6864, top-5 0.8887 (results/paper/liu2018_decoupled.toml).
"""

from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from baselines.skeleton import ResNetSkeleton
from bench.registry import register_model
from methods.decoupled import DCNET_VARIANTS, DCConfig, DecoupledConv2d

WIDTHS = (128, 256, 512, 1024)
UNITS = (1, 2, 3, 1)


class ConvBNPReLU(nn.Sequential):
    """A decoupled conv, BN and PReLU (one slope per channel, starting at 0): the code's `_conv_layer`
    with `bn=True, relu=True`, used for the stem and the transitions."""

    def __init__(self, inp: int, out: int, kernel_size: int, stride: int, cfg: DCConfig):
        super().__init__(
            DecoupledConv2d(inp, out, kernel_size, stride, kernel_size // 2, cfg=cfg),
            nn.BatchNorm2d(out),
            nn.PReLU(out, init=0.0),
        )


class DecoupledUnit(nn.Module):
    """The code's `_resnet_unit_v1`: conv1-bn1-PReLU, conv2-bn2, plus the input; no activation after the
    addition, no projection (the width never changes inside a stage)."""

    def __init__(self, width: int, cfg: DCConfig):
        super().__init__()
        self.conv1 = DecoupledConv2d(width, width, 3, 1, 1, cfg=cfg)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.PReLU(width, init=0.0)
        self.conv2 = DecoupledConv2d(width, width, 3, 1, 1, cfg=cfg)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))


class DCNetImageNetResNet(ResNetSkeleton):
    """The official DCNets ImageNet network: stem, four stages (`layer1` units; `layer2..4` a transition
    conv, then units), average pooling, bias-free classifier. `widths` other than the code's 128–1024
    only for quick tests (the orthogonality penalty of the full network costs ~20 G MACs a step)."""

    def __init__(
        self, num_classes: int, in_chans: int, cfg: DCConfig, widths: tuple[int, int, int, int] = WIDTHS
    ):
        super().__init__()
        self.cfg = cfg
        self.stem = ConvBNPReLU(in_chans, widths[0], 7, 2, cfg)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        width = widths[0]
        for i, (out, units) in enumerate(zip(widths, UNITS, strict=True)):
            transition = [ConvBNPReLU(width, out, 3, 2, cfg)] if out != width else []
            setattr(
                self,
                f"layer{i + 1}",
                nn.Sequential(*transition, *(DecoupledUnit(out, cfg) for _ in range(units))),
            )
            width = out
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width, num_classes, bias=False)
        for name, m in self.named_modules():
            if isinstance(m, DecoupledConv2d):
                if name.startswith("stem") or name.endswith(".0.0"):  # the stem and the transitions
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.normal_(m.weight, 0.0, 0.01)
        nn.init.xavier_uniform_(self.fc.weight)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.stem(x))

    def decoupled_convs(self) -> dict[str, DecoupledConv2d]:
        return {n: m for n, m in self.named_modules() if isinstance(m, DecoupledConv2d)}

    def aux_losses(self, progress: float) -> dict[str, Tensor]:
        """The code's orthogonality penalty on every decoupled conv (stem and transitions included)."""
        if not self.cfg.orth_weight:
            return {}
        penalty = sum(m.orthogonality_penalty() for m in self.decoupled_convs().values())
        return {"orth": self.cfg.orth_weight * penalty}

    def no_weight_decay(self) -> set[str]:
        """Decoupled filters and radii, and the PReLU slopes: the code regularises only BN and the classifier."""
        names = {f"{n}.{p}" for n, m in self.decoupled_convs().items() for p, _ in m.named_parameters()}
        prelus = {f"{n}.weight" for n, m in self.named_modules() if isinstance(m, nn.PReLU)}
        return names | prelus


@register_model(**DCNET_VARIANTS["tanh_cos"])
def dcnet_tanh_cos_resnet18m(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> DCNetImageNetResNet:
    """The official DCNets ImageNet "modified ResNet-18" (widths 128–1024, units 1/2/3/1, PReLU): TanhConv
    with the cosine angular function everywhere."""
    fields = {f.name for f in dataclasses.fields(DCConfig)}
    if set(kwargs) - fields:
        raise TypeError(
            f"dcnet_tanh_cos_resnet18m: unknown arguments {sorted(set(kwargs) - fields)}; "
            f"DCConfig fields are {sorted(fields)}"
        )
    cfg = DCConfig(**kwargs)
    model = DCNetImageNetResNet(num_classes, in_chans, cfg)
    return model.describe(
        definition="DCNets official ImageNet modified ResNet-18",
        layout="dcnets",
        operator=dataclasses.asdict(cfg),
        decoupled_convs=len(model.decoupled_convs()),
        decoupled="every conv but the classifier (stem 7×7, transitions and units 3×3)",
        widths=list(WIDTHS),
        units=list(UNITS),
    )
