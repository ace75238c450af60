"""ConvNet-AIG: per-block execute/skip gates, the gate interface, and the target-rate loss."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.gates import collect, gate_networks
from bench.measure import executed_macs, static_macs
from bench.measure.macs import gate_network_macs, module_macs
from bench.registry import create_model, list_models
from methods.convnet_aig import AIGGate, argmax_gate, gumbel_gate, target_rate_loss
from tests.helpers import n_params

FASHION = Path("/usr/share/datasets/fashion-mnist")


def gate_params(in_planes: list[int], hidden: int = 16) -> int:
    return sum(c * hidden + hidden + 2 * hidden + hidden * 2 + 2 for c in in_planes)  # fc1, BN1d, fc2


def test_aig_resnet110_has_the_official_parameter_count():
    model = create_model("aig_resnet110", num_classes=10)
    assert n_params(model) == 1_766_630  # official ResNet110_cifar() (andreasveit/convnet-aig)
    gates = sum(n_params(m) for m in model.modules() if isinstance(m, AIGGate))
    assert gates == 35_916 and n_params(model) - gates == 1_730_714  # ResNet-110 with option-B shortcuts
    assert model.bench_info["target_rates"] == [0.6] * 54 and model.bench_info["lossfact"] == 2.0


def test_aig_resnet110_macs_are_the_option_b_resnet_plus_the_gates():
    model = create_model("aig_resnet110", num_classes=10).eval()
    macs = module_macs(model, torch.zeros(1, 3, 32, 32))
    gate_macs = gate_network_macs(model, macs)
    assert gate_macs == 16 * (18 * 16 + 16 + 17 * 32 + 32 + 17 * 64) + 54 * 16 * 2
    assert macs.total - gate_macs == pytest.approx(253.15e6, rel=1e-4)  # ResNet-110, option B


def test_aig_resnet20_size():
    model = create_model("aig_resnet20", num_classes=10)
    # ResNet-20 with 1×1 projection shortcuts is 272,474 parameters (osmr/imgclsmob's resnet20)
    assert n_params(model) == 272_474 + gate_params([16] * 3 + [16, 32, 32] + [32, 64, 64])
    assert static_macs(model, (3, 32, 32)) == pytest.approx(40.82e6, rel=1e-3)


def test_aig_resnet50_size_layout_and_schedules():
    with torch.device("meta"):
        model = create_model("aig_resnet50", num_classes=1000).eval()
        macs = module_macs(model, torch.zeros(1, 3, 224, 224)).total
        readme = create_model("aig_resnet50", num_classes=1000, schedule="readme", target=0.4)
        r101 = create_model("aig_resnet101", num_classes=1000, schedule="readme", target=0.5)
        with pytest.raises(ValueError, match="target rates given"):
            create_model("aig_resnet50", num_classes=1000, target=[0.5] * 15)
        with pytest.raises(ValueError, match="schedule"):
            create_model("aig_resnet50", num_classes=1000, schedule="paper")
    in_planes = [64, 256, 256, 256, 512, 512, 512, 512] + [1024] * 5 + [1024, 2048, 2048]
    assert n_params(model) == 25_557_032 + gate_params(in_planes)
    assert macs == pytest.approx(4.0894e9, rel=1e-4)  # v1.5, like the official model
    assert sum(isinstance(m, AIGGate) for m in model.modules()) == 16
    assert model.bench_info["target_rates"] == [0.7] * 16 and model.bench_info["lossfact"] == 1.0
    t = 0.4
    assert readme.bench_info["target_rates"] == [1, 1, 0.8, 1, t, t, t, 1, t, t, t, t, t, 1, 0.7, 1]
    assert r101.bench_info["target_rates"] == [1] * 8 + [0.5] * 25


def test_gate_initialisation():
    gate = AIGGate(16)
    assert gate.fc2.bias.tolist() == pytest.approx([0.1, 2.0])
    assert gate.fc2.weight.std() < 0.01
    assert gate.is_gate_network


def close_some_gates(model: torch.nn.Module) -> None:
    for i, block in enumerate(m for m in model.modules() if isinstance(getattr(m, "gate", None), AIGGate)):
        torch.nn.init.normal_(block.gate.fc2.weight, 0, 1.0)
        with torch.no_grad():
            block.gate.fc2.bias.copy_(torch.tensor([0.0, [-3.0, 0.0, 3.0][i % 3]]))


@pytest.fixture
def partly_closed_aig():
    """aig_resnet20 (seed 0, one channel) in eval mode, with a third of its blocks closed."""
    torch.manual_seed(0)
    model = create_model("aig_resnet20", num_classes=10, in_chans=1)
    close_some_gates(model)
    return model.eval()


def test_eval_gates_are_hard_deterministic_and_reported_per_block(partly_closed_aig):
    model = partly_closed_aig
    x = torch.randn(16, 1, 28, 28)
    first = model(x)
    gates = collect(model)
    assert len(gates) == 9
    for name, (site, gate) in gates.items():
        assert site.kind == "block" and gate.shape == (16, 1)
        assert set(gate.unique().tolist()) <= {0.0, 1.0}
        assert site.produces == (f"{name}.conv1", f"{name}.conv2")  # never the gate head or the shortcut
    rates = model.execution_rates()
    assert 0 < rates.mean() < 1
    torch.testing.assert_close(model(x), first)  # no noise at test time
    torch.testing.assert_close(model.execution_rates(), rates)
    assert gate_networks(model) == [f"layer{s}.{b}.gate" for s in (1, 2, 3) for b in range(3)]


def test_executed_macs_follow_the_gates():
    torch.manual_seed(0)
    model = create_model("aig_resnet20", num_classes=10, in_chans=1).eval()
    x = torch.randn(4, 1, 28, 28)
    static = static_macs(model, (1, 28, 28))
    torch.testing.assert_close(executed_macs(model, x), torch.full((4,), float(static), dtype=torch.float64))
    for block in model.modules():  # close every gate: only stem, shortcuts, gates and classifier remain
        if isinstance(getattr(block, "gate", None), AIGGate):
            with torch.no_grad():
                block.gate.fc2.bias.copy_(torch.tensor([10.0, -10.0]))
    macs = module_macs(model, x)
    branches = macs.within(
        [
            n + s
            for n, m in model.named_modules()
            if isinstance(getattr(m, "gate", None), AIGGate)
            for s in (".conv1", ".conv2")
        ]
    )
    torch.testing.assert_close(
        executed_macs(model, x), torch.full((4,), float(static - branches / 4), dtype=torch.float64)
    )
    # a closed gate leaves shortcut(x) only
    block = model.layer2[0]
    h = torch.randn(2, 16, 14, 14)
    torch.testing.assert_close(block(h), torch.relu(block.shortcut(h)))


def test_set_gating_off_runs_every_block(partly_closed_aig):
    model = partly_closed_aig
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        model.set_gating(False)
        ungated = model(x)
        assert model.execution_rates().mean() == 1
        model.set_gating(True)
        assert model.execution_rates().mean() == 1 and not torch.equal(model(x), ungated)
        assert model.execution_rates().mean() < 1


def test_training_gates_are_hard_and_pass_gradients_to_the_gate():
    torch.manual_seed(0)
    model = create_model("aig_resnet20", num_classes=10, in_chans=1).train()
    out = model(torch.randn(8, 1, 28, 28))
    for _, gate in collect(model).values():
        assert set(gate.unique().tolist()) <= {0.0, 1.0}
    aux = model.aux_losses(0.0)
    assert set(aux) == {"target_rate"} and aux["target_rate"].requires_grad
    (F.cross_entropy(out, torch.randint(0, 10, (8,))) + aux["target_rate"]).backward()
    for block in (m for m in model.modules() if isinstance(getattr(m, "gate", None), AIGGate)):
        assert block.gate.fc2.weight.grad.abs().sum() > 0
        assert block.gate.fc1.weight.grad.abs().sum() > 0
    assert all(g.value is None for g in model.gates())  # the loss took the graph


def test_gumbel_gate_samples_the_softmax_probability_with_a_straight_through_gradient():
    torch.manual_seed(0)
    logits = torch.tensor([[0.3, 1.1]]).repeat(20_000, 1).requires_grad_()
    gate = gumbel_gate(logits)
    assert set(gate.unique().tolist()) == {0.0, 1.0}
    assert gate.mean().item() == pytest.approx(torch.softmax(logits[0], 0)[1].item(), abs=0.015)
    gate.sum().backward()
    assert (logits.grad[:, 1] > 0).all() and (logits.grad[:, 0] < 0).all()
    assert argmax_gate(torch.tensor([[0.0, 1.0], [1.0, 0.0]])).tolist() == [[1.0], [0.0]]


def test_target_rate_loss_formula():
    targets = torch.tensor([0.6, 0.6, 1.0])
    assert target_rate_loss(torch.tensor([0.6, 0.6, 0.3]), targets) == 0  # target-1 layers are not trained
    assert target_rate_loss(torch.tensor([0.8, 0.6, 1.0]), targets).item() == pytest.approx(0.04 / 3)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.05, 0.95), min_size=1, max_size=8), st.floats(0.0, 1.0), st.floats(0.01, 0.5))
def test_target_rate_loss_is_zero_at_the_targets_and_grows_away_from_them(targets, direction, step):
    t = torch.tensor(targets, dtype=torch.float64)
    assert target_rate_loss(t, t) == 0
    away = (t + (1 if direction > 0.5 else -1) * step).clamp(0, 1)
    further = (t + (1 if direction > 0.5 else -1) * 2 * step).clamp(0, 1)
    if not torch.equal(away, t):
        assert 0 < target_rate_loss(away, t) <= target_rate_loss(further, t)


def test_aux_loss_is_lossfact_times_the_formula_on_the_recorded_gates():
    torch.manual_seed(0)
    model = create_model("aig_resnet20", num_classes=10, in_chans=1, target=0.5, lossfact=3.0).train()
    model(torch.randn(8, 1, 28, 28))
    rates = model.execution_rates()
    loss = model.aux_losses(0.5)["target_rate"]
    assert loss.item() == pytest.approx(3.0 * ((0.5 - rates) ** 2).mean().item())


def fashion_batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not FASHION.is_dir():
        return torch.randn(n, 1, 28, 28), torch.randint(0, 10, (n,))
    from bench.data.fashion_mnist import read_idx

    images = torch.from_numpy(read_idx(FASHION / "train-images-idx3-ubyte.gz")[:n].copy())
    labels = torch.from_numpy(read_idx(FASHION / "train-labels-idx1-ubyte.gz")[:n].copy())
    return ((images.float() / 255 - 0.286) / 0.353).unsqueeze(1), labels.long()


def test_short_training_moves_the_execution_rate_toward_the_target():
    torch.manual_seed(0)
    images, labels = fashion_batch(256)
    model = create_model("aig_resnet20", num_classes=10, in_chans=1)  # target 0.6, lossfact 2
    held_out = images[-64:]

    def eval_rate() -> float:
        model.eval()
        with torch.no_grad():
            model(held_out)
        model.train()
        return model.execution_rates().mean().item()

    before = eval_rate()
    assert before == 1.0  # the initial bias opens every gate at test time
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train_rates = []
    for step in range(30):
        idx = torch.randint(0, 192, (8,))
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        train_rates.append(model.execution_rates().mean().item())
        loss = loss + sum(model.aux_losses(step / 30).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_rate()
    assert after < 0.9 and abs(after - 0.6) < abs(before - 0.6)
    assert sum(train_rates[-5:]) / 5 < sum(train_rates[:5]) / 5


def test_registered_names():
    assert {"aig_resnet20", "aig_resnet110", "aig_resnet50"} <= set(list_models("aig_*"))
