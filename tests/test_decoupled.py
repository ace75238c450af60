"""Decoupled Networks: the operator's formulas, the unification with convolution, the official code's
training machinery (projection, orthogonality, weight decay) and pretrain-then-decouple."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.measure import static_macs
from bench.registry import create_model
from methods.decoupled import (
    BOUNDED_MAGNITUDES,
    DCConfig,
    DecoupledConv2d,
    angular_fn,
    load_plain_checkpoint,
    magnitude_fn,
)

RHO = 2.0


@pytest.mark.parametrize(
    ("name", "xnorm", "expected"),
    [
        ("sphere", 7.0, 1.0),
        ("ball", RHO / 2, 0.5),
        ("ball", 3 * RHO, 1.0),
        ("tanh", RHO * math.atanh(0.5), 0.5),
        ("tanh", 0.0, 0.0),
        ("linear", 3.5, 3.5),
        ("seg", RHO / 2, RHO / 2),  # α‖x‖ below ρ
        ("seg", 3 * RHO, 0.5 * 3 * RHO + 0.5 * RHO),  # β‖x‖ + (α − β)ρ above
        ("log", math.e - 1, 1.0),
        ("mix", math.e**2 - 1, math.e**2 - 1 + 0.5 * 2),
    ],
)
def test_magnitude_functions(name, xnorm, expected):
    got = magnitude_fn(name, torch.tensor([xnorm], dtype=torch.float64), RHO, alpha=1.0, beta=0.5)
    assert got.item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    scaled = magnitude_fn(name, torch.tensor([xnorm], dtype=torch.float64), RHO, alpha=2.0, beta=1.0)
    if name in ("sphere", "ball", "tanh", "linear", "log"):  # α scales these
        assert scaled.item() == pytest.approx(2 * expected, rel=1e-12, abs=1e-12)


def paper_sigmoid(theta: float, k: float) -> float:
    a = math.exp(-math.pi / (2 * k))
    u = math.exp(theta / k - math.pi / (2 * k))
    return (1 + a) / (1 - a) * (1 - u) / (1 + u)


@pytest.mark.parametrize(
    "theta", [0.0, math.pi / 6, math.pi / 3, math.pi / 2, 2 * math.pi / 3, 0.9 * math.pi]
)
def test_angular_functions(theta):
    cos = torch.tensor([math.cos(theta)], dtype=torch.float64)
    assert angular_fn("cos", cos).item() == pytest.approx(math.cos(theta), abs=1e-12)
    expected_sq = math.copysign(math.cos(theta) ** 2, math.cos(theta))
    assert angular_fn("sqcos", cos).item() == pytest.approx(expected_sq, abs=1e-12)
    assert angular_fn("linear", cos).item() == pytest.approx(1 - 2 * theta / math.pi, abs=1e-5)
    for k in (0.1, 0.3, 1.0):
        assert angular_fn("sigmoid", cos, k).item() == pytest.approx(paper_sigmoid(theta, k), abs=1e-5)


def test_angular_functions_fixed_points():
    cos = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    for name in ("linear", "cos", "sigmoid", "sqcos"):  # g(0) = 1, g(π/2) = 0, g(π) = −1
        torch.testing.assert_close(
            angular_fn(name, cos), torch.tensor([1.0, 0.0, -1.0]).double(), atol=2e-3, rtol=0
        )


@pytest.mark.parametrize(("k", "stride", "padding"), [(3, 1, 1), (3, 2, 1), (1, 1, 0), (5, 2, 0)])
def test_weighted_linear_cosine_is_a_plain_convolution(k, stride, padding):
    """h = ‖w‖‖x‖, g = cos θ: ‖w‖‖x‖cos θ = ⟨w, x⟩ (the paper's unification of convolution)."""
    torch.manual_seed(k + stride)
    cfg = DCConfig(magnitude="linear", angular="cos", weighted=True, project_every=0)
    op = DecoupledConv2d(6, 8, k, stride, padding, cfg=cfg).double()
    x = torch.randn(2, 6, 9, 9, dtype=torch.float64) * 3
    plain = F.conv2d(x, op.weight, None, stride, padding)
    torch.testing.assert_close(op(x), plain, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.float()(x.float()), plain.float(), rtol=1e-5, atol=1e-5)


def test_operator_matches_the_patchwise_formula():
    """TanhConv + cosine in training mode, from explicit patches: tanh(‖x‖/(ρμ))·⟨ŵ, x⟩/‖x‖."""
    torch.manual_seed(0)
    op = DecoupledConv2d(4, 5, 3, 2, 1, cfg=DCConfig()).double().train()
    with torch.no_grad():
        op.radius.uniform_(0.5, 1.5)
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    patches = F.unfold(x, 3, padding=1, stride=2)  # [N, C·9, L]
    xnorm = (patches.square().sum(1, keepdim=True) + 1e-4).sqrt()  # [N, 1, L]
    w = op.weight.flatten(1)
    w_hat = w / (w.square().sum(1, keepdim=True) + 1e-4).sqrt()
    cos = torch.einsum("ok,nkl->nol", w_hat, patches) / xnorm
    rho = (op.radius.square() + 1e-4)[None, :, None] * xnorm.mean()
    expected = (torch.tanh(xnorm / rho) * cos).reshape(3, 5, 4, 4)
    torch.testing.assert_close(op(x), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", BOUNDED_MAGNITUDES)
@pytest.mark.parametrize("angular", ["cos", "linear", "sigmoid", "sqcos"])
def test_bounded_magnitudes_stay_within_alpha_at_any_input_scale(name, angular):
    torch.manual_seed(1)
    op = DecoupledConv2d(3, 4, 3, 1, 1, cfg=DCConfig(magnitude=name, angular=angular, alpha=1.5))
    x = torch.randn(2, 3, 6, 6)
    op.train()(x)  # a running μ for eval mode
    for mode in (True, False):
        op.train(mode)
        for scale in (1e-4, 1.0, 1e4):
            assert op(x * scale).abs().max().item() <= 1.5 * (1 + 1e-6)
    unbounded = DecoupledConv2d(3, 4, 3, 1, 1, cfg=DCConfig(magnitude="linear", alpha=1.5)).eval()
    assert unbounded(x * 1e4).abs().max().item() > 1.5


def test_filters_are_projected_every_n_training_steps():
    op = DecoupledConv2d(3, 4, 3, 1, 1, cfg=DCConfig(project_every=3))
    with torch.no_grad():
        op.weight.mul_(5)
    x = torch.randn(2, 3, 6, 6)
    norms = lambda: op.weight.flatten(1).norm(dim=1)  # noqa: E731
    op.train()(x)
    op(x)
    op.eval()(x)  # inference does not count
    assert (norms() > 1.5).all()
    op.train()(x)
    torch.testing.assert_close(norms(), torch.ones(4), atol=1e-3, rtol=0)
    assert int(op.num_batches_tracked) == 3


def test_eval_uses_the_debiased_running_input_norm():
    torch.manual_seed(2)
    op = DecoupledConv2d(3, 4, 3, 1, 1, cfg=DCConfig(magnitude="ball", project_every=0))
    x = torch.randn(5, 3, 6, 6)
    train_out = op.train()(x)
    op.eval()
    # after one step the debiased average is that step's batch mean: eval reproduces the training output
    torch.testing.assert_close(op(x), train_out)
    torch.testing.assert_close(op(x[:1]), train_out[:1])  # and does not depend on the rest of the batch


def test_orthogonality_penalty_and_weight_decay_exclusions():
    model = create_model("dcnet_tanh_cos_resnet32w96", num_classes=100)
    decoupled = {n for n, m in model.named_modules() if isinstance(m, DecoupledConv2d)}
    assert len(decoupled) == 31 and "conv1" in decoupled  # root + 3 stages × 5 units × 2
    assert "layer2.0.shortcut.0" not in decoupled and isinstance(model.layer2[0].shortcut[0], nn.Conv2d)
    assert model.no_weight_decay() == {f"{n}.weight" for n in decoupled} | {f"{n}.radius" for n in decoupled}
    conv = model.layer1[0].conv1
    w = conv.weight.flatten(1)
    w = w / (w.square().sum(1, keepdim=True) + 1e-4).sqrt()
    expected = 0.5 * (w @ w.t() - torch.eye(96)).square().sum()
    torch.testing.assert_close(conv.orthogonality_penalty(), expected)
    total = sum(m.orthogonality_penalty() for m in model.modules() if isinstance(m, DecoupledConv2d))
    torch.testing.assert_close(model.aux_losses(0.0)["orth"], 1e-5 * total)
    # orthonormal filters cost (almost) nothing
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(96 * 9, 96))
        conv.weight.copy_(q.t().reshape(96, 96, 3, 3))
    assert conv.orthogonality_penalty().item() < 1e-3


def test_resnet20_variants_add_the_input_norm_convolution_to_the_macs():
    plain = create_model("resnet20", num_classes=10)
    model = create_model("dcnet_tanh_cos_resnet20", num_classes=10)
    shapes = {}
    for name, m in model.named_modules():
        if isinstance(m, DecoupledConv2d):
            m.register_forward_hook(
                lambda mod, inp, out, name=name: shapes.__setitem__(name, (mod, out.shape))
            )
    model.eval()(torch.zeros(1, 3, 32, 32))
    # ‖x‖: x² summed over the channels, then conv(·, ones[1, 1, 3, 3]) per decoupled layer: k²·H_out·W_out
    extra = sum(9 * shape[2] * shape[3] for mod, shape in shapes.values())
    assert extra == 9 * (7 * 32 * 32 + 6 * 16 * 16 + 6 * 8 * 8)
    assert static_macs(model, (3, 32, 32)) == static_macs(plain, (3, 32, 32)) + extra
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(model) == params(plain) + 16 * 7 + 32 * 6 + 64 * 6  # one radius per filter
    assert params(create_model("dcnet_linear_cos_resnet20", num_classes=10)) == params(plain)
    nobn = create_model("dcnet_linear_sqcos_nobn_resnet20", num_classes=10)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in nobn.modules())


