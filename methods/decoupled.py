"""Decoupled Networks of Liu, Liu, Yu, Dai, Lin, Wang, Rehg and Song, CVPR 2018 (arXiv 1804.08071);
official code wy1iu/DCNets (TensorFlow 1.x, e603777).

A convolution computes ⟨w, x⟩ = ‖w‖·‖x‖·cos θ at every output location. The decoupled operator
replaces it by f(w, x) = h(‖w‖, ‖x‖) · g(θ(w, x)): a magnitude function of the patch norm (intra-class
variation) times an angular function of the angle between filter and patch (semantic difference).
`DecoupledConv2d` computes it per output location from
- ŵ = w / sqrt(Σw² + ε), each filter normalised over (C_in, k, k), ε = 1e-4;
- ‖x‖ = sqrt(conv(x², ones) + ε), the patch norm: a real convolution with one output channel, run with
  `F.conv2d` so it costs k²·C_in·H_out·W_out MACs per layer and the MAC counter sees it;
- cos θ = conv(x, ŵ) / ‖x‖.

Magnitudes h (α = 1 and β = 0.5 as in the code; ρ = r² + 1e-4, r learnable per output channel, init 1):
SphereConv α; BallConv α·min(‖x‖/ρ, 1); TanhConv α·tanh(‖x‖/ρ); LinearConv α‖x‖; SegConv α‖x‖ for
‖x‖ ≤ ρ, β‖x‖ + (α − β)ρ above; LogConv α·log(1 + ‖x‖); MixConv α‖x‖ + β·log(1 + ‖x‖). Angular g:
linear 1 − 2θ/π; cosine cos θ; sigmoid (1 + e^{−π/2k})/(1 − e^{−π/2k}) · (1 − e^{θ/k − π/2k})/(1 + e^{θ/k − π/2k});
square cosine sign(cos θ)·cos²θ. `weighted=True` multiplies h by ‖w‖ (the paper's weighted operators);
with LinearConv and cosine that is exactly the plain convolution (the paper's unification).

Where we follow the official code (`dcnet_cifar100/<variant>/architecture.py`, `train_resnet.py`):
- `rho_relative=True`: ρ multiplies μ, the batch mean of ‖x‖ over (N, H, W) in training and its
  exponential average (decay 0.999) in inference. So TanhConv is tanh(‖x‖/(ρμ)) where the paper writes
  tanh(‖x‖/ρ). The code's average (TensorFlow's ExponentialMovingAverage of a tensor, default
  `zero_debias=False`) starts at zero and is not debiased, so early in training its inference μ is too
  small; ours is debiased (1 − 0.999^t), and the two agree after the code's 42,500 steps. Before the
  first training step inference uses the batch mean.
- Filter re-normalisation: every `project_every` = 100 training steps each decoupled filter is
  overwritten by ŵ. Done inside the module: a step counter (a buffer, so it survives checkpoints) counts
  training forwards, and the 100th, 200th, ... forward first projects the weights, i.e. after 99, 199, ...
  optimizer updates (the code: after update 101, 201, ...).
- Orthogonality penalty 1e-5 · ½‖ŴŴᵀ − I‖²_F per decoupled layer on the normalised filters (the code's
  `1e-5 * tf.nn.l2_loss`), returned by the model's `aux_losses`.
- No weight decay on decoupled filters or on r (`no_weight_decay()`); the shortcuts, classifier and BN
  parameters keep it.
- Decoupled: every 3×3 conv including the stem (the CIFAR ResNet's `conv_layer` slot); not decoupled:
  1×1 projection shortcuts and the classifier (this answers DCNets issue #3). A BN follows every
  decoupled conv unless `bn=False` (the code's `linear_sqcos_wo_bn`, which has no BN anywhere: the
  `norm_layer` slot builds nn.Identity).
- The code's convolutions pad "SAME" (asymmetric for stride 2); ours pad 1 on every side like the plain
  ResNet. Its BN uses ε = 1e-3 and decay 0.999; ours are PyTorch's defaults. Note that a bounded
  decoupled output has a variance of order 1/(k²·C_in) (|cos θ| of a random direction), while
  PyTorch's BN running variance starts at 1: inference is meaningful only after ≳ 100 training steps
  (0.9^100 ≈ 3e-5), before which the running variance is far too large.
Unconfirmed (recollection of the paper, not in the code): SphereConv, LogConv, MixConv, the linear and
sigmoid angular functions and the weighted operators; MixConv's β (we reuse SegConv's 0.5) and the sigmoid's
k (0.3 here). LogConv and MixConv use the raw ‖x‖ (no ρ, no μ).

Models:
- `dcnet_<magnitude>_<angular>_resnet20`: the CIFAR ResNet-20 of `baselines.resnet_cifar` (option-A
  shortcuts) with its 19 3×3 convs decoupled, so it compares one to one with `resnet20`; the official
  code has no ResNet-20, this pairing is ours.
- `dcnet_<variant>_resnet32w96` and the plain control `resnet32w96`: the official CIFAR-100 network, a
  stem conv + BN (no ReLU), 3 stages of 5 basic units at widths 96 / 192 / 384 with 1×1 conv + BN
  projection shortcuts where the shape changes, average pooling and a classifier (32 layers). The code's
  classifier is a bias-free 1×1 conv; ours is the linear layer (with bias) of the CIFAR ResNet.
- `load_plain_checkpoint` loads a plain network's weights into its decoupled counterpart (same module
  names), the paper's pretrain-then-decouple path; builders take `plain_checkpoint=<path>` to do it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.resnet_cifar import BasicBlock, CifarResNet, conv3x3
from baselines.slots import replay_init_draw
from bench.registry import register_model

MAGNITUDES = ("sphere", "ball", "tanh", "linear", "seg", "log", "mix")
BOUNDED_MAGNITUDES = ("sphere", "ball", "tanh")  # |h| <= α for any ‖x‖
ANGULARS = ("linear", "cos", "sigmoid", "sqcos")
_USES_RHO = ("ball", "tanh", "seg")


def magnitude_fn(
    name: str, xnorm: Tensor, rho: Tensor | float, alpha: float = 1.0, beta: float = 0.5
) -> Tensor:
    """h(‖x‖) of the decoupled operator; `rho` is the effective radius (ρ, or ρ·μ in the code)."""
    if name == "sphere":
        return torch.full_like(xnorm, alpha)
    if name == "ball":
        return alpha * torch.clamp(xnorm / rho, max=1.0)
    if name == "tanh":
        return alpha * torch.tanh(xnorm / rho)
    if name == "linear":
        return alpha * xnorm
    if name == "seg":
        return torch.where(xnorm <= rho, alpha * xnorm, beta * xnorm + (alpha - beta) * rho)
    if name == "log":
        return alpha * torch.log1p(xnorm)
    if name == "mix":
        return alpha * xnorm + beta * torch.log1p(xnorm)
    raise ValueError(f"unknown magnitude function {name!r}; choose one of {MAGNITUDES}")


def angular_fn(name: str, cos: Tensor, k: float = 0.3) -> Tensor:
    """g(θ) of the decoupled operator, from cos θ."""
    if name == "cos":
        return cos
    if name == "sqcos":
        return torch.sign(cos) * cos * cos
    # θ needs |cos θ| < 1 for a finite gradient: keep one rounding step away from ±1
    bound = 1 - torch.finfo(cos.dtype).eps
    half_pi_minus_theta = torch.asin(cos.clamp(-bound, bound))  # π/2 − θ
    if name == "linear":
        return half_pi_minus_theta * (2 / math.pi)  # 1 − 2θ/π
    if name == "sigmoid":
        # the paper's ratio of exponentials, written as tanh((π/2 − θ)/2k) / tanh(π/4k)
        return torch.tanh(half_pi_minus_theta * (1 / (2 * k))) * (1 / math.tanh(math.pi / (4 * k)))
    raise ValueError(f"unknown angular function {name!r}; choose one of {ANGULARS}")


@dataclass(frozen=True)
class DCConfig:
    """Every choice of a decoupled operator and its training; the defaults are the official code's."""

    magnitude: str = "tanh"
    angular: str = "cos"
    weighted: bool = False  # h(‖w‖, ‖x‖) = ‖w‖·h(‖x‖)
    rho_relative: bool = True  # code: ρ multiplies the batch-mean input norm μ
    alpha: float = 1.0
    beta: float = 0.5  # SegConv's slope above ρ (code: 0.5); MixConv's log weight (unconfirmed)
    k: float = 0.3  # sigmoid angular function's curvature (unconfirmed)
    eps: float = 1e-4  # inside the square roots of ‖w‖ and ‖x‖ (code: 1e-4)
    xnorm_momentum: float = 0.001  # of μ's running average (code: decay 0.999)
    project_every: int = 100  # re-normalise filters every this many training steps; 0 = never
    orth_weight: float = 1e-5  # orthogonality penalty weight; 0 = off
    bn: bool = True  # BN after every conv (code: `bn=False` in linear_sqcos_wo_bn)

    def __post_init__(self) -> None:
        if self.magnitude not in MAGNITUDES:
            raise ValueError(f"unknown magnitude {self.magnitude!r}; choose one of {MAGNITUDES}")
        if self.angular not in ANGULARS:
            raise ValueError(f"unknown angular function {self.angular!r}; choose one of {ANGULARS}")
        if self.weighted and self.project_every:
            raise ValueError(
                "a weighted operator uses ‖w‖, which filter re-normalisation resets: set project_every=0"
            )


