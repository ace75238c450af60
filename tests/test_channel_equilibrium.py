"""Channel Equilibrium: the Newton-iteration whitening, the running statistics, and the official
ResNet-50's size (Tangshitao/CENet)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from bench.measure import static_macs
from bench.registry import create_model
from methods.channel_equilibrium import (
    BatchDecorrelation,
    CEConfig,
    ChannelEquilibrium,
    newton_inverse_sqrt,
)


def scalar_newton(lam: torch.Tensor, T: int) -> torch.Tensor:
    """p_T(λ) of the scalar iteration p ← 1.5·p − 0.5·p³·λ, p_0 = 1."""
    p = torch.ones_like(lam)
    for _ in range(T):
        p = 1.5 * p - 0.5 * p**3 * lam
    return p


def random_spd(d: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    a = torch.randn(batch, d, d, generator=generator, dtype=torch.float64)
    return a @ a.transpose(1, 2) / d + 0.5 * torch.eye(d, dtype=torch.float64)


def centred_correlated_input(n: int, d: int, hw: int, generator: torch.Generator) -> torch.Tensor:
    """[n, d, hw, hw] with correlated channels and exactly zero batch mean per channel (as after BN)."""
    mix = 0.5 * torch.randn(d, d, generator=generator, dtype=torch.float64) / d**0.5 + torch.eye(
        d, dtype=torch.float64
    )
    z = torch.randn(n, d, hw, hw, generator=generator, dtype=torch.float64)
    x = torch.einsum("ij,njhw->nihw", mix, z)
    return x - x.mean(dim=(0, 2, 3), keepdim=True)


def second_moment(y: torch.Tensor, d: int) -> torch.Tensor:
    """Within-group second-moment matrices [G, d, d] over (N, H, W)."""
    g = y.transpose(0, 1).reshape(y.shape[1] // d, d, -1)
    return g @ g.transpose(1, 2) / g.shape[-1]


@pytest.mark.parametrize("d", [4, 16, 64])
def test_newton_iteration_matches_eigendecomposition(d):
    gen = torch.Generator().manual_seed(d)
    sigma = random_spd(d, 3, gen)  # eigenvalue ratios 3-9
    sigma_n = sigma / sigma.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None]
    lam, u = torch.linalg.eigh(sigma_n)
    exact = u @ torch.diag_embed(lam.rsqrt()) @ u.transpose(1, 2)
    torch.testing.assert_close(newton_inverse_sqrt(sigma_n, T=12), exact, rtol=1e-9, atol=1e-9)
    # P_T is the polynomial p_T(Σ_N), eigenvalue by eigenvalue, at the code's T = 3 and beyond
    for T in (1, 3, 5):
        poly = u @ torch.diag_embed(scalar_newton(lam, T)) @ u.transpose(1, 2)
        torch.testing.assert_close(newton_inverse_sqrt(sigma_n, T), poly, rtol=1e-10, atol=1e-10)


def test_newton_iteration_is_stable_only_for_mild_conditioning():
    """Around Σ_N^{-1/2} a rounding error in eigen-pair (i, j) grows by |1 − (r + r²)/2| per step,
    r = sqrt(λ_j/λ_i): the iteration stays converged for eigenvalue ratios below ~2.4 and diverges
    for large T above it. At the code's T = 3 this does not arise."""
    gen = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(2, 16, 16, generator=gen, dtype=torch.float64))
    for ratio, stays in ((2.0, True), (20.0, False)):
        lam = torch.linspace(1.0, ratio, 16, dtype=torch.float64)
        lam = lam / lam.sum()
        sigma_n = q @ torch.diag_embed(lam.expand(2, 16)) @ q.transpose(1, 2)
        exact = q @ torch.diag_embed(lam.rsqrt().expand(2, 16)) @ q.transpose(1, 2)
        error = (newton_inverse_sqrt(sigma_n, T=40) - exact).abs().max().item()
        assert (error < 1e-9) == stays, (ratio, error)


