"""A loader that keeps the whole uint8 dataset on the training device and augments whole batches there.

Small datasets (CIFAR, Fashion-MNIST) fit in memory many times over; decoding and augmenting them per
image in Python worker processes is what usually starves the model (the approach of airbench). The
augmentation matches torchvision's `RandomCrop(size, padding=p)` + `RandomHorizontalFlip()`: zero
padding, a crop offset uniform over the 2p + 1 positions per axis, a flip with probability 0.5.
Data order comes from a CPU generator seeded by (seed, epoch), so an interrupted run resumes in order and
a seed gives the same batches on any device.

Under torchrun each rank takes its slice of every global batch: the permutation and the augmentation
draws (crop offsets, flips) are made for the whole global batch, in the same order as in one process,
then sliced, so the union over ranks of one step's images is exactly the one-process batch. The
caller hands in its rank and the world size (`bench.engine.distributed.world()`); this package knows
nothing of process groups.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor


def batch_per_rank(batch_size: int, world_size: int) -> int:
    """Each process's share of the global batch, which must split evenly over the processes."""
    if batch_size % world_size:
        raise ValueError(
            f"batch_size {batch_size} is the global batch and does not split over {world_size} "
            f"processes; make it a multiple of {world_size}"
        )
    return batch_size // world_size


def crop_offsets(n: int, padding: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Per-image crop offsets (rows, columns), uniform over the 2 * padding + 1 positions."""
    return tuple(
        torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=generator.device) for _ in "yx"
    )


def flips(n: int, generator: torch.Generator) -> Tensor:
    """Which images to flip, each with probability 0.5."""
    return torch.rand(n, generator=generator, device=generator.device) < 0.5


def random_crop(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Zero-pad by `padding` and crop back to the original size at a per-image random offset."""
    return crop_at(images, padding, *crop_offsets(images.shape[0], padding, generator))


def crop_at(images: Tensor, padding: int, dy: Tensor, dx: Tensor) -> Tensor:
    """Zero-pad by `padding` and crop back to the original size at offsets (dy, dx) per image."""
    n, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    chans = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    return flip_where(images, flips(images.shape[0], generator))


def flip_where(images: Tensor, flip: Tensor) -> Tensor:
    return torch.where(flip[:, None, None, None], images.flip(3), images)


class DeviceLoader:
    """Batches of normalised float images and labels from uint8 tensors already on `device`; with
    `world_size` > 1, rank `rank`'s slice of each (global) batch of `batch_size`."""

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
        rank: int = 0,
        world_size: int = 1,
    ):
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle, self.crop_padding, self.flip, self.drop_last = shuffle, crop_padding, flip, drop_last
        self.seed = seed
        self.epoch = 0
        self.first = 0  # the batch the next pass starts at (resuming mid-epoch)
        self.share = batch_per_rank(batch_size, world_size)  # this rank's images of each batch
        self.rank = rank
        shape = (1, -1, 1, 1)
        self.scale = (1 / (255 * torch.tensor(std, device=self.device))).view(shape)
        self.shift = (-torch.tensor(mean, device=self.device) / torch.tensor(std, device=self.device)).view(
            shape
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def start_at(self, batch: int) -> None:
        """The next pass starts at this batch: the batches before it draw their crops and flips (the
        generator's stream stays that of a pass from the start) but are neither gathered nor yielded."""
        self.first = batch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # drawn on the CPU whatever the device (then moved): a seed gives the same batches on a GPU
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n = len(self.labels)
        order = torch.randperm(n, generator=generator).to(self.device) if self.shuffle else None
        dy, dx, flip = self._draws(n, generator)
        first, self.first = self.first, 0  # batches before `first` ran before an interruption
        for i in range(first, len(self)):
            start, stop = i * self.batch_size, min(n, (i + 1) * self.batch_size)
            # this rank's share of the batch; crops and flips were drawn for the whole batch, as in one process
            mine = slice(start + self.rank * self.share, min(stop, start + (self.rank + 1) * self.share))
            index = mine if order is None else order[mine]
            x = self.images[index]
            if self.crop_padding:
                x = crop_at(x, self.crop_padding, dy[mine], dx[mine])
            if self.flip:
                x = flip_where(x, flip[mine])
            yield x.float() * self.scale + self.shift, self.labels[index]

    def _draws(
        self, n: int, generator: torch.Generator
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """A pass's crop offsets (rows, columns) and flips, drawn batch by batch as the pass uses them, then
        moved to the device in one copy each: a copy per step would make every step wait for the GPU."""
        rows, cols, flipped = [], [], []
        for i in range(len(self)):
            size = min(n, (i + 1) * self.batch_size) - i * self.batch_size
            if self.crop_padding:
                dy, dx = crop_offsets(size, self.crop_padding, generator)
                rows.append(dy)
                cols.append(dx)
            if self.flip:
                flipped.append(flips(size, generator))
        return tuple(torch.cat(parts).to(self.device) if parts else None for parts in (rows, cols, flipped))
