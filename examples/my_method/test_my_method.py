"""Tests of the template plugin; copy them with it and keep them passing as you change the method.

Run with `pytest examples/my_method` (or the path of your copy). They load the plugin exactly as
`bench run --plugin` does and check what the harness relies on: shapes, the gate record, executed MACs
that add up, and the auxiliary loss. ChannelBench's own test suite runs them too
(tests/test_example_plugin.py), so the template never rots.
"""

from pathlib import Path

import pytest
import torch

from bench import registry
from bench.gates import collect
from bench.measure import static_macs
from bench.measure.macs import executed_macs, gate_network_macs, module_macs
from bench.plugins import load_file

PLUGIN = Path(__file__).with_name("my_method.py")


def _name() -> str:
    (name,) = load_file(PLUGIN).models  # the one model this plugin registers
    return name


def _model(num_classes=10, in_chans=1, **kwargs):
    torch.manual_seed(0)
    return registry.create_model(_name(), num_classes, in_chans, **kwargs)


@pytest.mark.parametrize("shape,num_classes", [((1, 28, 28), 10), ((3, 32, 32), 100)])
def test_builds_for_the_benchmark_datasets(shape, num_classes):
    model = _model(num_classes, shape[0]).eval()
    assert model(torch.randn(2, *shape)).shape == (2, num_classes)


def test_parameters_are_resnet20_plus_one_linear_gate_head_per_block():
    plain = registry.create_model("resnet20", 10, 1)
    widths = [(16, 16)] * 3 + [(16, 32)] + [(32, 32)] * 2 + [(32, 64)] + [(64, 64)] * 2  # (in, out)
    gate_heads = sum(c_in * c_out + c_out for c_in, c_out in widths)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(_model()) == count(plain) + gate_heads == 269_434 + 13_904


def test_every_block_records_a_binary_gate_in_eval():
    model = _model().eval()
    model(torch.randn(4, 1, 28, 28))
    sites = collect(model)
    assert len(sites) == 9
    for name, (site, gate) in sites.items():
        assert site.produces == (f"{name}.conv1",) and site.consumes == (f"{name}.conv2",)
        assert gate.shape == (4, model.get_submodule(name).conv1.out_channels)
        assert bool(((gate == 0) | (gate == 1)).all())


def test_executed_macs_open_and_closed_gates():
    model = _model().eval()
    x = torch.randn(3, 1, 28, 28)
    static = static_macs(model, (1, 28, 28))
    assert torch.equal(executed_macs(model, x), torch.full((3,), float(static), dtype=torch.float64))
    for gate in model.gates():  # close every gate: each block's conv1 and conv2 are skipped entirely
        torch.nn.init.constant_(gate.fc.bias, -1.0)
    split = module_macs(model, x)
    branches = [f"{name}.{conv}" for name in collect(model) for conv in ("conv1", "conv2")]
    closed = static - split.within(branches) // split.batch
    assert torch.equal(executed_macs(model, x), torch.full((3,), float(closed), dtype=torch.float64))
    assert gate_network_macs(model, split) == 13_904 - (16 * 3 + 32 * 3 + 64 * 3)  # gate weights, no bias


def test_rate_loss_follows_its_formula_and_ramp():
    model = _model(target_rate=0.25, rate_weight=2.0, ramp_end=0.5).train()
    assert model.aux_losses(0.0) == {}  # no forward yet
    model(torch.randn(8, 1, 28, 28))
    open_share = torch.cat([g.prob for g in model.gates()], dim=1).mean()
    full = 2.0 * (open_share - 0.25) ** 2
    assert torch.allclose(model.aux_losses(1.0)["rate"], full)
    assert torch.allclose(model.aux_losses(0.25)["rate"], full / 2)
    assert model.aux_losses(0.0)["rate"].item() == 0.0


def test_gates_learn_through_the_straight_through_estimator():
    model = _model().train()
    out = model(torch.randn(8, 1, 28, 28))
    for name, (_, gate) in collect(model).items():  # hard 0/1 forward in training too
        assert torch.equal(gate, (model.get_submodule(name).gate.prob > 0.5).float())
    loss = torch.nn.functional.cross_entropy(out, torch.arange(8) % 10) + model.aux_losses(1.0)["rate"]
    loss.backward()
    assert all(g.fc.weight.grad.abs().sum() > 0 for g in model.gates())
    assert model.no_weight_decay() == {f"{n}.fc.bias" for n, m in model.named_modules() if m in model.gates()}


def test_set_gating_off_is_the_plain_resnet20():
    model = _model().eval()
    for gate in model.gates():  # close every gate
        torch.nn.init.constant_(gate.fc.bias, -1.0)
    plain = registry.create_model("resnet20", 10, 1).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        model.set_gating(False)
        torch.testing.assert_close(model(x), plain(x))
        model.set_gating(True)
        assert not torch.allclose(model(x), plain(x))


def test_suite_model_args_reach_the_config():
    model = _model(target_rate=0.3)
    assert model.cfg.target_rate == 0.3 and model.bench_info["config"]["target_rate"] == 0.3
    with pytest.raises(TypeError):
        _model(target_rat=0.3)