class DecoupledConv2d(nn.Conv2d):
    """f(w, x) = h(‖w‖, ‖x‖)·g(θ) at every output location. `weight` has nn.Conv2d's shape and name, so a
    plain conv's state loads into it."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        cfg: DCConfig | None = None,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=False)
        self.cfg = cfg = cfg or DCConfig()
        if cfg.magnitude in _USES_RHO:
            self.radius = nn.Parameter(torch.ones(out_channels))  # ρ = r² + 1e-4
        self.register_buffer("xnorm_mean", torch.zeros(()))  # running μ (zero-initialised, debiased)
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def weight_norm(self) -> Tensor:
        """‖w‖ per output channel, [C_out, 1, 1, 1]."""
        return (self.weight.square().sum(dim=(1, 2, 3), keepdim=True) + self.cfg.eps).sqrt()

    @torch.no_grad()
    def project_(self) -> None:
        """Overwrite each filter by its normalised value (the code's weight projection)."""
        self.weight.div_(self.weight_norm())

    def input_norm(self, x: Tensor) -> Tensor:
        """‖x‖ of every patch, [N, 1, H_out, W_out]: x² summed over the channels, then over each k×k window
        (a one-channel convolution with a ones kernel: C_in times fewer MACs than a ones kernel over every
        channel, the same sum). In float32 even under autocast: a sum of k²·C_in squares overflows float16."""
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(torch.promote_types(x.dtype, torch.float32))
            ones = x.new_ones(1, 1, *self.kernel_size)
            sq = F.conv2d(
                x.square().sum(1, keepdim=True), ones, None, self.stride, self.padding, self.dilation
            )
            return (sq + self.cfg.eps).sqrt()

    def _mean_input_norm(self, xnorm: Tensor) -> Tensor:
        """μ: the batch mean of ‖x‖ in training, its debiased running average in inference."""
        if self.training:
            mu = xnorm.mean()
            with torch.no_grad():
                self.xnorm_mean.lerp_(mu.detach(), self.cfg.xnorm_momentum)
            return mu
        steps = int(self.num_batches_tracked)
        if steps == 0:
            return xnorm.mean()
        return self.xnorm_mean / (1 - (1 - self.cfg.xnorm_momentum) ** steps)

    def forward(self, x: Tensor) -> Tensor:
        cfg = self.cfg
        if self.training:
            self.num_batches_tracked += 1
            if cfg.project_every and int(self.num_batches_tracked) % cfg.project_every == 0:
                self.project_()
        wnorm = self.weight_norm()
        xnorm = self.input_norm(x)
        inner = F.conv2d(x, self.weight / wnorm, None, self.stride, self.padding, self.dilation)  # ‖x‖cos θ
        inner = inner.to(xnorm.dtype)  # the decoupling itself in float32 (autocast makes `inner` 16-bit)
        rho = 1.0
        if cfg.magnitude in _USES_RHO:
            rho = (self.radius.square() + 1e-4)[None, :, None, None]
            if cfg.rho_relative:
                rho = rho * self._mean_input_norm(xnorm)
        h = magnitude_fn(cfg.magnitude, xnorm, rho, cfg.alpha, cfg.beta)
        if cfg.weighted:
            h = h * wnorm.view(1, -1, 1, 1)
        if cfg.angular == "cos":  # h·cos θ = ⟨ŵ, x⟩·(h/‖x‖): one full-size product fewer
            return inner * (h / xnorm)
        return h * angular_fn(cfg.angular, inner / xnorm, cfg.k)

    def orthogonality_penalty(self) -> Tensor:
        """½‖ŴŴᵀ − I‖²_F over the normalised filters Ŵ [C_out, C_in·k·k]."""
        w = self.weight.flatten(1)
        w = w / (w.square().sum(1, keepdim=True) + self.cfg.eps).sqrt()
        gram = w @ w.t()
        return 0.5 * (gram - torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype)).square().sum()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, magnitude={self.cfg.magnitude}, angular={self.cfg.angular}"


