"""PSPNet of Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017 (arXiv 1612.01105), on a dilated
ResNet-50 given as its backbone.

The backbone is the ImageNet ResNet-50 (torchvision's definition, `baselines.resnet_imagenet`) with the
strides of stages 4 and 5 replaced by dilation 2 and 4 (`replace_stride_with_dilation=[False, True,
True]`): output stride 8, as in the paper; built with `features_only=True`, it returns the features of
stages 2 to 5. `pspnet_resnet50` is the plain one; a method puts its own backbone under the same head
(`methods.batch_shaping.pspnet_bas_resnet50`). The head is the paper's pyramid pooling module: average
pooling to 1x1, 2x2, 3x3 and 6x6 bins, a 1x1 conv to 512 channels (2048 / 4) with BN and ReLU per bin,
bilinear upsampling, concatenation with the backbone features, a 3x3 conv to 512 + BN + ReLU, dropout
0.1 and a 1x1 classifier, upsampled bilinearly to the input size.

The paper's deep supervision is the auxiliary head on stage 4 (hszhao/semseg `model/pspnet.py`: a 3x3
conv 1024 -> 256 + BN + ReLU, dropout 0.1, a 1x1 classifier, upsampled to the input; its loss weighs
0.4). In training the model returns `{"out": ..., "aux": ...}` (torchvision's segmentation convention)
and `bench.engine.tasks.segmentation_loss` adds the weighted auxiliary loss; in evaluation it returns
the main logits alone, so the auxiliary head is in the parameter count but not in the MACs or the
latency.

Follows the official code rather than the paper text in: bilinear interpolation with align_corners=True;
dropout 0.1 before the classifiers. Evaluation is on whole images at full resolution (no sliding window,
no multi-scale, no flipping). The paper starts from an ImageNet-trained backbone: `backbone_weights`
takes a state dict file of the backbone (torchvision's ResNet-50 weights, or the `last.pt` of an
`imagenet` suite run of `resnet50` / `bas_resnet50`); nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.resnet_imagenet import Bottleneck, ImageNetResNet
from bench.registry import register_model

PYRAMID_BINS = (1, 2, 3, 6)
AUX_LOSS_WEIGHT = 0.4  # hszhao/semseg config `aux_weight: 0.4`; mmsegmentation's PSPNet uses the same
DILATION = [False, True, True]  # stages 4 and 5 dilated: output stride 8


class PyramidPooling(nn.Module):
    def __init__(self, in_channels: int, bins=PYRAMID_BINS):
        super().__init__()
        reduced = in_channels // len(bins)
        self.bins = tuple(bins)
        for b in bins:  # direct children (bin1, bin2, ...): the MAC counter attributes by module path
            self.add_module(
                f"bin{b}",
                nn.Sequential(
                    nn.AdaptiveAvgPool2d(b),
                    nn.Conv2d(in_channels, reduced, 1, bias=False),
                    nn.BatchNorm2d(reduced),
                    nn.ReLU(inplace=True),
                ),
            )

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(getattr(self, f"bin{b}")(x), size, mode="bilinear", align_corners=True)
            for b in self.bins
        ]
        return torch.cat([x, *pooled], dim=1)


def _classifier(in_channels: int, channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Dropout2d(0.1),
        nn.Conv2d(channels, num_classes, 1),
    )


class PSPNet(nn.Module):
    """Dilated backbone (output stride 8, returning its stage outputs) -> pyramid pooling -> 3x3 conv ->
    classifier -> upsampling, with the auxiliary classifier on stage 4 in training."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        in_channels: int = 2048,
        aux_channels: int = 1024,
        aux_head: bool = True,
    ):
        super().__init__()
        backbone.fc = nn.Identity()  # no classifier: every parameter takes part (DDP needs that)
        self.backbone = backbone
        self.ppm = PyramidPooling(in_channels)
        self.head = _classifier(2 * in_channels, 512, num_classes)
        self.aux = _classifier(aux_channels, 256, num_classes) if aux_head else None
        aux = (
            f", auxiliary head on stage 4 (loss weight {AUX_LOSS_WEIGHT}; training only: in params, not in MACs)"
            if aux_head
            else ", no auxiliary head"
        )
        self.bench_info = {
            **getattr(backbone, "bench_info", {}),
            "head": "PSPNet (bins 1/2/3/6)" + aux,
            "output_stride": 8,
            "eval": "whole image, full resolution, single scale",
        }

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        *_, stage4, stage5 = self.backbone(x)
        out = F.interpolate(self.head(self.ppm(stage5)), x.shape[-2:], mode="bilinear", align_corners=True)
        if self.training and self.aux is not None:
            aux = F.interpolate(self.aux(stage4), x.shape[-2:], mode="bilinear", align_corners=True)
            return {"out": out, "aux": aux}
        return out

    def aux_losses(self, progress: float) -> dict[str, Tensor]:
        hook = getattr(self.backbone, "aux_losses", None)  # a gated backbone's own losses
        return hook(progress) if hook is not None else {}

    def no_weight_decay(self) -> set[str]:
        hook = getattr(self.backbone, "no_weight_decay", None)
        return {f"backbone.{n}" for n in hook()} if hook is not None else set()

    def set_gating(self, enabled: bool) -> None:
        if hasattr(self.backbone, "set_gating"):
            self.backbone.set_gating(enabled)


