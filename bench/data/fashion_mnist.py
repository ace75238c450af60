"""Fashion-MNIST (Xiao et al. 2017) from its four IDX files, gzipped or not.

Debian's `dataset-fashion-mnist` installs them under /usr/share/datasets/fashion-mnist (recompressed,
so their md5 differs from the official list; we record a digest of the evaluation data instead).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from bench.data.base import DataIntegrityError, DatasetNotFoundError, ImageDataset, dataset_search_roots

SYSTEM_ROOT = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SUBDIRS = ("", "fashion-mnist", "FashionMNIST/raw")  # flat, or torchvision's layout


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (magic 0x00000801 labels, 0x00000803 images)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip: truncated (EOFError), bad CRC or header (OSError)
        raise DataIntegrityError(
            f"{path} cannot be read ({type(e).__name__}: {e}): the file is truncated or damaged. Fix: "
            "download it again (or reinstall dataset-fashion-mnist)."
        ) from None
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataIntegrityError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataIntegrityError(
            f"{path} is truncated: header says {dims}, found {body.size} bytes of data. Fix: download it again."
        )
    return body.reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _folder_with_files(roots: list[Path]) -> Path | None:
    """The first folder holding the four files; a folder holding only some of them is an error, not a
    reason to go on to the next root (a file missing from --data-root must not fall back to the system copy)."""
    for root in roots:
        for sub in SUBDIRS:
            folder = root / sub
            found = {stem: _find(folder, stem) for stem in FILES.values()}
            if all(found.values()):
                return folder
            if any(found.values()):
                missing = [stem for stem, path in found.items() if path is None]
                raise DatasetNotFoundError(
                    f"Fashion-MNIST in {folder} is incomplete: {', '.join(missing)} (.gz or not) is missing. "
                    f"Fix: put the missing file(s) in {folder}, or remove the folder's Fashion-MNIST files "
                    "to use another copy."
                )
    return None


def _download(roots: list[Path]) -> Path | None:
    """torchvision's downloader, where the network allows; None where it does not."""
    from torchvision.datasets import FashionMNIST

    # never the system folder: a failed download would leave empty folders there that hide the package's absence
    user_roots = [r for r in roots if r != Path(SYSTEM_ROOT)]
    target = user_roots[0] if user_roots else Path("~/.cache/channelbench").expanduser()
    try:
        FashionMNIST(str(target), train=True, download=True)
    except Exception:  # noqa: BLE001 - no network is the normal case on closed machines
        return None
    return _folder_with_files([target])


def load_fashion_mnist(root: str | None = None, download: bool = True) -> ImageDataset:
    roots = dataset_search_roots(root, SYSTEM_ROOT)
    folder = _folder_with_files(roots) or (_download(roots) if download else None)
    if folder is None:
        looked = ", ".join(str(r) for r in roots)
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found (looked in: {looked}; download failed or was disabled). "
            "Fix: as root run `apt-get install -y dataset-fashion-mnist` (installs it under "
            f"{SYSTEM_ROOT}), or put the four files {', '.join(s + '.gz' for s in FILES.values())} "
            "in a folder and pass --data-root FOLDER (or set BENCH_DATA)."
        )
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in FILES.items()}
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise DataIntegrityError(f"Fashion-MNIST in {folder}: {n_img} {split} images but {n_lab} labels")
    return ImageDataset(
        name="fashion_mnist",
        train_images=torch.from_numpy(arrays["train_images"].copy()).unsqueeze(1),
        train_labels=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_images=torch.from_numpy(arrays["test_images"].copy()).unsqueeze(1),
        test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        num_classes=10,
        source=str(folder),
    )
