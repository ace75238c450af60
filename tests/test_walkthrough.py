"""docs/walkthrough.md, run: every command of its `bash` blocks, in order, on synthetic data.

The template plugin goes end to end — measure, the quick suite, the cifar suite, a user suite, submit
into a temporary store, verify — with nothing installed: the template is copied into a temporary
folder that stands for the user's checkout, and the commands run there exactly as the page writes
them, plus only what makes them small (one epoch, one seed, short latency timing, no progress bars)
and `--device cpu` for `--device cuda`.
"""

import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from bench import registry
from bench.cli import build_parser, main
from bench.data import fashion_mnist
from bench.data.synthetic import write_cifar, write_fashion_mnist
from bench.store.results import ResultStore

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "walkthrough.md"
SMALL = {
    "run": ["--epochs", "1", "--seeds", "0", "--no-progress"],
    "measure": ["--min-run-time", "0.01", "--warmup", "1"],
    "verify": ["--no-progress"],
}
COVERED_ELSEWHERE = {"pytest examples/my_method": "tests/test_example_plugin.py runs the template's tests"}
STEPS = ["list", "measure", "run", "run", "run", "submit", "submit", "verify"]


@pytest.fixture(autouse=True)
def restore_registry():
    """The user's copy of the template registers `my_gate_resnet20` from another file than the repository's
    template: run the page with no plugin loaded, as in a fresh process, and put the registry back after."""
    registry.list_models()
    saved = registry.entries()
    for name, entry in saved.items():
        if entry.origin:
            registry.unregister(name)
    yield
    registry.restore(saved)


def doc_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S):
        commands += [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return commands


def test_the_page_has_every_step_and_nothing_untested():
    bench = [shlex.split(c)[1] for c in doc_commands() if c.startswith("bench ")]
    assert bench == STEPS
    assert all(c.startswith("bench ") or c in COVERED_ELSEWHERE for c in doc_commands())


def _available(command: str) -> bool:
    return command in build_parser()._subparsers._group_actions[0].choices


@pytest.mark.slow
def test_walkthrough(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    write_fashion_mnist(data, n_train=256, n_test=64)
    write_cifar(data, "cifar10", n_train=260, n_test=40)  # ≥ 2 batches of 128: the cifar suite drops the last
    write_cifar(data, "cifar100", n_train=256, n_test=40)
    monkeypatch.setenv("BENCH_DATA", str(data))
    monkeypatch.setattr(fashion_mnist, "SYSTEM_ROOT", "/nonexistent/fashion-mnist")
    monkeypatch.setattr(fashion_mnist, "_download", lambda roots: None)
    shutil.copytree(ROOT / "examples" / "my_method", tmp_path / "examples" / "my_method")  # the user's copy
    monkeypatch.chdir(tmp_path)

    outputs, record_id = [], None
    for command in doc_commands():
        if command in COVERED_ELSEWHERE:
            continue
        argv = shlex.split(command)[1:]
        if not _available(argv[0]):
            pytest.skip(f"`bench {argv[0]}` is not in bench/cli.py yet; the steps before it passed")
        argv = ["cpu" if a == "cuda" else record_id if a == "RECORD_ID" else a for a in argv]
        assert main([*argv, *SMALL.get(argv[0], [])]) == 0, command
        out = capsys.readouterr().out
        outputs.append(out)
        if argv[0] == "submit" and "--check" not in argv:
            record_id = re.search(r"^accepted (\w+):", out, re.M).group(1)
    listed, measured, quick, cifar, mine, checked, submitted, verified = outputs

    assert "my_gate_resnet20" in listed
    executed = next(line for line in measured.splitlines() if line.startswith("| Executed MACs"))
    assert [c.strip() for c in executed.split("|")[1:-1]] == [
        "Executed MACs, mean (min–max) over 64 images",
        "30.83M (30.83M–30.83M)",
        "– (no gates)",
    ]
    assert "my_gate_resnet20 · fashion_mnist · seed 0: top-1" in quick and "executed" in quick

    mine_store = ResultStore("my_results")
    (record,) = mine_store.read("quick")
    assert record.status == "measured" and record.model_family == "my_method"
    assert record.model_info["method"] == "threshold_gate (template plugin)"
    assert record.metrics.executed_macs is not None and record.metrics.gate_network_macs == 13_568
    assert record.gates["gates"] == 336 and "aux_rate" in record.history[0]  # its aux loss was trained
    assert [(r.model, r.dataset) for r in mine_store.read("cifar")] == [
        ("my_gate_resnet20", "cifar10"),
        ("my_gate_resnet20", "cifar100"),
    ]
    assert {r.model: r.model_args for r in mine_store.read("my_suite")}["my_gate_resnet20"] == {
        "target_rate": 0.5
    }
    assert (Path("my_leaderboard") / "quick.md").read_text().count("| my_gate_resnet20") == 1

    assert "all 2 record(s) would be accepted" in checked
    official = ResultStore("results").read("cifar")
    assert [r.status for r in official] == ["submitted", "submitted", "verified"]
    assert official[0].code_url == "https://github.com/you/my_method" and record_id == official[0].record_id
    assert verified.startswith(f"VERIFIED {record_id} (my_gate_resnet20 · cifar10 · seed 0)")
    board = (Path("leaderboard") / "cifar.md").read_text()
    assert re.search(r"^\| my_gate_resnet20 ", board, re.M), board
    assert (
        not Path("my_results", "runs", "cifar.jsonl").read_text().count('"submitted"')
    )  # the user's copy is unchanged


def test_the_pages_reweighting_example_is_one_file_that_builds_and_trains():
    """The `python` block of the page: a re-weighting module in the blocks' attn slot, registered."""
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    exec(compile(code, f"{DOC}:eca_resnet20", "exec"), {"__name__": "walkthrough_eca"})
    try:
        model = registry.create_model("eca_resnet20", num_classes=10, in_chans=1)
        plain = registry.create_model("resnet20", num_classes=10, in_chans=1)
        n_params = [sum(p.numel() for p in m.parameters()) for m in (model, plain)]
        assert n_params[0] == n_params[1] + 9 * 3  # 9 blocks × one 3-tap conv
        blocks = [block for stage in model.stages() for block in stage]
        assert len(blocks) == 9 and all(type(b.attn).__name__ == "ECA" for b in blocks)
        x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        assert all(b.attn.conv.weight.grad is not None for b in blocks)
    finally:
        registry.unregister("eca_resnet20")
