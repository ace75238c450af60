import gzip

import pytest
import torch
from torchvision import transforms

from bench.data import DatasetNotFoundError, DeviceLoader, load_dataset
from bench.data.loader import random_crop, random_flip
from bench.data.synthetic import write_cifar


def test_synthetic_fashion_mnist_loads_through_the_real_loader(fashion_root, no_system_data):
    data = load_dataset("fashion_mnist", str(fashion_root))
    assert data.train_images.shape == (256, 1, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_labels.shape == (128,) and data.num_classes == 10
    assert data.source == str(fashion_root)
    assert len(data.eval_digest) == 64


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_synthetic_cifar_loads_through_torchvision(tmp_path, name, classes):
    write_cifar(tmp_path, name, n_train=100, n_test=50)
    data = load_dataset(name, str(tmp_path), download=False)
    assert data.train_images.shape == (100, 3, 32, 32) and data.test_images.shape == (50, 3, 32, 32)
    assert data.num_classes == classes and int(data.train_labels.max()) < classes


def test_missing_dataset_names_where_it_looked_and_the_fix(tmp_path, no_system_data):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion_mnist", str(tmp_path / "empty"))
    message = str(err.value)
    assert str(tmp_path / "empty") in message and "apt-get install -y dataset-fashion-mnist" in message
    with pytest.raises(DatasetNotFoundError, match="--data-root"):
        load_dataset("cifar10", str(tmp_path / "empty"), download=False)


def test_truncated_idx_file_is_reported(fashion_root, no_system_data):
    path = fashion_root / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    with pytest.raises(ValueError, match="truncated"):
        load_dataset("fashion_mnist", str(fashion_root))


def test_subset_is_fixed_and_independent_of_the_run_seed(fashion_root, no_system_data):
    data = load_dataset("fashion_mnist", str(fashion_root))
    a, b = data.subset(100), data.subset(100)
    assert torch.equal(a.train_images, b.train_images) and len(a.train_labels) == 100


def test_loader_shuffles_by_seed_and_epoch():
    images = torch.arange(64, dtype=torch.uint8).view(64, 1, 1, 1).expand(64, 1, 4, 4).contiguous()
    labels = torch.arange(64)

    def order(seed, epoch):
        loader = DeviceLoader(images, labels, 16, (0.0,), (1.0,), shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        return torch.cat([y for _, y in loader])

    assert torch.equal(order(0, 0), order(0, 0))
    assert not torch.equal(order(0, 0), order(0, 1)) and not torch.equal(order(0, 0), order(1, 0))
    assert sorted(order(3, 2).tolist()) == list(range(64))


def test_loader_started_mid_epoch_gives_the_rest_of_the_epoch():
    """start_at(k) skips k batches yet draws their crops and flips: batch k on is as in a whole pass."""
    images = torch.randint(0, 255, (64, 1, 6, 6), dtype=torch.uint8)
    loader = DeviceLoader(
        images,
        torch.arange(64),
        16,
        (0.5,),
        (0.25,),
        shuffle=True,
        crop_padding=2,
        flip=True,
        drop_last=True,
        seed=1,
    )
    loader.set_epoch(2)
    whole = list(loader)
    loader.start_at(3)
    rest = list(loader)
    assert len(rest) == 1 and all(torch.equal(a, b) for a, b in zip(whole[3], rest[0], strict=True))
    assert len(list(loader)) == 4  # the start applies to one pass


def test_every_dataset_hands_out_its_loaders(fashion_root, no_system_data):
    data = load_dataset("fashion_mnist", str(fashion_root))
    assert data.configure(None) is data and data.measurement_set() is data
    cfg = type("Cfg", (), {"batch_size": 64, "crop_padding": 0, "flip": False})()
    shards = [data.train_loader(cfg, seed=0, device="cpu", rank=r, world_size=2) for r in (0, 1)]
    (x0, _), (x1, _) = next(iter(shards[0])), next(iter(shards[1]))
    assert x0.shape == x1.shape == (32, 1, 28, 28)
    evals = [data.eval_loader(50, "cpu", rank=r, world_size=2) for r in (0, 1)]
    assert sum(len(y) for loader in evals for _, y in loader) == len(data.test_labels)


def _offsets(crops: torch.Tensor, size: int) -> torch.Tensor:
    """(dy, dx) of each crop, read from its centre pixel, whose value encodes the image position."""
    c = size // 2
    value = crops[:, 0, c, c].long() - 1
    return torch.stack([value // size - c, value % size - c], 1)


def test_batched_crop_and_flip_match_torchvision_statistics():
    """Offsets uniform over the same 2p+1 positions as RandomCrop(size, padding=p); flips with p = 0.5."""
    size, padding, n = 8, 2, 6000
    image = (1 + torch.arange(size * size, dtype=torch.float32)).view(1, 1, size, size)
    ours = _offsets(
        random_crop(image.expand(n, 1, size, size), padding, torch.Generator().manual_seed(0)), size
    )
    torch.manual_seed(0)
    tv = transforms.RandomCrop(size, padding=padding)
    theirs = _offsets(torch.stack([tv(image[0]) for _ in range(n)]), size)
    for offsets in (ours, theirs):
        for axis in range(2):
            counts = torch.bincount(offsets[:, axis] + padding, minlength=2 * padding + 1)
            assert counts.numel() == 2 * padding + 1, "offsets outside [-p, p]"
            assert (counts.float() / n - 1 / (2 * padding + 1)).abs().max() < 0.03
    # zero padding, as RandomCrop(padding=p) does by default: crops at the edge contain zeros
    edge = random_crop(torch.ones(500, 1, size, size), padding, torch.Generator().manual_seed(1))
    assert (edge == 0).any() and set(edge.unique().tolist()) <= {0.0, 1.0}
    flipped = random_flip(image.expand(n, 1, size, size), torch.Generator().manual_seed(0))
    share = (flipped[:, 0, 0, 0] != image[0, 0, 0, 0]).float().mean().item()
    assert abs(share - 0.5) < 0.03
    assert torch.equal(flipped[flipped[:, 0, 0, 0] != 1][0], image[0].flip(2))
