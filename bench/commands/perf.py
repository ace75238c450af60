"""Performance benchmarks of the harness itself (`bench perf train | gated | suite | store`).

- `train`: images/s of the harness's loop (`bench.engine.train.train`, as a suite runs it, checkpoint
  included) against a bare PyTorch loop over the same model, data (already in memory, normalised once),
  batch size, optimizer, augmentation and auxiliary losses; both in one process, alternated, repeated.
  The figure is harness / bare (goal ≥ 0.95 on CPU).
- `gated`: sparse execution of a gated model at inference (`forward_sparse`, `bench.sparse`) against its
  masked dense `forward`: executed-MAC ratio (static / executed), realised latency ratio (masked dense /
  sparse) and realised ÷ MAC ratio, at a batch size (default 1). Gate sparsity is forced with forward
  hooks on the gate networks (`force_gate_rate`): each gate network's output is replaced by a fixed 0/1
  pattern with the requested share of closed gates (channel gates: that share of the gate vector's
  entries, chosen at random with a seed; block gates: that share of the blocks). The gate networks still
  run (and are counted) on both paths. The sparse path is also timed with every gate open, which shows
  what BatchNorm folding alone buys (`dense_over_sparse_open`). Latencies come from
  `bench.measure.latency` (torch.utils.benchmark), in alternated blocks; the same three functions are
  also timed interleaved call by call (`interleaved_ms`), whose ratios are steadier on a shared CPU.
- `suite`: wall time of a suite (all of it or `--models`) and the share spent in each stage of the
  runner: training, checkpoint writing, evaluation, measurement, data loading, store and leaderboard
  writing. The stages are timed by wrapping the runner's stage functions for this call only; the normal
  path of `bench run` is untouched.
- `store`: the time of one append (one record, as `bench run` appends it) to a result store already
  holding `--records` records (default 10,000), in a temporary folder: the median of `--appends` appends,
  each to the growing store. An append writes only the new line (and a journal of file sizes), so the
  figure does not grow with the store.

Each benchmark writes its numbers, the device, library versions, thread count, load average and date to
`results/perf/<benchmark>-<name>.json` (the latest run per file); `bench.report.perf_page` renders them
(`bench leaderboard` writes `leaderboard/perf.md`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench import registry
from bench.engine.env import environment
from bench.measure.latency import malloc_tuned, measure_latency
from bench.store.results import write_text_atomic

PERF_DIR = Path("results") / "perf"


# --- store: the time of an append to a large store ----------------------------------------------------


def _store_record(seed: int, env: dict):
    """A small valid measured record (what `bench run` appends), for the store benchmark."""
    from bench.store.schema import SCHEMA_VERSION, Record, TrainingRun

    return Record.model_validate(
        {
            "schema_version": SCHEMA_VERSION,
            "suite": "perf",
            "suite_version": 1,
            "model": "resnet20",
            "model_family": "resnet_cifar",
            "model_info": {"block": "basic", "shortcut": "A (zero-pad)"},
            "train_config": {"epochs": 1, "batch_size": 64, "lr": 0.05},
            "config_hash": "0" * 64,
            "dataset": "fashion_mnist",
            "data": {
                "eval_digest": "0" * 64,
                "train_size": 20000,
                "eval_size": 10000,
                "input_shape": [1, 28, 28],
                "source": "synthetic",
            },
            "seed": seed,
            "status": "measured",
            "metrics": {
                "top1_pct": 85.0,
                "top5_pct": 99.0,
                "eval_loss": 0.4,
                "params": 269434,
                "static_macs": 30821248,
                "macs_counter": "perf",
                "train_time_s": 40.0,
                "train_images_per_s": 500.0,
            },
            "history": [{"epoch": 1, "train_loss": 0.67, "train_top1_pct": 74.9}],
            "training": TrainingRun.one_process(batch_size=64, lr=0.05).model_dump(),
            "environment": env,
            "submitter": "perf",
            "created_at": "2026-01-01T00:00:00+00:00",
        }
    )


def bench_store(records: int = 10_000, appends: int = 20, log=print) -> dict:
    """Median time of one append to a store holding `records` records."""
    from bench.store.results import ResultStore

    env = environment("cpu")
    with tempfile.TemporaryDirectory(prefix="bench-perf-store-") as tmp:
        store = ResultStore(tmp)
        store.runs.mkdir(parents=True)
        with open(store.path("perf"), "wb") as f:  # the store as `records` appends would leave it
            for i in range(records):
                stamped = _store_record(i, env).model_copy(update={"store_version": i + 1}).with_id()
                f.write(stamped.model_dump_json().encode() + b"\n")
        size = store.path("perf").stat().st_size
        log(f"store of {records} records ({size / 2**20:.1f} MiB) written; timing {appends} appends")
        times = []
        for k in range(appends):
            record = _store_record(records + k, env)
            start = time.perf_counter()
            store.append([record])
            times.append(1000 * (time.perf_counter() - start))
        assert store.version() == records + appends
    times.sort()
    return {
        "benchmark": "store",
        "records": records,
        "appends": appends,
        "store_bytes": size,
        "append_ms_median": statistics.median(times),
        "append_ms_min": times[0],
        "append_ms_max": times[-1],
        "append_ms_all": [round(t, 3) for t in times],
        **measurement_context(),
    }


# --- common ------------------------------------------------------------------------------------------


def measurement_context(device: str = "cpu") -> dict:
    """Where and when a benchmark ran: the environment (device, versions, commit), the load, the date."""
    return {
        "environment": environment(device),
        "malloc_tuned": malloc_tuned(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def write_result(result: dict, out_dir: str | Path, kind: str, name: str) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{kind}-{name}.json"
    write_text_atomic(path, json.dumps(result, indent=2, default=str) + "\n")
    return path


@contextlib.contextmanager
def _threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --- training throughput -----------------------------------------------------------------------------


def _bare_train(
    model: nn.Module, images: Tensor, labels: Tensor, cfg, seed: int, device: str = "cpu"
) -> float:
    """One pass of a plain PyTorch loop over in-memory float images (on `device`); returns images/s."""
    from bench.data.loader import random_crop, random_flip

    n_steps = len(labels) // cfg.batch_size
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )
    aux_losses = getattr(model, "aux_losses", None)
    amp, channels_last = getattr(cfg, "amp", False), getattr(cfg, "channels_last", False)
    model.to(device)
    images, labels = images.to(device), labels.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    cuda = torch.device(device).type == "cuda"
    dtype = torch.bfloat16 if not cuda or torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and dtype == torch.float16)
    generator = torch.Generator(device).manual_seed(seed)
    model.train()
    start = time.perf_counter()
    order = torch.randperm(len(labels), generator=generator, device=device)
    for i in range(n_steps):
        index = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        x, y = images[index], labels[index]
        if cfg.crop_padding:
            x = random_crop(x, cfg.crop_padding, generator)
        if cfg.flip:
            x = random_flip(x, generator)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=cfg.label_smoothing)
            if aux_losses is not None:
                for value in aux_losses(i / n_steps).values():
                    loss = loss + value.float()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    if cuda:
        torch.cuda.synchronize(device)
    return n_steps * cfg.batch_size / (time.perf_counter() - start)


def _harness_train(
    model: nn.Module, data, cfg, seed: int, work: Path, device: str = "cpu"
) -> tuple[float, float]:
    """`bench.engine.train.train` as the runner calls it (checkpoint included): (wall images/s, loop images/s)."""
    from bench.engine.train import train

    start = time.perf_counter()
    result = train(
        model, data, cfg, seed, device=device, checkpoint=work / "last.pt", resume=False, progress=False
    )
    wall = time.perf_counter() - start
    if result.status != "measured":
        raise RuntimeError(f"harness training failed: {result.failure_reason}")
    images = (len(data.train_labels) // cfg.batch_size) * cfg.batch_size
    return images / wall, result.train_images_per_s


def bench_train(
    model_name: str,
    *,
    suite: str = "quick",
    dataset: str | None = None,
    data_root: str | None = None,
    steps: int = 30,
    batch_size: int | None = None,
    repeats: int = 3,
    threads: int | None = None,
    amp: bool = False,
    channels_last: bool = False,
    deterministic: bool | None = None,
    seed: int = 0,
    device: str = "cpu",
    log=print,
) -> dict:
    """Harness loop vs bare loop on the same model and data, alternated `repeats` times.

    `amp` (bf16 autocast on CPU) and `channels_last` switch the train config's fields of the same name
    (both loops follow them); `deterministic`, where given, replaces the suite's mode (on CUDA the fast
    mode turns cudnn.benchmark on: the pair of runs measures what determinism costs)."""
    from bench.data import load_dataset
    from bench.engine.config import load_suite
    from bench.engine.train import seed_everything

    spec = load_suite(suite)
    cfg = spec.train_config(model_name)
    cfg = dataclasses.replace(cfg, epochs=1, batch_size=batch_size or cfg.batch_size)
    cfg = dataclasses.replace(cfg, train_size=steps * cfg.batch_size)
    switches = {"amp": amp, "channels_last": channels_last}
    for name, on in switches.items():
        if on and not hasattr(cfg, name):
            raise ValueError(f"this harness's train config has no {name!r} switch")
    cfg = dataclasses.replace(cfg, **{k: v for k, v in switches.items() if hasattr(cfg, k)})
    if deterministic is not None:
        cfg = dataclasses.replace(cfg, deterministic=deterministic)
    data = load_dataset(dataset or spec.datasets[0], data_root).subset(cfg.train_size)
    if len(data.train_labels) < cfg.batch_size:
        raise ValueError(
            f"{len(data.train_labels)} training images are fewer than one batch of {cfg.batch_size}"
        )
    mean, std = data.mean_std
    shape = (1, -1, 1, 1)
    images = (data.train_images.float() / 255 - torch.tensor(mean).view(shape)) / torch.tensor(std).view(
        shape
    )
    args = spec.model_args.get(model_name, {})
    harness, harness_loop, bare = [], [], []
    with _threads(threads), tempfile.TemporaryDirectory() as work:
        warm = dataclasses.replace(
            cfg, train_size=2 * cfg.batch_size
        )  # allocator and kernels warmed, untimed
        model = registry.create_model(model_name, data.num_classes, data.in_chans, **args)
        _bare_train(
            model, images[: 2 * cfg.batch_size], data.train_labels[: 2 * cfg.batch_size], warm, seed, device
        )
        for r in range(repeats):
            for which in ("harness", "bare") if r % 2 == 0 else ("bare", "harness"):
                seed_everything(seed)
                model = registry.create_model(model_name, data.num_classes, data.in_chans, **args)
                if which == "harness":
                    wall, loop = _harness_train(model, data, cfg, seed, Path(work) / str(r), device)
                    harness.append(wall)
                    harness_loop.append(loop)
                else:
                    bare.append(_bare_train(model, images, data.train_labels, cfg, seed, device))
            log(
                f"  repeat {r + 1}/{repeats}: harness {harness[-1]:.0f} img/s, bare {bare[-1]:.0f} img/s, "
                f"ratio {harness[-1] / bare[-1]:.3f}"
            )
        n_threads = torch.get_num_threads()
    ratios = [h / b for h, b in zip(harness, bare, strict=True)]
    return {
        "benchmark": "train",
        "model": model_name,
        "dataset": data.name,
        "suite": spec.name,
        "train_config": dataclasses.asdict(cfg),
        "steps": len(data.train_labels) // cfg.batch_size,
        "repeats": repeats,
        "num_threads": n_threads,
        "harness_images_per_s": harness,
        "harness_in_loop_images_per_s": harness_loop,
        "bare_images_per_s": bare,
        "ratio_per_repeat": ratios,
        "harness_median": statistics.median(harness),
        "bare_median": statistics.median(bare),
        "ratio_median": statistics.median(ratios),
        "bare_loop": "in-memory normalised float images, same augmentation functions, plain SGD, aux losses",
        **measurement_context(device),
    }


def bench_precision(
    models: list[str],
    *,
    suite: str = "fashion",
    dataset: str | None = None,
    data_root: str | None = None,
    steps: int = 30,
    repeats: int = 3,
    threads: int | None = None,
    log=print,
) -> dict:
    """Per model, the suite's training loop (`bench.engine.train.train`) in float32 NCHW against bf16
    autocast + channels_last, alternated `repeats` times in one process: the speed-up a suite gets from
    `amp = true, channels_last = true` on this machine."""
    from bench.data import load_dataset
    from bench.engine.config import load_suite
    from bench.engine.train import amp_dtype, seed_everything

    spec = load_suite(suite)
    modes = {"fp32": {"amp": False, "channels_last": False}, "bf16_cl": {"amp": True, "channels_last": True}}
    if amp_dtype(dataclasses.replace(spec.train, amp=True), "cpu") is None:
        raise ValueError(
            "this CPU has no native bf16 (AVX-512 BF16 or AMX): there is no bf16 speed-up to measure"
        )
    per_model = {}
    with _threads(threads), tempfile.TemporaryDirectory() as work:
        for model_name in models:
            base = spec.train_config(model_name)
            base = dataclasses.replace(base, epochs=1, train_size=steps * base.batch_size)
            data = load_dataset(dataset or spec.datasets[0], data_root).subset(base.train_size)
            args = spec.model_args.get(model_name, {})
            speeds: dict[str, list[float]] = {mode: [] for mode in modes}
            for r in range(repeats + 1):  # the first round warms the allocator and kernels, untimed
                for mode in modes if r % 2 == 0 else reversed(modes):
                    seed_everything(0)
                    model = registry.create_model(model_name, data.num_classes, data.in_chans, **args)
                    cfg = dataclasses.replace(base, **modes[mode])
                    _, loop = _harness_train(model, data, cfg, 0, Path(work) / f"{model_name}-{mode}-{r}")
                    if r:
                        speeds[mode].append(loop)
            ratios = [b / f for b, f in zip(speeds["bf16_cl"], speeds["fp32"], strict=True)]
            per_model[model_name] = {
                "fp32_images_per_s": speeds["fp32"],
                "bf16_cl_images_per_s": speeds["bf16_cl"],
                "speedup_per_repeat": ratios,
                "speedup_median": statistics.median(ratios),
            }
            log(
                f"  {model_name}: fp32 {statistics.median(speeds['fp32']):.0f} img/s, bf16 + channels_last "
                f"{statistics.median(speeds['bf16_cl']):.0f} img/s, speed-up ×{statistics.median(ratios):.2f}"
            )
        n_threads = torch.get_num_threads()
    return {
        "benchmark": "train-precision",
        "suite": spec.name,
        "models": per_model,
        "steps": steps,
        "batch_size": base.batch_size,
        "repeats": repeats,
        "num_threads": n_threads,
        "timed": "images/s of the harness's training loop (train_images_per_s), after one untimed round",
        **measurement_context("cpu"),
    }


# --- sparse gated inference ------------------------------------------------------------------------


def force_gate_rate(model: nn.Module, closed: float, x: Tensor, seed: int = 0) -> list:
    """Make every gate network of `model` output a fixed 0/1 pattern with a share `closed` of closed gates.

    Forward hooks on the outermost `is_gate_network` modules; `x` is one input, used once to find each
    gate network's output width. Channel gate networks (width > 1) close round(closed · width) entries at
    random positions; block gate heads (width 1) are closed for round(closed · n_heads) of the heads, at
    random. Returns the hook handles (call `.remove()` on each to restore the learned gates).
    """
    from bench.gates import gate_networks

    modules = dict(model.named_modules())
    names = gate_networks(model)
    if not names:
        raise ValueError("the model has no gate network (no module with is_gate_network = True)")
    widths: dict[str, int] = {}
    probes = [
        modules[n].register_forward_hook(lambda m, i, o, n=n: widths.__setitem__(n, o.shape[1]))
        for n in names
    ]
    try:
        with torch.no_grad():
            model.eval()(x[:1])
    finally:
        for h in probes:
            h.remove()
    generator = torch.Generator().manual_seed(seed)
    block_heads = [n for n in names if widths[n] == 1]
    shut = set(
        torch.randperm(len(block_heads), generator=generator)[: round(closed * len(block_heads))].tolist()
    )
    patterns = {}
    for n in names:
        if widths[n] == 1:
            patterns[n] = torch.tensor([[0.0 if block_heads.index(n) in shut else 1.0]])
        else:
            pattern = torch.ones(1, widths[n])
            pattern[0, torch.randperm(widths[n], generator=generator)[: round(closed * widths[n])]] = 0.0
            patterns[n] = pattern

    def hook(module, inputs, output, n):
        return patterns[n].to(output.device, output.dtype).expand(output.shape[0], -1)

    return [modules[n].register_forward_hook(lambda m, i, o, n=n: hook(m, i, o, n)) for n in names]


@torch.inference_mode()
def interleaved_ms(fns: dict, x: Tensor, min_run_time_s: float, warmup: int = 3) -> dict[str, float]:
    """Median milliseconds per call of each function, calling them in turn (a, b, c, a, b, c, ...), so that
    a change of the machine's load hits all of them alike: on a shared CPU their ratio is steadier than
    that of consecutive timer blocks."""
    for _ in range(warmup):
        for fn in fns.values():
            fn(x)
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    while time.perf_counter() - start < min_run_time_s * len(fns) or len(next(iter(times.values()))) < 10:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(x)
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_gated(
    model_name: str,
    *,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    sparsity: float | None = 0.5,
    batch_size: int = 1,
    min_run_time_s: float = 1.0,
    warmup: int = 5,
    repeats: int = 3,
    threads: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    log=print,
) -> dict:
    """MAC ratio, realised latency ratio and their quotient for a gated model's sparse inference path."""
    from bench import sparse
    from bench.measure import executed_macs, static_macs
    from bench.measure.report import is_gated

    torch.manual_seed(seed)
    model = registry.create_model(model_name, num_classes, input_shape[0]).eval()
    if not is_gated(model) or not hasattr(model, "forward_sparse"):
        raise ValueError(
            f"model {model_name!r} has no sparse inference path (forward_sparse); it must be gated"
        )
    model.to(device)
    x = torch.randn(batch_size, *input_shape, generator=torch.Generator().manual_seed(seed)).to(device)
    hooks = force_gate_rate(model, sparsity, x, seed) if sparsity is not None else []
    sparse.prepare(model)
    with torch.no_grad():
        dense_out = model(x)
        executed = executed_macs(model, x)
        from bench.gates import collect

        gates = torch.cat([g.double().flatten(1) for _, g in collect(model).values()], dim=1)
    sparse_out = model.forward_sparse(x)
    max_diff = (dense_out - sparse_out).abs().max().item()
    static = static_macs(model, input_shape)
    opened_model = copy.deepcopy(model)  # the same weights with every gate open
    force_gate_rate(opened_model, 0.0, x, seed)  # the copy's later hooks run last: they win
    sparse.prepare(opened_model)

    def median_ms(module: torch.nn.Module, forward=None) -> float:
        return measure_latency(module, input_shape, batch_size, device, min_run_time_s, warmup, forward)[
            "median_ms"
        ]

    dense_ms, sparse_ms, open_ms = [], [], []
    with _threads(threads):
        for r in range(repeats):
            dense_ms.append(median_ms(model))
            sparse_ms.append(median_ms(model, model.forward_sparse))
            open_ms.append(median_ms(opened_model, opened_model.forward_sparse))
            log(
                f"  repeat {r + 1}/{repeats}: dense {dense_ms[-1]:.3f} ms, sparse {sparse_ms[-1]:.3f} ms, "
                f"sparse all open {open_ms[-1]:.3f} ms"
            )
        # the same three, interleaved call by call
        inter = interleaved_ms(
            {"dense": model, "sparse": model.forward_sparse, "sparse_all_open": opened_model.forward_sparse},
            x,
            min_run_time_s * repeats,
        )
        n_threads = torch.get_num_threads()
    for h in hooks:
        h.remove()
    mac_ratio = static / executed.mean().item()
    log(
        f"  interleaved: dense {inter['dense']:.3f} ms, sparse {inter['sparse']:.3f} ms, "
        f"sparse all open {inter['sparse_all_open']:.3f} ms"
    )
    realised = [d / s for d, s in zip(dense_ms, sparse_ms, strict=True)]
    return {
        "benchmark": "gated",
        "model": model_name,
        "input_shape": list(input_shape),
        "batch_size": batch_size,
        "forced_sparsity": sparsity,
        "sparsity_method": "forward hooks on the gate networks (bench.commands.perf.force_gate_rate)"
        if sparsity is not None
        else "the model's own gates on random input",
        "closed_gate_fraction": 1 - gates.mean().item(),
        "static_macs": static,
        "executed_macs": executed.mean().item(),
        "mac_ratio": mac_ratio,
        "dense_ms": dense_ms,
        "sparse_ms": sparse_ms,
        "sparse_all_open_ms": open_ms,
        "realised_ratio_per_repeat": realised,
        "realised_ratio": statistics.median(realised),
        "realised_over_mac": statistics.median(realised) / mac_ratio,
        "dense_over_sparse_open": statistics.median(dense_ms) / statistics.median(open_ms),
        "sparse_open_over_sparse": statistics.median(open_ms) / statistics.median(sparse_ms),
        "interleaved_ms": inter,
        "realised_ratio_interleaved": inter["dense"] / inter["sparse"],
        "realised_over_mac_interleaved": inter["dense"] / inter["sparse"] / mac_ratio,
        "sparse_open_over_sparse_interleaved": inter["sparse_all_open"] / inter["sparse"],
        "max_abs_diff_sparse_vs_dense": max_diff,
        "num_threads": n_threads,
        "min_run_time_s": min_run_time_s,
        "repeats": repeats,
        **measurement_context(device),
    }