def decoupled_conv3x3(
    in_planes: int, out_planes: int, stride: int = 1, cfg: DCConfig | None = None
) -> DecoupledConv2d:
    """The CIFAR ResNet's 3×3 conv (`conv_layer` slot), decoupled."""
    return DecoupledConv2d(in_planes, out_planes, 3, stride, 1, 1, cfg)


def load_plain_checkpoint(model: nn.Module, checkpoint: dict) -> None:
    """Pretrain-then-decouple: load a plain network's state (a state_dict, or a checkpoint holding one
    under "model" or "state_dict") into its decoupled counterpart. Every key must match except the
    decoupled convs' own radius and running statistics, which start fresh; unweighted decoupled
    filters are then normalised, as the first projection would do."""
    state = checkpoint
    for key in ("model", "state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    decoupled = {n: m for n, m in model.named_modules() if isinstance(m, DecoupledConv2d)}
    own = {f"{n}.{leaf}" for n in decoupled for leaf in ("radius", "xnorm_mean", "num_batches_tracked")}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f"the plain checkpoint does not fit this decoupled network: {err}") from None
    missing = [k for k in result.missing_keys if k not in own]
    if missing or result.unexpected_keys:
        raise ValueError(
            "the plain checkpoint does not fit this decoupled network: "
            f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}. "
            "Load a checkpoint of the plain network of the same depth and width (e.g. resnet20 for "
            "dcnet_*_resnet20, resnet32w96 for dcnet_*_resnet32w96)."
        )
    for module in decoupled.values():
        if not module.cfg.weighted:
            module.project_()


