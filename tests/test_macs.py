"""Static MACs against the calibration values, and executed MACs against hand counts."""

import pytest
import torch
from torch import nn

from bench.gates import GateSite, collect
from bench.measure import executed_macs, static_macs, static_macs_fvcore
from bench.measure.macs import gate_network_macs, module_macs
from bench.registry import create_model


def test_resnet20_params_and_macs_match_the_calibration_values():
    model = create_model("resnet20", num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 269_722
    assert static_macs(model, (3, 32, 32)) == 40_551_040
    assert static_macs_fvcore(model, (3, 32, 32)) == 40_551_040


class ToyGatedBlock(nn.Module):
    """conv1 (4->8) -> channel gate -> conv2 (8->4), with a gate head; an optional block gate."""

    def __init__(self, gate_values: torch.Tensor, block: torch.Tensor | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1, bias=False)
        self.head = nn.Linear(4, 8)
        self.head.is_gate_network = True
        self.gate_site = GateSite("channel", produces=("conv1",), consumes=("conv2",))
        self.gate_values, self.block = gate_values, block

    def forward(self, x):
        self.head(x.mean((2, 3)))  # the gate head's cost is counted, whatever it decides
        self.last_gate = self.gate_values[: x.shape[0]]
        return self.conv2(self.conv1(x) * self.last_gate[:, :, None, None])


class ToyNet(nn.Module):
    def __init__(self, gate_values, block_gate):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1, bias=False)
        self.block = ToyGatedBlock(gate_values)
        self.skip = BlockSkip(block_gate)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        x = self.skip(self.block(self.stem(x)))
        return self.fc(x.mean((2, 3)))


class BlockSkip(nn.Module):
    def __init__(self, block_gate):
        super().__init__()
        self.branch = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.gate_site = GateSite("block", produces=("branch",))
        self.block_gate = block_gate

    def forward(self, x):
        self.last_gate = self.block_gate[: x.shape[0]]
        return x + self.branch(x) * self.last_gate[:, :, None, None]


# Hand count at 6×6 inputs (36 positions): stem 3·4·36 = 432; conv1 9·4·8·36 = 10368; conv2 9·8·4·36 =
# 10368; head 4·8 = 32; branch 9·4·4·36 = 5184; fc 4·5 = 20.
STEM, CONV, HEAD, BRANCH, FC = 432, 10368, 32, 5184, 20
STATIC = STEM + 2 * CONV + HEAD + BRANCH + FC


def test_executed_macs_equal_a_hand_count():
    gates = torch.tensor([[1.0] * 8, [0.0] * 8, [1, 1, 0, 0, 0, 0, 0, 0], [1.0] * 8])
    block = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    model = ToyNet(gates, block).eval()
    assert static_macs(model, (3, 6, 6)) == STATIC
    executed = executed_macs(model, torch.randn(4, 3, 6, 6))
    expected = [
        STATIC,  # all gates open: exactly the static count
        STEM + HEAD + BRANCH + FC,  # every channel off: conv1 and conv2 vanish, the gate head stays
        STEM + 2 * CONV * 2 / 8 + HEAD + FC,  # 2 of 8 channels, block skipped
        STEM + 2 * CONV + HEAD + FC,  # channels all on, block skipped
    ]
    assert executed.tolist() == pytest.approx(expected)
    macs = module_macs(model, torch.randn(2, 3, 6, 6))
    assert gate_network_macs(model, macs) == HEAD
    assert set(collect(model)) == {"block", "skip"}
    assert collect(model)["block"][0].produces == ("block.conv1",)


def test_executed_macs_refuse_soft_gates():
    model = ToyNet(torch.full((2, 8), 0.5), torch.ones(2, 1)).eval()
    with pytest.raises(ValueError, match="not 0/1"):
        executed_macs(model, torch.randn(2, 3, 6, 6))


def test_a_gate_naming_a_missing_conv_is_reported():
    model = ToyNet(torch.ones(2, 8), torch.ones(2, 1)).eval()
    model.block.gate_site = GateSite("channel", produces=("conv9",))
    with pytest.raises(ValueError, match="conv9"):
        executed_macs(model, torch.randn(2, 3, 6, 6))


class ToyBottleneck(nn.Module):
    """Three convs, each gated: a module with several gate sites (`gate_sites` / `last_gates`)."""

    def __init__(self, gates: dict[str, torch.Tensor]):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 2, 1, bias=False)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(2, 4, 1, bias=False)
        self.gate_sites = {
            "conv1": GateSite("channel", produces=("conv1",), consumes=("conv2",)),
            "conv2": GateSite("channel", produces=("conv2",), consumes=("conv3",)),
            "conv3": GateSite("channel", produces=("conv3",)),
        }
        self.gates = gates

    def forward(self, x):
        self.last_gates = self.gates
        out = self.conv1(x) * self.gates["conv1"][:, :, None, None]
        out = self.conv2(out) * self.gates["conv2"][:, :, None, None]
        return x + self.conv3(out) * self.gates["conv3"][:, :, None, None]


def test_several_sites_on_one_module_count_each_conv_by_both_of_its_gates():
    # 5×5 positions: conv1 4·2·25 = 200, conv2 9·2·2·25 = 900, conv3 2·4·25 = 200
    gates = {
        "conv1": torch.tensor([[1.0, 0.0]]),
        "conv2": torch.tensor([[0.0, 1.0]]),
        "conv3": torch.tensor([[1.0, 1, 0, 0]]),
    }
    model = ToyBottleneck(gates).eval()
    assert static_macs(model, (4, 5, 5)) == 1300
    assert set(collect(model)) == {":conv1", ":conv2", ":conv3"}
    # conv1: half its outputs; conv2: half in × half out; conv3: half its inputs × half its outputs
    assert executed_macs(model, torch.randn(1, 4, 5, 5)).tolist() == [200 / 2 + 900 / 4 + 200 / 4]
