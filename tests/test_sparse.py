"""Sparse inference of gated models (`forward_sparse`) equals their masked dense forward."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench import sparse
from bench.commands.perf import force_gate_rate
from bench.gates import collect, gate_networks
from bench.registry import create_model, list_models

GATED = [m for p in ("aig_*", "gaternet_*", "bas_*") for m in list_models(p)]
IMAGENET = {
    "aig_resnet50",
    "aig_resnet101",
    "gaternet_resnet50",
    "bas_resnet18",
    "bas_resnet34",
    "bas_resnet50",
}


def _randomised(name: str, in_chans: int = 3) -> nn.Module:
    """An untrained model whose BNs have non-trivial statistics and whose gates depend on the input."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=in_chans).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
        modules = dict(model.named_modules())
        for name in gate_networks(model):
            head = modules[name].fc2
            head.weight.normal_(0, 1.0, generator=g)
            head.bias.normal_(0, 0.5, generator=g)
    return model


def _closed_fraction(model: nn.Module) -> float:
    return 1 - torch.cat([g.double().flatten(1) for _, g in collect(model).values()], dim=1).mean().item()


@pytest.mark.parametrize("name", GATED)
def test_sparse_equals_masked_dense(name):
    model = _randomised(name)
    size = 32 if name in IMAGENET else 16
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        dense = model(x)
    closed = _closed_fraction(model)
    assert 0.05 < closed < 0.95, f"the test needs some closed and some open gates, got {closed:.2f} closed"
    out = model.forward_sparse(x)
    assert out.shape == dense.shape
    torch.testing.assert_close(out, dense, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["aig_resnet20", "gaternet_resnet20", "bas_resnet20", "gaternet_resnet164"])
@pytest.mark.parametrize("closed", [0.0, 0.5, 1.0])
def test_sparse_equals_dense_with_forced_gates(name, closed):
    model = _randomised(name, in_chans=1)
    x = torch.randn(3, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    hooks = force_gate_rate(model, closed, x)
    with torch.no_grad():
        dense = model(x)
    assert _closed_fraction(model) == pytest.approx(closed, abs=0.12)
    torch.testing.assert_close(model.forward_sparse(x), dense, rtol=1e-4, atol=1e-4)
    for h in hooks:
        h.remove()


def test_sparse_path_is_inference_only():
    model = create_model("bas_resnet20", num_classes=10).train()
    with pytest.raises(RuntimeError, match="eval"):
        model.forward_sparse(torch.zeros(1, 3, 8, 8))


def test_fold_and_sliced_conv_match_conv_then_bn():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, stride=2, padding=1, bias=False)
    bn = nn.BatchNorm2d(5).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.normal_()
        bn.bias.normal_()
    x = torch.randn(1, 6, 9, 9)
    f = sparse.fold(conv, bn)
    with torch.no_grad():
        ref = bn(conv(x))
    torch.testing.assert_close(sparse.conv(f, x), ref, rtol=1e-5, atol=1e-5)
    out_idx, in_idx = torch.tensor([0, 3]), torch.tensor([1, 2, 5])
    mask = torch.zeros(1, 6, 1, 1)
    mask[0, in_idx] = 1
    with torch.no_grad():
        ref = bn(conv(x * mask))[:, out_idx]
    torch.testing.assert_close(sparse.conv(f, x[:, in_idx], out_idx, in_idx), ref, rtol=1e-5, atol=1e-5)
    # no open input channel: the output is the folded bias; no open output channel: an empty map
    empty = torch.tensor([], dtype=torch.long)
    with torch.no_grad():
        ref = bn(conv(torch.zeros_like(x)))
    torch.testing.assert_close(sparse.conv(f, x[:, empty], None, empty), ref)
    assert sparse.conv(f, x, empty).shape == (1, 0, 5, 5)
    assert sparse.active(torch.ones(4)) is None and sparse.active(torch.tensor([0.0, 1, 0, 1])).tolist() == [
        1,
        3,
    ]


def test_scatter_add_adds_at_the_open_channels():
    base = torch.zeros(1, 4, 2, 2)
    out = sparse.scatter_add(base, torch.tensor([1, 3]), torch.ones(1, 2, 2, 2))
    assert out[0, :, 0, 0].tolist() == [0, 1, 0, 1]
    assert F.relu(sparse.scatter_add(base, None, -torch.ones(1, 4, 2, 2))).sum() == 0
