"""Shared test helpers: a tiny suite file on synthetic data."""

import multiprocessing as mp
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.data import DatasetNotFoundError, load_dataset
from bench.gates import collect

TINY_SUITE = """
name = "tiny"
version = 1
datasets = ["fashion_mnist"]
models = {models}
seeds = {seeds}

[train]
epochs = {epochs}
batch_size = 64
lr = 0.05
nesterov = true
lr_schedule = "linear"
eval_batch_size = 64

[measure]
latency_batch_sizes = [1]
latency_min_run_time_s = 0.01
latency_warmup = 1
"""


def write_suite(folder: Path, models=("resnet20",), seeds=(0,), epochs=1, extra="") -> Path:
    path = Path(folder) / "tiny.toml"
    path.write_text(TINY_SUITE.format(models=list(models), seeds=list(seeds), epochs=epochs) + extra)
    return path


def run_args(suite, tmp_path, data_root, *extra) -> list[str]:
    """`bench run` of `suite` with every output under `tmp_path` (store, leaderboard, checkpoints)."""
    outputs = {"--out": "results", "--leaderboard-dir": "lb", "--work-dir": "runs"}
    args = ["run", "--suite", str(suite), "--data-root", str(data_root), "--no-progress"]
    for flag, folder in outputs.items():
        args += [flag, str(tmp_path / folder)]
    return [*args, *extra]


def submit_args(file, tmp_path, *extra) -> list[str]:
    """`bench submit FILE` into the store and leaderboard under `tmp_path`."""
    return [
        "submit",
        str(file),
        "--out",
        str(tmp_path / "results"),
        "--leaderboard-dir",
        str(tmp_path / "lb"),
        *extra,
    ]


def run_workers(target, root: str, n_workers: int, per_worker: int, start: str, timeout_s: float) -> None:
    """`target(root, worker, per_worker)` in `n_workers` processes at once (multiprocessing start method
    `start`); each must exit cleanly."""
    ctx = mp.get_context(start)
    procs = [ctx.Process(target=target, args=(root, w, per_worker)) for w in range(n_workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout_s)
        assert p.exitcode == 0


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def assert_penalty_closes_gates(
    make_model, weak: float, strong: float, margin: float, steps: int = 30
) -> None:
    """`make_model(weight)` with the `strong` gate penalty weight leaves, after the same few training steps
    (seed 0), a fraction of open gates at least `margin` below the one with the `weak` weight."""
    fractions = []
    for weight in (weak, strong):
        torch.manual_seed(0)
        fractions.append(open_gate_fraction_after_training(make_model(weight), steps))
    assert fractions[1] < fractions[0] - margin, fractions


def open_gate_fraction_after_training(model: nn.Module, steps: int = 30) -> float:
    """Train `model` (4 classes, 1×12×12 inputs) for a few steps on a learnable toy task with its
    aux losses, then return the mean of its eval-mode gates over the 64 training images."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1, 12, 12, generator=generator)
    y = torch.randint(0, 4, (64,), generator=generator)
    x[torch.arange(64), 0, y * 3] += 3.0  # a class-dependent bright row
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(steps):
        batch = slice(16 * (step % 4), 16 * (step % 4 + 1))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        loss = loss + sum(model.aux_losses(step / steps).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        model(x)
    return float(torch.cat([g for _, g in collect(model).values()], dim=1).mean())


def assert_missing_data_error(monkeypatch, dataset: str, root: Path, match: str) -> None:
    """Loading `dataset` from an empty `root` (and no BENCH_DATA) raises DatasetNotFoundError matching `match`."""
    monkeypatch.delenv("BENCH_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError, match=match):
        load_dataset(dataset, str(root))
