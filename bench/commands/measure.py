"""`bench measure`: the numbers to check before spending GPU hours on a model.

One table, one column per model: parameters, static MACs by both counters, executed MACs on a batch of
the dataset's evaluation images and the gate statistics (gated models), the gate network's own MACs,
and latency per batch size. Every number comes from `bench.measure.report.measure_model`, the function
that measures each run of `bench run`, and the models are checked by `runner.check_builds` as before a
run, so what this prints is what a run will record (for the weights it was given: by default the
builder's initialisation, which decides the gates of a gated model).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass

import torch
from tabulate import tabulate

from bench import registry
from bench.commands.runner import RunSpec, check_builds
from bench.data import ImageDataset, load_dataset
from bench.engine.config import MeasureConfig, PlanError, TrainConfig
from bench.engine.env import require_device
from bench.measure.report import counters_disagree, measure_model
from bench.plugins import name_plugins


@dataclass(frozen=True)
class Measured:
    model: str
    metrics: dict  # the record's metrics fields, as `measure_model` returns them
    gates: dict | None  # the gate summary of a gated model


def eval_batch(data, images: int) -> ImageDataset:
    """The first `images` evaluation images of `data`'s measurement set (any dataset of bench.data: an
    in-memory one itself, a streamed one its fixed in-memory slice; the training images stay, with
    mean/std)."""
    if images < 1:
        raise ValueError(f"--eval-images must be at least 1, not {images}")
    data = data.measurement_set()
    return dataclasses.replace(
        data, test_images=data.test_images[:images], test_labels=data.test_labels[:images]
    )


def check_models(models: list[str], data: ImageDataset) -> None:
    """Build each model and run two samples through it, exactly as before a run (`runner.check_builds`)."""
    for name in models:
        registry.get_entry(name)  # an unknown name ends here, with the fix
    # check_builds reads only the model, the dataset and the model arguments of a run
    specs = [RunSpec(None, name, data.name, 0, TrainConfig(), {}) for name in models]
    try:
        check_builds(specs, {data.name: data})
    except PlanError as e:
        raise PlanError(name_plugins(str(e))) from None


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The model weights in `path`: a checkpoint of `bench run` (its "model") or a plain state dict, loaded
    with `weights_only` (no code runs); one ValueError line for a file that is missing or not one of them."""
    if not os.path.isfile(path):
        raise ValueError(
            f"checkpoint {path} does not exist" + (" (it is a folder)" if os.path.isdir(path) else "")
        )
    try:
        with warnings.catch_warnings():  # torch's notes on odd pickles: the error below says it in one line
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, damaged, not a torch file, or objects weights_only refuses
        reason = " ".join(str(e).split())[:200]
        raise ValueError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {reason}); give a complete last.pt of "
            "`bench run` or a file written by torch.save(model.state_dict(), PATH)"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a checkpoint of `bench run`
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise ValueError(
            f"checkpoint {path} holds a {type(state).__name__} that is not a state dict (parameter names -> "
            "tensors) nor a checkpoint of `bench run`"
        )
    return state


def load_checkpoint(model: torch.nn.Module, path: str, name: str) -> None:
    """Load `path` into `model` (registered as `name`), strictly; one ValueError line if it does not fit."""
    state = read_state_dict(path)
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError) as e:
        reason = " ".join(str(e).split())
        reason = reason if len(reason) <= 300 else reason[:300] + " ..."
        raise ValueError(f"checkpoint {path} does not fit {registry.describe(name)}: {reason}") from None