def test_bd_output_second_moment_is_proportional_to_identity_to_newton_accuracy():
    d = 16
    gen = torch.Generator().manual_seed(0)
    x = centred_correlated_input(8, 2 * d, 6, gen)
    eps = 1e-12  # keep Σ's ridge out of the comparison
    deviations = []
    for T in (0, 1, 2, 3, 5, 8, 10):
        bd = BatchDecorrelation(2 * d, d, CEConfig(T=T, eps=eps)).double().train()
        m = second_moment(bd(x), d)  # x has zero batch mean, so this is also the covariance
        sigma = second_moment(x, d) + eps * torch.eye(d, dtype=torch.float64)
        trace = sigma.diagonal(dim1=1, dim2=2).sum(-1)
        lam, u = torch.linalg.eigh(sigma / trace[:, None, None])
        # code's trace normalisation: W·Σ·W = tr(Σ)·U·diag(λ·p_T(λ)²)·Uᵀ, → tr(Σ)·I as T grows
        predicted = u @ torch.diag_embed(lam * scalar_newton(lam, T) ** 2) @ u.transpose(1, 2)
        torch.testing.assert_close(m / trace[:, None, None], predicted, rtol=1e-8, atol=1e-8)
        eye = torch.eye(d, dtype=torch.float64)
        deviation = torch.linalg.matrix_norm(m / trace[:, None, None] - eye, ord=2).max().item()
        bound = (lam * scalar_newton(lam, T) ** 2 - 1).abs().max().item()
        assert deviation == pytest.approx(bound, rel=1e-6, abs=1e-10)
        deviations.append(deviation)
    assert all(a > b for a, b in zip(deviations[:-1], deviations[1:], strict=True)), deviations
    assert deviations[3] > 1e-2  # T = 3 whitens only partly ...
    assert deviations[-1] < 1e-9  # ... and the iteration converges to tr(Σ)·I


