"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) through torchvision's dataset classes.

torchvision md5-checks every file; the subclasses below check only that the files exist, so the
synthetic sets the tests write in the same pickle format load through this same code. What was
evaluated is recorded as a digest of the evaluation data instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from bench.data.base import DatasetNotFoundError, ImageDataset, dataset_search_roots


class _CIFAR10(datasets.CIFAR10):
    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class _CIFAR100(datasets.CIFAR100):
    train_list = [[name, None] for name, _ in datasets.CIFAR100.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR100.test_list]
    meta = {**datasets.CIFAR100.meta, "md5": None}


CLASSES = {"cifar10": (_CIFAR10, 10), "cifar100": (_CIFAR100, 100)}
DEFAULT_DOWNLOAD_ROOT = "~/.cache/channelbench"


def _as_tensors(ds: datasets.CIFAR10) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return images, torch.as_tensor(ds.targets, dtype=torch.int64)


def _download(cls: type, root: Path) -> Path | None:
    try:
        cls(str(root), train=True, download=True)
    except Exception:  # noqa: BLE001 - no network is the normal case on closed machines
        return None
    return root


def load_cifar(name: str, root: str | None = None, download: bool = True) -> ImageDataset:
    cls, num_classes = CLASSES[name]
    roots = dataset_search_roots(root, DEFAULT_DOWNLOAD_ROOT)
    found = next((r for r in roots if (r / cls.base_folder).is_dir()), None)
    if found is None and download:
        found = _download(cls, roots[0])
    if found is None:
        looked = ", ".join(str(r / cls.base_folder) for r in roots)
        raise DatasetNotFoundError(
            f"{name} not found (looked in: {looked}; download failed or was disabled). Fix: download "
            f"{cls.url} , unpack it so that FOLDER/{cls.base_folder}/ exists, and pass --data-root "
            "FOLDER (or set BENCH_DATA)."
        )
    train_images, train_labels = _as_tensors(cls(str(found), train=True))
    test_images, test_labels = _as_tensors(cls(str(found), train=False))
    source = str(found / cls.base_folder)
    return ImageDataset(name, train_images, train_labels, test_images, test_labels, num_classes, source)