# --- suite wall time -----------------------------------------------------------------------------------


class StageTimer:
    """Seconds per stage, accumulated by wrapping functions (`wrap`) for the duration of one call."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.per_run: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.current_run = ""

    def wrap(self, stage: str, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                self.seconds[stage] += spent
                self.per_run[self.current_run][stage] += spent

        return timed


def bench_suite(
    suite_name: str,
    *,
    models: list[str] | None = None,
    epochs: int | None = None,
    data_root: str | None = None,
    threads: int | None = None,
    log=print,
) -> dict:
    """Run a suite in a scratch store and report its wall time split by the runner's stages."""
    from bench.commands import runner
    from bench.engine import train as train_mod
    from bench.engine.config import load_suite
    from bench.report.leaderboard import write_leaderboard
    from bench.store.results import ResultStore

    suite = load_suite(suite_name)
    timer = StageTimer()
    patched = {
        (runner, "load_dataset"): "data_loading",
        (runner, "check_builds"): "build_check",
        (runner, "evaluate"): "evaluation",
        (runner, "measure_model"): "measurement",
        (train_mod, "_save_atomic"): "checkpoint_io",
    }
    originals = {key: getattr(*key) for key in patched}
    original_train = runner.train

    def train(*args, desc: str = "", **kwargs):
        timer.current_run = desc
        return timer.wrap("training_incl_checkpoint", original_train)(*args, desc=desc, **kwargs)

    start = time.perf_counter()
    with _threads(threads), tempfile.TemporaryDirectory() as work:
        store = ResultStore(Path(work) / "results")
        store.append = timer.wrap("store_io", store.append)
        board = timer.wrap("leaderboard_io", write_leaderboard)

        def on_record(record) -> None:
            log(runner.summary_line(record))
            board(store, Path(work) / "leaderboard", suite.name)

        try:
            for (module, attr), stage in patched.items():
                setattr(module, attr, timer.wrap(stage, originals[(module, attr)]))
            runner.train = train
            records = runner.run_suite(
                suite,
                models=models,
                epochs=epochs,
                data_root=data_root,
                device="cpu",
                store=store,
                work_dir=Path(work) / "runs",
                progress=False,
                on_record=on_record,
            )
        finally:
            for (module, attr), fn in originals.items():
                setattr(module, attr, fn)
            runner.train = original_train
        n_threads = torch.get_num_threads()
    wall = time.perf_counter() - start
    seconds = dict(timer.seconds)
    checkpoint = seconds.get("checkpoint_io", 0.0)
    stages = {
        "training": seconds.get("training_incl_checkpoint", 0.0) - checkpoint,
        "evaluation": seconds.get("evaluation", 0.0),
        "measurement": seconds.get("measurement", 0.0),
        "io": checkpoint
        + seconds.get("data_loading", 0.0)
        + seconds.get("store_io", 0.0)
        + seconds.get("leaderboard_io", 0.0),
        "build_check": seconds.get("build_check", 0.0),
    }
    stages["other"] = wall - sum(stages.values())
    per_run = {
        run: {
            "training": s.get("training_incl_checkpoint", 0.0) - s.get("checkpoint_io", 0.0),
            "evaluation": s.get("evaluation", 0.0),
            "measurement": s.get("measurement", 0.0),
            "checkpoint_io": s.get("checkpoint_io", 0.0),
        }
        for run, s in timer.per_run.items()
        if run
    }
    return {
        "benchmark": "suite",
        "suite": suite.name,
        "models": models or list(suite.models),
        "runs": len(records),
        "failed": sum(r.status != "measured" for r in records),
        "epochs": epochs,
        "num_threads": n_threads,
        "wall_s": wall,
        "stages_s": stages,
        "shares": {k: v / wall for k, v in stages.items()},
        "io_detail_s": {
            k: seconds.get(k, 0.0) for k in ("checkpoint_io", "data_loading", "store_io", "leaderboard_io")
        },
        "per_run_s": per_run,
        "budget_s": 15 * 60 if suite.name == "quick" else None,
        **measurement_context(),
    }


