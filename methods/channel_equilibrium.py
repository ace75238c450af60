"""Channel Equilibrium (CE) of Shao, Tang, Pan, Tan, Wang and Luo, "Channel Equilibrium Networks for
Learning Deep Representation", ICML 2020 (arXiv 2003.00214); official code Tangshitao/CENet (8781e40).

A CE block sits after a normalisation layer. It has two branches computed from the same input x:

- batch decorrelation (BD): per group of channels, the batch covariance Σ over (N, H, W), normalised by
  its trace, Σ_N = Σ / tr(Σ); its inverse square root by T Newton iterations,
  P_{k+1} = 1.5·P_k − 0.5·P_k³·Σ_N from P_0 = I; the whitening matrix applied to x. Inference uses an
  exponential running estimate of the whitening matrix;
- instance re-weighting (IR): per sample and channel, the spatial variance → FC(C → C/4) → LayerNorm →
  ReLU → FC(C/4 → C) → sigmoid, divided by a running scale (the EMA of the square root of the mean
  variance); the result multiplies x.

Every choice below is a field of `CEConfig`, so "CE as in the code" (the defaults) and other readings
can both be run. Where we follow the official code instead of the paper text (the paper's formulas
could not be read here, so every statement about the paper below is unconfirmed):

- `combine="mix"`: the two branches are combined as out = s·BD(x) + (1 − s)·IR(x) with s = sigmoid of a
  learned scalar that starts at 0 (0.5 / 0.5), as the official code does. How the paper's equations
  combine the branches is unconfirmed here; `combine="product"` (IR weights from x applied to BD(x),
  the branches in sequence) is an alternative reading kept as an option, not the paper's confirmed form.
- `trace_rescale=False`: the code whitens with P_T ≈ Σ_N^{-1/2} and does not rescale by tr(Σ)^{-1/2}
  (IterNorm does), so the BD output has covariance ≈ tr(Σ)·I, not I.
- `center=False`: the code applies the whitening matrix to the uncentred x (it tracks the mean but never
  subtracts it), in training and in inference.
- `T=3`, `group_size=16` in blocks and `stem_group_size=64` in the stem: the code's values; whether the
  paper uses the same is unconfirmed. A group size that does not divide the channels is halved until
  it does (the code's rule), so the CIFAR stem (16 channels) forms one group of 16.
- `pool=False`: the code's option to estimate Σ on a 2×2 max-pooled map, off in its ResNet.
- The IR variance is the unbiased one (torch's default, as in the code); the IR running scale starts
  at `scale_init=1`. The code starts it at 0, so a fresh model in eval mode divides by zero; after
  training the two agree (EMA with momentum 0.1).
- Placement (the code's `resnet_v1_ce.py`): after the last BN of each residual block, before the
  residual addition (bottleneck: after bn3; basic block: after bn2): the blocks' `attn` slot; in the
  stem after bn1, before the ReLU: the networks' `stem_attn` slot; in every stage but the last
  (`last_stage=False`). The slots are filled once the network is built (the CE modules are the last
  thing constructed, as in the first version, so seeded models stay bit-identical).

The code's `running_wm` buffer is an expanded view of one identity matrix, which makes its in-place EMA
update fail on current PyTorch; here it is a real [groups, d, d] buffer.

Models:
- `ce_resnet18`, `ce_resnet50`, `ce_resnet101` (ImageNet, torchvision layout: stride on the 3×3 conv,
  as the official ResNet-50 also has; the code has no ResNet-101, ours is ResNet-50's rule on more
  blocks). `ce_resnet50` has the official model's 29,331,926 parameters. The official
  `resnetv1ce18` crashes at construction; ours puts CE after bn2 of each basic block with group 16 (what
  that builder passes) and is our reading, not a verified official model.
- `ce_mobilenet_v2`, `ce_shufflenet_v2_x1_0` (torchvision's networks, `baselines.mobilenet` and
  `baselines.shufflenet`). The paper's ImageNet table compares BN, SE and CE on them; the code has
  neither, and where the paper puts CE in them could not be read here. Ours transfers the ResNet rule
  (recorded as unconfirmed in `bench_info`): CE in the blocks' `attn` slot, after the last BN of the
  branch before the merge (MobileNetV2: the linear projection's BN, before the addition; ShuffleNetV2:
  branch2's last BN, before its ReLU and the concatenation), after the stem's BN, and not in the last stage (the 7×7 blocks: MobileNetV2's 160- and 320-wide
  blocks, ShuffleNetV2's stage4). The code's halving rule sets the group sizes: stem 64 → 32
  (MobileNetV2's 32 channels) and 8 (ShuffleNetV2's 24); blocks 16, or 8 for MobileNetV2's 24-wide
  blocks, and 2 and 4 for ShuffleNetV2's 58- and 116-wide branches (stage2, stage3).
- `ce_resnet20`, `ce_resnet56` (CIFAR basic blocks, option-A shortcuts) and `ce_resnet164` (pre-activation
  bottleneck, `layout` as in `resnet164`). The official code has no CIFAR models; the placement is ours,
  the ImageNet rule transferred one to one: CE after the stem's BN and after the last BN of every block
  of stages 1–2, none in stage 3, group 16. Stage 3 (8×8 maps on 32×32 input) is the counterpart of
  ImageNet's layer4 (7×7 maps), the stage the code leaves out. In the pre-activation bottleneck the last
  BN is bn3, which precedes the ReLU and conv3 (no BN follows conv3), so CE goes after bn3: "after the
  norm layer, before the activation". The pre-activation stem conv has no BN of its own; the first
  unit's bn1 normalises it, so the stem's CE sits there, before that ReLU (`layer1.0.attn_bn1`); the
  units' CE is their `attn_bn3` slot.

The official ResNet-50 recipe (config_resnetv1ce50_step_moving_average.yaml, train_imagenet.py): SGD
lr 0.1, momentum 0.9, weight decay 1e-4 on every parameter, 100 epochs, ×0.1 at 30/60/90, 5 warm-up
epochs from lr 0, label smoothing 0.1 (its loss puts 0.1/999 on each wrong class; torch's
`label_smoothing` puts 0.1/1000 on every class), batch 256 over 8 GPUs (32 images per GPU for the BD
covariance, no synchronisation), RandomResizedCrop + flip + PCA colour augmentation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from baselines.mobilenet import MobileNetV2
from baselines.resnet_cifar import CifarResNet, PreActCifarResNet, cifar_resnet
from baselines.resnet_imagenet import ImageNetResNet, imagenet_resnet
from baselines.shufflenet import X1_0 as SHUFFLENET_X1_0
from baselines.shufflenet import ShuffleNetV2
from bench.registry import register_model


@dataclass(frozen=True)
class CEConfig:
    """Every choice of a CE block; the defaults are the official code's."""

    T: int = 3  # Newton iterations for Σ_N^{-1/2}
    group_size: int = 16  # channels per whitening group inside residual blocks
    stem_group_size: int = 64  # channels per whitening group in the stem (the code whitens all 64)
    eps: float = 1e-5  # added to the diagonal of Σ
    momentum: float = 0.1  # of the running whitening matrix, mean and IR scale
    reduction: int = 4  # IR bottleneck: C -> C / reduction -> C
    combine: Literal["mix", "product"] = "mix"  # code: learned sigmoid mix; "product": IR applied to BD(x)
    center: bool = False  # code: the whitening matrix multiplies the uncentred x
    trace_rescale: bool = False  # code: P_T ≈ Σ_N^{-1/2}, not rescaled by tr(Σ)^{-1/2}
    pool: bool = False  # estimate Σ on a 2×2 max-pooled map (a code option, off in its ResNet)
    scale_init: float = 1.0  # initial IR running scale (code: 0, see the module docstring)
    stem: bool = True  # CE after the stem's BN
    last_stage: bool = False  # CE in the last stage too (code: no)

    def __post_init__(self) -> None:
        if self.combine not in ("mix", "product"):
            raise ValueError(f"CEConfig.combine must be 'mix' or 'product', not {self.combine!r}")
        if self.T < 0 or self.group_size < 1 or self.stem_group_size < 1 or self.reduction < 1:
            raise ValueError("CEConfig: T must be >= 0 and group sizes and reduction >= 1")


