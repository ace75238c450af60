"""`bench run --launcher slurm|local`: each run of a suite's matrix as a submitit job.

The launcher checks the plan as `bench run` does (`runner.runs_to_train`: models, data, builds,
`--resume`, `--only-missing`), then submits one job per (model, dataset, seed) run: on Slurm as one job
array (`SlurmExecutor`; `--array-parallelism` jobs at once), locally through submitit's `LocalExecutor`
(at most `--array-parallelism` at once). A job (`RunJob`) trains, evaluates and measures its run with
`runner.run_one`, the function `bench run` calls, and writes its record into the store's incoming folder
(`bench.store.incoming`); it never appends to the store. When every job has ended the launcher runs
`bench collect`, which appends the records as one store version.

A run over several GPUs or nodes is one job of `--nodes-per-run` nodes with one task per GPU: submitit's
`TorchDistributedEnvironment` sets the variables torchrun would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), so the run joins its process group as under torchrun, and writes the same record.

Pre-emption and time-out: Slurm signals the job before it stops it; submitit then calls
`RunJob.__submitit_checkpoint__`, which requeues the same run with `resume=True`: it continues from its
last checkpoint, bit for bit, as `bench run --resume` does (checkpoints are in the work dir, which the
jobs share). A requeued run whose record is already in the incoming folder ends at once.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import submitit
import torch
from submitit.slurm.slurm import _make_sbatch_string

from bench.commands.jobs import default_threads
from bench.commands.runner import (
    RunSpec,
    checkpoint_path,
    default_submitter,
    load_datasets,
    plan,
    run_one,
    runs_to_train,
    summary_line,
)
from bench.commands.status import job_state, note_job, noted_job, spec_run_name, submitit_dir
from bench.data import batch_per_rank
from bench.engine.config import PlanError, Suite, load_suite
from bench.engine.distributed import init_from_env, shutdown
from bench.store.incoming import (
    DONE_STATUSES,
    Collected,
    collect,
    incoming_dir,
    parse_incoming,
    write_incoming,
)
from bench.store.results import ResultStore

LAUNCHERS = ("slurm", "local")
MAX_REQUEUES = 20  # time-outs a run may be requeued after: each continues from the last checkpoint


@dataclass(frozen=True)
class ClusterOptions:
    """What `bench run --launcher` asks of the cluster, for every run."""

    launcher: str
    partition: str | None = None
    gpus_per_run: int = 0  # per node: one task (one rank) per GPU
    nodes_per_run: int = 1
    time_min: int = 60
    array_parallelism: int = 16
    sbatch: dict[str, str] = dataclasses.field(default_factory=dict)  # extra sbatch parameters
    wait: bool = True

    @property
    def tasks_per_node(self) -> int:
        return max(1, self.gpus_per_run)


def parse_sbatch(items: list[str] | None) -> dict[str, str]:
    """`--sbatch KEY=VALUE` (repeatable) as sbatch parameters, e.g. account=abc, qos=high, mem=64G."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PlanError(f"--sbatch {item!r}: give KEY=VALUE, e.g. --sbatch account=myproject")
        out[key.strip().lstrip("-")] = value.strip()
    return out


def check_options(options: ClusterOptions, device: str) -> None:
    """One line for what the cluster options cannot do."""
    if options.launcher not in LAUNCHERS:
        raise PlanError(f"--launcher {options.launcher!r}: choose one of {', '.join(LAUNCHERS)}")
    for flag, value in (
        ("--nodes-per-run", options.nodes_per_run),
        ("--time", options.time_min),
        ("--array-parallelism", options.array_parallelism),
    ):
        if value < 1:
            raise PlanError(f"{flag} must be at least 1, not {value}")
    if options.gpus_per_run < 0:
        raise PlanError(f"--gpus-per-run must be at least 0, not {options.gpus_per_run}")
    if options.gpus_per_run and not device.startswith("cuda"):
        raise PlanError(f"--gpus-per-run {options.gpus_per_run} trains on GPUs: add --device cuda")
    if options.launcher == "local" and not options.wait:
        raise PlanError("--no-wait is for --launcher slurm: local jobs run while `bench run` waits for them")
    if options.launcher == "local" and options.nodes_per_run > 1:
        raise PlanError(
            "--launcher local runs on this machine: --nodes-per-run must be 1 (use --launcher slurm)"
        )


def slurm_parameters(options: ClusterOptions, job_name: str) -> dict:
    """The parameters `SlurmExecutor.update_parameters` receives (submitit's names for sbatch's)."""
    parameters = {
        "job_name": job_name,
        "partition": options.partition,
        "time": options.time_min,
        "nodes": options.nodes_per_run,
        "ntasks_per_node": options.tasks_per_node,
        "gpus_per_node": options.gpus_per_run or None,
        "array_parallelism": options.array_parallelism,
        "additional_parameters": dict(options.sbatch),
    }
    return {k: v for k, v in parameters.items() if v not in (None, {})}


