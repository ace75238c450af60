"""Tiny datasets written in each dataset's real on-disk format, for tests and examples.

Images carry a class-dependent pattern (a bright bar whose position is the label) plus noise, so a
model can learn them in a few steps; the files go through exactly the loaders real data uses.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from bench.data.fashion_mnist import FILES


def _images(n: int, num_classes: int, channels: int, size: int, rng: np.random.Generator):
    labels = rng.integers(0, num_classes, n)
    images = rng.integers(0, 60, (n, size, size, channels), dtype=np.uint8)
    band = max(1, size // num_classes)
    for i, label in enumerate(labels):
        row = (label * band) % (size - band + 1)
        images[i, row : row + band, :, :] = 230
    return images, labels


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(root: str | Path, n_train: int = 256, n_test: int = 128, seed: int = 0) -> Path:
    """Four gzipped IDX files, as Debian's dataset-fashion-mnist installs them."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = _images(n, 10, 1, 28, rng)
        (root / f"{FILES[f'{split}_images']}.gz").write_bytes(gzip.compress(_idx_bytes(images[..., 0])))
        (root / f"{FILES[f'{split}_labels']}.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    return root


def write_cifar(
    root: str | Path, name: str = "cifar10", n_train: int = 100, n_test: int = 50, seed: int = 0
) -> Path:
    """The python-pickle batches of CIFAR-10 (5 train batches) or CIFAR-100 (train/test), str keys, and the
    folder's `SYNTHETIC.md5` manifest: these are not the published files, so the loader checks each batch
    against the MD5 listed there instead of the published one."""
    from bench.data.cifar import MANIFEST, file_md5

    root = Path(root)
    rng = np.random.default_rng(seed)
    num_classes = 10 if name == "cifar10" else 100
    label_key = "labels" if name == "cifar10" else "fine_labels"
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)

    def dump(file: str, n: int) -> None:
        images, labels = _images(n, num_classes, 3, 32, rng)
        planes = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # R plane, G plane, B plane
        with open(folder / file, "wb") as f:
            pickle.dump({"data": planes, label_key: labels.tolist()}, f)

    if name == "cifar10":
        for i in range(1, 6):
            dump(f"data_batch_{i}", n_train // 5)
        dump("test_batch", n_test)
        meta = ("batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    else:
        dump("train", n_train)
        dump("test", n_test)
        meta = ("meta", {"fine_label_names": [f"class{i}" for i in range(100)]})
    with open(folder / meta[0], "wb") as f:
        pickle.dump(meta[1], f)
    batches = sorted(p.name for p in folder.iterdir() if p.name not in (meta[0], MANIFEST))
    (folder / MANIFEST).write_text("".join(f"{file_md5(folder / b)}  {b}\n" for b in batches))
    return root
