"""The in-memory dataset record shared by every small classification dataset.

Every dataset, in memory or streamed (`bench.data.imagenet.FolderDataset`), answers the same calls:
`configure(cfg)`, `subset(n)`, `train_loader(cfg, seed, device, rank, world_size)`,
`eval_loader(batch_size, device, rank, world_size)` (each rank's share, `batch_size` images a batch) and
`measurement_set()` (an in-memory ImageDataset for gate statistics and executed MACs).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor

from bench.data.loader import DeviceLoader


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not where we looked; the message says where we looked and how to get it."""


class DataIntegrityError(ValueError):
    """A data file is damaged, replaced or not in its format; the message names the file and the fix."""


def dataset_search_roots(root: str | os.PathLike | None, *system: str) -> list[Path]:
    """`--data-root`, then $BENCH_DATA, then the dataset's system folders, in that order."""
    roots = [root, os.environ.get("BENCH_DATA"), *system]
    return [Path(r).expanduser() for r in roots if r]


@dataclass(frozen=True)
class ImageDataset:
    """A classification dataset as uint8 images [N, C, H, W] and int64 labels [N]."""

    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
    source: str  # where the files were read from

    @property
    def in_chans(self) -> int:
        return self.train_images.shape[1]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    @cached_property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training images in [0, 1], measured, not quoted."""
        x = self.train_images.transpose(0, 1).reshape(self.in_chans, -1)
        mean = x.sum(1, dtype=torch.float64) / x.shape[1] / 255
        sq = (x.double() / 255).pow(2).mean(1) if x.numel() < 2**27 else _chunked_sq_mean(x)
        std = (sq - mean.pow(2)).sqrt()
        return tuple(mean.tolist()), tuple(std.tolist())

    @cached_property
    def eval_digest(self) -> str:
        """sha256 of the evaluation images and labels: which data a result was measured on."""
        h = hashlib.sha256()
        h.update(self.test_images.contiguous().numpy().tobytes())
        h.update(self.test_labels.contiguous().numpy().tobytes())
        return h.hexdigest()

    def configure(self, cfg) -> ImageDataset:
        """In memory, nothing of the run's config applies (a streamed dataset takes sizes and workers)."""
        return self

    def measurement_set(self) -> ImageDataset:
        return self

    def train_loader(self, cfg, seed: int, device: str, rank: int, world_size: int) -> DeviceLoader:
        """Rank `rank`'s share of every global batch of `cfg.batch_size`, cropped and flipped on `device`."""
        mean, std = self.mean_std
        return DeviceLoader(
            self.train_images,
            self.train_labels,
            cfg.batch_size,
            mean,
            std,
            device=device,
            shuffle=True,
            crop_padding=cfg.crop_padding,
            flip=cfg.flip,
            drop_last=True,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )

    def eval_loader(self, batch_size: int, device: str, rank: int, world_size: int) -> DeviceLoader:
        """Every `world_size`-th evaluation image from `rank` on, in batches of `batch_size`."""
        mean, std = self.mean_std
        shard = slice(rank, None, world_size)
        return DeviceLoader(
            self.test_images[shard], self.test_labels[shard], batch_size, mean, std, device=device
        )

    def subset(self, train_size: int | None) -> ImageDataset:
        """The first `train_size` images of a fixed (seed 0) permutation, the same for every run."""
        if train_size is None or train_size >= len(self.train_labels):
            return self
        keep = torch.randperm(len(self.train_labels), generator=torch.Generator().manual_seed(0))
        keep = keep[:train_size].sort().values
        return ImageDataset(
            self.name,
            self.train_images[keep],
            self.train_labels[keep],
            self.test_images,
            self.test_labels,
            self.num_classes,
            self.source,
        )


def _chunked_sq_mean(x: Tensor) -> Tensor:
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for chunk in x.split(2**24, dim=1):
        total += (chunk.double() / 255).pow(2).sum(1)
    return total / x.shape[1]
