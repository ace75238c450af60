"""ImageNet-1k in torchvision's ImageFolder layout, streamed from disk (it does not fit in memory as uint8).

Layout (what `torchvision.datasets.ImageNet` leaves after unpacking, and what most clusters hold):
`root/train/<wnid>/<image>.JPEG` and `root/val/<wnid>/<image>.JPEG`, class folders sorted by name.
The standard recipe's data pipeline (He et al. 2016, torchvision's reference scripts): training images
through RandomResizedCrop(crop_size) + horizontal flip, evaluation images resized to `eval_resize_size`
on the short side and centre-cropped to `crop_size` (256 -> 224).

Batches come from a `DataLoader` with worker processes over a `DistributedSampler` (seed and epoch set;
with one process it is the seeded shuffle), so each rank reads its share of every global batch. Each
image's augmentation is drawn from a generator seeded by (seed, epoch, index), so an order or a worker
count does not change what an image looks like, and a run resumed in the middle of an epoch sees the
same images as one that was not stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Subset

from bench.data.base import DatasetNotFoundError, ImageDataset, dataset_search_roots
from bench.data.loader import batch_per_rank

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's constants, which the papers' recipes use
IMAGENET_STD = (0.229, 0.224, 0.225)
MEASURE_IMAGES = 500  # evaluation images (a fixed stride over the split) for executed MACs and gate stats

IMAGENET_HELP = (
    "ImageNet-1k is not at {where}. Download ILSVRC2012 (train and validation images) from "
    "https://image-net.org/download.php (an account is needed) and unpack it in the ImageFolder layout "
    "ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG (the validation images sorted into class folders, "
    "e.g. with torchvision.datasets.ImageNet(ROOT, split='val') or the valprep.sh script); then pass "
    "--data-root ROOT or set $BENCH_DATA."
)


class SeededSamples(torch.utils.data.Dataset):
    """A dataset whose random transforms of sample i are drawn from a generator seeded by (seed, epoch, i)."""

    def __init__(self, base, seed: int):
        self.base, self.seed, self.epoch = base, seed, 0

    def __len__(self) -> int:
        return len(self.base)

    def sample_seed(self, index: int) -> int:
        return (self.seed * 1_000_003 + self.epoch) * 100_000_007 + index

    def __getitem__(self, index: int):
        # torchvision's transforms draw from the CPU default generator and take no generator of their own:
        # seed that generator alone (torch.manual_seed would also reseed every CUDA generator, which
        # fork_rng(devices=[]) does not restore: with num_workers 0 the model's dropout and gate noise on
        # the GPU would restart every batch) and restore it after, so the caller's RNG is left alone.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(self.sample_seed(index))
            return self.base[index]


class StreamLoader:
    """A rank's batches of (images, targets) on `device`: DataLoader + DistributedSampler + resume offset."""

    def __init__(
        self,
        dataset,
        batch_size: int,
        seed: int,
        device: str,
        rank: int,
        world_size: int,
        num_workers: int,
        shuffle: bool,
        drop_last: bool,
    ):
        self.samples = SeededSamples(dataset, seed)
        self.sampler = DistributedSampler(
            self.samples, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self.share = batch_per_rank(batch_size, world_size)
        self.device, self.num_workers, self.drop_last = torch.device(device), num_workers, drop_last
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.first = 0

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.samples.epoch = epoch

    def start_at(self, batch: int) -> None:
        """The next pass starts at this batch (resuming mid-epoch without decoding the skipped images)."""
        self.first = batch

    def _indices(self) -> list[int]:
        if (
            not self.shuffle
        ):  # evaluation: every world_size-th sample, no padding, so sums over ranks are exact
            return list(range(self.rank, len(self.samples), self.world_size))
        return list(self.sampler)

    def __len__(self) -> int:
        n = len(self._indices()) if not self.shuffle else len(self.sampler)
        return n // self.share if self.drop_last else -(-n // self.share)

    def __iter__(self):
        indices = self._indices()[self.first * self.share :]
        self.first = 0
        loader = DataLoader(
            Subset(self.samples, indices),
            batch_size=self.share,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=self.drop_last,
            persistent_workers=False,
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


@dataclass(frozen=True)
class FolderDataset:
    """ImageNet in the ImageFolder layout: streamed batches for training and evaluation."""

    name: str
    root: Path
    source: str
    crop_size: int = 224
    eval_resize_size: int = 256
    num_workers: int = 8
    train_size: int | None = None
    mean_std: tuple = (IMAGENET_MEAN, IMAGENET_STD)
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    in_chans = 3
    measure_images = MEASURE_IMAGES

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.crop_size, self.crop_size)

    def _folder(self, split: str):
        from torchvision import datasets

        if split not in self._cache:
            self._cache[split] = datasets.ImageFolder(str(self.root / split))
        return self._cache[split]

    @property
    def num_classes(self) -> int:
        return len(self._folder("train").classes)

    @cached_property
    def train_labels(self) -> Tensor:
        return torch.tensor(self._folder("train").targets)[self._train_indices()]

    @cached_property
    def test_labels(self) -> Tensor:
        return torch.tensor(self._folder("val").targets)

    @cached_property
    def eval_digest(self) -> str:
        """sha256 over the evaluation files' relative paths, sizes and labels (not their bytes: 6 GB)."""
        h = hashlib.sha256()
        for path, label in self._folder("val").samples:
            p = Path(path)
            h.update(f"{p.relative_to(self.root)}\t{p.stat().st_size}\t{label}\n".encode())
        return h.hexdigest()

    def _train_indices(self) -> list[int]:
        n = len(self._folder("train"))
        if self.train_size is None or self.train_size >= n:
            return list(range(n))
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: self.train_size]
        return keep.sort().values.tolist()

    def subset(self, train_size: int | None) -> FolderDataset:
        return dataclasses.replace(self, train_size=train_size)  # the copy shares the scanned folders

    def configure(self, cfg) -> FolderDataset:
        """Sizes and workers from the run's TrainConfig."""
        return dataclasses.replace(
            self, crop_size=cfg.crop_size, eval_resize_size=cfg.eval_resize_size, num_workers=cfg.num_workers
        )

    def transform(self, train: bool, normalize: bool = True):
        from torchvision import transforms as T

        ops = (
            [T.RandomResizedCrop(self.crop_size), T.RandomHorizontalFlip()]
            if train
            else [T.Resize(self.eval_resize_size), T.CenterCrop(self.crop_size)]
        )
        if not normalize:
            return T.Compose([*ops, T.PILToTensor()])
        return T.Compose([*ops, T.ToTensor(), T.Normalize(*self.mean_std)])

    def _split(self, split: str, train: bool, normalize: bool = True):
        folder = copy.copy(self._folder(split))  # the folder scanned once, with this use's transform
        folder.transform = self.transform(train, normalize)
        return Subset(folder, self._train_indices()) if split == "train" else folder

    def train_loader(self, cfg, seed: int, device: str, rank: int, world_size: int) -> StreamLoader:
        return StreamLoader(
            self._split("train", True),
            cfg.batch_size,
            seed,
            device,
            rank,
            world_size,
            self.num_workers,
            shuffle=True,
            drop_last=True,
        )

    def eval_loader(self, batch_size: int, device: str, rank: int, world_size: int) -> StreamLoader:
        return StreamLoader(
            self._split("val", False),
            batch_size * world_size,
            0,
            device,
            rank,
            world_size,
            self.num_workers,
            shuffle=False,
            drop_last=False,
        )

    def measurement_set(self, n: int | None = None) -> ImageDataset:
        """A fixed, in-memory slice of the evaluation split (uint8, centre-cropped) for gate statistics;
        `measure_images` of them unless `n` says otherwise."""
        n = self.measure_images if n is None else n
        val = self._split("val", False, normalize=False)
        picks = torch.linspace(0, len(val) - 1, min(n, len(val))).round().long().unique().tolist()
        images, labels = zip(*(val[i] for i in picks), strict=True)
        x, y = torch.stack(images), torch.tensor(labels)
        data = ImageDataset(self.name, x, y, x, y, self.num_classes, self.source)
        data.__dict__["mean_std"] = self.mean_std  # the dataset's constants, not the slice's statistics
        return data


def load_imagenet(root: str | None = None) -> FolderDataset:
    """ImageNet from `root`, then $BENCH_DATA (also its `imagenet/` subfolder)."""
    roots = [r for base in dataset_search_roots(root) for r in (base, base / "imagenet")]
    for r in roots:
        if (r / "train").is_dir() and (r / "val").is_dir():
            return FolderDataset("imagenet", r, source=str(r))
    where = ", ".join(str(r) for r in roots) or "any folder (no --data-root and no $BENCH_DATA given)"
    raise DatasetNotFoundError(IMAGENET_HELP.format(where=where))
