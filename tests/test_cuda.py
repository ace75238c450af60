"""The GPU paths, on a GPU: AMP, resume, NCCL (SyncBatchNorm, DDP), CUDA-event latency, sparse inference,
executed MACs, the device-resident loader and fixed seeds.

Every test here is marked `cuda`: without a GPU (`torch.cuda.is_available()` false) they are skipped with
the reason (tests/conftest.py); `make test-gpu` runs them alone (`pytest -m cuda`), `make gpu-check` runs
them first. Each takes seconds on one H100-class GPU.
"""

import dataclasses
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from bench.data import DeviceLoader
from bench.engine import train as train_module
from bench.engine.config import TrainConfig
from bench.engine.train import evaluate, seed_everything, train
from tests.test_checkpoint import CFG, tiny_data, tiny_net

pytestmark = pytest.mark.cuda


@pytest.fixture(autouse=True)
def exact_kernels():
    """GPU results are compared with the CPU's or with another GPU path: no TF32 rounding, and cuDNN
    kernels that sum in a fixed order."""
    algorithms = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    yield
    (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    ) = saved
    torch.use_deterministic_algorithms(
        algorithms[0], warn_only=algorithms[1]
    )  # as a deterministic run left it


def _finite_and_decreasing(result) -> None:
    losses = [h["train_loss"] for h in result.history]
    assert result.status == "measured", result.failure_reason
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses


# --- mixed precision ---------------------------------------------------------------------------------

AMP_CFG = dataclasses.replace(CFG, epochs=4, checkpoint_every_steps=0, amp=True, channels_last=True)


def _train_on_gpu(cfg, seed=0):
    seed_everything(seed)
    model = tiny_net()
    seen = {}

    def hook(module, inputs, output):
        seen.update(in_cl=inputs[0].is_contiguous(memory_format=torch.channels_last), out_dtype=output.dtype)

    model[0].register_forward_hook(hook)
    result = train(model, tiny_data(), cfg, seed=seed, device="cuda", progress=False)
    return result, model, seen


def test_bf16_autocast_in_channels_last_trains_on_the_gpu():
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no bf16 (the fp16 test covers it)")
    result, model, seen = _train_on_gpu(AMP_CFG)
    _finite_and_decreasing(result)
    assert result.runtime["amp_dtype"] == "bfloat16" and result.runtime["grad_scaler"] is False
    assert seen["out_dtype"] == torch.bfloat16 and seen["in_cl"]
    assert model[0].weight.dtype == torch.float32 and model[0].weight.is_cuda
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_fp16_with_the_gradient_scaler_in_channels_last_trains_on_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a V100-class GPU
    result, model, seen = _train_on_gpu(AMP_CFG)
    _finite_and_decreasing(result)
    assert result.runtime["amp_dtype"] == "float16" and result.runtime["grad_scaler"] is True
    assert seen["out_dtype"] == torch.float16 and seen["in_cl"]
    assert model[0].weight.dtype == torch.float32


# --- resume --------------------------------------------------------------------------------------------


def _run(data, checkpoint=None, resume=False, cfg=CFG):
    seed_everything(0)
    model = tiny_net()
    result = train(
        model, data, cfg, seed=0, device="cuda", checkpoint=checkpoint, resume=resume, progress=False
    )
    return result, model


