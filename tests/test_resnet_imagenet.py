"""ImageNet ResNets: torchvision's definitions (the same weights for a seed), both bottleneck layouts,
`in_chans`, `widths`, dilation and stage outputs."""

import pytest
import torch
import torchvision

from baselines.resnet_imagenet import Bottleneck, ImageNetResNet
from bench.measure import static_macs
from bench.measure.macs import module_macs
from bench.registry import create_model
from tests.helpers import n_params


def meta_macs(name: str, **kwargs) -> tuple[int, int]:
    """Params and conv + linear MACs at 224×224, counted on the meta device (no real compute)."""
    with torch.device("meta"):
        model = create_model(name, num_classes=1000, **kwargs).eval()
        return n_params(model), module_macs(model, torch.zeros(1, 3, 224, 224)).total


# (name, params, MACs, layout): torchvision 0.29.1 weight metadata (`num_params`, `_ops`), and the v1
# layout's 3.858G / 7.570G, which are He et al.'s "3.8 / 7.6 ×10⁹ FLOPs" (Table 1)
IMAGENET = [
    ("resnet34", 21_797_672, 3.664e9, "basic"),
    ("resnet50", 25_557_032, 4.089e9, "v1.5"),
    ("resnet50_v1", 25_557_032, 3.858e9, "v1"),
    ("resnet101", 44_549_160, 7.801e9, "v1.5"),
    ("resnet101_v1", 44_549_160, 7.570e9, "v1"),
]


@pytest.mark.parametrize("name,params,macs,layout", IMAGENET)
def test_params_macs_and_layout(name, params, macs, layout):
    got_params, got_macs = meta_macs(name)
    assert got_params == params
    assert got_macs == pytest.approx(macs, rel=1e-3)
    with torch.device("meta"):
        assert create_model(name, num_classes=1000).bench_info["layout"] == layout


def test_resnet18_on_the_real_counter():
    model = create_model("resnet18", num_classes=1000)
    assert n_params(model) == 11_689_512
    assert static_macs(model, (3, 224, 224)) == pytest.approx(1.814e9, rel=1e-3)  # torchvision _ops: 1.814


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_is_torchvisions_network_weight_for_weight(name):
    """The same parameter names, and for a seed the same initial weights and outputs as torchvision's."""
    torch.manual_seed(0)
    ours = create_model(name, num_classes=10)
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)(num_classes=10)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.state_dict().items())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), theirs.eval()(x))


def test_v1_layout_strides_the_first_1x1():
    with torch.device("meta"):
        v1 = create_model("resnet50_v1", num_classes=1000)
    strided = [
        b for b in v1.modules() if isinstance(b, Bottleneck) and b.downsample and b.conv1.stride != (1, 1)
    ]
    assert len(strided) == 3 and all(b.conv2.stride == (1, 1) for b in strided)


def test_dilated_backbone_is_torchvisions_and_returns_its_stages():
    torch.manual_seed(0)
    ours = ImageNetResNet(Bottleneck, [3, 4, 6, 3], replace_stride_with_dilation=[False, True, True])
    torch.manual_seed(0)
    theirs = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.state_dict().items())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stages = ours.eval().stage_outputs(x)
        assert [tuple(s.shape[1:]) for s in stages] == [
            (256, 16, 16),
            (512, 8, 8),
            (1024, 8, 8),
            (2048, 8, 8),
        ]
        torch.testing.assert_close(ours.forward_head(stages[-1]), theirs.eval()(x), rtol=0, atol=0)


def test_in_chans_and_widths():
    model = create_model("resnet18", num_classes=10, in_chans=1, widths=(32, 64, 128, 256)).eval()
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 10)
    assert model.conv1.in_channels == 1 and model.layer4[1].conv2.out_channels == 256
    assert model.forward_features(torch.zeros(1, 1, 64, 64)).shape == (1, 256, 2, 2)
    with torch.device("meta"):
        wide = ImageNetResNet(Bottleneck, [3, 4, 6, 3], widths=(128, 256, 512, 1024))
    assert wide.fc.in_features == 4096 and wide.layer1[0].conv1.in_channels == 128


def test_timm_keeps_its_own_resnet50_and_sees_ours():
    import timm

    create_model("resnet50_v1", num_classes=10)  # loads the registry
    assert type(timm.create_model("resnet50", pretrained=False)).__module__.startswith("timm")
    with torch.device("meta"):
        assert isinstance(timm.create_model("resnet50_v1", num_classes=10), ImageNetResNet)


def test_bad_layout_is_a_clear_error():
    with pytest.raises(ValueError, match="layout"):
        create_model("resnet50", num_classes=10, layout="v2")
