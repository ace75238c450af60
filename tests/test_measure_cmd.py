"""`bench measure`: one table of what bench.measure finds, for built-in and plugin models, and clear errors."""

from pathlib import Path

import pytest
import torch

from bench import registry
from bench.cli import main
from bench.commands.measure import eval_batch
from bench.data import load_dataset
from bench.measure import static_macs
from bench.measure.report import gate_statistics

PLUGIN = Path(__file__).parents[1] / "examples" / "my_method" / "my_method.py"
FAST = ["--min-run-time", "0.01", "--warmup", "1"]


def measure(*models_and_options: str, root) -> int:
    """`bench measure` on the test data, with fast latency settings."""
    return main(["measure", *models_and_options, "--data-root", str(root), *FAST])


def _table(out: str) -> dict[str, list[str]]:
    """The markdown table as {row label: [cell per model]}, with the header under key ''."""
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("|")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows if not set(cells[0]) <= {"-"}}


def test_plugin_and_builtin_side_by_side(fashion_root, no_system_data, capsys):
    options = ["--plugin", str(PLUGIN), "--batch-sizes", "1,4", "--eval-images", "32"]
    assert measure("my_gate_resnet20", "resnet20", *options, root=fashion_root) == 0
    out = capsys.readouterr().out
    assert out.startswith("fashion_mnist: input 1×28×28, 10 classes")
    table = _table(out)
    assert table[""] == ["my_gate_resnet20", "resnet20"]
    assert table["Parameters"] == ["283,338", "269,434"]
    plain = registry.create_model("resnet20", 10, 1)
    assert (
        table["Static MACs (FlopCounterMode)"][1]
        == f"{static_macs(plain, (1, 28, 28)) / 1e6:.2f}M"
        == "30.82M"
    )
    assert table["Static MACs (fvcore conv+linear)"] == ["30.83M", "30.82M"]
    # the template starts with every gate open: executed = static, and its gate heads cost 13,568 MACs
    assert table["Executed MACs, mean (min–max) over 32 images"] == ["30.83M (30.83M–30.83M)", "– (no gates)"]
    assert table["Executed / static"] == ["100.0%", "–"]
    assert table["Gate network MACs"] == ["13.57K", "–"]
    assert table["Gates always on / off / input-dependent"] == ["336 / 0 / 0 of 336", "–"]
    for bs in (1, 4):
        assert all(float(c.split()[0]) > 0 for c in table[f"Latency bs{bs} (ms), median (p10–p90)"])


def test_executed_macs_are_those_of_the_evaluation_batch(fashion_root, no_system_data, capsys):
    assert measure("bas_resnet20", "--batch-sizes", "2", "--eval-images", "16", root=fashion_root) == 0
    cell = _table(capsys.readouterr().out)["Executed MACs, mean (min–max) over 16 images"][0]
    data = eval_batch(load_dataset("fashion_mnist", str(fashion_root)), 16)
    torch.manual_seed(0)
    executed, _, _ = gate_statistics(registry.create_model("bas_resnet20", 10, 1), data, 16)
    assert (
        cell == f"{executed['mean'] / 1e6:.2f}M ({executed['min'] / 1e6:.2f}M–{executed['max'] / 1e6:.2f}M)"
    )


def test_checkpoint_weights_decide_the_gates(tmp_path, fashion_root, no_system_data, capsys):
    from bench.plugins import load_file

    load_file(PLUGIN)
    model = registry.create_model("my_gate_resnet20", 10, 1)
    for gate in model.gates():  # close every gate of the first stage
        if gate.fc.out_features == 16:
            torch.nn.init.constant_(gate.fc.bias, -1.0)
    torch.save({"model": model.state_dict()}, tmp_path / "last.pt")
    options = ["--plugin", str(PLUGIN), "--checkpoint", str(tmp_path / "last.pt")]
    assert (
        measure("my_gate_resnet20", *options, "--batch-sizes", "1", "--eval-images", "8", root=fashion_root)
        == 0
    )
    out = capsys.readouterr().out
    table = _table(out)
    assert f"weights: {tmp_path / 'last.pt'}" in out
    assert table["Gates always on / off / input-dependent"] == ["288 / 48 / 0 of 336"]
    layer1_branches = 3 * 2 * 16 * 16 * 9 * 28 * 28  # conv1 + conv2 of three blocks at 28×28
    assert table["Executed MACs, mean (min–max) over 8 images"][0].startswith(
        f"{(30_834_816 - layer1_branches) / 1e6:.2f}M"
    )


@pytest.mark.parametrize(
    "extra,expected",
    [
        (["resnet21"], "unknown model 'resnet21'"),
        (["resnet20", "--device", "cuda"], "torch sees no CUDA device"),
        (["resnet20", "--batch-sizes", "0"], "--batch-sizes must be positive integers"),
        (["resnet20", "resnet32", "--checkpoint", "x.pt"], "--checkpoint loads the weights of one model"),
        (
            ["resnet20", "--checkpoint", "/nonexistent/last.pt"],
            "checkpoint /nonexistent/last.pt does not exist",
        ),
        (["resnet20", "--dataset", "mnist3"], "unknown dataset 'mnist3'"),
    ],
)
def test_errors_are_one_line(extra, expected, fashion_root, no_system_data, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert measure(*extra, root=fashion_root) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("bench measure: error: ") and expected in err


def test_a_plugin_model_that_cannot_take_the_data_is_named_with_its_plugin(
    tmp_path, fashion_root, no_system_data, capsys
):
    plugin = tmp_path / "rgb_plugin.py"
    plugin.write_text(
        "from torch import nn\nfrom bench.registry import register\n"
        "register('rgb_measure_net', lambda num_classes, in_chans: nn.Conv2d(3, num_classes, 28))\n"
    )
    assert (
        main(["measure", "rgb_measure_net", "--plugin", str(plugin), "--data-root", str(fashion_root)]) == 2
    )
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert (
        f"model 'rgb_measure_net' from plugin {plugin} cannot be built for fashion_mnist (1, 28, 28)" in err
    )
    registry.unregister("rgb_measure_net")