def test_a_gpu_run_killed_after_epoch_1_and_resumed_ends_like_the_run_that_was_not(tmp_path, monkeypatch):
    data = tiny_data()
    reference, ref_model = _run(data)
    original = train_module._save_checkpoint

    def killed_at_the_end_of_epoch_1(state, path):
        original(state, path)
        if state["epoch"] == 1 and state["step_in_epoch"] == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_checkpoint", killed_at_the_end_of_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        _run(data, tmp_path / "last.pt")
    monkeypatch.setattr(train_module, "_save_checkpoint", original)
    resumed, model = _run(data, tmp_path / "last.pt", resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[-1]["train_loss"] == pytest.approx(reference.history[-1]["train_loss"], rel=1e-5)
    for (name, a), b in zip(ref_model.state_dict().items(), model.state_dict().values(), strict=True):
        assert a.is_cuda and b.is_cuda, name
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert evaluate(model, data, 32, "cuda")["top1_pct"] == evaluate(ref_model, data, 32, "cuda")["top1_pct"]


# --- NCCL: SyncBatchNorm and DDP -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


def _nccl_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """Each rank: its half of one batch through SyncBatchNorm inside DDP; saves its output, the BN's
    running statistics and the conv's gradient."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world_size)
    try:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32 = True, False
        torch.backends.cuda.matmul.allow_tf32 = False
        net = nn.SyncBatchNorm.convert_sync_batchnorm(_bn_net()).cuda(rank)
        ddp = nn.parallel.DistributedDataParallel(net, device_ids=[rank])
        x = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(1))
        share = 8 // world_size
        out = ddp(x[rank * share : (rank + 1) * share].cuda(rank))
        out.square().sum().backward()
        torch.save(
            {
                "out": out.detach().cpu(),
                "running_mean": net[1].running_mean.cpu(),
                "running_var": net[1].running_var.cpu(),
                "grad": net[0].weight.grad.cpu(),
                "sync": isinstance(net[1], nn.SyncBatchNorm),
                "backend": dist.get_backend(),
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world_size", [1, 2])
def test_syncbatchnorm_in_ddp_under_nccl_matches_one_batchnorm_over_the_whole_batch(tmp_path, world_size):
    if torch.cuda.device_count() < world_size:
        pytest.skip(f"needs {world_size} GPUs, this node has {torch.cuda.device_count()}")
    if not dist.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    # spawn, not fork: a forked child cannot use CUDA once the parent has
    mp.start_processes(
        _nccl_worker, args=(world_size, _free_port(), str(tmp_path)), nprocs=world_size, start_method="spawn"
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    # the reference: one BatchNorm over all 8 images, on one GPU, no process group
    net = _bn_net().cuda()
    x = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(1)).cuda()
    out = net(x)
    out.square().sum().backward()
    assert all(r["sync"] and r["backend"] == "nccl" for r in ranks)
    torch.testing.assert_close(torch.cat([r["out"] for r in ranks]), out.detach().cpu(), rtol=1e-4, atol=1e-5)
    for r in ranks:
        torch.testing.assert_close(r["running_mean"], net[1].running_mean.cpu(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(r["running_var"], net[1].running_var.cpu(), rtol=1e-4, atol=1e-6)
        # DDP averages the ranks' gradients of their share's loss: world_size × less than the whole sum's
        torch.testing.assert_close(r["grad"] * world_size, net[0].weight.grad.cpu(), rtol=1e-3, atol=1e-5)


# --- latency -------------------------------------------------------------------------------------------


def test_latency_on_the_gpu_is_timed_with_cuda_events():
    from bench.measure.latency import measure_latency
    from bench.registry import create_model

    model = create_model("resnet20", num_classes=10)
    r = measure_latency(model, (3, 32, 32), 8, "cuda", min_run_time_s=0.2, warmup=3)
    assert r["device"] == "cuda" and r["timer"] == "cuda_events" and r["repeats"] >= 10
    assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] < 1000
    assert r["device_name"] and r["device_name"] != "cpu"


# --- sparse inference and executed MACs ----------------------------------------------------------------

from tests.test_sparse import GATED, IMAGENET, _closed_fraction, _randomised  # noqa: E402


@pytest.mark.parametrize("name", GATED)
def test_sparse_equals_masked_dense_on_the_gpu(name):
    model = _randomised(name).cuda()
    size = 32 if name in IMAGENET else 16
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2)).cuda()
    with torch.no_grad():
        dense = model(x)
    closed = _closed_fraction(model)
    assert 0.05 < closed < 0.95, f"the test needs some closed and some open gates, got {closed:.2f} closed"
    out = model.forward_sparse(x)
    assert out.is_cuda and out.shape == dense.shape
    torch.testing.assert_close(out, dense, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["aig_resnet20", "gaternet_resnet20", "bas_resnet20", "aig_resnet50"])
def test_executed_macs_are_the_same_on_the_gpu_and_on_the_cpu(name):
    from bench.measure import executed_macs

    model = _randomised(name)
    size = 32 if name in IMAGENET else 16
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        on_cpu = executed_macs(model, x)
        on_gpu = executed_macs(model.cuda(), x.cuda())
    assert torch.equal(on_cpu, on_gpu.cpu()), (on_cpu, on_gpu)


# --- the device-resident loader ------------------------------------------------------------------------


def test_the_device_loader_gives_the_same_batches_on_the_gpu_and_on_the_cpu():
    data = tiny_data()
    args = (data.train_images, data.train_labels, 8, (0.5,), (0.25,))
    kwargs = dict(shuffle=True, crop_padding=1, flip=True, drop_last=True, seed=3)
    on_cpu, on_gpu = DeviceLoader(*args, **kwargs), DeviceLoader(*args, **kwargs, device="cuda")
    for loader in (on_cpu, on_gpu):
        loader.set_epoch(2)
    batches = 0
    for (x, y), (xg, yg) in zip(on_cpu, on_gpu, strict=True):
        assert xg.is_cuda and yg.is_cuda
        assert torch.equal(y, yg.cpu())  # the same images, in the same order
        # the same crops and flips; normalisation is one multiply and one add per pixel on either device
        torch.testing.assert_close(x, xg.cpu(), rtol=0, atol=1e-6)
        batches += 1
    assert batches == len(on_cpu) == 8


# --- fixed seeds ---------------------------------------------------------------------------------------


def test_the_same_seed_twice_gives_identical_metrics_in_deterministic_mode():
    if "deterministic" not in {f.name for f in dataclasses.fields(TrainConfig)}:
        pytest.skip("TrainConfig has no `deterministic` field yet (the suite's deterministic mode)")
    cfg = dataclasses.replace(CFG, epochs=2, checkpoint_every_steps=0, deterministic=True)
    runs = []
    for _ in range(2):
        seed_everything(7)
        model = tiny_net()
        result = train(model, tiny_data(), cfg, seed=7, device="cuda", progress=False)
        runs.append((result.history, evaluate(model, tiny_data(), 32, "cuda"), model.state_dict()))
    (h1, m1, s1), (h2, m2, s2) = runs
    assert h1 == h2 and m1 == m2
    assert all(torch.equal(a, b) for a, b in zip(s1.values(), s2.values(), strict=True))