# A textbook whitening reading of BD (ZCA on centred x, unit covariance) with BD and IR applied in
# sequence: our alternative reading, not the official code's form (the defaults) and not confirmed as
# the paper's (its equations are unconfirmed here).
PAPER_READING = {"combine": "product", "center": True, "trace_rescale": True}


def newton_inverse_sqrt(sigma_n: Tensor, T: int) -> Tensor:
    """P_T of P_{k+1} = 1.5·P_k − 0.5·P_k³·Σ_N, P_0 = I, for a batch [..., d, d] of trace-one SPD Σ_N.

    P_T is a polynomial in Σ_N, so it shares Σ_N's eigenvectors; each eigenvalue λ maps to p_T(λ) of the
    scalar iteration, which converges to λ^{-1/2} for λ in (0, 1] (Newton–Schulz, as in IterNorm).
    In floating point this uncoupled form is stable only while Σ_N's eigenvalue ratios stay below about
    2.4 (a rounding error in eigen-pair (i, j) grows by |1 − (r + r²)/2| per step, r = sqrt(λ_j/λ_i)):
    for ill-conditioned Σ_N it converges and then diverges once T is large (≳ 15). At T = 3 it does not
    arise.
    """
    p = torch.eye(sigma_n.shape[-1], dtype=sigma_n.dtype, device=sigma_n.device).expand_as(sigma_n)
    for _ in range(T):
        p = 1.5 * p - 0.5 * (p @ p @ p @ sigma_n)
    return p


