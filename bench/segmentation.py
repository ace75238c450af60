"""PSPNet (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017, arXiv 1612.01105) on a dilated
ResNet-50, plain or with Batch-Shaping channel gates, and the Cityscapes metrics (mIoU, pixel accuracy).

The backbone is torchvision's ResNet-50 with the strides of stages 4 and 5 replaced by dilation 2 and 4
(`replace_stride_with_dilation=[False, True, True]`): output stride 8, as in the paper. The gated
backbone is `methods.batch_shaping`'s ResNet-50 (v1.5 bottlenecks, a gate on each block's first conv)
built with the same dilation. The head is the paper's pyramid pooling module: average pooling to
1x1, 2x2, 3x3 and 6x6 bins, a 1x1 conv to 512 channels (2048 / 4) with BN and ReLU per bin, bilinear
upsampling, concatenation with the backbone features, a 3x3 conv to 512 + BN + ReLU, dropout 0.1 and a
1x1 classifier, upsampled bilinearly to the input size.

Follows the official code (hszhao/semseg) rather than the paper text in: bilinear interpolation with
align_corners=True; dropout 0.1 before the classifier. Not built: the auxiliary head on stage 4
(the paper's deep supervision, weight 0.4) - the train loop's auxiliary-loss hook has no labels, so
the suite trains the main head alone (stated in `bench_info`). Evaluation is on whole images at full
resolution (no sliding window, no multi-scale, no flipping).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet
from torchvision.models import resnet50

from bench.registry import register

IGNORE_INDEX = 255
PYRAMID_BINS = (1, 2, 3, 6)


class PyramidPooling(nn.Module):
    def __init__(self, in_channels: int, bins=PYRAMID_BINS):
        super().__init__()
        reduced = in_channels // len(bins)
        self.bins = tuple(bins)
        for b in bins:  # direct children (bin1, bin2, ...): the MAC counter attributes by module path
            self.add_module(f"bin{b}", nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, reduced, 1, bias=False),
                                                     nn.BatchNorm2d(reduced), nn.ReLU(inplace=True)))  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(getattr(self, f"bin{b}")(x), size, mode="bilinear", align_corners=True)
                  for b in self.bins]  # fmt: skip
        return torch.cat([x, *pooled], dim=1)


class PSPNet(nn.Module):
    """Dilated backbone (output stride 8) -> pyramid pooling -> 3x3 conv -> classifier -> upsampling."""

    def __init__(self, backbone: nn.Module, num_classes: int, in_channels: int = 2048):
        super().__init__()
        backbone.fc = nn.Identity()  # no classifier: every parameter takes part (DDP needs that)
        self.backbone = backbone
        self.ppm = PyramidPooling(in_channels)
        self.head = nn.Sequential(
            nn.Conv2d(2 * in_channels, 512, 3, padding=1, bias=False), nn.BatchNorm2d(512), nn.ReLU(inplace=True),
            nn.Dropout2d(0.1), nn.Conv2d(512, num_classes, 1),
        )  # fmt: skip
        self.bench_info = {
            **getattr(backbone, "bench_info", {}),
            "head": "PSPNet (bins 1/2/3/6), no auxiliary head",
            "output_stride": 8,
            "eval": "whole image, full resolution, single scale",
        }

    def forward(self, x: Tensor) -> Tensor:
        out = self.head(self.ppm(self.backbone(x)))  # the backbone returns its stage-5 features
        return F.interpolate(out, x.shape[-2:], mode="bilinear", align_corners=True)

    def aux_losses(self, progress: float) -> dict[str, Tensor]:
        hook = getattr(self.backbone, "aux_losses", None)  # the gated backbone's batch-shaping and L0
        return hook(progress) if hook is not None else {}

    def no_weight_decay(self) -> set[str]:
        hook = getattr(self.backbone, "no_weight_decay", None)
        return {f"backbone.{n}" for n in hook()} if hook is not None else set()


def _features(self, x: Tensor) -> Tensor:
    """A ResNet's forward up to stage 5 (no pooling, no classifier)."""
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class DilatedResNet(tv_resnet.ResNet):
    """torchvision's ResNet whose forward returns the stage-5 feature map."""

    forward = _features


def dilated_resnet50(in_chans: int = 3) -> nn.Module:
    net = resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
    net.__class__ = DilatedResNet  # the same modules and weights; only forward stops before the pooling
    if in_chans != 3:
        net.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
    return net


def dilated_bas_resnet50(in_chans: int = 3, **gate_kwargs) -> nn.Module:
    from baselines.resnet_imagenet import ImageNetResNet
    from methods.batch_shaping import BasBottleneck, BasResNetImageNet, BatchShapingConfig, _configured

    class DilatedBasResNet50(BasResNetImageNet):
        def __init__(self, cfg: BatchShapingConfig):
            ImageNetResNet.__init__(self, _configured(BasBottleneck, cfg), [3, 4, 6, 3], 1000, in_chans,
                                    replace_stride_with_dilation=[False, True, True])  # fmt: skip
            self._init_batch_shaping(cfg, "resnet50 (dilated, output stride 8)")
            self.bench_info["layout"] = "v1.5"

        forward = _features

    return DilatedBasResNet50(BatchShapingConfig(**gate_kwargs))


def pspnet_resnet50(num_classes: int = 19, in_chans: int = 3, **kwargs) -> PSPNet:
    """PSPNet on a dilated torchvision ResNet-50 (output stride 8)."""
    return PSPNet(dilated_resnet50(in_chans), num_classes)


def pspnet_bas_resnet50(num_classes: int = 19, in_chans: int = 3, **kwargs) -> PSPNet:
    """PSPNet on a dilated ResNet-50 with Batch-Shaping channel gates (Ehteshami Bejnordi et al. 2020)."""
    return PSPNet(dilated_bas_resnet50(in_chans, **kwargs), num_classes)


register("pspnet_resnet50", pspnet_resnet50)
register("pspnet_bas_resnet50", pspnet_bas_resnet50)


def segmentation_loss(logits: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)


@torch.inference_mode()
def evaluate_segmentation(
    model: nn.Module, loader, num_classes: int, device: str = "cpu"
) -> dict[str, float]:
    """mIoU and pixel accuracy (torchmetrics, pixels labelled 255 ignored) and the mean pixel loss.

    Under torchrun each rank evaluates its share of the images; torchmetrics sums its states over the
    process group at `compute()`.
    """
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    iou = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=IGNORE_INDEX).to(device)
    acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE_INDEX).to(device)
    model.to(device).eval()
    loss = torch.zeros(2, dtype=torch.float64, device=device)  # summed pixel loss, labelled pixels
    for x, y in loader:
        logits = model(x.to(device)).float()
        y = y.to(device)
        pred = logits.argmax(1)
        iou.update(pred, y)
        acc.update(pred, y)
        loss += torch.stack([F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum").double(),
                             (y != IGNORE_INDEX).sum().double()])  # fmt: skip
    from bench.distributed import all_reduce_sum

    total, pixels = all_reduce_sum(loss).tolist()
    return {"miou_pct": 100 * iou.compute().item(), "pixel_acc_pct": 100 * acc.compute().item(),
            "eval_loss": total / max(pixels, 1)}  # fmt: skip
