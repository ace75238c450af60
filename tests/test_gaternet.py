"""GaterNet: Improved SemHash as tensor2tensor implements it, binary deterministic gates at evaluation,
gate sites that name the gated convs, the backbone left intact, and the L1 sparsity term at work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.gates import collect, gate_networks
from bench.measure import static_macs
from bench.measure.macs import gate_network_macs, module_macs
from bench.registry import create_model
from methods.gaternet import ImprovedSemHash, saturating_sigmoid
from tests.helpers import assert_penalty_closes_gates

RESNET20_FILTERS = 3 * 2 * (16 + 32 + 64)  # every conv filter of the 9 residual blocks
RESNET20_LAST = 3 * (16 + 32 + 64)  # the last conv of each block: the official code's 336 gates


def small_gaternet(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return create_model("gaternet_resnet20", num_classes=10, in_chans=1, **kwargs)


def test_saturating_sigmoid():
    x = torch.tensor([-10.0, -2.0, 0.0, 2.0, 10.0])
    expected = (1.2 * torch.sigmoid(x) - 0.1).clamp(0, 1)
    torch.testing.assert_close(saturating_sigmoid(x), expected)
    assert saturating_sigmoid(torch.tensor(0.0)) == 0.5  # so 1[y > 0.5] = 1[logit > 0]
    assert saturating_sigmoid(torch.tensor(-10.0)) == 0 and saturating_sigmoid(torch.tensor(10.0)) == 1


def test_semhash_training_uses_soft_and_hard_halves_with_gradients():
    torch.manual_seed(0)
    semhash = ImprovedSemHash(noise_std=1.0, hard_fraction=0.5).train()
    logits = torch.randn(400, 32, requires_grad=True)
    gates = semhash(logits)
    hard = semhash.last_hard_rows.squeeze(1)
    assert 150 < int(hard.sum()) < 250  # about half the examples, drawn per example
    binary = (gates == 0) | (gates == 1)
    assert bool(binary[hard].all())  # the hard half is exactly 0/1 in the forward pass ...
    assert float(binary[~hard].float().mean()) < 0.5  # ... the soft half mostly is not
    gates.sum().backward()
    # straight-through: both halves pass a gradient to the logits (the saturated ends give none)
    assert bool((logits.grad[hard] != 0).any()) and bool((logits.grad[~hard] != 0).any())
    # the noise is there in training: the same logits give other gates
    assert not torch.equal(semhash(logits.detach()), semhash(logits.detach()))


def test_semhash_soft_half_is_the_noisy_saturated_sigmoid():
    torch.manual_seed(0)
    semhash = ImprovedSemHash(noise_std=0.0, hard_fraction=0.0).train()
    logits = torch.randn(8, 5)
    torch.testing.assert_close(semhash(logits), saturating_sigmoid(logits))
    semhash.hard_fraction = 1.0
    torch.testing.assert_close(semhash(logits), (logits > 0).float())


def test_semhash_evaluation_is_binary_and_deterministic():
    semhash = ImprovedSemHash(noise_std=1.0).eval()
    logits = torch.randn(64, 16)
    gates = semhash(logits)
    assert torch.equal(gates, (logits > 0).float())
    assert torch.equal(gates, semhash(logits))


def test_semhash_hard_share_ramp():
    semhash = ImprovedSemHash(hard_fraction=0.5, hard_ramp=0.2)
    semhash.progress = 0.0
    assert semhash.hard_probability() == pytest.approx(0.005)  # tensor2tensor's inverse_exp_decay floor
    semhash.progress = 0.1
    assert semhash.hard_probability() == pytest.approx(0.05)
    semhash.progress = 0.5
    assert semhash.hard_probability() == pytest.approx(0.5)
    assert ImprovedSemHash(hard_fraction=0.5).hard_probability() == 0.5  # default: no ramp


def test_model_gates_are_binary_and_deterministic_at_evaluation():
    model = small_gaternet().eval()
    x = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        out = model(x)
        first = {name: gate.clone() for name, (_, gate) in collect(model).items()}
        assert torch.equal(out, model(x))
        second = {name: gate for name, (_, gate) in collect(model).items()}
        model(x[:1])  # an example's gates do not depend on the rest of the batch
        alone = {name: gate for name, (_, gate) in collect(model).items()}
    for name, gate in first.items():
        assert bool(((gate == 0) | (gate == 1)).all()), name
        assert torch.equal(gate, second[name]), name
        assert torch.equal(gate[:1], alone[name]), name


@pytest.mark.parametrize(
    "gated_convs, expected",
    [("last", RESNET20_LAST), ("all", RESNET20_FILTERS), ("inner", RESNET20_FILTERS // 2)],
)
def test_gate_sites_name_real_convs_with_matching_channels(gated_convs, expected):
    model = small_gaternet(gated_convs=gated_convs).eval()
    modules = dict(model.named_modules())
    with torch.no_grad():
        model(torch.randn(2, 1, 28, 28))
    sites = collect(model)
    assert sum(gate.shape[1] for _, gate in sites.values()) == expected == model.gater.fc2.out_features
    produced = []
    for name, (site, gate) in sites.items():
        assert site.kind == "channel" and gate.shape[0] == 2, name
        for conv in site.produces:
            assert isinstance(modules[conv], nn.Conv2d) and modules[conv].out_channels == gate.shape[1], conv
            assert not conv.startswith("gater"), conv
        for conv in site.consumes:
            assert isinstance(modules[conv], nn.Conv2d) and modules[conv].in_channels == gate.shape[1], conv
        produced += site.produces
    assert len(produced) == len(set(produced))  # every gated conv once
    assert gate_networks(model) == ["gater"]


@pytest.mark.parametrize(
    "name, shape, num_gates",
    [
        ("gaternet_resnet164", (3, 16, 16), 18 * (96 + 192 + 384)),  # (16+16+64)·18 per stage, ×2, ×4
        ("gaternet_resnet50", (3, 64, 64), 22_656),  # 3·384 + 4·768 + 6·1536 + 3·3072
    ],
)
def test_bottleneck_gate_sites_cover_every_residual_conv(name, shape, num_gates):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, gated_convs="all").eval()
    modules = dict(model.named_modules())
    with torch.no_grad():
        model(torch.randn(1, *shape))
    sites = collect(model)
    convs = [
        n for n, m in modules.items() if n.startswith("layer") and n.rsplit(".", 1)[-1].startswith("conv")
    ]
    assert sorted(c for site, _ in sites.values() for c in site.produces) == sorted(convs)
    for site, gate in sites.values():
        for conv in site.produces:
            assert modules[conv].out_channels == gate.shape[1]
        for conv in site.consumes:
            assert modules[conv].in_channels == gate.shape[1]
    assert model.gater.fc2.out_features == num_gates == model.bench_info["num_gates"]


def force_open(model: nn.Module) -> None:
    """Every gate open whatever the input (logits = +10), and non-trivial BN statistics."""
    with torch.no_grad():
        model.gater.fc2.weight.zero_()
        model.gater.fc2.bias.fill_(10.0)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize(
    "name, baseline, shape",
    [("gaternet_resnet20", "resnet20", (1, 28, 28)), ("gaternet_resnet164", "resnet164", (1, 16, 16))],
)
def test_all_gates_open_equals_the_plain_backbone(name, baseline, shape):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=1).eval()
    force_open(model)
    plain = create_model(baseline, num_classes=10, in_chans=1).eval()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith("gater.") for k in unexpected)
    x = torch.randn(4, *shape)
    with torch.no_grad():
        gated = model(x)
        assert all(bool((g == 1).all()) for _, g in collect(model).values())
        model.set_gating(False)
        ungated = model(x)
        torch.testing.assert_close(gated, ungated, rtol=0, atol=0)
        torch.testing.assert_close(gated, plain(x))


def test_closed_gates_zero_the_filters():
    model = small_gaternet(gated_convs="all").eval()
    with torch.no_grad():
        model.gater.fc2.weight.zero_()
        model.gater.fc2.bias.fill_(-10.0)  # every gate closed: each block is its shortcut
        block = model.layer1[0]
        x = torch.randn(2, 16, 8, 8)
        block.gate.give(torch.zeros(2, block.gate.num_gates))  # what the network's gater hands the block
        torch.testing.assert_close(block(x), torch.relu(x))


def test_sizes_and_macs():
    model = small_gaternet()
    backbone = create_model("resnet20", num_classes=10, in_chans=1)
    c, b = RESNET20_LAST, model.cfg.b
    n_params = sum(p.numel() for p in model.parameters())
    n_gater = sum(p.numel() for p in model.gater.parameters())
    assert n_params - n_gater == sum(p.numel() for p in backbone.parameters())
    trunk = sum(p.numel() for p in backbone.parameters()) - (64 * 10 + 10)  # ResNet-20 without its fc
    assert n_gater == trunk + (64 + 1) * b + (b + 1) * c
    counted = module_macs(model.eval(), torch.zeros(1, 1, 28, 28))
    gater_macs = gate_network_macs(model, counted)
    assert counted.total - gater_macs == static_macs(backbone, (1, 28, 28))
    assert gater_macs == static_macs(backbone, (1, 28, 28)) - 64 * 10 + 64 * b + b * c


@pytest.mark.parametrize(
    "name, backbone_params, trunk_params, feature_dim, b, c",
    [
        ("gaternet_resnet164", 1_703_258, 269_072, 64, 8, 18 * (64 + 128 + 256)),
        (
            "gaternet_resnet50",
            25_557_032,
            11_689_512 - 513_000,
            512,
            256,
            3 * 256 + 4 * 512 + 6 * 1024 + 3 * 2048,
        ),
    ],
)
def test_bottleneck_backbone_sizes(name, backbone_params, trunk_params, feature_dim, b, c):
    model = create_model(name, num_classes=10 if "164" in name else 1000)
    n_gater = sum(p.numel() for p in model.gater.parameters())
    assert sum(p.numel() for p in model.parameters()) - n_gater == backbone_params
    assert n_gater == trunk_params + (feature_dim + 1) * b + (b + 1) * c


def test_l1_loss_is_weighted_mean_gate_and_reaches_the_gater():
    model = small_gaternet(sparsity_weight=0.3).train()
    model(torch.randn(4, 1, 28, 28))
    losses = model.aux_losses(0.1)
    assert set(losses) == {"gate_l1"}
    gates = torch.cat([g for _, g in collect(model).values()], dim=1)  # all blocks' gates, [batch, c]
    torch.testing.assert_close(losses["gate_l1"].detach(), 0.3 * gates.mean())
    losses["gate_l1"].backward()
    assert model.gater.fc2.weight.grad.abs().sum() > 0
    assert model.layer1[0].conv1.weight.grad is None  # the L1 term trains only the gater
    assert model.gater.semhash.progress == 0.1
    with torch.no_grad():
        model.eval()(torch.randn(2, 1, 28, 28))
    assert model.aux_losses(0.2) == {}  # no loss from an evaluation forward


def test_bench_info_lists_unconfirmed_choices():
    info = create_model("gaternet_resnet56", num_classes=10).bench_info
    assert info["config"]["b"] == 8 and info["num_gates"] == 9 * (16 + 32 + 64) == 1008  # official code
    assert info["config"]["gated_convs"] == "last" and info["config"]["noise_std"] == 1.0
    assert {"sparsity_weight", "gate_bias_init"} <= set(info["unconfirmed"])
    assert not {"b", "gated_convs", "noise_std"} & set(info["unconfirmed"])
    info = create_model("gaternet_resnet50", num_classes=10).bench_info
    assert info["config"]["gater_arch"] == "resnet18" and info["config"]["b"] == 256
    assert info["layout"] == "v1.5" and create_model("gaternet_resnet164", 10).bench_info["layout"] == "v1"


def test_executed_macs_from_the_recorded_gates():
    from bench.measure import executed_macs

    model = small_gaternet(gated_convs="all").eval()
    x = torch.randn(2, 1, 28, 28)
    static = static_macs(model, (1, 28, 28))
    force_open(model)
    assert executed_macs(model, x).tolist() == [static, static]
    with torch.no_grad():
        model.gater.fc2.bias.fill_(
            -10.0
        )  # every gate closed: only the stem, the classifier and the gater run
    counted = module_macs(model, x[:1])
    always = counted.exclusive["conv1"] + counted.exclusive["fc"] + gate_network_macs(model, counted)
    assert executed_macs(model, x).tolist() == [always, always]
    last = small_gaternet().eval()  # the official set: a closed gate skips only its filter of the last conv
    with torch.no_grad():
        last.gater.fc2.weight.zero_()
        last.gater.fc2.bias.fill_(-10.0)
    counted = module_macs(last, x[:1])
    conv2s = sum(v for k, v in counted.exclusive.items() if k.startswith("layer") and k.endswith("conv2"))
    assert executed_macs(last, x).tolist() == [counted.total - conv2s] * 2


def test_gates_start_mostly_open_and_off_the_saturated_ends():
    model = small_gaternet()
    assert bool((model.gater.fc2.bias == 1.0).all())
    with torch.no_grad():
        model.eval()(torch.randn(8, 1, 28, 28))
    # b = 8 inputs to fc2 spread the logits around the bias of 1: about three gates in four start open
    assert float(torch.cat([g for _, g in collect(model).values()], dim=1).mean()) > 0.7


def gaternet_with_sparsity_weight(sparsity_weight: float) -> nn.Module:
    return create_model("gaternet_resnet20", num_classes=4, in_chans=1, b=16, sparsity_weight=sparsity_weight)


def test_larger_sparsity_weight_leaves_fewer_gates_open():
    assert_penalty_closes_gates(gaternet_with_sparsity_weight, weak=0.0, strong=5.0, margin=0.1)


def test_no_whole_conv_set_of_resnet164_gives_the_papers_7200_gates():
    """The paper's 7,200 gates for ResNet-164, against every set of whole convs chosen the same way in
    every unit: none gives 7,200 (only sets that skip stage 2 do). The three named sets, built."""
    import itertools

    widths = {"conv1": 1, "conv2": 1, "conv3": 4}  # × the stage's width 16 / 32 / 64; 18 units a stage
    counts = {
        convs: 18 * sum(widths[c] for c in convs) * (16 + 32 + 64)
        for r in (1, 2, 3)
        for convs in itertools.combinations(widths, r)
    }
    assert 7200 not in counts.values()
    built = {
        g: create_model("gaternet_resnet164", 10, gated_convs=g).bench_info["num_gates"]
        for g in ("last", "all", "inner")
    }
    assert built == {"last": 8064, "all": 12096, "inner": 4032}