def test_training_step_with_aux_losses():
    model = create_model("dcnet_tanh_sigmoid_resnet20", num_classes=10, in_chans=1).train()
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    loss = F.cross_entropy(model(x), y) + sum(model.aux_losses(0.5).values())
    loss.backward()
    assert model.conv1.weight.grad is not None and model.layer1[0].conv1.radius.grad is not None
    assert torch.isfinite(model.eval()(x)).all()


def test_plain_checkpoint_loads_into_the_decoupled_network(tmp_path):
    torch.manual_seed(3)
    plain = create_model("resnet20", num_classes=10).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for bn in (m for m in plain.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 2.0)
    state = {
        "model": {f"module.{k}": v for k, v in plain.state_dict().items()}
    }  # a DDP train-loop checkpoint
    x = torch.randn(2, 3, 32, 32)

    model = create_model("dcnet_tanh_cos_resnet20", num_classes=10)
    load_plain_checkpoint(model, state)
    w = plain.layer2[1].conv2.weight
    torch.testing.assert_close(
        model.layer2[1].conv2.weight, w / (w.square().sum((1, 2, 3), keepdim=True) + 1e-4).sqrt()
    )
    torch.testing.assert_close(model.fc.weight, plain.fc.weight)
    assert torch.isfinite(model.eval()(x)).all()

    # the weighted LinearConv + cosine network is the plain network: same logits
    unified = create_model(
        "dcnet_linear_cos_resnet20", num_classes=10, weighted=True, project_every=0, orth_weight=0.0
    )
    load_plain_checkpoint(unified, plain.state_dict())
    torch.testing.assert_close(unified.eval()(x), plain(x), rtol=1e-4, atol=1e-4)

    path = tmp_path / "resnet20.pt"
    torch.save(plain.state_dict(), path)
    built = create_model("dcnet_tanh_cos_resnet20", num_classes=10, plain_checkpoint=str(path))
    torch.testing.assert_close(built.eval()(x), model(x))

    with pytest.raises(ValueError, match="does not fit"):
        load_plain_checkpoint(
            create_model("dcnet_tanh_cos_resnet20", num_classes=10),
            create_model("resnet32", num_classes=10).state_dict(),
        )


def test_config_is_checked():
    with pytest.raises(ValueError, match="magnitude"):
        DCConfig(magnitude="cube")
    with pytest.raises(ValueError, match="project_every=0"):
        DCConfig(weighted=True)
    with pytest.raises(TypeError, match="unknown arguments"):
        create_model("dcnet_tanh_cos_resnet20", num_classes=10, radius=2)


def test_float16_autocast_keeps_the_input_norm_finite():
    """A patch of 9·64 values of magnitude 20 has ‖x‖² ≈ 230,000, beyond float16's 65,504."""
    torch.manual_seed(5)
    op = DecoupledConv2d(64, 8, 3, 1, 1, cfg=DCConfig(angular="sigmoid"))
    x = 20 * torch.randn(2, 64, 5, 5)
    reference = op(x)
    with torch.autocast("cpu", dtype=torch.float16):
        out = op(x)
    assert torch.isfinite(op.input_norm(x.half())).all()
    torch.testing.assert_close(out.float(), reference, rtol=0.02, atol=0.02)