def bench_jobs(
    suite_name: str,
    *,
    model: str,
    jobs: list[int],
    epochs: int,
    data_root: str | None = None,
    device: str = "cpu",
    threads_per_job: int | None = None,
    timeout: float | None = None,
    log=print,
) -> dict:
    """Runs per hour of `bench run --jobs N` for each N: the same max(N) runs (seeds 0.. of `model`, `epochs`
    each) at every N, each N in its own `bench run` process and scratch store, timed end to end. Their
    top-1 values must not depend on N (on the CPU, at the same threads per run)."""
    import subprocess
    import sys

    from bench.store.results import ResultStore

    seeds = list(range(max(jobs)))
    rows, top1 = [], {}
    for n in jobs:
        with tempfile.TemporaryDirectory(prefix=f"bench-perf-jobs{n}-") as scratch:
            command = [sys.executable, "-m", "bench", "run", "--suite", suite_name, "--device", device]
            command += ["--models", model, "--seeds", ",".join(map(str, seeds)), "--epochs", str(epochs)]
            command += ["--jobs", str(n), "--out", f"{scratch}/results", "--no-progress"]
            command += ["--leaderboard-dir", f"{scratch}/lb", "--work-dir", f"{scratch}/runs"]
            command += ["--threads-per-job", str(threads_per_job)] if threads_per_job else []
            command += ["--data-root", data_root] if data_root else []
            start = time.perf_counter()
            out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
            wall = time.perf_counter() - start
            if out.returncode != 0:
                raise RuntimeError(
                    f"bench run --jobs {n} failed (exit {out.returncode}): {out.stderr[-500:]}"
                )
            top1[n] = {
                f"{r.model} seed {r.seed}": r.metrics.top1_pct
                for r in ResultStore(f"{scratch}/results").read()
            }
        rows.append(
            {
                "jobs": n,
                "runs": len(seeds),
                "wall_s": round(wall, 1),
                "runs_per_hour": round(len(seeds) * 3600 / wall, 1),
            }
        )
        log(f"  --jobs {n}: {len(seeds)} runs in {wall:.1f} s, {rows[-1]['runs_per_hour']:.0f} runs per hour")
    return {
        "benchmark": "jobs",
        "suite": Path(suite_name).stem,
        "model": model,
        "epochs_per_run": epochs,
        "threads_per_job": threads_per_job,
        "rows": rows,
        "top1_pct_by_jobs": {str(n): t for n, t in top1.items()},
        "top1_identical_across_jobs": len({tuple(sorted(t.items())) for t in top1.values()}) == 1,
        **measurement_context(device),
    }


