"""ImageNet in the ImageFolder layout: a tiny synthetic tree trains, evaluates, is stored and ranked."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import load_dataset
from bench.data.imagenet import FolderDataset
from bench.engine.config import TrainConfig, load_suite, parse_suite
from bench.registry import list_models
from tests.helpers import assert_missing_data_error

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361"]


def write_imagenet(root: Path, n_train: int = 6, n_val: int = 2, seed: int = 0) -> Path:
    """root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG, small JPEGs of different sizes."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for label, wnid in enumerate(WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(24, 40, 2)
                image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
                image[:, :, label % 3] = 220  # the class is a colour
                Image.fromarray(image).save(folder / f"{wnid}_{i}.JPEG", quality=95)
    return root


TINY = """
name = "imagenet_tiny"
version = 1
datasets = ["imagenet"]
models = ["resnet18"]
seeds = [0]

[train]
epochs = 1
batch_size = 8
lr = 0.1
lr_scaling = "linear"
base_batch_size = 256
milestones = [30, 60]
crop_size = 16
eval_resize_size = 20
num_workers = 0
eval_batch_size = 8
checkpoint_every_steps = 2

[measure]
latency_batch_sizes = [1]
latency_min_run_time_s = 0.01
latency_warmup = 1
"""


@pytest.fixture
def imagenet_root(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_DATA", raising=False)
    return write_imagenet(tmp_path / "imagenet")


def test_the_tree_trains_evaluates_and_gives_a_record_and_a_leaderboard_row(imagenet_root, tmp_path):
    from bench.commands.runner import run_suite
    from bench.report.leaderboard import write_leaderboard
    from bench.store.results import ResultStore

    suite = parse_suite(TINY, "imagenet_tiny.toml")
    store = ResultStore(tmp_path / "results")
    (record,) = run_suite(
        suite, data_root=str(imagenet_root), store=store, work_dir=tmp_path / "runs", progress=False
    )
    assert record.status == "measured" and record.data.eval_size == 8 and record.data.train_size == 24
    assert record.data.input_shape == [3, 16, 16] and 0 <= record.metrics.top1_pct <= 100
    assert record.train_config["lr_scaling"] == "linear" and record.train_config["batch_size"] == 8
    assert len(record.history) == 1 and record.metrics.static_macs > 0
    write_leaderboard(store, tmp_path / "lb", "imagenet_tiny")
    board = tmp_path / "lb" / "imagenet_tiny.md"
    assert "resnet18" in Path(board).read_text()


def test_streamed_batches_follow_the_seed_and_resume_mid_epoch(imagenet_root):
    data = load_dataset("imagenet", str(imagenet_root)).configure(
        TrainConfig(batch_size=8, crop_size=16, num_workers=0)
    )
    cfg = TrainConfig(batch_size=8, crop_size=16, num_workers=0)

    def batches(start=0, rank=0, world=1):
        loader = data.train_loader(cfg, seed=1, device="cpu", rank=rank, world_size=world)
        loader.set_epoch(3)
        loader.start_at(start)
        return list(loader)

    whole = batches()
    assert len(whole) == 3 and whole[0][0].shape == (8, 3, 16, 16)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(whole[1:], batches(start=1), strict=True))
    halves = [batches(rank=r, world=2) for r in (0, 1)]  # the same global batches, split over two ranks
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *halves, strict=True):
        assert sorted(y0.tolist() + y1.tolist()) == sorted(y.tolist())
        assert torch.allclose(torch.cat([x0, x1]).sum(), x.sum(), rtol=1e-4)


def test_missing_data_names_the_download_page_and_the_layout(tmp_path, monkeypatch):
    assert_missing_data_error(monkeypatch, "imagenet", tmp_path, r"image-net\.org.*ROOT/train/<wnid>")


def test_the_imagenet_suite_names_the_standard_recipe_and_registered_models():
    suite = load_suite("imagenet")
    cfg = suite.train
    assert (cfg.epochs, cfg.optimizer, cfg.batch_size, cfg.crop_size, cfg.eval_resize_size) == (
        90,
        "sgd",
        256,
        224,
        256,
    )
    assert cfg.milestones == (30, 60) and cfg.lr == 0.1 and cfg.lr_scaling == "linear"
    assert set(suite.models) <= set(list_models()) and isinstance(load_dataset, object)
    # DCNet only as its official ImageNet network, under its own recipe (tests/test_decoupled_imagenet.py)
    assert [m for m in suite.models if m.startswith("dcnet")] == ["dcnet_tanh_cos_resnet18m"]
    assert FolderDataset.in_chans == 3
