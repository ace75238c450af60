"""The Cityscapes losses and metrics of the segmentation models (PSPNet: `baselines.pspnet`): the pixel
cross-entropy with the auxiliary head's share, mIoU and pixel accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.pspnet import AUX_LOSS_WEIGHT
from bench.data.cityscapes import IGNORE_INDEX

__all__ = ["AUX_LOSS_WEIGHT", "evaluate_segmentation", "segmentation_loss"]


def segmentation_loss(output: Tensor | dict[str, Tensor], target: Tensor) -> Tensor:
    """Pixel cross-entropy (label 255 ignored), plus the auxiliary head's at weight 0.4 in training."""
    if isinstance(output, dict):
        return segmentation_loss(output["out"], target) + AUX_LOSS_WEIGHT * segmentation_loss(
            output["aux"], target
        )
    return F.cross_entropy(output.float(), target, ignore_index=IGNORE_INDEX)


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
        pixel_loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum").double()
        loss += torch.stack([pixel_loss, (y != IGNORE_INDEX).sum().double()])
    from bench.engine.distributed import all_reduce_sum

    total, pixels = all_reduce_sum(loss).tolist()
    return {
        "miou_pct": 100 * iou.compute().item(),
        "pixel_acc_pct": 100 * acc.compute().item(),
        "eval_loss": total / max(pixels, 1),
    }