def fit_group_size(num_features: int, group_size: int) -> int:
    """The code's rule: halve the group size until it divides the number of channels."""
    while num_features % group_size:
        group_size //= 2
    return group_size


class BatchDecorrelation(nn.Module):
    """BD: x ↦ W·x per group of d channels, W = P_T(Σ_N) from the batch (training) or its EMA (eval)."""

    def __init__(self, num_features: int, group_size: int, cfg: CEConfig):
        super().__init__()
        self.d = fit_group_size(num_features, group_size)
        self.groups = num_features // self.d
        self.T, self.eps, self.momentum = cfg.T, cfg.eps, cfg.momentum
        self.center, self.trace_rescale = cfg.center, cfg.trace_rescale
        self.pool = nn.MaxPool2d(2, stride=2) if cfg.pool else None
        self.register_buffer("running_mean", torch.zeros(self.groups, self.d, 1))
        # a real tensor (the code's expanded view of one identity cannot take an in-place update)
        self.register_buffer("running_wm", torch.eye(self.d).repeat(self.groups, 1, 1))

    def whitening_matrix(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Batch mean [G, d, 1] and whitening matrix [G, d, d] of x (training-mode statistics), in at
        least float32 even under autocast."""
        stats = self.pool(x) if self.pool is not None else x
        with torch.autocast(x.device.type, enabled=False):
            xs = stats.transpose(0, 1).reshape(self.groups, self.d, -1)  # [G, d, m], m = N·H·W
            xs = xs.to(torch.promote_types(xs.dtype, torch.float32))
            mean = xs.mean(-1, keepdim=True)
            xc = xs - mean
            eye = torch.eye(self.d, dtype=xs.dtype, device=xs.device)
            sigma = self.eps * eye + xc @ xc.transpose(1, 2) / xs.shape[-1]
            trace = sigma.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None]
            wm = newton_inverse_sqrt(sigma / trace, self.T)
            if self.trace_rescale:
                wm = wm / trace.sqrt()
        return mean, wm

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        if self.training:
            mean, wm = self.whitening_matrix(x)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_wm.lerp_(wm.detach(), self.momentum)
        else:
            mean, wm = self.running_mean, self.running_wm
        xg = x.reshape(n, self.groups, self.d, h * w)
        if self.center:
            xg = xg - mean
        # [G, d, d] @ [N, G, d, HW]: a batched matmul (bmm), so the MAC counter sees C·d·H·W per sample
        return torch.matmul(wm, xg).reshape(n, c, h, w)


class InstanceReweight(nn.Module):
    """IR: per-sample channel weights sigmoid(FC(ReLU(LN(FC(var))))) / running scale (the code's
    `AdaptiveReweight`)."""

    def __init__(self, num_features: int, cfg: CEConfig):
        super().__init__()
        hidden = num_features // cfg.reduction
        self.fc1 = nn.Linear(num_features, hidden, bias=False)
        self.norm = nn.LayerNorm(hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, num_features, bias=False)
        self.momentum = cfg.momentum
        self.register_buffer("running_scale", torch.full((1,), float(cfg.scale_init)))

    def forward(self, x: Tensor, target: Tensor | None = None) -> Tensor:
        """Weights computed from x, applied to `target` (default x)."""
        # [N, C], spatial variance per sample and channel; in float32 under autocast, like the running scale
        var = x.flatten(2).to(torch.promote_types(x.dtype, torch.float32)).var(dim=-1)
        y = torch.sigmoid(self.fc2(self.relu(self.norm(self.fc1(var)))))
        if self.training:
            scale = var.mean().sqrt()
            with torch.no_grad():
                self.running_scale.lerp_(scale.detach().reshape(1), self.momentum)
        else:
            scale = self.running_scale
        weights = (y / scale)[:, :, None, None]
        return (x if target is None else target) * weights


class ChannelEquilibrium(nn.Module):
    """CE block: BD and IR of the same input, combined by `cfg.combine`."""

    def __init__(self, num_features: int, group_size: int, cfg: CEConfig):
        super().__init__()
        self.combine = cfg.combine
        self.bd = BatchDecorrelation(num_features, group_size, cfg)
        self.ir = InstanceReweight(num_features, cfg)
        if cfg.combine == "mix":
            self.mix_logit = nn.Parameter(torch.zeros(1))  # the code's `x_weight`: s = sigmoid(0) = 0.5

    def forward(self, x: Tensor) -> Tensor:
        if self.combine == "mix":
            s = torch.sigmoid(self.mix_logit)
            return s * self.bd(x) + (1 - s) * self.ir(x)
        return self.ir(x, self.bd(x))


def attach_ce(model: nn.Module, cfg: CEConfig, block_slot: str = "attn") -> None:
    """Fill the CE slots of a built network: `stem_attn` (when `cfg.stem`), then `block_slot` of every
    block of every stage but the last (unless `cfg.last_stage`), sized by the block's last BN."""
    if cfg.stem:
        model.stem_attn = ChannelEquilibrium(model.bn1.num_features, cfg.stem_group_size, cfg)
    stages = model.stages()
    for stage in stages if cfg.last_stage else stages[:-1]:
        for block in stage:
            last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
            setattr(block, block_slot, ChannelEquilibrium(last_bn.num_features, cfg.group_size, cfg))


def attach_ce_to_slots(model: MobileNetV2 | ShuffleNetV2, cfg: CEConfig) -> None:
    """`attach_ce` for networks whose stem and blocks say their slot's width (`attn_channels`): the
    stem's `attn` (when `cfg.stem`), then the `attn` of every block of every stage but the last (unless
    `cfg.last_stage`)."""
    if cfg.stem:
        stem = model.stem()
        stem.attn = ChannelEquilibrium(stem.attn_channels, cfg.stem_group_size, cfg)
    stages = model.stages()
    for stage in stages if cfg.last_stage else stages[:-1]:
        for block in stage:
            block.attn = ChannelEquilibrium(block.attn_channels, cfg.group_size, cfg)


def _bench_info(cfg: CEConfig, placement: str) -> dict:
    return {"ce": dataclasses.asdict(cfg), "placement": placement}


def ce_imagenet(depth: int, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ImageNetResNet:
    """torchvision's ResNet-18 / -50 with CE after the stem's BN and in the blocks of layer1–3."""
    cfg = CEConfig(**kwargs)
    model = imagenet_resnet(depth, num_classes, in_chans)
    attach_ce(model, cfg)
    placement = "stem after bn1; each block after its last BN; not in layer4"
    model.bench_info = {**_bench_info(cfg, placement), **model.bench_info}  # + definition, layout
    return model


MOBILE_PLACEMENT_UNCONFIRMED = (
    "CE placement in {net}: the paper's table has CE-{net}, but neither its text nor its code was "
    "reachable here; ours transfers the ResNet rule (after the last BN of each block's branch, before the "
    "merge; after the stem's BN; not in the last, 7×7 stage)"
)


def ce_mobile(
    network: type[MobileNetV2] | type[ShuffleNetV2], num_classes: int, in_chans: int, **kwargs
) -> MobileNetV2 | ShuffleNetV2:
    """MobileNetV2 or ShuffleNetV2 ×1.0 with CE in the stem's and the blocks' `attn` slots (not in the
    last stage)."""
    cfg = CEConfig(**kwargs)
    if network is MobileNetV2:
        model = MobileNetV2(num_classes, in_chans)
        placement = "stem after its BN; each inverted residual after its projection BN, before the addition"
    else:
        model = ShuffleNetV2(**SHUFFLENET_X1_0, num_classes=num_classes, in_chans=in_chans)
        placement = "stem after its BN; each unit's branch2 after its last BN, before its ReLU"
    attach_ce_to_slots(model, cfg)
    return model.describe(
        definition="torchvision + CE",
        layout="torchvision",
        **_bench_info(cfg, placement + "; not in the last (7×7) stage"),
        unconfirmed=[MOBILE_PLACEMENT_UNCONFIRMED.format(net=network.__name__)],
    )


def ce_cifar(depth: int, num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """CIFAR ResNet (option A) with CE after the stem's BN and in the blocks of stages 1–2."""
    cfg = CEConfig(**kwargs)
    model = cifar_resnet(depth, num_classes, in_chans)
    attach_ce(model, cfg)
    model.bench_info = _bench_info(
        cfg, "ours (no official CIFAR model): stem after bn1; each block after its last BN; not in stage 3"
    )
    return model


def ce_preact(num_classes: int = 10, in_chans: int = 3, layout: str = "v1", **kwargs) -> PreActCifarResNet:
    """Pre-activation CIFAR ResNet-164 with CE after bn3 (`attn_bn3`) of the units of stages 1–2 and after
    the first unit's bn1 (`attn_bn1`: the stem's pre-activation)."""
    cfg = CEConfig(**kwargs)
    model = cifar_resnet(164, num_classes, in_chans, layout)
    if cfg.stem:
        model.layer1[0].attn_bn1 = ChannelEquilibrium(model.conv1.out_channels, cfg.stem_group_size, cfg)
    attach_ce(model, dataclasses.replace(cfg, stem=False), block_slot="attn_bn3")
    model.bench_info = _bench_info(
        cfg,
        "ours (no official CIFAR model): stem = after the first unit's bn1; each unit after bn3 "
        "(its last BN, before the ReLU and conv3); not in stage 3",
    )
    model.describe(block="pre-activation bottleneck", layout=layout)
    return model


# --- builders: every CEConfig field is a per-model default (a suite's model_args override them) ------

_CONFIG_DEFAULTS = dataclasses.asdict(CEConfig())
CE_DEFAULTS = {"resnet": _CONFIG_DEFAULTS, "preact": {"layout": "v1", **_CONFIG_DEFAULTS}}


@register_model(**CE_DEFAULTS["resnet"])
def ce_resnet18(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ImageNetResNet:
    """ce_resnet18: torchvision ResNet with CE blocks (stem, layer1–3)."""
    return ce_imagenet(18, num_classes, in_chans, **kwargs)


@register_model(**CE_DEFAULTS["resnet"])
def ce_resnet50(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ImageNetResNet:
    """ce_resnet50: torchvision ResNet with CE blocks (stem, layer1–3)."""
    return ce_imagenet(50, num_classes, in_chans, **kwargs)


@register_model(**CE_DEFAULTS["resnet"])
def ce_resnet101(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ImageNetResNet:
    """ce_resnet101: torchvision ResNet with CE blocks (stem, layer1–3)."""
    return ce_imagenet(101, num_classes, in_chans, **kwargs)


@register_model(**CE_DEFAULTS["resnet"])
def ce_mobilenet_v2(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV2:
    """ce_mobilenet_v2: torchvision MobileNetV2 ×1.0 with CE (stem, blocks at 112²–14²)."""
    return ce_mobile(MobileNetV2, num_classes, in_chans, **kwargs)


@register_model(**CE_DEFAULTS["resnet"])
def ce_shufflenet_v2_x1_0(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ShuffleNetV2:
    """ce_shufflenet_v2_x1_0: torchvision ShuffleNetV2 ×1.0 with CE (stem, stage2–3)."""
    return ce_mobile(ShuffleNetV2, num_classes, in_chans, **kwargs)


@register_model(**CE_DEFAULTS["resnet"])
def ce_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """ce_resnet20: CIFAR ResNet-20 with CE blocks (stem, stages 1–2)."""
    return ce_cifar(20, num_classes, in_chans, **kwargs)


@register_model(**CE_DEFAULTS["resnet"])
def ce_resnet56(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """ce_resnet56: CIFAR ResNet-56 with CE blocks (stem, stages 1–2)."""
    return ce_cifar(56, num_classes, in_chans, **kwargs)


@register_model(**CE_DEFAULTS["preact"])
def ce_resnet164(num_classes: int = 10, in_chans: int = 3, **kwargs) -> PreActCifarResNet:
    """ce_resnet164: pre-activation CIFAR ResNet-164 with CE after bn3 (stages 1–2) and the stem's bn1."""
    return ce_preact(num_classes, in_chans, **kwargs)
