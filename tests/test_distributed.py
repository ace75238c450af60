"""DDP on CPU: two gloo processes with the global batch split reach the weights of one process."""

import dataclasses
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from bench.data import DeviceLoader
from bench.engine.distributed import world
from bench.engine.train import evaluate, seed_everything, train
from tests.test_checkpoint import CFG as CHECKPOINT_CFG
from tests.test_checkpoint import tiny_data

# the checkpoint tests' configuration, one epoch long
CFG = dataclasses.replace(CHECKPOINT_CFG, epochs=1, lr=0.1, checkpoint_every_steps=5, eval_batch_size=16)


def net_without_batch_statistics() -> nn.Module:
    # per-rank BatchNorm statistics differ from the global batch's by design (sync_bn is CUDA-only),
    # so the equality test uses a net whose forward does not mix the images of a batch
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(out_dir, checkpoint=None, resume=False):
    seed_everything(0)
    model = net_without_batch_statistics()
    result = train(model, tiny_data(), CFG, seed=0, checkpoint=checkpoint, resume=resume, progress=False)
    metrics = evaluate(model, tiny_data(), CFG.eval_batch_size)
    return model, result, metrics


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        checkpoint = os.path.join(out_dir, "last.pt")
        model, result, metrics = _train(out_dir, checkpoint)
        torch.save(
            {
                "model": model.state_dict(),
                "history": result.history,
                "metrics": metrics,
                "runtime": result.runtime,
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def _interrupted_then_resumed_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    from bench.engine import train as train_module

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    checkpoint = os.path.join(out_dir, "last.pt")
    original, calls = train_module.all_gather_objects, []

    def killed_at_the_second_save(obj):  # every rank gathers RNG states at every save
        calls.append(1)
        if len(calls) == 2:  # after the mid-epoch checkpoint at step 5, before the epoch-end one
            raise KeyboardInterrupt
        return original(obj)

    try:
        train_module.all_gather_objects = killed_at_the_second_save
        try:
            _train(out_dir, checkpoint)
        except KeyboardInterrupt:
            pass
        train_module.all_gather_objects = original
        state = torch.load(checkpoint, weights_only=True)
        assert (state["epoch"], state["step_in_epoch"]) == (0, 5)
        model, result, metrics = _train(out_dir, checkpoint, resume=True)
        torch.save(
            {"model": model.state_dict(), "history": result.history, "metrics": metrics},
            os.path.join(out_dir, f"resumed{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_two_processes_killed_mid_epoch_and_resumed_end_like_one_uninterrupted_process(tmp_path):
    model, result, metrics = _train(tmp_path)
    mp.start_processes(
        _interrupted_then_resumed_worker,
        args=(2, _free_port(), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    resumed = torch.load(tmp_path / "resumed0.pt", weights_only=True)
    for name, value in model.state_dict().items():
        assert torch.allclose(resumed["model"][name], value, atol=1e-5), name
    assert resumed["history"][0]["train_loss"] == pytest.approx(result.history[0]["train_loss"], rel=1e-4)
    assert resumed["metrics"]["top1_pct"] == metrics["top1_pct"]


def test_two_gloo_processes_reach_the_weights_of_one_process_with_the_same_global_batch(tmp_path):
    model, result, metrics = _train(tmp_path)
    # fork: the children share the parent's imports (with spawn, each re-imports torch: the test took 22 s, 4 s with fork)
    mp.start_processes(
        _worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, value in model.state_dict().items():
        assert torch.allclose(ranks[0]["model"][name], value, atol=1e-5), name
        assert torch.equal(ranks[0]["model"][name], ranks[1]["model"][name])  # DDP keeps ranks identical
    assert ranks[0]["runtime"]["world_size"] == 2 and ranks[0]["runtime"]["batch_size_per_rank"] == 4
    # metrics are reduced over ranks: every rank reports those of the whole training / evaluation set
    assert ranks[0]["history"] == ranks[1]["history"]
    assert ranks[0]["history"][0]["train_loss"] == pytest.approx(result.history[0]["train_loss"], rel=1e-4)
    assert ranks[0]["history"][0]["train_top1_pct"] == result.history[0]["train_top1_pct"]
    assert ranks[0]["metrics"]["top1_pct"] == metrics["top1_pct"]
    assert ranks[0]["metrics"]["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-4)
    # one checkpoint, written by rank 0, holding both ranks' RNG states
    assert len(torch.load(tmp_path / "last.pt", weights_only=True)["rng"]) == 2


def test_each_rank_takes_its_slice_of_the_one_process_global_batch():
    data = tiny_data()
    args = (data.train_images, data.train_labels, 8, (0.5,), (0.25,))
    kwargs = dict(shuffle=True, crop_padding=1, flip=True, drop_last=True, seed=3)
    whole = DeviceLoader(*args, **kwargs)
    shards = [DeviceLoader(*args, **kwargs, rank=r, world_size=2) for r in (0, 1)]
    for loader in (whole, *shards):
        loader.set_epoch(2)
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *shards, strict=True):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_a_batch_that_does_not_split_is_refused():
    data = tiny_data()
    with pytest.raises(ValueError, match="does not split"):
        DeviceLoader(data.train_images, data.train_labels, 7, (0.5,), (0.25,), rank=0, world_size=2)
    assert world().world_size == 1 and dataclasses.asdict(CFG)["batch_size"] == 8


@pytest.mark.slow
def test_torchrun_two_processes_run_a_suite_and_only_rank_0_writes(tmp_path, fashion_root, no_system_data):
    import json
    import shutil
    import subprocess
    import sys

    from tests.helpers import write_suite

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    suite = write_suite(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_DATA": "/nonexistent"}
    out = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "bench",
            "run",
            "--suite",
            str(suite),
            "--data-root",
            str(fashion_root),
            "--out",
            str(tmp_path / "results"),
            "--no-progress",
            "--leaderboard-dir",
            str(tmp_path / "lb"),
            "--work-dir",
            str(tmp_path / "runs"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("run(s) stored") == 1  # rank 0 alone reports
    (record,) = [json.loads(line) for line in (tmp_path / "results/runs/tiny.jsonl").read_text().splitlines()]
    training = record["training"]
    assert (training["world_size"], training["global_batch_size"], training["batch_size_per_rank"]) == (
        2,
        64,
        32,
    )
    assert training["backend"] == "gloo" and record["train_config"]["batch_size"] == 64
    assert (tmp_path / "lb/tiny.md").is_file() and len(list((tmp_path / "runs").rglob("last.pt"))) == 1


@pytest.mark.parametrize(
    ("batch_size", "processes", "device", "words"),
    [
        (
            64,
            3,
            "cpu",
            "batch_size 64 is the global batch and does not split over 3 processes; make it a multiple of 3",
        ),
        (
            2,
            2,
            "cpu",
            "leaves 1 image per process, and BatchNorm cannot train on one; use a batch_size of at least 4 "
            "or sync_bn on GPUs",
        ),
        (
            1,
            1,
            "cpu",
            "leaves 1 image per process, and BatchNorm cannot train on one; use a batch_size of at least 2",
        ),
    ],
)
def test_the_plan_refuses_a_batch_the_processes_cannot_train_on(
    tmp_path, fashion_root, no_system_data, monkeypatch, batch_size, processes, device, words
):
    from bench.commands import runner
    from bench.data import load_dataset
    from bench.engine.config import load_suite
    from bench.engine.distributed import World
    from tests.helpers import write_suite

    suite = load_suite(str(write_suite(tmp_path).as_posix()))
    suite = dataclasses.replace(suite, train=dataclasses.replace(suite.train, batch_size=batch_size))
    monkeypatch.setattr(runner, "world", lambda: World(rank=0, world_size=processes))
    data = {"fashion_mnist": load_dataset("fashion_mnist", str(fashion_root))}
    with pytest.raises(runner.PlanError) as error:
        runner.check_builds(runner.plan(suite), data, device)
    assert str(error.value).endswith(words) and str(error.value).startswith("resnet20")
    sync = dataclasses.replace(suite, train=dataclasses.replace(suite.train, batch_size=2, sync_bn=True))
    if processes == 2:  # SyncBatchNorm on GPUs normalises over both processes' images
        runner.check_builds(runner.plan(sync), data, "cuda")
