"""MobileNetV2 and ShuffleNetV2 ×1.0, plain, SE and CE: torchvision's networks (parameters, weights,
MACs at 224×224, fvcore agreeing), the SE and CE overheads their notes state, the re-weighting slots
behaving like the ResNets', and a few training steps."""

from __future__ import annotations

import pytest
import torch
import torchvision
from timm.layers import SEModule
from torch import nn

from baselines.mobilenet import InvertedResidual
from baselines.shufflenet import ShuffleUnit
from baselines.slots import ConvNormAttnAct
from bench.measure import static_macs
from bench.measure.macs import static_macs_fvcore
from bench.registry import create_model
from methods.channel_equilibrium import ChannelEquilibrium
from tests.helpers import n_params

# name -> torchvision builder, its parameter count and MACs (conv + linear) at 224×224, 1000 classes
NETWORKS = {
    "mobilenet_v2": (torchvision.models.mobilenet_v2, 3_504_872, 300_774_272),
    "shufflenet_v2_x1_0": (torchvision.models.shufflenet_v2_x1_0, 2_278_604, 144_907_992),
}
SHAPE = (3, 224, 224)


@pytest.fixture(scope="module")
def counted() -> dict[str, tuple[nn.Module, int, int]]:
    """Every variant at 1000 classes, its parameters and static MACs at 224×224 (built once)."""
    out = {}
    for net in NETWORKS:
        for name in (net, f"se_{net}", f"ce_{net}"):
            torch.manual_seed(0)
            model = create_model(name, num_classes=1000).eval()
            out[name] = (model, n_params(model), static_macs(model, SHAPE))
    return out


def attn_shapes(model: nn.Module) -> dict[str, tuple[int, int, int]]:
    """(channels, H, W) of every filled `attn` slot at 224×224 (one forward with hooks)."""
    shapes, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, SEModule | ChannelEquilibrium):
            hooks.append(
                m.register_forward_hook(lambda m, i, o, n=name: shapes.__setitem__(n, tuple(o.shape[1:])))
            )
    with torch.no_grad():
        model(torch.zeros(1, *SHAPE))
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize("net", NETWORKS)
def test_plain_network_is_torchvisions(net, counted):
    build, params, macs = NETWORKS[net]
    model, ours_params, ours_macs = counted[net]
    reference = build().eval()
    assert ours_params == n_params(reference) == params
    assert ours_macs == static_macs(reference, SHAPE) == macs == static_macs_fvcore(model, SHAPE)
    assert params == pytest.approx({"mobilenet_v2": 3.50e6, "shufflenet_v2_x1_0": 2.28e6}[net], rel=2e-3)
    assert macs == pytest.approx({"mobilenet_v2": 0.30e9, "shufflenet_v2_x1_0": 0.145e9}[net], rel=3e-3)
    # the same construction: a seed gives torchvision's initial state (`counted` builds with seed 0)
    torch.manual_seed(0)
    seeded = build().eval()
    assert list(model.state_dict()) == list(seeded.state_dict())
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), seeded.state_dict().values(), strict=True)
    )
    # and the same network: torchvision's weights load by name and give its outputs
    model = create_model(net, num_classes=1000).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    assert model.bench_info["layout"] == "torchvision"