def no_norm(channels: int) -> nn.Identity:
    return nn.Identity()


class DCNetResNet(CifarResNet):
    """A CIFAR ResNet whose 3×3 convs (stem included) are decoupled; `cfg=None` leaves it plain.
    `shortcut` "A" (zero-pad) or "B" (1×1 conv + BN, the DCNets code); `stem_relu=False`: the DCNets
    code's stem, conv + BN without a ReLU."""

    def __init__(
        self,
        depth_per_stage: int,
        num_classes: int,
        in_chans: int,
        widths: tuple[int, int, int],
        cfg: DCConfig | None,
        shortcut: str = "A",
        stem_relu: bool = True,
    ):
        conv_layer = partial(decoupled_conv3x3, cfg=cfg) if cfg is not None else conv3x3
        norm_layer = no_norm if cfg is not None and not cfg.bn else nn.BatchNorm2d
        block_kwargs = {"shortcut": shortcut}
        super().__init__(
            BasicBlock, depth_per_stage, num_classes, in_chans, widths, block_kwargs, conv_layer, norm_layer
        )
        self.cfg, self.stem_relu = cfg, stem_relu
        for conv in self.decoupled_convs().values():
            # the first version built plain convs and then replaced each by a DecoupledConv2d
            replay_init_draw(conv)
        self.bench_info = {
            "operator": dataclasses.asdict(cfg) if cfg is not None else None,
            "decoupled_convs": len(self.decoupled_convs()),
            "decoupled": "every 3×3 conv incl. the stem; not the 1×1 shortcuts or the classifier",
            "shortcut": "projection (1×1 conv + BN)" if shortcut == "B" else "option A (zero-pad)",
            "stem_relu": stem_relu,
        }

    def forward_stem(self, x: Tensor) -> Tensor:
        x = self.bn1(self.conv1(x))
        return self.relu(x) if self.stem_relu else x

    def decoupled_convs(self) -> dict[str, DecoupledConv2d]:
        return {n: m for n, m in self.named_modules() if isinstance(m, DecoupledConv2d)}

    def aux_losses(self, progress: float) -> dict[str, Tensor]:
        if self.cfg is None or not self.cfg.orth_weight:
            return {}
        penalty = sum(m.orthogonality_penalty() for m in self.decoupled_convs().values())
        return {"orth": self.cfg.orth_weight * penalty}

    def no_weight_decay(self) -> set[str]:
        return {f"{n}.{p}" for n, m in self.decoupled_convs().items() for p, _ in m.named_parameters()}


