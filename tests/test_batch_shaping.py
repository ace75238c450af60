"""Batch-Shaping: the Beta CDF against numerical integration, the loss against a direct Cramér–von Mises
computation (the authors' `gbas_loss` normalisation), gradients to the gate logits, binary deterministic
gates at evaluation, the gated blocks' sites, and the L0 term at work."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.gates import collect, gate_networks
from bench.measure import static_macs
from bench.measure.macs import gate_network_macs, module_macs
from bench.registry import create_model
from methods.batch_shaping import (
    BatchShapingConfig,
    BetaCDF,
    batch_shaping_loss,
    beta_pdf,
    regularized_incomplete_beta,
)
from tests.helpers import assert_penalty_closes_gates


def quadrature_cdf(x: float, a: float, b: float, n: int = 100_001) -> float:
    """∫_0^x Beta(a, b) pdf by Simpson's rule after t = u^(1/a), which removes the singularity at 0:
    F(x) = 1/(a·B(a, b)) ∫_0^(x^a) (1 − u^(1/a))^(b−1) du; above 1/2 by symmetry, F = 1 − F_(b,a)(1 − x)."""
    if x > 0.5:
        return 1.0 - quadrature_cdf(1.0 - x, b, a, n)
    u = torch.linspace(0.0, x**a, n, dtype=torch.float64)
    f = (1.0 - u ** (1.0 / a)) ** (b - 1.0)
    integral = (x**a) / (n - 1) / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())
    beta = math.gamma(a) * math.gamma(b) / math.gamma(a + b)
    return float(integral) / (a * beta)


POINTS = [0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999]


@pytest.mark.parametrize("a, b", [(0.6, 0.4), (2.0, 5.0), (0.5, 0.5), (1.0, 1.0)])
def test_beta_cdf_matches_numerical_integration(a, b):
    x = torch.tensor(POINTS, dtype=torch.float64)
    expected = torch.tensor([quadrature_cdf(p, a, b) for p in POINTS], dtype=torch.float64)
    torch.testing.assert_close(regularized_incomplete_beta(x, a, b), expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(BetaCDF(a, b)(x.float()).double(), expected, rtol=0, atol=2e-5)
    assert BetaCDF(a, b)(torch.tensor([0.0, 1.0])).tolist() == [0.0, 1.0]


def test_beta_cdf_gradient_is_the_clipped_pdf():
    a, b = 0.6, 0.4
    x = torch.tensor([1e-9, 0.05, 0.3, 0.5, 0.8, 0.97, 1 - 1e-6], requires_grad=True)
    BetaCDF(a, b)(x).sum().backward()
    beta = math.gamma(a) * math.gamma(b) / math.gamma(a + b)
    pdf = [p ** (a - 1) * (1 - p) ** (b - 1) / beta for p in x.tolist()]
    expected = torch.tensor([min(max(p, 1e-3), 100.0) for p in pdf])
    torch.testing.assert_close(x.grad, expected, rtol=1e-4, atol=0)
    assert x.grad[0] == 100.0 and x.grad[-1] == 100.0  # clipped where the density is singular
    # the pdf is the derivative of the tabulated CDF
    h = 1e-3
    mid = torch.tensor([0.3, 0.5, 0.8], dtype=torch.float64)
    slope = (regularized_incomplete_beta(mid + h, a, b) - regularized_incomplete_beta(mid - h, a, b)) / (
        2 * h
    )
    torch.testing.assert_close(slope, beta_pdf(mid, a, b), rtol=1e-5, atol=0)


def cramer_von_mises(column: list[float], cdf) -> float:
    """(1/N) Σ_i (i/(N+1) − F(x_(i)))², written out."""
    ordered, n = sorted(column), len(column)
    return sum(((i + 1) / (n + 1) - cdf(v)) ** 2 for i, v in enumerate(ordered)) / n


def test_batch_shaping_loss_is_the_per_gate_cramer_von_mises_distance():
    probs = torch.tensor(
        [[0.9, 0.1, 0.5], [0.2, 0.15, 0.5], [0.6, 0.95, 0.4], [0.05, 0.3, 0.45], [0.7, 0.8, 0.55]],
        dtype=torch.float64,
    )
    columns = probs.T.tolist()
    # uniform prior, F(x) = x: the numbers can be checked by hand
    uniform = BetaCDF(1.0, 1.0)
    expected = sum(cramer_von_mises(c, lambda v: v) for c in columns) / len(columns)
    assert batch_shaping_loss(probs.float(), uniform, "batch_mean").item() == pytest.approx(
        expected, abs=1e-7
    )
    # the first column alone: sorted 0.05, 0.2, 0.6, 0.7, 0.9 against 1/6 .. 5/6
    by_hand = (
        (1 / 6 - 0.05) ** 2
        + (2 / 6 - 0.2) ** 2
        + (3 / 6 - 0.6) ** 2
        + (4 / 6 - 0.7) ** 2
        + (5 / 6 - 0.9) ** 2
    ) / 5
    assert batch_shaping_loss(probs[:, :1].float(), uniform, "batch_mean").item() == pytest.approx(
        by_hand, abs=1e-7
    )
    # the default Beta(0.6, 0.4) prior, its CDF by numerical integration
    expected = sum(cramer_von_mises(c, lambda v: quadrature_cdf(v, 0.6, 0.4)) for c in columns) / len(columns)
    assert batch_shaping_loss(probs.float(), BetaCDF(0.6, 0.4), "batch_mean").item() == pytest.approx(
        expected, abs=1e-6
    )
    # one distribution per gate: shuffling each column on its own leaves the loss unchanged
    shuffled = torch.stack([c[torch.randperm(5)] for c in probs.T], dim=1)
    assert batch_shaping_loss(shuffled.float(), uniform).item() == pytest.approx(
        batch_shaping_loss(probs.float(), uniform).item(), abs=1e-7
    )
    # the default normalisation sums over the batch: N times the released gbas_loss's mean
    assert batch_shaping_loss(probs.float(), uniform).item() == pytest.approx(
        5 * batch_shaping_loss(probs.float(), uniform, "batch_mean").item(), abs=1e-6
    )


def test_batch_shaping_loss_is_zero_at_the_prior_quantiles():
    n, prior = 9, BetaCDF(0.6, 0.4)
    targets = torch.arange(1, n + 1, dtype=torch.float64) / (n + 1)
    grid = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    cdf = regularized_incomplete_beta(grid, 0.6, 0.4)
    quantiles = grid[torch.searchsorted(cdf, targets)]
    loss = batch_shaping_loss(quantiles[:, None].float().repeat(1, 3), prior)
    assert loss.item() < 1e-9


def small_bas(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return create_model("bas_resnet20", num_classes=10, in_chans=1, **kwargs)


def test_batch_shaping_gradient_reaches_every_gate_head():
    model = small_bas().train()
    model(torch.randn(8, 1, 16, 16))
    losses = model.aux_losses(0.0)
    assert set(losses) == {"batch_shaping", "l0"}
    losses["batch_shaping"].backward()
    heads = model.gate_heads()
    assert len(heads) == 9
    for head in heads:
        assert head.fc2.weight.grad.abs().sum() > 0 and head.fc2.bias.grad.abs().sum() > 0
    assert model.layer3[2].conv2.weight.grad is None and model.fc.weight.grad is None  # feed no gate
    # it is exactly batch_shaping_loss of sigmoid(logits), weighted by λ at progress 0
    probs = torch.cat([h.prob for h in heads], dim=1)
    torch.testing.assert_close(
        losses["batch_shaping"].detach(), 0.75 * batch_shaping_loss(probs.detach(), model.prior_cdf)
    )


def test_curriculum():
    cfg = BatchShapingConfig()  # first batch-shaping, then sparsity: L0 is zero until λ has reached 0
    assert cfg.weights(0.0) == (0.75, 0.0)
    assert cfg.weights(0.25) == pytest.approx((0.375, 0.0))
    assert cfg.weights(0.5) == pytest.approx((0.0, 0.0))
    assert cfg.weights(0.625) == pytest.approx((0.0, 0.05))
    assert cfg.weights(0.75) == cfg.weights(1.0) == pytest.approx((0.0, 0.1))
    late = BatchShapingConfig(bas_end=0.2, l0_start=0.3, l0_end=0.6, l0_weight=1.0)
    assert late.weights(0.3) == (0.0, 0.0) and late.weights(0.45) == pytest.approx((0.0, 0.5))


def test_l0_loss_is_the_weighted_open_probability():
    model = small_bas().train()
    model(torch.randn(8, 1, 16, 16))
    losses = model.aux_losses(1.0)
    probs = torch.cat([h.prob for h in model.gate_heads()], dim=1)
    torch.testing.assert_close(losses["l0"].detach(), 0.1 * probs.detach().mean())
    assert losses["batch_shaping"].item() == 0.0


def test_gates_are_binary_in_training_forward_and_at_evaluation():
    model = small_bas().train()
    x = torch.randn(8, 1, 16, 16)
    model(x)
    for name, (_, gate) in collect(model).items():
        assert bool(((gate == 0) | (gate == 1)).all()), name  # straight-through: hard forward
    relaxed = small_bas(straight_through=False).train()
    relaxed(x)
    gate = next(iter(collect(relaxed).values()))[1]
    assert not bool(((gate == 0) | (gate == 1)).all())
    model.eval()
    with torch.no_grad():
        out = model(x)
        first = {n: g.clone() for n, (_, g) in collect(model).items()}
        assert torch.equal(out, model(x))
        again = {n: g for n, (_, g) in collect(model).items()}
        model(x[:1])
        alone = {n: g for n, (_, g) in collect(model).items()}
    for name, gate in first.items():
        assert bool(((gate == 0) | (gate == 1)).all()), name
        assert torch.equal(gate, again[name]) and torch.equal(gate[:1], alone[name]), name
    head = model.gate_heads()[0]  # the test-time gate is the probability thresholded at 1/2
    assert torch.equal(alone["layer1.0"], (head.prob > 0.5).float())


@pytest.mark.parametrize("name, shape", [("bas_resnet20", (1, 16, 16)), ("bas_resnet50", (3, 64, 64))])
def test_gate_sites_name_real_convs_with_matching_channels(name, shape):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=shape[0]).eval()
    modules = dict(model.named_modules())
    with torch.no_grad():
        model(torch.randn(2, *shape))
    sites = collect(model)
    assert len(sites) == len(model.gate_heads())
    for site_name, (site, gate) in sites.items():
        (produced,), (consumed,) = site.produces, site.consumes
        assert produced == f"{site_name}.conv1" and consumed == f"{site_name}.conv2"
        assert isinstance(modules[produced], nn.Conv2d) and modules[produced].out_channels == gate.shape[1]
        assert isinstance(modules[consumed], nn.Conv2d) and modules[consumed].in_channels == gate.shape[1]
    assert gate_networks(model) == [f"{n}.gate" for n in sites]


def test_all_gates_open_equals_the_plain_resnet():
    model = small_bas().eval()
    with torch.no_grad():
        for head in model.gate_heads():  # force every gate open
            head.fc2.weight.zero_()
            head.fc2.bias.fill_(10.0)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    plain = create_model("resnet20", num_classes=10, in_chans=1).eval()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(".gate." in k for k in unexpected)
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        gated = model(x)
        assert all(bool((g == 1).all()) for _, g in collect(model).values())
        model.set_gating(False)
        torch.testing.assert_close(model(x), gated, rtol=0, atol=0)
        torch.testing.assert_close(plain(x), gated)


@pytest.mark.parametrize(
    "name, baseline, gate_params, shape",
    [
        ("bas_resnet20", "resnet20", 10_752, (3, 32, 32)),
        ("bas_resnet56", "resnet56", 33_792, (3, 32, 32)),
        ("bas_resnet50", None, 274_880, (3, 224, 224)),
    ],
)
def test_sizes_and_macs(name, baseline, gate_params, shape):
    model = create_model(name, num_classes=10 if baseline else 1000)
    n_gates = sum(p.numel() for h in model.gate_heads() for p in h.parameters())
    assert n_gates == gate_params
    if baseline is None:
        assert sum(p.numel() for p in model.parameters()) - n_gates == 25_557_032  # torchvision ResNet-50
        return
    plain = create_model(baseline, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) - n_gates == sum(p.numel() for p in plain.parameters())
    counted = module_macs(model.eval(), torch.zeros(1, *shape))
    gate_macs = gate_network_macs(model, counted)
    assert counted.total - gate_macs == static_macs(plain, shape)
    heads = model.gate_heads()
    assert gate_macs == sum(
        h.fc1.in_features * h.fc1.out_features + h.fc2.in_features * h.fc2.out_features for h in heads
    )


def test_bench_info_lists_unconfirmed_defaults():
    info = small_bas().bench_info
    assert info["config"]["prior_alpha"] == 0.6 and info["config"]["prior_beta"] == 0.4
    assert info["config"]["tau"] == pytest.approx(2 / 3) and info["num_gates"] == 3 * (16 + 32 + 64)
    assert {"prior_alpha", "prior_beta", "bas_weight", "tau", "l0_weight"} <= set(info["unconfirmed"])


def bas_with_l0_weight(l0_weight: float) -> nn.Module:
    # gates start undecided (bias 0, not the default 3), so that a few dozen steps can move them
    return create_model(
        "bas_resnet20",
        num_classes=4,
        in_chans=1,
        bas_weight=0.0,
        l0_weight=l0_weight,
        l0_end=0.0,
        gate_bias_init=0.0,
    )


def test_larger_l0_weight_leaves_fewer_gates_open():
    assert_penalty_closes_gates(bas_with_l0_weight, weak=0.0, strong=20.0, margin=0.2)


def test_executed_macs_from_the_recorded_gates():
    from bench.measure import executed_macs

    model = small_bas().eval()
    x = torch.randn(2, 1, 16, 16)
    static = static_macs(model, (1, 16, 16))
    with torch.no_grad():
        for head in model.gate_heads():
            head.fc2.weight.zero_()
            head.fc2.bias.fill_(10.0)
        assert executed_macs(model, x).tolist() == [static, static]
        for head in model.gate_heads():
            head.fc2.bias.fill_(-10.0)  # every gate closed: each block's two convs are skipped
    counted = module_macs(model, x[:1])
    skipped = sum(v for n, v in counted.exclusive.items() if n.endswith((".conv1", ".conv2")))
    assert executed_macs(model, x).tolist() == [static - skipped, static - skipped]


def test_gates_start_open_with_probability_about_095():
    model = small_bas().train()
    model(torch.randn(8, 1, 16, 16))
    probs = torch.cat([h.prob for h in model.gate_heads()], dim=1).detach()
    assert abs(probs.mean().item() - torch.sigmoid(torch.tensor(3.0)).item()) < 0.02


def test_batch_shaping_alone_moves_the_gate_distributions_toward_the_beta_prior():
    """With the default scale (the distance summed over the batch), the batch-shaping loss alone pulls the
    gates' probabilities from the open start (mean ≈ 0.95) toward Beta(0.6, 0.4): the per-gate distance to
    the prior falls, and the mean moves toward the prior's 0.6. With the released /N scale, the same steps
    leave every gate near 0.95 (measured: distance 0.142 -> 0.137, mean 0.945)."""
    torch.manual_seed(0)
    model = create_model("bas_resnet20", num_classes=4, in_chans=1, l0_weight=0.0, bas_end=2.0)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(128, 1, 12, 12, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)

    def distance_and_mean() -> tuple[float, float]:
        with torch.no_grad():
            model.train()(x)
        probs = torch.cat([h.prob for h in model.gate_heads()], dim=1)
        return batch_shaping_loss(probs, model.prior_cdf, "batch_mean").item(), probs.mean().item()

    before, mean_before = distance_and_mean()
    for step in range(100):
        model.train()(x[torch.randint(0, 128, (32,), generator=generator)])
        loss = sum(model.aux_losses(step / 100).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after, mean_after = distance_and_mean()
    assert mean_before > 0.9 and before > 0.1
    assert after < before / 3 and mean_after < 0.8, (before, after, mean_after)


def test_l0_is_zero_before_its_start_point():
    model = small_bas().train()
    model(torch.randn(8, 1, 16, 16))
    start = model.cfg.l0_start
    assert start >= 0.5 and model.cfg.weights(start)[0] == 0.0  # L0 comes after batch-shaping has ended
    assert model.aux_losses(start - 0.01)["l0"].item() == 0.0
    assert model.aux_losses(start + 0.1)["l0"].item() > 0.0


def test_gate_heads_can_be_kept_out_of_weight_decay():
    from bench.engine.config import TrainConfig
    from bench.engine.train import build_optimizer

    assert create_model("bas_resnet20", 10, 1).no_weight_decay() == set()
    model = create_model("bas_resnet20_no_gate_decay", 10, 1)
    heads = {n for n, _ in model.named_parameters() if ".gate." in n}
    assert model.no_weight_decay() == heads and len(heads) == 9 * 6  # fc1, bn, fc2: weight and bias
    decays = {g["weight_decay"]: len(g["params"]) for g in build_optimizer(model, TrainConfig()).param_groups}
    assert decays[0.0] == len(heads)
