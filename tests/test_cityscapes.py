"""Cityscapes: the trainId table, mIoU by hand, and PSPNet (plain and BAS-gated) end to end on a tiny tree."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.datasets import Cityscapes

from bench.data.cityscapes import IGNORE_INDEX, train_id_table
from bench.engine.config import load_suite, parse_suite
from bench.engine.tasks import AUX_LOSS_WEIGHT, evaluate_segmentation, segmentation_loss
from tests.helpers import assert_missing_data_error

IDS = [c.id for c in Cityscapes.classes if c.id >= 0]


def write_cityscapes(root: Path, n_train: int = 4, n_val: int = 2, size=(32, 64), seed: int = 0) -> Path:
    """leftImg8bit/<split>/<city>/*_leftImg8bit.png and gtFine/<split>/<city>/*_gtFine_labelIds.png."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            city = ("aachen", "bochum")[i % 2]
            stem = f"{city}_{i:06d}_000019"
            labels = rng.choice(IDS, size=size).astype(np.uint8)
            labels[: size[0] // 2] = 7  # road on the top half, so the tiny model has something to learn
            image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            image[labels == 7] = (128, 64, 128)
            for kind, name, array in (
                ("leftImg8bit", "leftImg8bit", image),
                ("gtFine", "gtFine_labelIds", labels),
            ):
                folder = root / kind / split / city
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(folder / f"{stem}_{name}.png")
    return root


def test_the_train_id_table_matches_the_official_one():
    table = train_id_table()
    for c in Cityscapes.classes:
        if c.id >= 0:
            assert table[c.id] == (c.train_id if 0 <= c.train_id < 19 else IGNORE_INDEX), c.name
    assert sorted(set(table.tolist())) == [*range(19), 255]
    assert [c.name for c in Cityscapes.classes if 0 <= c.train_id < 19][:3] == [
        "road",
        "sidewalk",
        "building",
    ]
    assert table[7] == 0 and table[26] == 13 and table[33] == 18 and table[0] == 255  # road, car, bicycle


def test_miou_and_pixel_accuracy_equal_a_hand_count():
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 0]]])  # the two ignored pixels must not count

    class Fixed(nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 10

    metrics = evaluate_segmentation(Fixed(), [(torch.zeros(1, 3, 2, 4), target)], num_classes=3)
    # class 0: TP 1, FP 1 (pixel 6), FN 1 (pixel 1) -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 1, FN 1 -> 1/2
    assert metrics["miou_pct"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert metrics["pixel_acc_pct"] == pytest.approx(100 * 4 / 6)


TINY = """
name = "cityscapes_tiny"
version = 1
datasets = ["cityscapes"]
models = ["pspnet_resnet50", "pspnet_bas_resnet50"]
seeds = [0]

[train]
epochs = 1
batch_size = 2
lr = 0.01
weight_decay = 1e-4
lr_schedule = "linear"
crop_size = 32
num_workers = 0
eval_batch_size = 1

[measure]
latency_batch_sizes = [1]
latency_min_run_time_s = 0.01
latency_warmup = 1
"""


def test_pspnet_plain_and_gated_train_evaluate_and_give_records(tmp_path, monkeypatch):
    from bench.commands.runner import run_suite
    from bench.report.leaderboard import write_leaderboard
    from bench.store.results import ResultStore

    monkeypatch.delenv("BENCH_DATA", raising=False)
    root = write_cityscapes(tmp_path / "cityscapes")
    store = ResultStore(tmp_path / "results")
    plain, gated = run_suite(
        parse_suite(TINY, "cityscapes_tiny.toml"),
        data_root=str(root),
        store=store,
        work_dir=tmp_path / "runs",
        progress=False,
    )
    for record in (plain, gated):
        assert record.status == "measured" and record.data.input_shape == [3, 32, 64]
        m = record.metrics
        assert 0 <= m.miou_pct <= 100 and 0 <= m.pixel_acc_pct <= 100 and m.top1_pct is None
        assert record.training.world_size == 1 and record.training.amp_dtype is None
        assert record.model_info["output_stride"] == 8
    assert plain.metrics.executed_macs is None
    backbone_gates = gated.metrics.executed_macs  # executed MACs per image at the whole-image resolution
    assert backbone_gates is not None and 0 < backbone_gates.mean <= gated.metrics.static_macs
    write_leaderboard(store, tmp_path / "lb", "cityscapes_tiny")
    board = (tmp_path / "lb" / "cityscapes_tiny.md").read_text()
    assert "pspnet_resnet50" in board and "pspnet_bas_resnet50" in board
    assert "| mIoU (%)" in board and "Pixel acc. (%)" in board and "Top-1 (%)" not in board
    assert f"{plain.metrics.miou_pct:.2f}" in board


def test_missing_data_names_the_download_page_and_the_layout(tmp_path, monkeypatch):
    assert_missing_data_error(
        monkeypatch, "cityscapes", tmp_path, r"cityscapes-dataset\.com.*gtFine_labelIds"
    )


def test_the_cityscapes_suite():
    suite = load_suite("cityscapes")
    assert suite.datasets == ("cityscapes",) and set(suite.models) == {
        "pspnet_resnet50",
        "pspnet_bas_resnet50",
    }
    assert suite.train.crop_size == 713 and suite.train.sync_bn


def test_the_poly_schedule():
    from bench.engine.config import TrainConfig
    from bench.engine.train import lr_factor

    f = lr_factor(TrainConfig(epochs=2, lr_schedule="poly"), steps_per_epoch=10)
    assert f(0) == 1 and f(10) == pytest.approx(0.5**0.9) and f(20) == 0


def test_the_auxiliary_head_trains_on_stage_4_and_is_left_out_of_inference():
    from bench.measure.macs import static_macs
    from bench.registry import create_model

    torch.manual_seed(0)
    with_aux, without = (
        create_model("pspnet_resnet50", 5, 3),
        create_model("pspnet_resnet50", 5, 3, aux_head=False),
    )
    x, y = torch.randn(2, 3, 32, 48), torch.randint(0, 5, (2, 32, 48))
    y[0, :4] = IGNORE_INDEX
    out = with_aux.train()(x)
    assert set(out) == {"out", "aux"} and out["out"].shape == out["aux"].shape == (2, 5, 32, 48)
    main = torch.nn.functional.cross_entropy(out["out"], y, ignore_index=IGNORE_INDEX)
    aux = torch.nn.functional.cross_entropy(out["aux"], y, ignore_index=IGNORE_INDEX)
    assert segmentation_loss(out, y).item() == pytest.approx((main + AUX_LOSS_WEIGHT * aux).item(), rel=1e-6)
    assert isinstance(with_aux.eval()(x), torch.Tensor) and isinstance(without.train()(x), torch.Tensor)
    aux_params = 1024 * 256 * 9 + 2 * 256 + 256 * 5 + 5  # 3x3 conv, BN, 1x1 classifier (hszhao/semseg)
    n = [sum(p.numel() for p in m.parameters()) for m in (with_aux, without)]
    assert n[0] - n[1] == aux_params
    assert static_macs(with_aux, (3, 32, 48)) == static_macs(without, (3, 32, 48))  # measured in eval mode


@pytest.mark.parametrize(
    ("model", "imagenet_model"), [("pspnet_resnet50", "resnet50"), ("pspnet_bas_resnet50", "bas_resnet50")]
)
def test_the_backbone_starts_from_imagenet_weights_when_given(tmp_path, model, imagenet_model):
    from bench.registry import create_model

    torch.manual_seed(1)
    trained = create_model(imagenet_model, 1000, 3)
    torch.save(
        {"model": trained.state_dict(), "epoch": 90}, tmp_path / "last.pt"
    )  # an imagenet suite checkpoint
    net = create_model(model, 19, 3, backbone_weights=str(tmp_path / "last.pt"))
    assert torch.equal(net.backbone.layer3[2].conv2.weight, trained.layer3[2].conv2.weight)
    assert len(net.bench_info["backbone_weights_sha256"]) == 64
    with pytest.raises(TypeError, match="backbone_weight"):  # a misspelt argument is not ignored
        create_model(model, 19, 3, backbone_weight=str(tmp_path / "last.pt"))
    with pytest.raises(FileNotFoundError, match="does not exist: give the path of a ResNet-50 state dict"):
        create_model(model, 19, 3, backbone_weights=str(tmp_path / "missing.pt"))
    torch.save(create_model("resnet18", 1000, 3).state_dict(), tmp_path / "r18.pt")
    with pytest.raises(ValueError, match="does not fit this backbone"):
        create_model(model, 19, 3, backbone_weights=str(tmp_path / "r18.pt"))
    (tmp_path / "cut.pt").write_bytes((tmp_path / "last.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable torch state dict"):
        create_model(model, 19, 3, backbone_weights=str(tmp_path / "cut.pt"))
