"""ResNet-Wider: one width multiplier, chosen so the parameter count meets a target as closely as possible."""

import pytest
import torch

from baselines.resnet_wider import (
    base_network,
    gated_filters,
    gaternet_gater_params,
    n_params,
    scaled_widths,
    wider_resnet,
)
from bench.registry import create_model, list_models


def test_gater_estimate_is_the_reference_formula_and_the_built_gaternet():
    # baselines.resnet_wider: 269,072 + 65·b + c·(b+1); ResNet-20's blocks end in 336 filters, b = 8
    assert gated_filters(create_model("resnet20", num_classes=10)) == 336
    assert gaternet_gater_params(336) == 272_616
    assert gaternet_gater_params(336, b=64) == 269_072 + 65 * 64 + 336 * 65
    for depth, classes, chans in [(20, 10, 3), (20, 10, 1), (56, 100, 3), (110, 10, 3), (164, 100, 3)]:
        with torch.device("meta"):
            wider = create_model(f"resnet{depth}_wider", classes, chans).bench_info["target_params"]
            gaternet = n_params(create_model(f"gaternet_resnet{depth}", classes, chans))
        assert wider == gaternet, (depth, classes, chans)


def test_resnet20_wider_default_target_and_bench_info():
    model = create_model("resnet20_wider", num_classes=10)
    info = model.bench_info
    assert info["target_params"] == 269_722 + 272_616 == 542_338
    assert info["params"] == n_params(model)
    assert info["params"] == pytest.approx(542_338, rel=0.01)
    m = info["width_multiplier"]
    assert info["widths"] == [round(16 * m), round(32 * m), round(64 * m)]
    assert [model.conv1.out_channels, model.layer2[0].conv1.out_channels, model.fc.in_features] == [
        info["widths"][0],
        info["widths"][1],
        info["widths"][2],
    ]
    assert info["target_source"].startswith("GaterNet estimate")


@pytest.mark.parametrize("target", [300_000, 1_000_000])
def test_reached_count_is_the_closest_of_all_multipliers(target):
    make, base_widths, _ = base_network(20, 10, 3)
    model = wider_resnet(20, 10, 3, target_params=target)

    def params(m):
        with torch.device("meta"):
            return n_params(make(scaled_widths(base_widths, m)))

    miss = abs(n_params(model) - target)
    assert miss <= 0.01 * target
    found = model.bench_info["width_multiplier"]
    grid = [found * (0.92 + i / 300) for i in range(49)]  # ±8 %, finer than any width step
    assert all(miss <= abs(params(m) - target) for m in grid if m >= 1)  # nothing closer nearby
    assert model.bench_info == {**model.bench_info, "target_params": target, "target_source": "given"}


def test_every_layer_gets_the_same_multiplier():
    assert scaled_widths((16, 32, 64), 1.5) == (24, 48, 96)
    assert scaled_widths((16, 32, 64), 72.9 / 64) == (18, 36, 73)
    assert scaled_widths((64, 128, 256, 512), 2.0) == (128, 256, 512, 1024)
    model = create_model("resnet56_wider", num_classes=10)
    m, widths = model.bench_info["width_multiplier"], model.bench_info["widths"]
    assert widths == [round(16 * m), round(32 * m), round(64 * m)]


def test_registered_names_build_with_their_defaults():
    names = ["resnet20_wider", "resnet56_wider", "resnet110_wider", "resnet164_wider"]
    assert set(names) <= set(list_models("*_wider"))
    with torch.device("meta"):
        for name in names:
            info = create_model(name, num_classes=10).bench_info
            assert info["width_multiplier"] > 1
            assert info["params"] == pytest.approx(info["target_params"], rel=0.015)
        r164 = create_model("resnet164_wider", num_classes=10, target_params=2_000_000)
    assert r164.bench_info["layout"] == "v1" and r164.fc.in_features == 4 * r164.bench_info["widths"][-1]


def test_imagenet_base_and_target_below_base():
    with torch.device("meta"):
        model = wider_resnet(50, 1000, target_params=30_000_000)
    assert model.bench_info["params"] == pytest.approx(30_000_000, rel=0.002)
    assert model.bench_info["layout"] == "v1.5"
    with pytest.raises(ValueError, match="target_params"):
        wider_resnet(50, 1000)  # no default target for ImageNet
    with pytest.raises(ValueError, match="only widens"):
        create_model("resnet20_wider", num_classes=10, target_params=100_000)
    with pytest.raises(ValueError, match="no ResNet-Wider"):
        wider_resnet(21, 10, target_params=400_000)


def test_fashion_mnist_forward():
    model = create_model("resnet20_wider", num_classes=10, in_chans=1)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert model.bench_info["params"] == pytest.approx(model.bench_info["target_params"], rel=0.01)
