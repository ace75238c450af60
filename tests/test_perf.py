"""`bench perf`: the commands run on tiny settings, print their ratios and write their JSON (no timing
thresholds: the machines running tests are shared and noisy)."""

import json
import re

import pytest
import torch

from bench.cli import main
from bench.commands.perf import force_gate_rate
from bench.gates import collect
from bench.registry import create_model
from bench.report.perf_page import perf_markdown
from tests.helpers import write_suite


def _closed(model) -> list[float]:
    return [1 - g.double().mean().item() for _, g in collect(model).values()]


def test_force_gate_rate_closes_the_asked_share_of_channel_and_block_gates():
    x = torch.randn(2, 1, 8, 8)
    model = create_model("bas_resnet20", num_classes=10, in_chans=1).eval()
    hooks = force_gate_rate(model, 0.5, x)
    with torch.no_grad():
        model(x)
    closed = torch.tensor(_closed(model))  # 16, 32 or 64 gates per block: exactly half of each closed
    assert torch.allclose(closed, torch.full_like(closed, 0.5))
    for h in hooks:
        h.remove()
    with torch.no_grad():
        model(x)
    assert max(_closed(model)) < 0.5  # the learned gates (bias 3: mostly open) are back

    model = create_model("aig_resnet20", num_classes=10, in_chans=1).eval()
    force_gate_rate(model, 1 / 3, x)
    with torch.no_grad():
        model(x)
    assert sorted(_closed(model)) == [0.0] * 6 + [1.0] * 3  # 3 of the 9 blocks skipped, every sample


