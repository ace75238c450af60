"""A dataset's task: what the training loop and the runner ask of classification or segmentation.

Neither the loop nor the runner branches on the kind of dataset; they call its task:

- `loss(cfg)`: the training loss `(output, target) -> Tensor`, a mean over the counted items;
- `scored(logits, target)`: a step's correct predictions and how many were counted (images, or
  labelled pixels); the epoch's loss and accuracy are weighted by that count;
- `metrics(model, loader, num_classes, device)`: the evaluation metrics over a rank's evaluation
  loader, summed over the process group (`bench.engine.train.evaluate` hands it the loader);
- `probe(data)`: the input a model is checked on before a suite starts, and the output it must give;
- `notes`: what a record's `model_info` says about how the metrics were computed.

`bench.data.DATASET_TASKS` names each dataset's task and `TASKS` maps the name to its object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.pspnet import AUX_LOSS_WEIGHT
from bench.data.cityscapes import IGNORE_INDEX
from bench.engine.distributed import all_reduce_sum

Shape = tuple[int, ...]
Loss = Callable[[Tensor | dict[str, Tensor], Tensor], Tensor]


class Task(Protocol):
    name: str
    notes: dict[str, str]

    def loss(self, cfg) -> Loss: ...
    def scored(self, logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor | int]: ...
    def metrics(self, model: nn.Module, loader, num_classes: int, device: str) -> dict[str, float]: ...
    def probe(self, data) -> tuple[Shape, Shape]: ...


class Classification:
    """One label per image: cross-entropy (label smoothing from the config), top-1 / top-5 accuracy."""

    name = "classification"
    notes: dict[str, str] = {}

    def loss(self, cfg) -> Loss:
        def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)

        return cross_entropy

    def scored(self, logits: Tensor, y: Tensor) -> tuple[Tensor, int]:
        return (logits.argmax(1) == y).sum(), len(y)

    @torch.inference_mode()
    def metrics(self, model: nn.Module, loader, num_classes: int, device: str = "cpu") -> dict[str, float]:
        """Top-1 / top-5 accuracy (percent) and mean cross-entropy, summed over the ranks' shares."""
        k = min(5, num_classes)
        model.to(device).eval()
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # top-1, top-5, loss, images
        for x, y in loader:
            logits = model(x.to(device, non_blocking=True)).float()
            y = y.to(device, non_blocking=True)
            hits = logits.topk(k, dim=1).indices == y[:, None]
            sums += torch.stack(
                [
                    hits[:, 0].sum().double(),
                    hits.any(1).sum().double(),
                    F.cross_entropy(logits, y, reduction="sum").double(),
                    sums.new_full((), len(y)),  # a fill on the device: no host-to-device copy per batch
                ]
            )
        top1, top5, loss, n = all_reduce_sum(sums).tolist()
        return {"top1_pct": 100 * top1 / n, "top5_pct": 100 * top5 / n, "eval_loss": loss / n}

    def probe(self, data) -> tuple[Shape, Shape]:
        """One image of the dataset's shape in, one row of class scores out (for a batch of two)."""
        return tuple(data.input_shape), (2, data.num_classes)


class Segmentation:
    """A label per pixel (255: ignored): the pixel cross-entropy with PSPNet's auxiliary share
    (`segmentation_loss`); mIoU, pixel accuracy and the mean pixel loss (`evaluate_segmentation`)."""

    name = "segmentation"
    notes = {"segmentation_metrics": "torchmetrics MulticlassJaccardIndex / MulticlassAccuracy, ignore 255"}
    probe_size = (64, 128)  # a fully convolutional model is checked on a small image, not a 1024x2048 frame

    def loss(self, cfg) -> Loss:
        return segmentation_loss

    def metrics(self, model: nn.Module, loader, num_classes: int, device: str = "cpu") -> dict[str, float]:
        return evaluate_segmentation(model, loader, num_classes, device)

    def scored(self, logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Correct labelled pixels and the labelled pixels (device tensors: no read-back in the loop)."""
        labelled = y != IGNORE_INDEX
        return ((logits.argmax(1) == y) & labelled).sum(), labelled.sum()  # a mask, not indexing: no sync

    def probe(self, data) -> tuple[Shape, Shape]:
        return (data.in_chans, *self.probe_size), (2, data.num_classes, *self.probe_size)


CLASSIFICATION = Classification()
TASKS: dict[str, Task] = {"classification": CLASSIFICATION, "segmentation": Segmentation()}


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
    total, pixels = all_reduce_sum(loss).tolist()
    return {
        "miou_pct": 100 * iou.compute().item(),
        "pixel_acc_pct": 100 * acc.compute().item(),
        "eval_loss": total / max(pixels, 1),
    }
