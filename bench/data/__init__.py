"""Datasets, held in memory as uint8 tensors, and the device-resident loader that batches them.

`load_dataset(name, root)` is the only entry point; each dataset module reads its real on-disk format,
and `bench.data.synthetic` writes tiny datasets in those same formats for the tests.
"""

from bench.data.base import DataIntegrityError, DatasetNotFoundError, ImageDataset, dataset_search_roots
from bench.data.loader import DeviceLoader, batch_per_rank

DATASET_TASKS = {
    "fashion_mnist": "classification",
    "cifar10": "classification",
    "cifar100": "classification",
    "imagenet": "classification",
    "cityscapes": "segmentation",
}
DATASETS = tuple(DATASET_TASKS)


def load_dataset(name: str, root: str | None = None, download: bool = True) -> ImageDataset:
    """Load `name`, looking in `root`, then $BENCH_DATA, then the dataset's system folder.

    ImageNet and Cityscapes are too big for memory: each comes back as a streamed dataset (train_loader /
    eval_loader over DataLoader workers) instead of an ImageDataset, and is never downloaded.
    """
    if name == "fashion_mnist":
        from bench.data.fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(root, download)
    if name in ("cifar10", "cifar100"):
        from bench.data.cifar import load_cifar

        return load_cifar(name, root, download)
    if name == "imagenet":
        from bench.data.imagenet import load_imagenet

        return load_imagenet(root)
    if name == "cityscapes":
        from bench.data.cityscapes import load_cityscapes

        return load_cityscapes(root)
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")


__all__ = [
    "DATASETS",
    "DATASET_TASKS",
    "DataIntegrityError",
    "DatasetNotFoundError",
    "DeviceLoader",
    "ImageDataset",
    "batch_per_rank",
    "dataset_search_roots",
    "load_dataset",
]