def test_trace_rescale_and_center_give_unit_covariance():
    """The IterNorm-style reading (`PAPER_READING`): centred, rescaled by tr(Σ)^{-1/2} → covariance I."""
    d = 8
    gen = torch.Generator().manual_seed(1)
    x = centred_correlated_input(8, d, 6, gen) + 3.0  # a mean that `center` must remove
    bd = BatchDecorrelation(d, d, CEConfig(T=10, eps=1e-12, center=True, trace_rescale=True)).double().train()
    y = bd(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(d, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(second_moment(y, d)[0], torch.eye(d, dtype=torch.float64), atol=1e-9, rtol=0)


def test_running_whitening_matrix_is_an_ema_buffer():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 32, 5, 5, generator=gen)
    bd = BatchDecorrelation(32, 16, CEConfig()).train()
    assert bd.running_wm.shape == (2, 16, 16) and 0 not in bd.running_wm.stride()  # not an expanded view
    _, wm = bd.whitening_matrix(x)
    bd(x)
    torch.testing.assert_close(bd.running_wm, 0.9 * torch.eye(16) + 0.1 * wm)
    assert set(bd.state_dict()) == {"running_mean", "running_wm"}


def test_eval_uses_running_statistics_and_is_independent_of_the_batch():
    gen = torch.Generator().manual_seed(3)
    ce = ChannelEquilibrium(32, 16, CEConfig())
    ce.train()
    for _ in range(3):
        ce(torch.randn(6, 32, 5, 5, generator=gen) * 2 + 1)
    ce.eval()
    x = torch.randn(5, 32, 5, 5, generator=gen)
    with torch.no_grad():
        full = ce(x)
        torch.testing.assert_close(ce(x[:1]), full[:1])
        torch.testing.assert_close(
            ce(torch.cat([x[:1], 100 * x[1:]])), torch.cat([full[:1], ce(100 * x[1:])])
        )
        # the formula, from the buffers: s·W_run·x + (1 − s)·x·IR(x) / running_scale
        wm = ce.bd.running_wm
        bd = torch.einsum("gij,ngjk->ngik", wm, x.reshape(5, 2, 16, 25)).reshape_as(x)
        var = x.flatten(2).var(-1)
        ir = ce.ir
        y = torch.sigmoid(ir.fc2(torch.relu(ir.norm(ir.fc1(var))))) / ir.running_scale
        s = torch.sigmoid(ce.mix_logit)
        torch.testing.assert_close(full, s * bd + (1 - s) * x * y[:, :, None, None])
    # a training forward uses the batch's statistics instead: the other samples change sample 0's output
    ce.train()
    assert not torch.allclose(ce(x)[:1], ce(torch.cat([x[:1], 100 * x[1:]]))[:1])


def test_product_combination_applies_ir_weights_to_the_bd_output():
    ce = ChannelEquilibrium(16, 16, CEConfig(combine="product")).eval()
    assert not hasattr(ce, "mix_logit")
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        ce.bd.running_wm.copy_(torch.eye(16) * 2)
        weights = ce.ir(x) / x
        torch.testing.assert_close(ce(x), 2 * x * weights)


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_ce_resnet50_matches_the_official_model():
    model = create_model("ce_resnet50", num_classes=1000)
    assert params(model) == 29_331_926  # resnetv1ce50() of Tangshitao/CENet, instantiated
    extra = static_macs(model, (3, 224, 224)) - static_macs(torchvision.models.resnet50(), (3, 224, 224))
    # whitening C·d·H·W (stem 64×64 at 112², blocks 16-wide groups) + IR's two FCs (C²/2 per block)
    whitening = 64 * 64 * 112**2 + 3 * 256 * 16 * 56**2 + 4 * 512 * 16 * 28**2 + 6 * 1024 * 16 * 14**2
    fcs = (64**2 + 3 * 256**2 + 4 * 512**2 + 6 * 1024**2) // 2
    assert extra == whitening + fcs
    assert extra == pytest.approx(0.139e9, rel=0.005)  # "+0.139G", measured from the official code
    ce_blocks = {n for n, m in model.named_modules() if isinstance(m, ChannelEquilibrium)}
    assert ce_blocks == {"stem_attn"} | {
        f"layer{s}.{b}.attn" for s, n in ((1, 3), (2, 4), (3, 6)) for b in range(n)
    }
    assert model.stem_attn.bd.d == 64 and {
        model.get_submodule(n).bd.d for n in ce_blocks - {"stem_attn"}
    } == {16}


def test_cifar_placement_and_training_step():
    model = create_model("ce_resnet20", num_classes=10, in_chans=1)
    ce_blocks = {n for n, m in model.named_modules() if isinstance(m, ChannelEquilibrium)}
    assert ce_blocks == {"stem_attn"} | {f"layer{s}.{b}.attn" for s in (1, 2) for b in range(3)}
    assert model.stem_attn.bd.d == 16  # the stem's 16 channels form one group
    assert params(model) - params(create_model("resnet20", num_classes=10, in_chans=1)) == 4 * 137 + 3 * 529
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    assert model.layer1[0].attn.mix_logit.grad is not None
    model.eval()
    assert torch.isfinite(model(x)).all()  # a fresh model evaluates (IR scale starts at 1)
    assert model.bench_info["ce"]["T"] == 3


def test_config_fields_reach_the_blocks():
    model = create_model("ce_resnet20", num_classes=10, T=5, group_size=8, stem=False, last_stage=True)
    assert isinstance(model.stem_attn, nn.Identity)
    assert model.layer3[0].attn.bd.T == 5 and model.layer1[0].attn.bd.d == 8
    with pytest.raises(ValueError, match="combine"):
        CEConfig(combine="sum")


def test_ce_resnet164_places_ce_after_bn3_and_at_the_stem_preactivation():
    model = create_model("ce_resnet164", num_classes=10)
    ce_blocks = {n for n, m in model.named_modules() if isinstance(m, ChannelEquilibrium)}
    assert ce_blocks == {"layer1.0.attn_bn1"} | {f"layer{s}.{b}.attn_bn3" for s in (1, 2) for b in range(18)}
    assert (
        model.layer2[0].attn_bn3.bd.d == 16 and model.layer2[0].attn_bn3.ir.fc1.in_features == 32
    )  # bn3 width
    # IR: C²/2 + LayerNorm 2·C/4 + the mix scalar, with C = 16 (stem, stage 1) and 32 (stage 2)
    assert params(model) - params(create_model("resnet164", num_classes=10)) == 19 * 137 + 18 * 529
    x = torch.randn(2, 3, 16, 16)
    model(x).sum().backward()
    assert model.layer1[0].attn_bn1.mix_logit.grad is not None
    assert model.bench_info["layout"] == "v1"


def test_whitening_statistics_stay_float32_under_autocast():
    torch.manual_seed(4)
    ce = ChannelEquilibrium(32, 16, CEConfig()).train()
    x = torch.randn(4, 32, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ce(x)
        mean, wm = ce.bd.whitening_matrix(x.bfloat16())
    assert wm.dtype == torch.float32 and ce.bd.running_wm.dtype == torch.float32
    torch.testing.assert_close(wm, ce.bd.whitening_matrix(x)[1], rtol=0.05, atol=0.05)
    assert torch.isfinite(y).all()
