"""A dataset's task: what the training loop and the runner ask of classification or segmentation.

Neither the loop nor the runner branches on the kind of dataset; they call its task:

- `loss(cfg)`: the training loss `(output, target) -> Tensor`, a mean over the counted items;
- `scored(logits, target)`: a step's correct predictions and how many were counted (images, or
  labelled pixels); the epoch's loss and accuracy are weighted by that count;
- `metrics(model, loader, num_classes, device)`: the evaluation metrics over a rank's evaluation
  loader, summed over the process group (`bench.engine.train.evaluate` hands it the loader);
- `probe(data)`: the input a model is checked on before a suite starts, and the output it must give;
- `notes`: what a record's `model_info` says about how the metrics were computed.

`bench.data.DATASET_TASKS` names each dataset's task and `bench.commands.runner.TASKS` maps the name
to its object. The segmentation task is handed `bench.segmentation`'s loss and metrics there: that
module imports bench.engine, so importing it here would make a package cycle until it moves here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
            sums += torch.stack([hits[:, 0].sum().double(), hits.any(1).sum().double(),
                                 F.cross_entropy(logits, y, reduction="sum").double(),
                                 torch.tensor(len(y), dtype=torch.float64, device=device)])  # fmt: skip
        top1, top5, loss, n = all_reduce_sum(sums).tolist()
        return {"top1_pct": 100 * top1 / n, "top5_pct": 100 * top5 / n, "eval_loss": loss / n}

    def probe(self, data) -> tuple[Shape, Shape]:
        """One image of the dataset's shape in, one row of class scores out (for a batch of two)."""
        return tuple(data.input_shape), (2, data.num_classes)


class Segmentation:
    """A label per pixel (255: ignored): `loss` and `metrics` are bench.segmentation's
    (`segmentation_loss`, `evaluate_segmentation`: mIoU, pixel accuracy, mean pixel loss)."""

    name = "segmentation"
    notes = {"segmentation_metrics": "torchmetrics MulticlassJaccardIndex / MulticlassAccuracy, ignore 255"}
    probe_size = (64, 128)  # a fully convolutional model is checked on a small image, not a 1024x2048 frame

    def __init__(self, loss: Loss, metrics: Callable[..., dict[str, float]]):
        self._loss, self.metrics = loss, metrics

    def loss(self, cfg) -> Loss:
        return self._loss

    def scored(self, logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Correct labelled pixels and the labelled pixels (device tensors: no read-back in the loop)."""
        labelled = y != IGNORE_INDEX
        return ((logits.argmax(1) == y) & labelled).sum(), labelled.sum()  # a mask, not indexing: no sync

    def probe(self, data) -> tuple[Shape, Shape]:
        return (data.in_chans, *self.probe_size), (2, data.num_classes, *self.probe_size)


CLASSIFICATION = Classification()