# --- command line ------------------------------------------------------------------------------------------


def _shape(text: str) -> tuple[int, int, int]:
    parts = [int(v) for v in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("give the input shape as C,H,W, e.g. 3,32,32")
    return tuple(parts)


def add_parser(sub) -> None:
    """The `bench perf` subcommand and its `train`, `gated`, `suite`, `jobs`, `store` commands."""
    p = sub.add_parser("perf", help="performance of the harness: training loop, sparse inference, suite time")
    perf = p.add_subparsers(dest="perf_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--out", default=str(PERF_DIR), help="folder for the JSON result (default: %(default)s)"
    )
    common.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    common.add_argument("--no-save", action="store_true", help="print only; write no JSON")

    q = perf.add_parser(
        "train", parents=[common], help="harness training loop vs a bare PyTorch loop (img/s)"
    )
    q.add_argument("model", nargs="+", help="one model; several with --precision")
    q.add_argument("--suite", default="quick", help="whose training config to use (default: %(default)s)")
    q.add_argument(
        "--precision",
        action="store_true",
        help="per model, the harness in float32 against bf16 autocast + channels_last (the speed-up)",
    )
    q.add_argument("--dataset", help="default: the suite's first dataset")
    q.add_argument("--data-root")
    q.add_argument("--steps", type=int, default=30, help="training steps per measurement (default: 30)")
    q.add_argument("--batch-size", type=int, help="default: the suite's")
    q.add_argument("--repeats", type=int, default=3)
    q.add_argument("--amp", action="store_true", help="bf16 autocast in both loops (the train config's amp)")
    q.add_argument("--channels-last", action="store_true", help="NHWC model and inputs in both loops")
    q.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    q.set_defaults(func=cmd_perf)

    q = perf.add_parser("gated", parents=[common], help="sparse vs masked dense inference of a gated model")
    q.add_argument("model")
    q.add_argument("--shape", type=_shape, default=(3, 32, 32), help="input C,H,W (default: 3,32,32)")
    q.add_argument("--num-classes", type=int, default=10)
    q.add_argument("--sparsity", type=float, default=0.5, help="share of gates forced closed (default: 0.5)")
    q.add_argument("--natural", action="store_true", help="keep the model's own gates (no forcing)")
    q.add_argument("--batch-size", type=int, default=1)
    q.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timed runs per measurement")
    q.add_argument("--warmup", type=int, default=5)
    q.add_argument("--repeats", type=int, default=3)
    q.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    q.set_defaults(func=cmd_perf)

    q = perf.add_parser("suite", parents=[common], help="wall time of a suite, split by stage")
    q.add_argument("--suite", default="quick")
    q.add_argument("--models", type=lambda t: [m for m in t.split(",") if m], help="comma-separated subset")
    q.add_argument("--epochs", type=int)
    q.add_argument("--data-root")
    q.set_defaults(func=cmd_perf)

    q = perf.add_parser("jobs", parents=[common], help="runs per hour of bench run --jobs N, for each N")
    q.add_argument("--suite", default="quick")
    q.add_argument(
        "--model", default="resnet20", help="the model whose seeds 0.. are run (default: resnet20)"
    )
    q.add_argument(
        "--jobs", type=lambda t: [int(v) for v in t.split(",") if v], default=[1, 2], help="e.g. 1,2"
    )
    q.add_argument("--epochs", type=int, default=1, help="epochs of each run (default: 1)")
    q.add_argument("--threads-per-job", type=int, help="torch threads of each run (default: cores // N)")
    q.add_argument("--data-root")
    q.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    q.set_defaults(func=cmd_perf)

    q = perf.add_parser("store", parents=[common], help="time of one append to a store of many records")
    q.add_argument(
        "--records", type=int, default=10_000, help="records already in the store (default: 10000)"
    )
    q.add_argument("--appends", type=int, default=20, help="appends timed (default: 20)")
    q.set_defaults(func=cmd_perf)


def cmd_perf(args: argparse.Namespace) -> None:
    kind = args.perf_command
    print(
        f"bench perf {kind}: {torch.get_num_threads() if not args.threads else args.threads} thread(s), "
        f"malloc tuned: {malloc_tuned()}, load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    if kind == "train" and args.precision:
        options = ("suite", "dataset", "data_root", "steps", "repeats", "threads")
        r = bench_precision(args.model, **{k: getattr(args, k) for k in options})
        models = "-".join(args.model) if len(args.model) <= 3 else f"{len(args.model)}models"
        name = f"precision-{r['suite']}-{models}"
    elif kind == "train":
        if len(args.model) > 1:
            raise ValueError(
                "bench perf train compares the harness with a bare loop for one model; "
                "several models go with --precision"
            )
        args.model = args.model[0]
        options = (
            "suite",
            "dataset",
            "data_root",
            "steps",
            "batch_size",
            "repeats",
            "threads",
            "amp",
            "device",
        )
        r = bench_train(
            args.model, channels_last=args.channels_last, **{k: getattr(args, k) for k in options}
        )
        print(
            f"{r['model']}: harness {r['harness_median']:.0f} img/s, bare {r['bare_median']:.0f} img/s, "
            f"harness / bare {r['ratio_median']:.3f}"
        )
        name = r["model"] + "".join(f"-{k}" for k in ("amp", "channels_last") if getattr(args, k))
        name += "-cuda" if args.device == "cuda" else ""
    elif kind == "gated":
        sparsity = None if args.natural else args.sparsity
        timing = {"min_run_time_s": args.min_run_time, "warmup": args.warmup, "repeats": args.repeats}
        shape = {"input_shape": args.shape, "num_classes": args.num_classes, "batch_size": args.batch_size}
        r = bench_gated(
            args.model, sparsity=sparsity, threads=args.threads, device=args.device, **shape, **timing
        )
        print(
            f"{r['model']} @ batch {r['batch_size']}, {100 * r['closed_gate_fraction']:.0f}% gates closed: "
            f"MAC ratio {r['mac_ratio']:.2f}, realised {r['realised_ratio']:.2f}, "
            f"realised ÷ MAC {r['realised_over_mac']:.2f} (dense / sparse all open "
            f"{r['dense_over_sparse_open']:.2f}; max |sparse − dense| {r['max_abs_diff_sparse_vs_dense']:.1e})"
        )
        print(
            f"  interleaved timing: realised {r['realised_ratio_interleaved']:.2f}, realised ÷ MAC "
            f"{r['realised_over_mac_interleaved']:.2f}, sparse all open / sparse "
            f"{r['sparse_open_over_sparse_interleaved']:.2f} (sparsity alone)"
        )
        name = f"{r['model']}-bs{r['batch_size']}" + ("-cuda" if args.device == "cuda" else "")
    elif kind == "store":
        if args.records < 0 or args.appends < 1:
            raise ValueError("--records must be >= 0 and --appends >= 1")
        r = bench_store(args.records, args.appends)
        print(
            f"store of {r['records']} records: one append takes {r['append_ms_median']:.1f} ms "
            f"(median of {r['appends']}; min {r['append_ms_min']:.1f}, max {r['append_ms_max']:.1f})"
        )
        name = f"{r['records']}records"
    elif kind == "jobs":
        from bench.commands.jobs import check_jobs

        for n in args.jobs or [0]:
            check_jobs(n, args.threads_per_job)
        options = ("model", "jobs", "epochs", "data_root", "device", "threads_per_job")
        r = bench_jobs(args.suite, **{k: getattr(args, k) for k in options})
        same = "identical" if r["top1_identical_across_jobs"] else "DIFFERENT"
        print(f"{r['suite']}: top-1 values {same} across --jobs {','.join(map(str, args.jobs))}")
        name = f"{r['suite']}-{args.device}"
    else:
        r = bench_suite(
            args.suite, models=args.models, epochs=args.epochs, data_root=args.data_root, threads=args.threads
        )
        shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in r["shares"].items())
        print(f"suite {r['suite']}: {r['runs']} run(s) in {r['wall_s']:.1f} s — {shares}")
        name = r["suite"] if not args.models else f"{r['suite']}-{len(r['models'])}models"
    if not args.no_save:
        print(f"written: {write_result(r, args.out, kind, name)}")