# --- builders: the operator's DCConfig fields are per-model defaults ---------------------------------

_OPERATOR_FIELDS = {f.name for f in dataclasses.fields(DCConfig)}


def dcnet(
    name: str,
    depth_per_stage: int,
    widths: tuple[int, int, int],
    shortcut: str,
    stem_relu: bool,
    num_classes: int,
    in_chans: int,
    plain_checkpoint: str | None = None,
    decoupled: bool = True,
    **kwargs,
) -> DCNetResNet:
    unknown = set(kwargs) - (_OPERATOR_FIELDS if decoupled else set())
    if unknown:
        raise TypeError(
            f"{name}: unknown arguments {sorted(unknown)}; DCConfig fields are {sorted(_OPERATOR_FIELDS)}"
        )
    cfg = DCConfig(**kwargs) if decoupled else None
    model = DCNetResNet(depth_per_stage, num_classes, in_chans, widths, cfg, shortcut, stem_relu)
    if plain_checkpoint is not None:
        load_plain_checkpoint(model, torch.load(plain_checkpoint, map_location="cpu", weights_only=True))
        model.describe(plain_checkpoint=str(plain_checkpoint))
    return model


DCNET_ARCHS = {  # depth -> blocks per stage, widths, shortcut, stem ReLU
    20: (3, (16, 32, 64), "A", True),  # the CIFAR ResNet-20 (option-A shortcuts)
    32: (
        5,
        (96, 192, 384),
        "B",
        False,
    ),  # the official CIFAR-100 network (projection shortcuts, no stem ReLU)
}


def dcnet_resnet(depth: int, num_classes: int, in_chans: int, **kwargs) -> DCNetResNet:
    """The DCNets CIFAR ResNet of `depth` (`DCNET_ARCHS`) with every 3×3 conv decoupled (unless
    `decoupled=False`)."""
    return dcnet(f"DCNet ResNet-{depth}", *DCNET_ARCHS[depth], num_classes, in_chans, **kwargs)


DCNET_VARIANTS = {  # registry defaults (DCConfig fields) by variant: magnitude, angular function, bn
    "sphere_cos": {"magnitude": "sphere", "angular": "cos"},
    "ball_cos": {"magnitude": "ball", "angular": "cos"},
    "tanh_cos": {"magnitude": "tanh", "angular": "cos"},
    "linear_cos": {"magnitude": "linear", "angular": "cos"},
    "seg_cos": {"magnitude": "seg", "angular": "cos"},
    "log_cos": {"magnitude": "log", "angular": "cos"},
    "mix_cos": {"magnitude": "mix", "angular": "cos"},
    "sphere_linear": {"magnitude": "sphere", "angular": "linear"},
    "sphere_sigmoid": {"magnitude": "sphere", "angular": "sigmoid"},
    "sphere_sqcos": {"magnitude": "sphere", "angular": "sqcos"},
    "tanh_linear": {"magnitude": "tanh", "angular": "linear"},
    "tanh_sigmoid": {"magnitude": "tanh", "angular": "sigmoid"},
    "tanh_sqcos": {"magnitude": "tanh", "angular": "sqcos"},
    "linear_linear": {"magnitude": "linear", "angular": "linear"},
    "linear_sigmoid": {"magnitude": "linear", "angular": "sigmoid"},
    "linear_sqcos": {"magnitude": "linear", "angular": "sqcos"},
    "linear_sqcos_nobn": {"magnitude": "linear", "angular": "sqcos", "bn": False},
}


