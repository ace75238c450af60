"""Cityscapes semantic segmentation (fine annotations), through torchvision's `Cityscapes`, streamed.

Layout (the two archives `leftImg8bit_trainvaltest.zip` and `gtFine_trainvaltest.zip` unpacked in ROOT):
`ROOT/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png` and
`ROOT/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png`.
torchvision returns raw labelIds (0-33, and -1 for the licence plate); the 19 evaluated classes are
their `train_id`s from `Cityscapes.classes` (the official table), every other id becomes 255, ignored
by the loss and the metrics.

Training augmentation (PSPNet's, Zhao et al. 2017): random scale in [0.5, 2.0], random crop of
`crop_size` (padding with the ImageNet mean and label 255), horizontal flip. The official code also
rotates by +-10 degrees and blurs; those two are left out here. Evaluation is on whole images at full
resolution (1024x2048), single scale.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from functools import cached_property
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Subset

from bench.data.base import DatasetNotFoundError, dataset_search_roots
from bench.data.imagenet import FolderDataset

NUM_CLASSES = 19
IGNORE_INDEX = 255
MEASURE_IMAGES = 50  # full-resolution images held in memory for executed MACs (50 x 6 MB)

CITYSCAPES_HELP = (
    "Cityscapes is not at {where}. Download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
    "https://www.cityscapes-dataset.com/downloads/ (an account is needed), unzip both into ROOT so that "
    "ROOT/leftImg8bit/{{train,val}}/<city>/*_leftImg8bit.png and "
    "ROOT/gtFine/{{train,val}}/<city>/*_gtFine_labelIds.png exist; then pass --data-root ROOT or set $BENCH_DATA."
)


def train_id_table() -> Tensor:
    """labelId (0..255) -> trainId, from torchvision's copy of the official table; unlisted ids -> 255."""
    from torchvision.datasets import Cityscapes

    table = torch.full((256,), IGNORE_INDEX, dtype=torch.uint8)
    for c in Cityscapes.classes:
        if 0 <= c.id < 256 and 0 <= c.train_id < NUM_CLASSES:
            table[c.id] = c.train_id
    return table


class JointTransform:
    """(PIL image, PIL labelIds) -> (normalised float image, trainId mask as int64)."""

    def __init__(self, train: bool, crop_size: int, mean, std):
        self.train, self.crop_size = train, crop_size
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.table = train_id_table()

    def __call__(self, image, target) -> tuple[Tensor, Tensor]:
        from torchvision.transforms.functional import pil_to_tensor

        x = pil_to_tensor(image.convert("RGB")).float() / 255
        y = self.table[pil_to_tensor(target)[0].long()].long()
        if self.train:
            x, y = self._augment(x, y)
        return (x - self.mean) / self.std, y

    def _augment(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        scale = 0.5 + 1.5 * torch.rand(()).item()
        h, w = (max(1, round(s * scale)) for s in x.shape[-2:])
        x = F.interpolate(x[None], (h, w), mode="bilinear", align_corners=False)[0]
        y = F.interpolate(y[None, None].float(), (h, w), mode="nearest")[0, 0].long()
        c = self.crop_size
        if h < c or w < c:  # pad to the crop with the mean colour (0 after normalising) and "ignore"
            ph, pw = max(0, c - h), max(0, c - w)
            x = torch.cat([F.pad(x[i : i + 1], (0, pw, 0, ph), value=self.mean[i].item()) for i in range(3)])
            y = F.pad(y, (0, pw, 0, ph), value=IGNORE_INDEX)
        top = torch.randint(0, x.shape[1] - c + 1, ()).item()
        left = torch.randint(0, x.shape[2] - c + 1, ()).item()
        x, y = x[:, top : top + c, left : left + c], y[top : top + c, left : left + c]
        if torch.rand(()).item() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return x, y


@dataclasses.dataclass(frozen=True)
class CityscapesData(FolderDataset):
    """Cityscapes fine: streamed batches of crops (training) and whole images (evaluation)."""

    crop_size: int = 713
    measure_images = MEASURE_IMAGES

    def _folder(self, split: str):
        from torchvision.datasets import Cityscapes

        if split not in self._cache:
            self._cache[split] = Cityscapes(str(self.root), split=split, mode="fine", target_type="semantic")
        return self._cache[split]

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    @cached_property
    def input_shape(self) -> tuple[int, int, int]:
        """The evaluation images' shape (whole images): what MACs and latency are measured at."""
        image, _ = self._folder("val")[0]
        return (3, image.height, image.width)

    @cached_property
    def train_labels(self) -> Tensor:  # one entry per image: the record's counts
        return torch.zeros(len(self._train_indices()), dtype=torch.long)

    @cached_property
    def test_labels(self) -> Tensor:
        return torch.zeros(len(self._folder("val")), dtype=torch.long)

    @cached_property
    def eval_digest(self) -> str:
        h = hashlib.sha256()
        val = self._folder("val")
        for image, targets in zip(val.images, val.targets, strict=True):
            for path in (image, targets[0]):
                p = Path(path)
                h.update(f"{p.relative_to(self.root)}\t{p.stat().st_size}\n".encode())
        return h.hexdigest()

    def _split(self, split: str, train: bool, normalize: bool = True):
        if normalize:
            joint = JointTransform(train, self.crop_size, *self.mean_std)
        else:  # uint8 whole images for the in-memory measurement slice

            def joint(image, target):
                from torchvision.transforms.functional import pil_to_tensor

                return pil_to_tensor(image.convert("RGB")), 0

        data = copy.copy(self._folder(split))  # the folder scanned once, with this use's transforms
        data.transforms = joint
        return Subset(data, self._train_indices()) if split == "train" else data


def load_cityscapes(root: str | None = None) -> CityscapesData:
    """Cityscapes from `root`, then $BENCH_DATA (also its `cityscapes/` subfolder)."""
    roots = [r for base in dataset_search_roots(root) for r in (base, base / "cityscapes")]
    for r in roots:
        if all(
            (r / kind / split).is_dir() for kind in ("leftImg8bit", "gtFine") for split in ("train", "val")
        ):
            return CityscapesData("cityscapes", r, source=str(r))
    where = ", ".join(str(r) for r in roots) or "any folder (no --data-root and no $BENCH_DATA given)"
    raise DatasetNotFoundError(CITYSCAPES_HELP.format(where=where))
