"""Runs a suite's matrix: suite -> registry -> data -> train -> evaluate -> measure -> record -> store.

Everything a user can get wrong (model names, data, the suite file, a model that cannot take the
dataset's shapes) is checked before the first run starts, so an error never leaves a half-run suite.
Each finished run is appended to the store at once: a suite stopped half-way keeps what it finished.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench import registry
from bench.data import DATASET_TASKS, ImageDataset, batch_per_rank, load_dataset
from bench.engine.config import SEED_RANGE, PlanError, Suite, TrainConfig, config_hash
from bench.engine.distributed import barrier, broadcast_object, init_from_env, syncs_batchnorm, world
from bench.engine.env import environment
from bench.engine.tasks import TASKS, Task
from bench.engine.train import amp_dtype, evaluate, seed_everything, train
from bench.measure.report import counters_disagree, measure_model
from bench.store.incoming import DONE_STATUSES, incoming_dir, read_incoming, run_name
from bench.store.results import ResultStore
from bench.store.schema import METRIC_LABELS, SCHEMA_VERSION, TASK_METRICS, Record


@dataclass(frozen=True)
class RunSpec:
    suite: Suite
    model: str
    dataset: str
    seed: int
    train: TrainConfig
    model_args: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        """What makes two runs the same experiment (the seed aside)."""
        return {
            "model": self.model,
            "model_args": self.model_args,
            "dataset": self.dataset,
            "train": dataclasses.asdict(self.train),
        }

    @property
    def name(self) -> str:
        return f"{self.model} · {self.dataset} · seed {self.seed}"

    @property
    def task(self) -> Task:
        return TASKS[DATASET_TASKS[self.dataset]]


def plan(
    suite: Suite, models: list[str] | None = None, seeds: list[int] | None = None, epochs: int | None = None
) -> list[RunSpec]:
    """The runs of `suite`, optionally narrowed to `models` / `seeds`; model names, the command line's
    repeats and its --epochs are checked here."""
    chosen = models or list(suite.models)
    for flag, given in (("--models", models), ("--seeds", seeds)):
        repeated = sorted({v for v in given or () if given.count(v) > 1}, key=str)
        if repeated:
            raise PlanError(
                f"{flag} names {', '.join(map(str, repeated))} more than once; each run is run once"
            )
    for seed in seeds or ():
        if not 0 <= seed < SEED_RANGE:
            raise PlanError(f"--seeds: {seed} is not in [0, 2**32)")
    for name in chosen:
        registry.get_entry(name)  # raises UnknownModelError with the fix
    return [
        RunSpec(suite, m, d, s, suite.train_config(m, epochs), suite.model_args.get(m, {}))
        for d in suite.datasets
        for m in chosen
        for s in seeds or suite.seeds
    ]


def check_builds(specs: list[RunSpec], datasets: dict[str, ImageDataset], device: str = "cpu") -> None:
    """Build each model once and run two samples through it, and check that its batch splits over the
    processes, before any training starts."""
    processes = world().world_size
    for spec in {(s.model, s.dataset): s for s in specs}.values():
        data = datasets[spec.dataset].configure(spec.train)
        shape, expected = spec.task.probe(data)  # segmentation: a small image, not a whole 1024x2048 frame
        try:
            model = registry.create_model(spec.model, data.num_classes, data.in_chans, **spec.model_args)
            with torch.no_grad():
                out = model.eval()(torch.zeros(2, *shape))
        except Exception as e:  # noqa: BLE001 - any failure here is reported as the model's
            raise PlanError(
                f"{registry.describe(spec.model)} cannot be built for {spec.dataset} "
                f"{data.input_shape}: {type(e).__name__}: {e}"
            ) from e
        if tuple(out.shape) != expected:
            raise PlanError(
                f"{registry.describe(spec.model)} returns shape {tuple(out.shape)} for {spec.dataset}; "
                f"expected {expected}"
            )
        _check_batch_split(spec, model, processes, device)


def check_data(specs: list[RunSpec], datasets: dict[str, ImageDataset]) -> None:
    """Each run's training set (its `train_size` subset) holds at least one whole batch: the loader drops
    the last partial batch, so a smaller set would train no step and store an untrained model."""
    for spec in specs:
        data = datasets[spec.dataset].configure(spec.train)
        available = len(data.train_labels)
        images = min(spec.train.train_size or available, available)
        if images < spec.train.batch_size:
            where = (
                f"[overrides.{spec.model}]"
                if "batch_size" in spec.suite.overrides.get(spec.model, {})
                else "[train]"
            )
            raise PlanError(
                f"{spec.suite.path or spec.suite.name} {where}: batch_size {spec.train.batch_size} is larger than "
                f"the {images} training images of {spec.dataset} ({spec.model}"
                + (f", train_size {spec.train.train_size}" if spec.train.train_size else "")
                + f"); use a batch_size of at most {images}"
            )


def _check_batch_split(spec: RunSpec, model: torch.nn.Module, processes: int, device: str) -> None:
    batch = spec.train.batch_size
    try:
        per_rank = batch_per_rank(batch, processes)
    except ValueError as e:
        raise PlanError(f"{spec.name}: {e}") from None
    synced = syncs_batchnorm(spec.train.sync_bn, processes, device)
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if per_rank < 2 and has_bn and not synced:  # one image: BatchNorm on a 1x1 map has one value
        raise PlanError(
            f"{spec.name}: batch_size {batch} over {processes} process(es) leaves 1 image per process, "
            f"and BatchNorm cannot train on one; use a batch_size of at least {2 * processes}"
            + (" or sync_bn on GPUs" if processes > 1 else "")
        )


def checkpoint_path(spec: RunSpec, work_dir: Path) -> Path:
    """Where a run keeps its last checkpoint (what --resume continues from)."""
    return (
        work_dir
        / spec.suite.name
        / run_name(spec.model, spec.dataset, spec.seed, config_hash(spec.config))
        / "last.pt"
    )


def run_one(
    spec: RunSpec,
    data: ImageDataset,
    *,
    device: str,
    work_dir: Path,
    resume: bool,
    progress: bool,
    submitter: str,
) -> Record | None:
    """Train, evaluate and measure one (model, dataset, seed); returns its record (not yet stored).

    Under torchrun every rank trains; rank 0 alone measures and returns the record (others: None).
    """
    data = data.configure(spec.train).subset(spec.train.train_size)  # a streamed one takes sizes, workers
    seed_everything(spec.seed)
    model = registry.create_model(spec.model, data.num_classes, data.in_chans, **spec.model_args)
    chash = config_hash(spec.config)
    checkpoint = checkpoint_path(spec, work_dir)
    result = train(
        model,
        data,
        spec.train,
        spec.seed,
        device,
        checkpoint,
        resume,
        progress,
        desc=spec.name,
        task=spec.task,
    )
    metrics, gates = None, None
    if result.status == "measured":
        accuracy = evaluate(model, data, spec.train.eval_batch_size, device, spec.task)  # every rank: reduced
        nonfinite = {k: v for k, v in accuracy.items() if not math.isfinite(v)}
        if nonfinite:  # the same on every rank (reduced): each skips the measurement and its barrier
            result.status = "failed"
            result.failure_reason = f"non-finite evaluation metric(s) after training: {nonfinite}"
        elif not world().is_main:  # measurement, the record and every write belong to rank 0
            barrier()
            return None
        else:
            # streamed datasets: gate statistics and executed MACs over a fixed in-memory slice of the eval split
            measured, gates = measure_model(
                model,
                data,
                spec.suite.measure,
                device,
                spec.train.eval_batch_size,
                dtype=amp_dtype(spec.train, device),
                channels_last=spec.train.channels_last,
            )
            barrier()
            metrics = {
                **accuracy,
                **measured,
                "train_time_s": result.train_time_s,
                "train_images_per_s": result.train_images_per_s,
            }
    if not world().is_main:
        return None
    info = (
        dict(getattr(model, "bench_info", {}))
        | spec.task.notes
        | {"numerics": run_numerics(spec, result, device)}
    )
    record = Record(
        schema_version=SCHEMA_VERSION,
        suite=spec.suite.name,
        suite_version=spec.suite.version,
        model=spec.model,
        model_family=registry.get_entry(spec.model).family,
        model_args=spec.model_args,
        model_info=info,
        train_config=dataclasses.asdict(spec.train),
        config_hash=chash,
        dataset=spec.dataset,
        data={
            "eval_digest": data.eval_digest,
            "train_size": len(data.train_labels),
            "eval_size": len(data.test_labels),
            "input_shape": list(data.input_shape),
            "source": data.source,
        },
        seed=spec.seed,
        status=result.status,
        failure_reason=result.failure_reason,
        metrics=metrics,
        gates=gates,
        history=result.history,
        training=result.runtime,
        environment=environment(device),
        submitter=submitter,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    return record


def run_numerics(spec: RunSpec, result, device: str) -> dict:
    """What the record says about the run's numerics (schema 4's training and environment are strict, so it
    goes in model_info["numerics"]): the deterministic mode, cuDNN benchmark and TF32 as training ran, and
    the precision and memory format latency was timed in (as the model trained)."""
    dtype = amp_dtype(spec.train, device)
    return dict(result.numerics) | {
        "latency_dtype": str(dtype).removeprefix("torch.") if dtype else "float32",
        "latency_memory_format": "channels_last" if spec.train.channels_last else "contiguous",
    }


def load_datasets(names, data_root: str | None) -> dict:
    """Each dataset, downloaded (where it is downloadable) by rank 0 alone: under torchrun the other ranks
    wait at a barrier, then read what rank 0 wrote (never several processes extracting into one folder)."""
    if world().is_main:
        try:
            return {name: load_dataset(name, data_root) for name in names}
        finally:  # also when it fails: the other ranks then fail to find the data, each with the message
            barrier()
    barrier()
    return {name: load_dataset(name, data_root, download=False) for name in names}


def summary_line(record: Record) -> str:
    if record.status == "failed":
        return f"FAILED {record.model} · {record.dataset} · seed {record.seed}: {record.failure_reason}"
    m = record.metrics
    shown = TASK_METRICS["segmentation"] if m.quality_metric == "miou_pct" else ("top1_pct",)
    quality = " · ".join(f"{METRIC_LABELS[k]} {getattr(m, k):.2f}%" for k in shown)
    parts = [quality, f"{m.params / 1e6:.3f}M params", f"{m.static_macs / 1e6:.2f}M MACs"]
    if m.executed_macs:
        parts.append(f"executed {m.executed_macs.mean / 1e6:.2f}M")
    if m.latency:
        parts.append(f"{m.latency[0].median_ms:.2f} ms @ bs{m.latency[0].batch_size}")
    parts.append(f"trained {m.train_time_s:.0f} s")
    disagree = counters_disagree(m.model_dump())
    if disagree:
        parts.append(f"counters differ by {100 * disagree:.1f}%")
    return f"{record.model} · {record.dataset} · seed {record.seed}: " + " | ".join(parts)


def default_submitter() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


def finished_runs(records: list[Record]) -> dict[tuple[str, str, int, str], str]:
    """(model, dataset, seed, config hash) -> record id of every run the store already holds."""
    return {(r.model, r.dataset, r.seed, r.config_hash): r.record_id for r in records}


def runs_to_train(
    suite: Suite,
    *,
    store: ResultStore,
    resume: bool,
    build_device: str,
    only_missing: bool = False,
    models: list[str] | None = None,
    seeds: list[int] | None = None,
    epochs: int | None = None,
    data_root: str | None = None,
) -> tuple[list[RunSpec], dict]:
    """The planned runs still to train (with `resume`, those the store holds are left out, each with a
    line; with `only_missing`, those done: a measured or verified record in the store or the incoming
    folder) and their datasets, after every check that can fail before training."""
    specs = plan(suite, models, seeds, epochs)
    datasets = load_datasets(suite.datasets, data_root)
    check_data(specs, datasets)
    check_builds(specs, datasets, build_device)
    stored = store.read()  # a store that does not validate is reported before hours of training
    done = finished_runs([r for r in stored if r.suite == suite.name]) if resume and world().is_main else {}
    complete = done_runs(store, suite.name, stored) if only_missing and world().is_main else {}
    done, complete = broadcast_object((done, complete))  # every rank skips the same runs
    pending = []
    for spec in specs:
        key = (spec.model, spec.dataset, spec.seed, config_hash(spec.config))
        if key not in done and key not in complete:
            pending.append(spec)
        elif not world().is_main:
            continue
        elif key in done:
            print(
                f"{spec.name}: already finished (record {done[key]} in {store.path(suite.name)}); "
                "--resume does not run it again",
                flush=True,
            )
        else:
            print(f"{spec.name}: done ({complete[key]}); --only-missing leaves it out", flush=True)
    return pending, datasets


def done_runs(store: ResultStore, suite: str, stored: list[Record]) -> dict[tuple[str, str, int, str], str]:
    """(model, dataset, seed, config hash) -> where its measured or verified record is, for every run of
    `suite` that needs no more work: in the store, or in the incoming folder waiting for `bench collect`."""
    waiting, _ = read_incoming(store, suite)
    found = {}
    for r in stored + waiting:
        if r.suite == suite and r.status in DONE_STATUSES:
            where = f"record {r.record_id} in {store.path(suite)}" if r.record_id else "its record waits in "
            where += "" if r.record_id else f"{incoming_dir(store, suite)} for `bench collect`"
            found.setdefault((r.model, r.dataset, r.seed, r.config_hash), where)
    return found


def run_suite(
    suite: Suite,
    *,
    models: list[str] | None = None,
    seeds: list[int] | None = None,
    epochs: int | None = None,
    data_root: str | None = None,
    device: str = "cpu",
    store: ResultStore,
    work_dir: Path = Path("runs"),
    resume: bool = False,
    only_missing: bool = False,
    progress: bool = True,
    on_record=None,
) -> list[Record]:
    """Run every planned run; each record is stored as soon as it exists, then `on_record` is called."""
    _, device = init_from_env(device)  # under torchrun: join the process group, one device per rank
    selection = {"models": models, "seeds": seeds, "epochs": epochs, "data_root": data_root}
    pending, datasets = runs_to_train(
        suite, store=store, resume=resume, only_missing=only_missing, build_device=device, **selection
    )
    records = []
    for spec in pending:
        record = run_one(
            spec,
            datasets[spec.dataset],
            device=device,
            work_dir=work_dir,
            resume=resume,
            progress=progress,
            submitter=default_submitter(),
        )
        if record is None:  # not rank 0: rank 0 stores and reports
            continue
        store.append([record])
        records.append(record)
        if on_record is not None:
            on_record(record)
    return records