# --- one job ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunJob(submitit.helpers.Checkpointable):
    """One run of a suite as a submitit job: what `bench run` does for that run, its record written into
    the incoming folder. Paths are absolute: a job may start in another folder, on another machine."""

    suite: str  # a built-in suite's name or a suite file's path
    model: str
    dataset: str
    seed: int
    epochs: int | None
    store: str
    work_dir: str
    data_root: str | None
    device: str
    resume: bool
    threads: int | None
    plugin_files: tuple[str, ...]
    submitter: str

    @property
    def name(self) -> str:
        return f"{self.model} · {self.dataset} · seed {self.seed}"

    def spec(self) -> RunSpec:
        suite = load_suite(self.suite)
        return next(
            s for s in plan(suite, [self.model], [self.seed], self.epochs) if s.dataset == self.dataset
        )

    def __call__(self) -> str | None:
        """Train, evaluate and measure the run; returns the path of its incoming record (rank 0)."""
        if self.threads:
            torch.set_num_threads(self.threads)
        if submitit.JobEnvironment().num_tasks > 1:  # one task per GPU (and node): torchrun's variables
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        if self.plugin_files:
            from bench.plugins import load_files

            load_files(list(self.plugin_files))
        spec = self.spec()
        store = ResultStore(self.store)
        mine = incoming_dir(store, spec.suite.name) / f"{spec_run_name(spec)}.json"
        if self.resume and _finished(mine, store, spec.suite.name):
            print(f"{self.name}: its record is already in {mine}; nothing to run", flush=True)
            return str(mine)
        checkpoint = checkpoint_path(spec, Path(self.work_dir))
        if self.resume and checkpoint.is_file():
            print(f"{self.name}: continuing from its last checkpoint {checkpoint}", flush=True)
        _, device = init_from_env(self.device)
        data = load_datasets([spec.dataset], self.data_root)[spec.dataset]
        record = run_one(
            spec,
            data,
            device=device,
            work_dir=Path(self.work_dir),
            resume=self.resume,
            progress=False,
            submitter=self.submitter,
        )
        shutdown()
        if record is None:  # not rank 0
            return None
        print(summary_line(record), flush=True)
        return str(write_incoming(store, record))

    def __submitit_checkpoint__(self) -> submitit.helpers.DelayedSubmission:
        """Pre-empted or timed out: requeue the run to continue from its last checkpoint (`--resume`)."""
        return submitit.helpers.DelayedSubmission(dataclasses.replace(self, resume=True))


def _finished(path: Path, store: ResultStore, suite: str) -> bool:
    """Whether `path` holds a measured record of the run (a requeued job that had already written it)."""
    try:
        return path.is_file() and parse_incoming(path, store, suite).status in DONE_STATUSES
    except ValueError:  # not a valid record: the run runs again, and `bench collect` sets the file aside
        return False


# --- the launcher ----------------------------------------------------------------------------------


def launch_suite(
    suite: Suite,
    suite_arg: str,
    options: ClusterOptions,
    *,
    store: ResultStore,
    work_dir: Path,
    data_root: str | None = None,
    device: str = "cpu",
    models: list[str] | None = None,
    seeds: list[int] | None = None,
    epochs: int | None = None,
    resume: bool = False,
    only_missing: bool = False,
    threads_per_job: int | None = None,
    plugin_files: list[str] | None = None,
    dry_run: bool = False,
) -> tuple[int, Collected | None]:
    """Submit the suite's pending runs, one job each; unless `dry_run` or not `options.wait`, wait for
    them and collect their records. Returns the number of failed jobs and what was collected."""
    check_options(options, device)
    pending, _ = runs_to_train(
        suite,
        store=store,
        resume=resume,
        only_missing=only_missing,
        build_device="cpu",
        models=models,
        seeds=seeds,
        epochs=epochs,
        data_root=data_root,
    )
    if only_missing:
        pending = [spec for spec in pending if not _job_active(work_dir, spec)]
    ranks = options.nodes_per_run * options.tasks_per_node
    for spec in pending:  # what `bench run` checks under torchrun, for the ranks each job will have
        try:
            batch_per_rank(spec.train.batch_size, ranks)
        except ValueError as e:
            raise PlanError(f"{spec.name}: {e}") from None
    folder = submitit_dir(work_dir, suite.name).resolve()
    job_name = f"bench-{suite.name}"
    if options.launcher == "local" and threads_per_job is None and not device.startswith("cuda"):
        threads_per_job = default_threads(min(options.array_parallelism, max(1, len(pending))))
    absolute = Path(suite_arg).resolve() if Path(suite_arg).suffix == ".toml" else None
    jobs = [
        RunJob(
            suite=str(absolute or suite_arg),
            model=spec.model,
            dataset=spec.dataset,
            seed=spec.seed,
            epochs=epochs,
            store=str(store.root.resolve()),
            work_dir=str(Path(work_dir).resolve()),
            data_root=str(Path(data_root).resolve()) if data_root else None,
            device=device,
            resume=resume,
            threads=threads_per_job,
            plugin_files=tuple(str(Path(p).resolve()) for p in plugin_files or ()),
            submitter=default_submitter(),
        )
        for spec in pending
    ]
    if dry_run:
        print(describe_arrays(jobs, options, folder, job_name))
        return 0, None
    if not jobs:
        print("no run to submit", flush=True)
        return 0, collect(store, suite.name)
    if options.launcher == "slurm":
        submitted = _submit_slurm(jobs, pending, options, folder, job_name, work_dir, suite.name)
    else:
        submitted = []
    if not options.wait:
        print(
            f"{len(jobs)} job(s) submitted; `bench status --suite {suite_arg}` follows them, "
            "`bench collect` stores their records"
        )
        return 0, None
    failed = _wait(jobs, pending, submitted, options, folder, work_dir, suite.name)
    return failed, collect(store, suite.name)