def se_params(channels: int, r: int = 16) -> int:
    hidden = max(1, channels // r)
    return 2 * channels * hidden + hidden + channels  # two 1×1 convs with bias


@pytest.mark.parametrize("net", NETWORKS)
def test_se_overhead_is_one_se_module_per_block(net, counted):
    model, params, macs = counted[f"se_{net}"]
    _, base_params, base_macs = counted[net]
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual | ShuffleUnit)]
    assert (
        all(isinstance(b.attn, SEModule) for b in blocks)
        and len(blocks) == {"mobilenet_v2": 17, "shufflenet_v2_x1_0": 16}[net]
    )
    assert params - base_params == sum(se_params(b.attn_channels) for b in blocks)
    # the two FCs on the pooled vector (the pooling and the product are not conv/linear MACs)
    assert macs - base_macs == sum(2 * b.attn_channels * max(1, b.attn_channels // 16) for b in blocks)
    assert macs == static_macs_fvcore(model, SHAPE)
    assert model.bench_info["unconfirmed"] and model.bench_info["se_reduction"] == 16


def ce_params(channels: int) -> int:
    hidden = channels // 4
    return 2 * channels * hidden + 2 * hidden + 1  # IR's two FCs, its LayerNorm, the mix logit


CE_SITES = {  # the CE paper's ResNet rule: the stem and every block but those of the last (7×7) stage
    "mobilenet_v2": {"features.0.attn"} | {f"features.{i}.attn" for i in range(1, 14)},
    "shufflenet_v2_x1_0": {"conv1.attn"}
    | {f"stage2.{i}.attn" for i in range(4)}
    | {f"stage3.{i}.attn" for i in range(8)},
}


@pytest.mark.parametrize("net", NETWORKS)
def test_ce_sites_and_overhead(net, counted):
    model, params, macs = counted[f"ce_{net}"]
    _, base_params, base_macs = counted[net]
    ce = {n: m for n, m in model.named_modules() if isinstance(m, ChannelEquilibrium)}
    assert set(ce) == CE_SITES[net]
    shapes = attn_shapes(model)
    assert all(shapes[n][0] == m.ir.fc1.in_features for n, m in ce.items())
    assert params - base_params == sum(ce_params(c) for c, _, _ in shapes.values())
    # whitening: a [d, d] matrix on every pixel of C channels (C·d·H·W), IR: two FCs (C²/2)
    extra = sum(c * ce[n].bd.d * h * w + 2 * c * (c // 4) for n, (c, h, w) in shapes.items())
    assert macs - base_macs == extra
    assert macs == static_macs_fvcore(model, SHAPE)
    assert model.bench_info["ce"]["group_size"] == 16 and "unconfirmed" in model.bench_info


def test_ce_group_sizes_follow_the_codes_halving_rule(counted):
    mobilenet, shufflenet = counted["ce_mobilenet_v2"][0], counted["ce_shufflenet_v2_x1_0"][0]
    assert mobilenet.features[0].attn.bd.d == 32 and shufflenet.conv1.attn.bd.d == 8  # stem group 64 halved
    assert {mobilenet.features[i].attn.bd.d for i in (2, 3)} == {8}  # 24 channels
    assert {mobilenet.features[i].attn.bd.d for i in range(4, 14)} == {16}
    assert {u.attn.bd.d for u in shufflenet.stage2} == {2} and {u.attn.bd.d for u in shufflenet.stage3} == {4}


def test_se_in_the_slot_scales_the_branch_only():
    """Excitation 0 closes the branch (MobileNetV2: the identity passes; ShuffleNetV2: the computed half
    is zero), excitation 1 gives the plain block back, as in SE-ResNet's blocks."""
    torch.manual_seed(0)
    inverted = InvertedResidual(16, 16, 1, 6, attn_layer=SEModule).eval()
    unit = ShuffleUnit(32, 32, 1, attn_layer=SEModule).eval()
    x = torch.randn(2, 16, 8, 8)
    y = torch.randn(2, 32, 8, 8)
    for block in (inverted, unit):
        nn.init.constant_(block.attn.fc2.bias, -1e4)
    torch.testing.assert_close(inverted(x), x)
    x1, _ = y.chunk(2, dim=1)
    torch.testing.assert_close(unit(y)[:, 0::2], x1)  # the shuffle interleaves the halves
    assert unit(y)[:, 1::2].abs().max() == 0
    for block in (inverted, unit):
        nn.init.constant_(block.attn.fc2.bias, 1e4)
        nn.init.zeros_(block.attn.fc2.weight)
    plain_inverted = InvertedResidual(16, 16, 1, 6).eval()
    plain_unit = ShuffleUnit(32, 32, 1).eval()
    plain_inverted.load_state_dict(
        {k: v for k, v in inverted.state_dict().items() if not k.startswith("attn")}
    )
    plain_unit.load_state_dict({k: v for k, v in unit.state_dict().items() if not k.startswith("attn")})
    torch.testing.assert_close(inverted(x), plain_inverted(x))
    torch.testing.assert_close(unit(y), plain_unit(y))


class Recorder(nn.Module):
    """An `attn` that keeps what it is given."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.clone()
        return x


def test_stem_slot_sits_between_norm_and_activation():
    stem = ConvNormAttnAct(3, 8, stride=2, activation_layer=nn.ReLU6).eval()
    stem.attn = Recorder()
    x = torch.randn(1, 3, 16, 16)
    out = stem(x)
    torch.testing.assert_close(stem.attn.seen, stem[1](stem[0](x)))  # after the BN, before the ReLU6
    assert stem.attn.seen.min() < 0 and out.min() >= 0


@pytest.mark.parametrize("name", [f"{v}{n}" for n in NETWORKS for v in ("", "se_", "ce_")])
def test_trains_a_few_steps(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    # 64×64: the last CE stage sees 4×4 maps (at 32×32 ShuffleNetV2's stage3 is 2×2, and IR's division
    # by the spatial spread of 4 pixels blows up within a few steps)
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 10, (4,))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss) and all(torch.isfinite(p).all() for p in model.parameters())
    slot = [n for n, p in model.named_parameters() if ".attn." in n]
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in slot)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
    if name.startswith("ce_"):
        assert (
            next(m for m in model.modules() if isinstance(m, ChannelEquilibrium)).mix_logit.grad is not None
        )


def test_ce_resnet101_is_ce_resnet50s_rule_on_more_blocks():
    with torch.device("meta"):
        model = create_model("ce_resnet101", num_classes=1000)
        plain = create_model("resnet101", num_classes=1000)
    ce = {n for n, m in model.named_modules() if isinstance(m, ChannelEquilibrium)}
    assert ce == {"stem_attn"} | {
        f"layer{s}.{b}.attn" for s, n in ((1, 3), (2, 4), (3, 23)) for b in range(n)
    }
    widths = [64] + [256] * 3 + [512] * 4 + [1024] * 23
    assert n_params(model) - n_params(plain) == sum(ce_params(c) for c in widths)
    assert n_params(model) == 57_245_671 and model.bench_info["layout"] == "v1.5"


def test_se_resnet18_has_se_after_bn2_of_every_basic_block():
    with torch.device("meta"):
        model = create_model("se_resnet18", num_classes=1000)
    blocks = [b for layer in model.stages() for b in layer]
    assert all(isinstance(b.attn, SEModule) for b in blocks) and len(blocks) == 8
    assert n_params(model) == 11_689_512 + sum(se_params(b.bn2.num_features) for b in blocks) == 11_778_592
    assert model.bench_info["layout"] == "basic"
