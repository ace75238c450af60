"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from their python-pickle batches, read only after checks.

A batch file is a pickle, and unpickling runs whatever the file asks for, so a batch is trusted only
after two checks:

1. its MD5 matches the published one (torchvision's CIFAR10 / CIFAR100 classes carry the lists), or,
   for a folder of data that is not the published set (the synthetic sets the tests write with
   `bench.data.synthetic.write_cifar`), the one its `SYNTHETIC.md5` manifest lists;
2. it is read by an unpickler that admits only the types a CIFAR batch holds (a numpy array and its
   dtype, lists, strings, numbers): any other global a crafted file names is refused before anything
   of it runs.

The metadata file (class names) is never read: nothing here needs it. What was evaluated is recorded
as a digest of the evaluation data.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from bench.data.base import DataIntegrityError, DatasetNotFoundError, ImageDataset, dataset_search_roots

CLASSES = {"cifar10": (datasets.CIFAR10, 10, "labels"), "cifar100": (datasets.CIFAR100, 100, "fine_labels")}
DEFAULT_DOWNLOAD_ROOT = "~/.cache/channelbench"
MANIFEST = (
    "SYNTHETIC.md5"  # `md5  file` lines: the sums of a CIFAR-format folder that is not the published set
)


def _numpy_global(module: str, name: str):
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError):
        return None


# what a CIFAR batch pickle names, as numpy 1.x (numpy.core) and 2.x (numpy._core) write it
_RECONSTRUCT = _numpy_global("numpy._core.multiarray", "_reconstruct") or _numpy_global(
    "numpy.core.multiarray", "_reconstruct"
)
_FROMBUFFER = _numpy_global("numpy._core.numeric", "_frombuffer") or _numpy_global(
    "numpy.core.numeric", "_frombuffer"
)
ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("_codecs", "encode"): codecs.encode,  # how Python 3's protocol 2 writes bytes
}


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only what a CIFAR batch holds; any other global is refused unresolved."""

    def find_class(self, module: str, name: str):
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never holds")
        return found


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def expected_md5s(folder: Path, cls: type) -> tuple[dict[str, str], str]:
    """file -> MD5 for the batches in `folder`, and what they come from (the published list or a manifest)."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return dict(cls.train_list + cls.test_list), "the published MD5"
    sums = {}
    for line in manifest.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1]] = parts[0].lower()
    return sums, f"the MD5 listed in {manifest}"


def read_batch(path: Path, md5: str | None, against: str, url: str) -> dict:
    """One batch file, after its MD5 check, through the restricted unpickler."""
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{path} is missing. Fix: download {url} again and unpack it so that {path.parent}/ is complete."
        )
    if md5 is None:
        manifest = against.removeprefix("the MD5 listed in ")
        raise DataIntegrityError(
            f"{path} is not listed in {manifest}, so it was not loaded. Fix: add its line (`md5sum FILE`) "
            f"to {manifest}, or remove {manifest} if the folder holds the published files."
        )
    actual = file_md5(path)
    if actual != md5:
        raise DataIntegrityError(
            f"{path}: MD5 {actual} does not match {against} ({md5}), so it was not loaded: the file is "
            f"damaged or was replaced. Fix: download {url} again and unpack it (a CIFAR-format folder you "
            f"made yourself lists its files' MD5s in FOLDER/{MANIFEST}, as bench.data.synthetic.write_cifar does)."
        )
    try:
        batch = BatchUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except Exception as e:  # noqa: BLE001 - refused globals, truncation, garbage: all "not a batch"
        raise DataIntegrityError(
            f"{path} is not a CIFAR batch ({type(e).__name__}: {e}); refused without running any of it. "
            f"Fix: download {url} again and unpack it."
        ) from None
    return batch


def batch_arrays(
    batch: object, path: Path, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The batch's images [N, 3, 32, 32] uint8 and labels [N] int64, after checking their shapes and range."""
    data = batch.get("data") if isinstance(batch, dict) else None
    labels = batch.get(label_key) if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataIntegrityError(f"{path} is not a CIFAR batch: 'data' is not a uint8 array of N x 3072")
    if not isinstance(labels, list | np.ndarray) or len(labels) != len(data):
        raise DataIntegrityError(f"{path} is not a CIFAR batch: {label_key!r} is not {len(data)} labels")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or (labels.size and not 0 <= labels.min() <= labels.max() < num_classes):
        raise DataIntegrityError(
            f"{path} is not a CIFAR batch: {label_key!r} are not integers in [0, {num_classes})"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_split(folder: Path, name: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    cls, num_classes, label_key = CLASSES[name]
    sums, against = expected_md5s(folder, cls)
    images, labels = [], []
    for file, _ in cls.train_list if train else cls.test_list:
        path = folder / file
        batch = read_batch(path, sums.get(file), against, cls.url)
        x, y = batch_arrays(batch, path, label_key, num_classes)
        images.append(x)
        labels.append(y)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _download(cls: type, root: Path) -> Path | None:
    """The published archive, MD5-checked by torchvision's downloader and unpacked (nothing unpickled)."""
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    except Exception:  # noqa: BLE001 - no network is the normal case on closed machines
        return None
    return root


def load_cifar(name: str, root: str | None = None, download: bool = True) -> ImageDataset:
    cls, num_classes, _ = CLASSES[name]
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
    folder = found / cls.base_folder
    train_images, train_labels = read_split(folder, name, train=True)
    test_images, test_labels = read_split(folder, name, train=False)
    return ImageDataset(name, train_images, train_labels, test_images, test_labels, num_classes, str(folder))
