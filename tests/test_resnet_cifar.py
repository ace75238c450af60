"""CIFAR ResNets (He et al. 2016a) and the pre-activation ResNet-164 (He et al. 2016b)."""

import pytest
import torch

from baselines.resnet_cifar import CifarResNet, PreActBottleneck, PreActCifarResNet
from bench.measure import static_macs
from bench.measure.macs import module_macs
from bench.registry import create_model, list_models
from tests.helpers import n_params

# (name, params at 10 classes, params at 100 classes, conv + linear MACs at 32×32), measured values of
# counted on the models built here; the paper gives 0.27M / 0.46M / 0.66M / 0.85M / 1.7M / 1.7M parameters.
CIFAR = [
    ("resnet20", 269_722, 275_572, 40_551_040),
    ("resnet32", 464_154, None, 68_860_000),
    ("resnet44", 658_586, None, 97_170_000),
    ("resnet56", 853_018, 858_868, 125_485_696),
    ("resnet110", 1_727_962, 1_733_812, 252_887_680),
]
PAPER_PARAMS = {
    "resnet20": 0.27e6,
    "resnet32": 0.46e6,
    "resnet44": 0.66e6,
    "resnet56": 0.85e6,
    "resnet110": 1.7e6,
}


@pytest.mark.parametrize("name,params,params100,macs", CIFAR)
def test_params_and_macs_match_the_references(name, params, params100, macs):
    model = create_model(name, num_classes=10)
    assert n_params(model) == params
    assert float(f"{n_params(model):.2g}") == PAPER_PARAMS[name]  # the paper's two significant digits
    if params100:
        assert n_params(create_model(name, num_classes=100)) == params100
    assert static_macs(model, (3, 32, 32)) == pytest.approx(macs, rel=1e-3)


def meta_macs(model: torch.nn.Module) -> int:
    """Conv + linear MACs at 32×32 for a model built on the meta device (the counter, without compute)."""
    return module_macs(model.eval(), torch.zeros(1, 3, 32, 32, device="meta")).total


def test_resnet164_params_and_macs_for_both_layouts():
    with torch.device("meta"):
        model = create_model("resnet164", num_classes=10)
        v15 = create_model("resnet164", num_classes=10, layout="v1.5")
        c100 = create_model("resnet164", num_classes=100)
    assert isinstance(model, PreActCifarResNet)
    assert n_params(model) == n_params(v15) == 1_703_258  # paper: 1.7M
    assert n_params(c100) == 1_726_388  # osmr's PreResNet-164(BN) for CIFAR-100 has the same count
    # authors' code: stride on the first 1×1; v1.5 (bearpaw, osmr): on the 3×3 — 247.65M
    assert meta_macs(model) == 244_500_992
    assert meta_macs(v15) == pytest.approx(247.65e6, rel=1e-4)
    assert model.bench_info["layout"] == "v1" and v15.bench_info["layout"] == "v1.5"


def test_resnet164_structure_follows_the_authors_code():
    model = create_model("resnet164", num_classes=10)
    units = [m for m in model.modules() if isinstance(m, PreActBottleneck)]
    assert len(units) == 54 and 3 * 54 + 2 == 164
    assert [model.layer1[0].conv3.out_channels, model.layer2[0].conv3.out_channels] == [64, 128]
    assert model.fc.in_features == 256
    # the shape-changing units project with a 1×1 conv (no BN); the others add the input itself
    projecting = [u for u in units if u.shortcut is not None]
    assert len(projecting) == 3 and all(u.shortcut.kernel_size == (1, 1) for u in projecting)
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[0].conv2.stride == (1, 1)
    v15 = create_model("resnet164", num_classes=10, layout="v1.5")
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    with pytest.raises(ValueError, match="layout"):
        create_model("resnet164", num_classes=10, layout="v2")


def test_preact_unit_is_bn_relu_conv_with_a_preactivated_projection():
    torch.manual_seed(0)
    unit = PreActBottleneck(16, 16, stride=2).eval()
    x = torch.randn(2, 16, 8, 8)
    preact = torch.relu(unit.bn1(x))
    expected = unit.conv1(preact)
    expected = unit.conv2(torch.relu(unit.bn2(expected)))
    expected = unit.conv3(torch.relu(unit.bn3(expected))) + unit.shortcut(preact)
    torch.testing.assert_close(unit(x), expected)
    same = PreActBottleneck(64, 16).eval()
    x = torch.randn(2, 64, 8, 8)
    branch = same.conv2(torch.relu(same.bn2(same.conv1(torch.relu(same.bn1(x))))))
    torch.testing.assert_close(same(x), same.conv3(torch.relu(same.bn3(branch))) + x)


@pytest.mark.parametrize("name", ["resnet20", "resnet164"])
@torch.no_grad()
def test_fashion_mnist_shapes_and_features(name):
    model = create_model(name, num_classes=10, in_chans=1).eval()
    x = torch.randn(2, 1, 28, 28)
    assert model(x).shape == (2, 10)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.fc.in_features, 7, 7)
    torch.testing.assert_close(model.fc(feats.mean((2, 3))), model(x))


def test_stem_stages_and_head_compose_the_forward():
    torch.manual_seed(0)
    for name in ("resnet20", "resnet164"):
        model = create_model(name, num_classes=10).eval()
        x = torch.randn(2, 3, 16, 16)
        with torch.no_grad():
            outs = model.stage_outputs(x)
            assert [o.shape[-1] for o in outs] == [16, 8, 4]
            torch.testing.assert_close(
                model.forward_head(model.forward_stages(model.forward_stem(x))), model(x)
            )
            torch.testing.assert_close(model.forward_head(outs[-1]), model(x))


def test_widths_and_block_kwargs_reach_every_block():
    from baselines.resnet_cifar import BasicBlock

    model = CifarResNet(BasicBlock, 3, widths=(24, 48, 96))
    assert [model.layer1[0].conv1.out_channels, model.layer3[2].conv2.out_channels] == [24, 96]
    model = PreActCifarResNet(PreActBottleneck, 2, block_kwargs={"layout": "v1.5"})
    assert model.layer3[0].conv2.stride == (2, 2)


def test_registered_names():
    assert {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet164"} <= set(
        list_models("resnet*")
    )