@register_model(**DCNET_VARIANTS["sphere_cos"])
def dcnet_sphere_cos_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: sphere magnitude, cosine angular function."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["ball_cos"])
def dcnet_ball_cos_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: ball magnitude, cosine angular function."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["tanh_cos"])
def dcnet_tanh_cos_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: tanh magnitude, cosine angular function."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["linear_cos"])
def dcnet_linear_cos_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: linear magnitude, cosine angular function."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["seg_cos"])
def dcnet_seg_cos_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: seg magnitude, cosine angular function."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["log_cos"])
def dcnet_log_cos_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: log magnitude, cosine angular function."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["mix_cos"])
def dcnet_mix_cos_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: mix magnitude, cosine angular function."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["sphere_linear"])
def dcnet_sphere_linear_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: sphere magnitude, linear angular function."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["sphere_sigmoid"])
def dcnet_sphere_sigmoid_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: sphere magnitude, sigmoid angular function."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["sphere_sqcos"])
def dcnet_sphere_sqcos_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: sphere magnitude, squared-cosine angular function."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["tanh_linear"])
def dcnet_tanh_linear_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: tanh magnitude, linear angular function."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["tanh_sigmoid"])
def dcnet_tanh_sigmoid_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: tanh magnitude, sigmoid angular function."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["tanh_sqcos"])
def dcnet_tanh_sqcos_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: tanh magnitude, squared-cosine angular function."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["linear_linear"])
def dcnet_linear_linear_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: linear magnitude, linear angular function."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["linear_sigmoid"])
def dcnet_linear_sigmoid_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: linear magnitude, sigmoid angular function."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["linear_sqcos"])
def dcnet_linear_sqcos_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: linear magnitude, squared-cosine angular function."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["linear_sqcos_nobn"])
def dcnet_linear_sqcos_nobn_resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-20: linear magnitude, squared-cosine angular function, no BN."""
    return dcnet_resnet(20, num_classes, in_chans, **kwargs)


# the official CIFAR-100 network: its five variant directories, and the same network with plain convs


@register_model(**DCNET_VARIANTS["tanh_cos"])
def dcnet_tanh_cos_resnet32w96(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-32 (widths 96/192/384): tanh magnitude, cosine angular function."""
    return dcnet_resnet(32, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["ball_cos"])
def dcnet_ball_cos_resnet32w96(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-32 (widths 96/192/384): ball magnitude, cosine angular function."""
    return dcnet_resnet(32, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["seg_cos"])
def dcnet_seg_cos_resnet32w96(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-32 (widths 96/192/384): seg magnitude, cosine angular function."""
    return dcnet_resnet(32, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["linear_cos"])
def dcnet_linear_cos_resnet32w96(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-32 (widths 96/192/384): linear magnitude, cosine angular function."""
    return dcnet_resnet(32, num_classes, in_chans, **kwargs)


@register_model(**DCNET_VARIANTS["linear_sqcos_nobn"])
def dcnet_linear_sqcos_nobn_resnet32w96(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """DCNet ResNet-32 (widths 96/192/384): linear magnitude, squared-cosine angular function, no BN."""
    return dcnet_resnet(32, num_classes, in_chans, **kwargs)


@register_model
def resnet32w96(num_classes: int = 10, in_chans: int = 3, **kwargs) -> DCNetResNet:
    """The plain control: the official DCNets CIFAR-100 network with ordinary convs."""
    return dcnet_resnet(32, num_classes, in_chans, decoupled=False, **kwargs)