def _job_active(work_dir: Path, spec: RunSpec) -> bool:
    """Whether the run's last job still runs or waits (`--only-missing` submits it no second time)."""
    entry = noted_job(work_dir, spec.suite.name, spec_run_name(spec))
    state = job_state(entry) if entry else None
    if state is not None and state.state in ("running", "pending"):
        print(f"{spec.name}: {state.state} ({state.reason}); --only-missing leaves it out", flush=True)
        return True
    return False


def describe_arrays(jobs: list[RunJob], options: ClusterOptions, folder: Path, job_name: str) -> str:
    """What a submission would send, without sending it: the job array, its runs and its sbatch lines."""
    if not jobs:
        return "no run to submit"
    lines = [f"job array {job_name}: {len(jobs)} job(s), one per run ({options.launcher})"]
    lines += [f"  [{i}] {job.name}" for i, job in enumerate(jobs)]
    if options.launcher == "slurm":
        parameters = slurm_parameters(options, job_name)
        lines.append("submitit SlurmExecutor parameters:")
        lines += [f"  {key} = {parameters[key]!r}" for key in sorted(parameters)]
        # submitit's own sbatch writer (it also checks the parameters): the lines a submission sends
        script = _make_sbatch_string(command="<job>", folder=folder, map_count=len(jobs), **parameters)
        lines.append("sbatch parameters:")
        lines += [f"  {line}" for line in script.splitlines() if line.startswith("#SBATCH")]
    else:
        lines.append(
            f"submitit LocalExecutor: timeout_min = {options.time_min}, tasks_per_node = "
            f"{options.tasks_per_node}, gpus_per_node = {options.gpus_per_run}, "
            f"{options.array_parallelism} at once"
        )
    return "\n".join(lines)


def _submit_slurm(jobs, pending, options, folder, job_name, work_dir, suite_name) -> list:
    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
    except RuntimeError:
        raise PlanError(
            "--launcher slurm: there is no Slurm here (no `srun`); submit from a Slurm login node, "
            "or use --launcher local, or --dry-run to see what would be submitted"
        ) from None
    executor.update_parameters(**slurm_parameters(options, job_name))
    submitted = executor.submit_array(jobs)
    for spec, job in zip(pending, submitted, strict=True):
        note_job(work_dir, suite_name, spec, "slurm", job)
    print(
        f"{len(submitted)} job(s) submitted to Slurm as array {submitted[0].job_id.split('_')[0]}", flush=True
    )
    return submitted


def _local_executor(options: ClusterOptions, folder: Path) -> submitit.LocalExecutor:
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
    executor.update_parameters(
        timeout_min=options.time_min,
        tasks_per_node=options.tasks_per_node,
        gpus_per_node=options.gpus_per_run,
    )
    return executor


def _wait(jobs, pending, submitted, options, folder, work_dir, suite_name, poll_s: float = 0.5) -> int:
    """Until every job has ended (local: starting at most `array_parallelism` at once), a line for each
    as it ends; returns how many failed."""
    queue = list(zip(pending, jobs, strict=True)) if not submitted else []
    running = list(zip(pending, submitted, strict=True)) if submitted else []
    executor = _local_executor(options, folder) if queue else None
    ended = failed = 0
    while queue or running:
        while queue and len(running) < options.array_parallelism:
            spec, job = queue.pop(0)
            started = executor.submit(job)
            note_job(work_dir, suite_name, spec, "local", started)
            running.append((spec, started))
        finished = [(spec, job) for spec, job in running if job.done()]
        if not finished:
            time.sleep(poll_s if not submitted else 30)
            continue
        for spec, job in finished:
            running.remove((spec, job))
            ended += 1
            entry = {"cluster": options.launcher, "job_id": job.job_id, "folder": str(folder)}
            state = job_state(entry)
            if state.state == "failed":
                failed += 1
                print(
                    f"[{ended}/{len(jobs)}] FAILED {spec.name}: {state.reason} (log: {state.log})", flush=True
                )
            else:
                print(f"[{ended}/{len(jobs)}] {spec.name}: finished (job {job.job_id})", flush=True)
    return failed
