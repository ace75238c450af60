"""The CUDA paths, on the CPU: the measurement, the sparse path, a training step and the evaluation run
with the model on PyTorch's `meta` device, so an input built on the wrong device (the CPU) fails here, as
it would on a GPU; and CPU twins of the other CUDA-only bugs (bf16 emulation, the scaler on resume, the
CUDA generators in the ImageNet loader, determinism, rank-0 downloads, verify's process group)."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from torch import nn

from bench import registry
from bench.data import ImageDataset
from bench.engine.config import MeasureConfig, TrainConfig, config_hash
from bench.engine.distributed import World
from bench.engine.tasks import CLASSIFICATION
from bench.measure.latency import measure_latency
from bench.measure.macs import module_macs, static_macs
from bench.measure.report import measure_model
from tests.test_checkpoint import CFG, tiny_data, tiny_net

META = "meta"


def _meta_model(name: str = "resnet20", num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return registry.create_model(name, num_classes, in_chans).to(META).eval()


def _inputs_seen(model: nn.Module) -> list[torch.device]:
    seen: list[torch.device] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].device))
    return seen


@pytest.fixture
def numerics_restored():
    """The global numerics flags as they were (set_numerics changes process-wide state)."""
    saved = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    yield
    det, bench_, algos, warn_only, tf32_mm, tf32_cudnn, cublas = saved
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = det, bench_
    torch.use_deterministic_algorithms(algos, warn_only=warn_only)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32_mm, tf32_cudnn
    if cublas is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


# 1. the counters build their input on the model's device


def test_a_cpu_input_into_a_meta_model_fails_as_it_would_on_a_gpu():
    with pytest.raises(RuntimeError, match="device"):
        module_macs(_meta_model(), torch.zeros(1, 3, 32, 32))


def test_static_macs_build_their_input_on_the_models_device():
    model = _meta_model()
    seen = _inputs_seen(model)
    cpu = registry.create_model("resnet20", 10, 3)
    assert static_macs(model, (3, 32, 32)) == static_macs(cpu, (3, 32, 32)) == 40_551_040
    assert seen == [torch.device(META)]


def test_measure_model_moves_the_model_and_measures_it_there(capsys):
    """measure_model moves a CPU model to the device, as `bench run --device cuda` does; every counter and
    the latency then run there. fvcore cannot trace on `meta`: its failure is said on stderr, not silent."""
    torch.manual_seed(0)
    model = registry.create_model("resnet20", 10, 3)
    seen = _inputs_seen(model)
    data = _tiny_images()
    cfg = MeasureConfig(latency_batch_sizes=(2,), latency_min_run_time_s=0.01, latency_warmup=1)
    metrics, gates = measure_model(model, data, cfg, device=META)
    assert metrics["static_macs"] == 40_551_040 and gates is None
    assert metrics["latency"][0]["device"] == META
    assert seen and set(seen) == {torch.device(META)}
    if metrics["static_macs_fvcore"] is None:
        assert "static_macs_fvcore: fvcore could not count" in capsys.readouterr().err


def test_a_counter_failure_is_never_silent(capsys, monkeypatch):
    import bench.measure.report as report

    def broken(model, shape):
        raise RuntimeError("cannot trace this")

    monkeypatch.setattr(report, "static_macs_fvcore", broken)
    assert report.fvcore_or_none(tiny_net(), (1, 8, 8)) is None
    assert "cannot trace this" in capsys.readouterr().err


def test_gated_measurement_counts_static_macs_on_the_models_device():
    model = _meta_model("bas_resnet20")
    seen = _inputs_seen(model)
    assert static_macs(model, (3, 32, 32)) > 0
    assert seen == [torch.device(META)]


# 7. latency as trained, the sparse cache, evaluation without a copy per batch


def test_latency_builds_its_input_on_the_device():
    model = _meta_model()
    seen = _inputs_seen(model)
    lat = measure_latency(model, (3, 32, 32), 2, META, min_run_time_s=0.01, warmup=1)
    assert lat["device"] == META and set(seen) == {torch.device(META)}


def test_latency_is_timed_in_the_precision_and_memory_format_the_model_trained_in():
    model = tiny_net()
    seen = {}

    def hook(module, inputs, output):
        seen.update(cl=inputs[0].is_contiguous(memory_format=torch.channels_last), dtype=output.dtype)

    model[0].register_forward_hook(hook)
    measure_latency(model, (1, 8, 8), 4, "cpu", 0.01, 1, dtype=torch.bfloat16, channels_last=True)
    assert seen == {"cl": True, "dtype": torch.bfloat16}
    measure_latency(model, (1, 8, 8), 4, "cpu", 0.01, 1)
    assert seen["dtype"] == torch.float32


def test_the_sparse_cache_follows_the_model_to_another_device_and_dtype():
    from bench import sparse

    torch.manual_seed(0)
    model = registry.create_model("bas_resnet20", 10, 3).eval()
    x = torch.randn(2, 3, 32, 32)
    sparse.prepare(model)  # folded on the CPU, in float32
    model.double()  # the CPU twin of model.to("cuda") after prepare()
    with torch.no_grad():
        assert torch.allclose(model.forward_sparse(x.double()), model(x.double()), atol=1e-8)
    model.to(META)
    cache = sparse.cache_of(model)
    folded = [
        t for block in cache.values() for f in block.values() if f is not None for t in (f.weight, f.bias)
    ]
    assert folded and all(t.device.type == META for t in folded)


def test_evaluation_counts_images_on_the_device_without_a_copy_per_batch(monkeypatch):
    import bench.engine.tasks as tasks

    model = _meta_model()
    loader = [(torch.zeros(4, 3, 32, 32, device=META), torch.zeros(4, dtype=torch.long, device=META))] * 3
    created, reduced = [], []
    real_tensor = torch.tensor

    def watched_tensor(*args, **kwargs):
        created.append(kwargs.get("device"))
        return real_tensor(*args, **kwargs)

    def reduce(values):
        reduced.append(values.device.type)
        return torch.tensor([12.0, 12.0, 24.0, 12.0], dtype=torch.float64)

    monkeypatch.setattr(torch, "tensor", watched_tensor)
    monkeypatch.setattr(tasks, "all_reduce_sum", reduce)
    metrics = CLASSIFICATION.metrics(model, loader, 10, META)
    assert reduced == [META] and not [d for d in created if d is not None]
    assert metrics["top1_pct"] == 100.0


# a training step on the device


def test_a_training_step_runs_on_the_models_device(monkeypatch, numerics_restored):
    import bench.engine.train as train_mod

    monkeypatch.setattr(train_mod, "log_progress", lambda *a, **k: None)  # reads back: no values on meta

    class Batches(list):
        def set_epoch(self, epoch):
            pass

        def start_at(self, first):
            pass

    x = torch.randn(8, 1, 8, 8, device=META)
    y = torch.zeros(8, dtype=torch.long, device=META)
    loader = Batches([(x, y), (x, y)])
    model = tiny_net()
    seen = _inputs_seen(model)
    cfg = dataclasses.replace(CFG, epochs=1, checkpoint_every_steps=0)
    run = train_mod.set_up(model, cfg, CLASSIFICATION, META, World(), None, steps_per_epoch=len(loader))
    assert all(p.device.type == META for p in model.parameters())
    result = train_mod.TrainResult(status="measured")
    sums = train_mod.train_one_epoch(run, loader, 0, 0, None, result, bar=None)
    assert sums.loss.device.type == META and sums.seen.device.type == META
    assert seen == [torch.device(META)] * 2
    assert all(s["momentum_buffer"].device.type == META for s in run.optimizer.state.values())


# 2. bf16 only where the GPU has it natively; the scaler on resume


def test_amp_takes_fp16_with_a_scaler_on_gpus_that_only_emulate_bf16(monkeypatch):
    from bench.engine.train import amp_dtype

    def v100(including_emulation: bool = True) -> bool:  # emulated bf16 only
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", v100)
    cfg = TrainConfig(amp=True)
    assert amp_dtype(cfg, "cuda") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # A100
    assert amp_dtype(cfg, "cuda:0") == torch.bfloat16
    assert amp_dtype(TrainConfig(), "cuda") is None


def test_resuming_a_bf16_checkpoint_under_fp16_starts_a_fresh_scaler(capsys):
    from bench.engine.train import load_scaler

    bf16_state = torch.amp.GradScaler("cpu", enabled=False).state_dict()  # what a bf16 run saves: {}
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    load_scaler(scaler, bf16_state)
    assert scaler.is_enabled() and "starts a fresh GradScaler" in capsys.readouterr().err
    fp16 = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    restored = torch.amp.GradScaler("cpu", enabled=True)
    load_scaler(restored, fp16.state_dict())
    assert restored.state_dict()["scale"] == 1024.0
    off = torch.amp.GradScaler("cpu", enabled=False)
    load_scaler(off, fp16.state_dict())  # fp16 -> bf16 resumes as before
    assert not off.is_enabled()


# 3. the ImageNet loader reseeds the CPU generator only


class _RandomCrops(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.rand(3), torch.randint(0, 10, ())


def test_imagenet_samples_never_reseed_the_cuda_generators_and_keep_their_crops(monkeypatch):
    from bench.data.imagenet import SeededSamples

    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(seed))
    samples = SeededSamples(_RandomCrops(), seed=3)
    samples.epoch = 2
    before = torch.get_rng_state()
    got = samples[1]
    assert not calls  # torch.manual_seed would have reseeded every CUDA generator
    assert torch.equal(torch.get_rng_state(), before)  # the caller's CPU stream is left alone
    torch.random.default_generator.manual_seed(samples.sample_seed(1))
    expected = _RandomCrops()[1]  # what the former torch.manual_seed gave on the CPU: the same crops
    torch.set_rng_state(before)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


# 4. deterministic | fast, recorded


def test_deterministic_mode_sets_every_flag_and_fast_mode_benchmarks(numerics_restored, monkeypatch):
    from bench.engine.train import set_numerics

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    said = set_numerics(True, "cuda")  # sets flags only: no GPU is touched
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert (
        torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    )
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert said == {
        "deterministic": True,
        "deterministic_algorithms": True,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "tf32_matmul": False,
        "tf32_cudnn": False,
        "cublas_workspace_config": ":4096:8",
    }
    said = set_numerics(False, "cuda")
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    assert said["deterministic"] is False and said["cudnn_benchmark"] is True


def test_on_the_cpu_the_mode_changes_no_code_path(numerics_restored):
    from bench.engine.train import set_numerics

    torch.use_deterministic_algorithms(False)
    said = set_numerics(True, "cpu")
    assert said["deterministic"] is True and not torch.are_deterministic_algorithms_enabled()
    assert said["tf32_matmul"] is False and said["cublas_workspace_config"] is None


def test_the_deterministic_field_at_its_default_leaves_config_hashes_unchanged():
    config = {
        "model": "resnet20",
        "model_args": {},
        "dataset": "cifar10",
        "train": dataclasses.asdict(TrainConfig()),
    }
    before = {**config, "train": {k: v for k, v in config["train"].items() if k != "deterministic"}}
    assert config_hash(config) == config_hash(before)
    fast = {**config, "train": {**config["train"], "deterministic": False}}
    assert config_hash(fast) != config_hash(config)


def test_a_run_records_its_numerics(numerics_restored):
    from bench.engine.train import train

    cfg = dataclasses.replace(CFG, epochs=1, checkpoint_every_steps=0, deterministic=False)
    result = train(tiny_net(), tiny_data(), cfg, seed=0, progress=False)
    assert result.numerics["deterministic"] is False and result.numerics["cudnn_benchmark"] is True
    assert "numerics" not in result.runtime  # the record's `training` stays schema 4


def test_the_suite_setting_is_read_and_checked(tmp_path):
    from bench.engine.config import SuiteError, parse_suite

    text = (
        'name = "t"\nversion = 1\ndatasets = ["cifar10"]\nmodels = ["resnet20"]\nseeds = [0]\n'
        "[train]\ndeterministic = {}\n"
    )
    assert parse_suite(text.format("false"), "t.toml").train_config("resnet20").deterministic is False
    with pytest.raises(SuiteError, match="deterministic"):
        parse_suite(text.format('"yes"'), "t.toml")


# 5. rank 0 downloads; verify joins the process group


@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_0_downloads_and_the_others_wait_for_it(monkeypatch, rank):
    import bench.commands.runner as runner

    events = []
    monkeypatch.setattr(runner, "world", lambda: World(rank, 2))
    monkeypatch.setattr(runner, "barrier", lambda: events.append("barrier"))
    monkeypatch.setattr(
        runner, "load_dataset", lambda name, root, download=True: events.append((name, download)) or name
    )
    assert runner.load_datasets(["cifar10"], None) == {"cifar10": "cifar10"}
    if rank == 0:
        assert events == [("cifar10", True), "barrier"]
    else:
        assert events == ["barrier", ("cifar10", False)]


def test_rank_0_reaches_the_barrier_when_its_download_fails(monkeypatch):
    import bench.commands.runner as runner

    events = []
    monkeypatch.setattr(runner, "world", lambda: World(0, 2))
    monkeypatch.setattr(runner, "barrier", lambda: events.append("barrier"))

    def fails(name, root, download=True):
        raise FileNotFoundError(name)

    monkeypatch.setattr(runner, "load_dataset", fails)
    with pytest.raises(FileNotFoundError):
        runner.load_datasets(["cifar10"], None)
    assert events == ["barrier"]  # the other ranks are not left waiting


def test_verify_joins_the_process_group_as_bench_run_does(monkeypatch):
    import bench.commands.verify as verify

    class Joined(Exception):
        pass

    def init_from_env(device):
        raise Joined(device)

    monkeypatch.setattr(verify, "init_from_env", init_from_env)
    with pytest.raises(Joined):
        verify.verify("0123456789abcdef", store=None, device="cuda")


# 6. measure and gates take any dataset (a streamed one's measurement set)


class _Streamed:
    """What bench.data gives for ImageNet / Cityscapes: no test_images, a measurement_set()."""

    def __init__(self, data: ImageDataset):
        self._data, self.name, self.num_classes, self.in_chans = (
            data,
            data.name,
            data.num_classes,
            data.in_chans,
        )

    def measurement_set(self) -> ImageDataset:
        return self._data

    def configure(self, cfg):
        return self


def _tiny_images(n: int = 6) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 10
    return ImageDataset("cifar10", x, y, x, y, 10, "synthetic")


def test_gate_statistics_and_measure_take_a_streamed_dataset():
    from bench.commands.measure import eval_batch
    from bench.measure.report import gate_statistics

    streamed = _Streamed(_tiny_images())
    assert not hasattr(streamed, "test_images")
    torch.manual_seed(0)
    model = registry.create_model("bas_resnet20", 10, 3)
    executed, gate_macs, gates = gate_statistics(model, streamed, batch_size=3)
    assert executed["mean"] > 0 and gates["gates"] > 0
    assert len(eval_batch(streamed, 4).test_labels) == 4
    cfg = MeasureConfig(latency_batch_sizes=(1,), latency_min_run_time_s=0.01, latency_warmup=1)
    metrics, _ = measure_model(model, streamed, cfg, eval_batch_size=3)
    assert metrics["executed_macs"]["mean"] == executed["mean"]


def test_cpu_numbers_do_not_change_with_the_mode(numerics_restored):
    """The deterministic flags are GPU settings: on the CPU both modes train the same numbers."""
    from bench.engine.train import seed_everything, train

    histories = []
    for deterministic in (True, False):
        seed_everything(0)
        cfg = dataclasses.replace(CFG, epochs=1, checkpoint_every_steps=0, deterministic=deterministic)
        histories.append(train(tiny_net(), tiny_data(), cfg, seed=0, progress=False).history)
    assert histories[0] == histories[1]


def test_the_device_loader_copies_a_pass_of_draws_to_its_device_once_not_every_step(monkeypatch):
    """A copy from the CPU to a GPU makes the step wait for the GPU: the shuffled order, the crop offsets
    (rows, columns) and the flips go to the device once a pass, whatever the number of batches."""
    from bench.data import DeviceLoader

    data = tiny_data()
    loader = DeviceLoader(
        data.train_images, data.train_labels, 8, (0.5,), (0.25,), device="meta", shuffle=True, crop_padding=1
    )
    loader.flip = True
    copies = []
    original = torch.Tensor.to

    def to(self, *args, **kwargs):
        moved = original(self, *args, **kwargs)
        if self.device.type == "cpu" and moved.device.type == "meta":
            copies.append(tuple(self.shape))
        return moved

    monkeypatch.setattr(torch.Tensor, "to", to)
    batches = list(loader)
    assert len(batches) == len(loader) > 4 and all(x.device.type == "meta" for x, _ in batches)
    assert len(copies) == 4, copies  # order, rows, columns, flips
