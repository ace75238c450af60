"""A loader that keeps the whole uint8 dataset on the training device and augments whole batches there.

Small datasets (CIFAR, Fashion-MNIST) fit in memory many times over; decoding and augmenting them per
image in Python worker processes is what usually starves the model (the approach of airbench). The
augmentation matches torchvision's `RandomCrop(size, padding=p)` + `RandomHorizontalFlip()`: zero
padding, a crop offset uniform over the 2p + 1 positions per axis, a flip with probability 0.5.
Data order comes from a generator seeded by (seed, epoch), so an interrupted run resumes in order.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Zero-pad by `padding` and crop back to the original size at a per-image random offset."""
    n, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=generator.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=generator.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    chans = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    flip = torch.rand(images.shape[0], generator=generator, device=generator.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


class DeviceLoader:
    """Batches of normalised float images and labels from uint8 tensors already on `device`."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        device: str | torch.device = "cpu",
        shuffle: bool = False,
        crop_padding: int = 0,
        flip: bool = False,
        drop_last: bool = False,
        seed: int = 0,
    ):
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle, self.crop_padding, self.flip, self.drop_last = shuffle, crop_padding, flip, drop_last
        self.seed = seed
        self.epoch = 0
        shape = (1, -1, 1, 1)
        self.scale = (1 / (255 * torch.tensor(std, device=self.device))).view(shape)
        self.shift = (-torch.tensor(mean, device=self.device) / torch.tensor(std, device=self.device)).view(
            shape
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator(self.device).manual_seed(self.seed * 100_003 + self.epoch)
        n = len(self.labels)
        order = torch.randperm(n, generator=generator, device=self.device) if self.shuffle else None
        for i in range(len(self)):
            index = slice(i * self.batch_size, min(n, (i + 1) * self.batch_size))
            if order is not None:
                index = order[index]
            x = self.images[index]
            if self.crop_padding:
                x = random_crop(x, self.crop_padding, generator)
            if self.flip:
                x = random_flip(x, generator)
            yield x.float() * self.scale + self.shift, self.labels[index]
