"""DCNets' official ImageNet network (`dcnet_tanh_cos_resnet18m`): its structure as the official code
builds it, its size and MACs at 224×224, what it keeps out of weight decay, a few training steps, and
the official recipe in the imagenet suite."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.engine.config import load_suite
from bench.measure import static_macs
from bench.measure.macs import static_macs_fvcore
from bench.registry import create_model
from methods.decoupled import DecoupledConv2d
from methods.decoupled_imagenet import DCNetImageNetResNet, DecoupledUnit
from tests.helpers import n_params

NAME = "dcnet_tanh_cos_resnet18m"
WIDTHS, UNITS = (128, 256, 512, 1024), (1, 2, 3, 1)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return create_model(NAME, num_classes=1000)


def convs(size: int) -> list[tuple[int, int, int, int]]:
    """(k, C_in, C_out, output side) of every decoupled conv at `size`×`size` input, in the code's order."""
    side = size // 4  # after the stride-2 stem and the stride-2 max pooling
    out = [(7, 3, WIDTHS[0], size // 2)]
    width = WIDTHS[0]
    for i, (w, units) in enumerate(zip(WIDTHS, UNITS, strict=True)):
        if i:
            side //= 2
            out.append((3, width, w, side))  # the stride-2 transition
            width = w
        out += [(3, w, w, side)] * (2 * units)
    return out


def test_structure_is_the_official_codes(model):
    decoupled = [m for m in model.modules() if isinstance(m, DecoupledConv2d)]
    assert [(m.kernel_size[0], m.in_channels, m.out_channels) for m in decoupled] == [
        c[:3] for c in convs(224)
    ]
    assert len(decoupled) == 18 and all(
        m.cfg.magnitude == "tanh" and m.cfg.angular == "cos" for m in decoupled
    )
    # no plain conv at all: no projection shortcut, and the classifier is a bias-free linear layer
    assert not any(type(m) is nn.Conv2d for m in model.modules())
    assert model.fc.bias is None and model.fc.in_features == 1024
    assert [len(s) for s in model.stages()] == [1, 3, 4, 2]  # units, after a transition in stages 2-4
    prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == 1 + 3 + 7 and all(p.weight.numel() > 1 and (p.weight == 0).all() for p in prelus)
    # the code's initialisation: units N(0, 0.01); stem and transitions Glorot uniform
    unit_std = model.layer3[1].conv1.weight.std().item()
    assert unit_std == pytest.approx(0.01, rel=0.05)
    bound = (6 / (9 * 256 + 9 * 512)) ** 0.5
    assert (
        model.layer3[0][0].weight.abs().max() <= bound
        and model.layer3[0][0].weight.std() > 0.5 * bound / 3**0.5
    )
    assert model.bench_info["layout"] == "dcnets" and model.bench_info["decoupled_convs"] == 18


def test_unit_adds_its_branch_with_no_activation_after_the_addition():
    torch.manual_seed(0)
    unit = DecoupledUnit(16, create_model(NAME, num_classes=10).cfg).eval()
    nn.init.zeros_(unit.bn2.weight)
    nn.init.zeros_(unit.bn2.bias)
    x = torch.randn(2, 16, 6, 6)
    torch.testing.assert_close(unit(x), x)  # a closed branch passes x, negative values included
    nn.init.ones_(unit.bn2.weight)
    branch = unit.bn2(unit.conv2(unit.act1(unit.bn1(unit.conv1(x)))))
    torch.testing.assert_close(unit(x), x + branch)


def test_params_and_macs_at_224(model):
    layers = convs(224)
    # per decoupled conv: BN γ and β, the radius, and a PReLU slope (not after a unit's second conv)
    bn_and_prelu = sum(4 * c_out for _, _, c_out, _ in layers) - sum(
        w * u for w, u in zip(WIDTHS, UNITS, strict=True)
    )
    assert n_params(model) == sum(k * k * i * o for k, i, o, _ in layers) + bn_and_prelu + 1024 * 1000
    assert n_params(model) == 42_950_400
    assert_macs(static_macs(model.eval(), (3, 224, 224)), 224, 1000)


def assert_macs(macs: int, size: int, num_classes: int) -> None:
    """The convs' and the classifier's MACs, plus each decoupled conv's patch norm ‖x‖, counted by
    `methods.decoupled` as a convolution of x² (at most a ones kernel over every input channel)."""
    layers = convs(size)
    plain = sum(k * k * i * o * s * s for k, i, o, s in layers) + 1024 * num_classes
    assert plain < macs <= plain + sum(k * k * i * s * s for k, i, _, s in layers)


def test_fvcore_agrees_at_64():
    model = create_model(NAME, num_classes=10).eval()
    macs = static_macs(model, (3, 64, 64))
    assert macs == static_macs_fvcore(model, (3, 64, 64))
    assert_macs(macs, 64, 10)


def test_weight_decay_reaches_only_bn_and_the_classifier(model):
    names = {n for n, _ in model.named_parameters()}
    bn = {
        f"{n}.{p}"
        for n, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d)
        for p in ("weight", "bias")
    }
    assert names - model.no_weight_decay() == bn | {"fc.weight"}
    assert len([n for n in model.no_weight_decay() if n.endswith("radius")]) == 18


def test_trains_a_few_steps_with_the_orthogonality_penalty():
    torch.manual_seed(0)
    # the official network at 1/16 of its widths: the full one's penalty alone is ~20 G MACs a step
    model = DCNetImageNetResNet(10, 3, create_model(NAME, num_classes=10).cfg, widths=(8, 16, 32, 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 10, (4,))
    before = model.layer4[1].conv2.weight.detach().clone()
    for _ in range(3):
        aux = model.aux_losses(0.0)
        loss = nn.functional.cross_entropy(model(x), y) + sum(aux.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert set(aux) == {"orth"} and aux["orth"] > 0 and torch.isfinite(loss)
    assert not torch.equal(before, model.layer4[1].conv2.weight)
    assert model.stem[2].weight.grad.abs().sum() > 0  # the PReLU slopes learn
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_the_imagenet_suite_runs_it_with_the_official_recipe():
    suite = load_suite("imagenet")
    assert NAME in suite.models
    cfg = suite.train_config(NAME)
    assert (cfg.batch_size, cfg.lr, cfg.lr_scaling, cfg.momentum, cfg.optimizer) == (
        40,
        0.1,
        "none",
        0.9,
        "sgd",
    )
    assert (cfg.label_smoothing, cfg.warmup_epochs, cfg.gamma, cfg.weight_decay) == (0.01, 0.0, 0.1, 1e-4)
    steps_per_epoch = 1_281_167 // 40
    iterations = [int(m * steps_per_epoch) for m in cfg.milestones]
    assert iterations == pytest.approx([200_000, 375_000, 550_000], abs=10)
    assert cfg.epochs * 1_281_167 / 40 == pytest.approx(700_000, rel=0.01)