def measure(
    models: list[str],
    data: ImageDataset,
    *,
    batch_sizes: tuple[int, ...] = (1, 64),
    device: str = "cpu",
    min_run_time_s: float = 1.0,
    warmup: int = 3,
    checkpoint: str | None = None,
) -> list[Measured]:
    """Measure each model on `data` (use `eval_batch` to pick the evaluation images)."""
    require_device(device)
    if checkpoint and len(models) != 1:
        raise ValueError("--checkpoint loads the weights of one model; name one model with it")
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"--batch-sizes must be positive integers, e.g. 1,64 (got {list(batch_sizes)})")
    check_models(models, data)
    cfg = MeasureConfig(tuple(batch_sizes), min_run_time_s, warmup)
    measured = []
    for name in models:
        torch.manual_seed(0)  # the same initial weights, hence the same gates, on every call
        model = registry.create_model(name, data.num_classes, data.in_chans)
        if checkpoint:
            load_checkpoint(model, checkpoint, name)
        metrics, gates = measure_model(model, data, cfg, device, eval_batch_size=len(data.test_labels))
        measured.append(Measured(name, metrics, gates))
    return measured


def _millions(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 1e9:
        return f"{value / 1e9:.3f}G"
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.2f}K"  # gate heads can be tiny


def _column(m: Measured, batch_sizes: tuple[int, ...]) -> list[str]:
    x = m.metrics
    executed = x.get("executed_macs")
    column = [
        f"{x['params']:,}",
        _millions(x["static_macs"]),
        _millions(x["static_macs_fvcore"]) if x["static_macs_fvcore"] is not None else "could not trace",
        f"{_millions(executed['mean'])} ({_millions(executed['min'])}–{_millions(executed['max'])})"
        if executed
        else "– (no gates)",
        f"{100 * executed['mean'] / x['static_macs']:.1f}%" if executed else "–",
        _millions(x.get("gate_network_macs")),
        f"{m.gates['always_on']} / {m.gates['always_off']} / {m.gates['input_dependent']} of {m.gates['gates']}"
        if m.gates
        else "–",
    ]
    latency = {lat["batch_size"]: lat for lat in x["latency"]}
    for bs in batch_sizes:
        lat = latency[bs]
        column.append(f"{lat['median_ms']:.2f} ({lat['p10_ms']:.2f}–{lat['p90_ms']:.2f})")
    return column


def measure_table(
    measured: list[Measured], data: ImageDataset, batch_sizes: tuple[int, ...], checkpoint: str | None = None
) -> str:
    """The caption, the table (GitHub markdown, so it pastes into an issue) and any counter warning."""
    rows = [
        "Parameters",
        "Static MACs (FlopCounterMode)",
        "Static MACs (fvcore conv+linear)",
        f"Executed MACs, mean (min–max) over {len(data.test_labels)} images",
        "Executed / static",
        "Gate network MACs",
        "Gates always on / off / input-dependent",
        *(f"Latency bs{bs} (ms), median (p10–p90)" for bs in batch_sizes),
    ]
    columns = [_column(m, batch_sizes) for m in measured]
    table = tabulate(
        [[row, *(c[i] for c in columns)] for i, row in enumerate(rows)],
        headers=["", *(m.model for m in measured)],
        tablefmt="github",
        disable_numparse=True,
    )
    lat = measured[0].metrics["latency"][0]
    shape = "×".join(str(s) for s in data.input_shape)
    caption = (
        f"{data.name}: input {shape}, {data.num_classes} classes ({data.source}); "
        f"weights: {checkpoint or 'initialisation (seed 0)'}; latency on {lat['device']} "
        f"({lat['device_name']}, {lat['num_threads']} threads, malloc {'tuned' if lat['malloc_tuned'] else 'not tuned'})"
    )
    notes = []
    for m in measured:
        diff = counters_disagree(m.metrics)
        if diff:
            notes.append(
                f"note: {m.model}'s two static counters differ by {100 * diff:.1f}%: it runs matrix "
                "products outside conv/linear modules that one counter misses; check which"
            )
    return "\n".join([caption, "", table, *notes])


def cmd_measure(args) -> None:
    data = eval_batch(load_dataset(args.dataset, args.data_root), args.eval_images)
    batch_sizes = tuple(args.batch_sizes)
    measured = measure(
        args.models,
        data,
        batch_sizes=batch_sizes,
        device=args.device,
        min_run_time_s=args.min_run_time,
        warmup=args.warmup,
        checkpoint=args.checkpoint,
    )
    print(measure_table(measured, data, batch_sizes, args.checkpoint))