def load_backbone_weights(backbone: nn.Module, path: str) -> str:
    """Load an ImageNet-trained backbone from `path` (a state dict, or a checkpoint with one under
    "model"); every backbone weight must be there (the classifier `fc.*` is dropped). Returns the file's
    sha256, which the record keeps."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"backbone_weights {path!r} does not exist: give the path of a ResNet-50 state dict "
            "(torchvision's resnet50 weights file, or the last.pt of an imagenet suite run)"
        )
    data = file.read_bytes()  # read once: hashed for the record and loaded
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        raise ValueError(f"backbone_weights {path!r} is not a readable torch state dict: {e}") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"backbone_weights {path!r} holds a {type(state).__name__}, not a state dict")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = {k: v for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    checks = (
        ("missing", [k for k in own if k not in state]),
        ("unexpected", [k for k in state if k not in own]),
        ("of another shape", [k for k in state if k in own and state[k].shape != own[k].shape]),
    )
    problems = [f"{len(v)} {what} (e.g. {v[:2]})" for what, v in checks if v]
    if problems:
        raise ValueError(f"backbone_weights {path!r} does not fit this backbone: {'; '.join(problems)}")
    backbone.load_state_dict(state, strict=False)  # everything but the classifier, which PSPNet drops
    return hashlib.sha256(data).hexdigest()


def pspnet(
    backbone: nn.Module, num_classes: int, aux_head: bool = True, backbone_weights: str | None = None
) -> PSPNet:
    """PSPNet on `backbone` (a dilated ResNet-50 returning its stage outputs), optionally ImageNet-trained."""
    if backbone_weights is not None:
        digest = load_backbone_weights(backbone, backbone_weights)
        backbone.bench_info = {**getattr(backbone, "bench_info", {}), "backbone_weights_sha256": digest}
    return PSPNet(backbone, num_classes, aux_head=aux_head)


def dilated_resnet50(in_chans: int = 3) -> ImageNetResNet:
    """torchvision's ResNet-50 with output stride 8, returning the features of stages 2 to 5."""
    return ImageNetResNet(
        Bottleneck, [3, 4, 6, 3], 1000, in_chans, replace_stride_with_dilation=DILATION, features_only=True
    )


@register_model
def pspnet_resnet50(
    num_classes: int = 19, in_chans: int = 3, aux_head: bool = True, backbone_weights: str | None = None
) -> PSPNet:
    """PSPNet on a dilated torchvision ResNet-50 (output stride 8)."""
    return pspnet(dilated_resnet50(in_chans), num_classes, aux_head, backbone_weights)