def test_perf_gated_prints_ratios_and_writes_json(tmp_path, capsys):
    options = "--shape 1,12,12 --min-run-time 0.01 --warmup 1 --repeats 1".split()
    assert main(["perf", "gated", "bas_resnet20", *options, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "MAC ratio" in out and "realised ÷ MAC" in out and "50% gates closed" in out
    assert "interleaved timing: realised" in out
    (path,) = tmp_path.glob("gated-bas_resnet20-bs1.json")
    r = json.loads(path.read_text())
    # half of conv1's outputs and conv2's inputs closed: each block's MACs halve; stem, gates, fc stay
    assert 1.8 < r["mac_ratio"] < 2.0 and r["closed_gate_fraction"] == pytest.approx(0.5)
    assert r["max_abs_diff_sparse_vs_dense"] < 1e-4
    assert r["environment"]["torch"] == torch.__version__ and r["load_average"] and r["date"]
    assert r["realised_over_mac"] == pytest.approx(r["realised_ratio"] / r["mac_ratio"])


def test_perf_gated_refuses_an_ungated_model(capsys):
    assert main(["perf", "gated", "resnet20", "--no-save"]) == 2
    assert "no sparse inference path" in capsys.readouterr().err


def test_perf_train_prints_the_ratio(tmp_path, fashion_root, no_system_data, capsys):
    suite = write_suite(tmp_path)
    where = ["--suite", str(suite), "--data-root", str(fashion_root), "--out", str(tmp_path / "perf")]
    assert main(["perf", "train", "resnet20", *where, *"--steps 2 --batch-size 16 --repeats 2".split()]) == 0
    out = capsys.readouterr().out
    assert "harness / bare" in out and "repeat 2/2" in out
    r = json.loads((tmp_path / "perf" / "train-resnet20.json").read_text())
    assert r["steps"] == 2 and len(r["ratio_per_repeat"]) == 2 and r["ratio_median"] > 0
    assert r["train_config"]["batch_size"] == 16


def test_perf_suite_splits_the_wall_time_by_stage(tmp_path, fashion_root, no_system_data, capsys):
    suite = write_suite(tmp_path, models=("resnet20", "bas_resnet20"))
    where = ["--suite", str(suite), "--data-root", str(fashion_root), "--out", str(tmp_path / "perf")]
    assert main(["perf", "suite", *where, "--models", "bas_resnet20"]) == 0
    out = capsys.readouterr().out
    assert "suite tiny: 1 run(s)" in out and "training" in out and "bas_resnet20 · fashion_mnist" in out
    (path,) = (tmp_path / "perf").glob("suite-*.json")
    r = json.loads(path.read_text())
    assert r["models"] == ["bas_resnet20"] and r["failed"] == 0
    assert sum(r["shares"].values()) == pytest.approx(1.0)
    assert all(r["stages_s"][k] > 0 for k in ("training", "evaluation", "measurement", "io"))
    assert r["io_detail_s"]["checkpoint_io"] > 0 and r["io_detail_s"]["store_io"] > 0
    import bench.commands.runner
    import bench.engine.train

    assert bench.commands.runner.train is bench.engine.train.train  # the wrappers are gone after the call

    md = perf_markdown(tmp_path)  # `results_dir` with a perf/ folder inside
    assert "### Suite wall time by stage" in md and re.search(r"\| tiny +\| 1 +\|", md)


def test_perf_markdown_renders_every_benchmark(tmp_path):
    ctx = {"load_average": [1.5, 1, 1], "date": "2026-11-23T20:00:00+00:00"}
    cpu = {"environment": {"device": "cpu", "device_name": "AMD EPYC"}}
    gpu = {"environment": {"device": "cuda", "device_name": "NVIDIA H200"}}
    (tmp_path / "train-resnet20.json").write_text(
        json.dumps(
            {
                "benchmark": "train",
                "model": "resnet20",
                "train_config": {
                    "batch_size": 64,
                    "amp": True,
                    "channels_last": True,
                    "deterministic": False,
                },
                "steps": 30,
                "num_threads": 2,
                "harness_median": 500.0,
                "bare_median": 510.0,
                "ratio_median": 0.98,
                **ctx,
                **gpu,
            }
        )
    )
    (tmp_path / "gated-bas_resnet56-bs1.json").write_text(
        json.dumps(
            {
                "benchmark": "gated",
                "model": "bas_resnet56",
                "input_shape": [3, 32, 32],
                "batch_size": 1,
                "closed_gate_fraction": 0.5,
                "mac_ratio": 1.9,
                "dense_ms": [4.0],
                "sparse_ms": [2.5],
                "realised_ratio": 1.6,
                "realised_over_mac": 0.84,
                "dense_over_sparse_open": 1.1,
                "num_threads": 2,
                **ctx,
                **cpu,
            }
        )
    )
    (tmp_path / "gpu-jobs-fashion_gpu.json").write_text(
        json.dumps(
            {
                "benchmark": "jobs",
                "suite": "fashion_gpu",
                "model": "resnet20",
                "epochs_per_run": 2,
                "rows": [{"jobs": 1, "runs": 4, "wall_s": 88.5, "runs_per_hour": 162.7}],
                "top1_identical_across_jobs": True,
                **ctx,
                **gpu,
            }
        )
    )
    md = perf_markdown(tmp_path)
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines() if line.startswith("| ")]
    train = ["resnet20", "cuda (NVIDIA H200)", "AMP, channels_last, fast mode", "64", "30", "2", "500", "510"]
    assert [*train, "0.980"] in [r[:9] for r in rows]
    gated = [
        "bas_resnet56",
        "AMD EPYC",
        "3×32×32",
        "1",
        "50%",
        "1.90",
        "4.00",
        "2.50",
        "1.60",
        "0.84",
        "1.10",
        "–",
        "–",
        "2",
    ]
    assert gated in [r[:14] for r in rows]  # results written before the interleaved timing show "–" there
    jobs = ["fashion_gpu", "resnet20", "cuda (NVIDIA H200)", "2", "–", "1", "4", "88.5", "163", "yes"]
    assert jobs in [r[:10] for r in rows]
    assert "load 1.5" in md
    assert perf_markdown(tmp_path / "empty") == ""


@pytest.mark.slow
def test_perf_jobs_runs_the_same_runs_at_each_n_and_their_top1_agree(tmp_path, fashion_root, no_system_data):
    """`bench perf jobs` on the CPU (make gpu-check runs it on the GPU): --jobs 1 and 2 over the same two
    one-epoch runs, one thread each, each N into its own scratch store; the JSON says runs per hour."""
    suite = write_suite(tmp_path, seeds=(0, 1))
    args = ["perf", "jobs", "--suite", str(suite), "--jobs", "1,2", "--threads-per-job", "1"]
    assert main([*args, "--data-root", str(fashion_root), "--out", str(tmp_path / "perf")]) == 0
    measured = json.loads((tmp_path / "perf" / "jobs-tiny-cpu.json").read_text())
    assert [row["jobs"] for row in measured["rows"]] == [1, 2] and measured["top1_identical_across_jobs"]
    assert all(row["runs"] == 2 and row["runs_per_hour"] > 0 for row in measured["rows"])
    assert set(measured["top1_pct_by_jobs"]["1"]) == {"resnet20 seed 0", "resnet20 seed 1"}
    assert measured["threads_per_job"] == 1 and measured["environment"]["device"] == "cpu"
