"""SE-ResNets: an SE module (r = 16) in every residual block, on the CIFAR and ImageNet ResNets."""

import pytest
import torch
from timm.layers import SEModule

from baselines.resnet_cifar import BasicBlock
from baselines.se_resnet import se_module
from bench.measure import static_macs
from bench.measure.macs import module_macs
from bench.registry import create_model, list_models
from tests.helpers import n_params


def se_params(channels: int, r: int = 16) -> int:
    hidden = max(1, channels // r)
    return channels * hidden + hidden + hidden * channels + channels  # two FCs with bias


@pytest.mark.parametrize(
    "name,base,n,blocks_per_width",
    [("se_resnet20", 269_722, 3, (16, 32, 64)), ("se_resnet56", 853_018, 9, (16, 32, 64))],
)
def test_cifar_params_are_resnet_plus_one_se_per_block(name, base, n, blocks_per_width):
    model = create_model(name, num_classes=10)
    assert n_params(model) == base + n * sum(se_params(c) for c in blocks_per_width)
    assert sum(isinstance(getattr(m, "attn", None), SEModule) for m in model.modules()) == 3 * n
    assert sum(isinstance(m, SEModule) for m in model.modules()) == 3 * n


def test_se_resnet20_matches_the_imgclsmob_se_count_and_costs_almost_nothing():
    model = create_model("se_resnet20", num_classes=10)
    assert (
        n_params(model) - 269_722 == 2_373
    )  # = osmr's SE-ResNet-20 (274,847) minus their ResNet-20 (272,474)
    macs = static_macs(model, (3, 32, 32))
    assert 40_551_040 < macs < 40_551_040 * 1.001


def test_se_resnet110_and_164():
    with torch.device("meta"):
        r110 = create_model("se_resnet110", num_classes=10)
        r164 = create_model("se_resnet164", num_classes=10)
    assert n_params(r110) == 1_727_962 + 18 * sum(se_params(c) for c in (16, 32, 64))
    assert n_params(r164) == 1_703_258 + 18 * sum(se_params(c) for c in (64, 128, 256))
    assert sum(isinstance(getattr(m, "attn", None), SEModule) for m in r164.modules()) == 54


def test_se_resnet50_params_and_macs():
    with torch.device("meta"):
        model = create_model("se_resnet50", num_classes=1000).eval()
        v1 = create_model("se_resnet50", num_classes=1000, layout="v1").eval()
        x = torch.zeros(1, 3, 224, 224)
        macs, macs_v1 = module_macs(model, x).total, module_macs(v1, x).total
    assert n_params(model) == n_params(v1) == 28_088_024  # timm `seresnet50`
    assert macs == pytest.approx(4.0917e9, rel=1e-3)
    assert macs_v1 == pytest.approx(3.8605e9, rel=1e-3)  # ≈ the SE paper's "3.87 GFLOPs" [unconfirmed]
    assert model.bench_info == {"definition": "torchvision + SE", "layout": "v1.5", "se_reduction": 16}
    assert sum(isinstance(getattr(m, "attn", None), SEModule) for m in model.modules()) == 16


def test_reduction_is_a_builder_argument():
    with torch.device("meta"):
        model = create_model("se_resnet50", num_classes=1000, reduction=8)
    assert model.layer1[0].attn.fc1.out_channels == 256 // 8
    model = create_model("se_resnet20", num_classes=10, reduction=4)
    assert model.layer3[0].attn.fc1.out_channels == 16


def test_se_scales_the_residual_branch_only():
    torch.manual_seed(0)
    block = BasicBlock(16, 16, attn_layer=se_module).eval()
    x = torch.randn(2, 16, 8, 8)
    branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
    torch.nn.init.constant_(block.attn.fc2.bias, -1e4)  # excitation 0: the block becomes relu(identity)
    torch.testing.assert_close(block(x), torch.relu(x))
    torch.nn.init.constant_(block.attn.fc2.bias, 1e4)  # excitation 1: the plain residual block
    torch.nn.init.zeros_(block.attn.fc2.weight)
    torch.testing.assert_close(block(x), torch.relu(branch + x))


def test_fashion_mnist_forward():
    model = create_model("se_resnet20", num_classes=10, in_chans=1)
    out = model(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10)
    out.sum().backward()
    assert model.layer2[1].attn.fc1.weight.grad.abs().sum() > 0


def test_registered_names():
    assert {"se_resnet20", "se_resnet56", "se_resnet110", "se_resnet164", "se_resnet50"} <= set(
        list_models("se_*")
    )
