"""`bench status --suite S`: the state of every run of a suite's matrix, and the book of launched jobs.

A run (one cell: model, dataset, seed, configuration) is
- done: a measured or verified record in the store, or in the incoming folder (waiting for `bench collect`);
- running / pending: its last launched job runs, or waits in the Slurm queue (or is requeued);
- failed: a failed record (with its failure reason), or its last job ended without a record (with the
  error, or the Slurm state, and the path of the job's log);
- not started: none of these.

The launcher (`bench run --launcher`) notes each job it submits in its job book, one small file per run,
`<work dir>/submitit/<suite>/jobs/<run name>.json` (the cluster, the job id and submitit's folder), so
`bench status` on any machine that sees the work dir asks submitit for that job's state: Slurm's
through `sacct`, a local job's from its result file or its process.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import submitit

from bench.commands.runner import RunSpec, plan
from bench.engine.config import Suite, config_hash
from bench.store.incoming import DONE_STATUSES, read_incoming, run_name
from bench.store.results import ResultStore, write_atomic
from bench.store.schema import Record

STATES = ("done", "failed", "running", "pending", "not started")
SLURM_WAITING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "RESIZING", "SUSPENDED"}
SLURM_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}


def submitit_dir(work_dir: Path, suite: str) -> Path:
    """Where submitit keeps a suite's jobs (pickles, logs, results): under the work dir, which cluster jobs
    share with the launching machine (as they share the checkpoints)."""
    return Path(work_dir) / "submitit" / suite


def spec_run_name(spec: RunSpec) -> str:
    return run_name(spec.model, spec.dataset, spec.seed, config_hash(spec.config))


# --- the job book ----------------------------------------------------------------------------------


def note_job(work_dir: Path, suite: str, spec: RunSpec, cluster: str, job: submitit.Job) -> None:
    """Write down the job that now runs `spec` (replacing the run's earlier job)."""
    folder = submitit_dir(work_dir, suite) / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"cluster": cluster, "job_id": job.job_id, "folder": str(Path(job.paths.folder).resolve())}
    write_atomic(folder / f"{spec_run_name(spec)}.json", json.dumps(entry) + "\n")


def noted_job(work_dir: Path, suite: str, name: str) -> dict | None:
    path = submitit_dir(work_dir, suite) / "jobs" / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class JobState:
    state: str  # running, pending, finished, failed
    reason: str = ""
    log: Path | None = None


def job_of(entry: dict) -> submitit.Job:
    kind = submitit.SlurmJob if entry["cluster"] == "slurm" else submitit.LocalJob
    return kind(folder=entry["folder"], job_id=str(entry["job_id"]))


def job_state(entry: dict) -> JobState:
    """What the job of a job-book entry is doing, as submitit sees it."""
    return job_states({"job": entry})["job"]


def job_states(entries: dict[str, dict]) -> dict[str, JobState]:
    """`job_state` of many entries: every Slurm job is registered with submitit's watcher first, so one
    `sacct` call answers for all of them."""
    jobs = {name: job_of(entry) for name, entry in entries.items()}
    return {name: _state(entries[name]["cluster"], job) for name, job in jobs.items()}


def _state(cluster: str, job: submitit.Job) -> JobState:
    log = Path(job.paths.stderr)
    if cluster == "slurm":
        state = (job.watcher.get_state(job.job_id, mode="standard") or "UNKNOWN").split()[0]
        if state == "UNKNOWN":  # sacct does not know it (yet): taken as waiting, never submitted twice
            return JobState("pending", f"Slurm job {job.job_id}: sacct gives no state yet")
        if state in SLURM_WAITING:
            return JobState("pending", f"Slurm job {job.job_id} {state}")
        if state in SLURM_RUNNING:
            return JobState("running", f"Slurm job {job.job_id}", log)
        if state != "COMPLETED" and not job.paths.result_pickle.exists():
            return JobState("failed", f"Slurm job {job.job_id} ended {state}", log)
    elif not job.paths.result_pickle.exists():  # a local job: its controller's process id is its job id
        if _alive(int(job.job_id)):
            return JobState("running", f"local job {job.job_id}", log)
        return JobState("failed", f"local job {job.job_id} ended without a result (killed?)", log)
    error = job_error(job)
    return JobState("failed", error, log) if error else JobState("finished", "", log)


def job_error(job: submitit.Job) -> str | None:
    """The last line of the error a finished job raised (from submitit's result file), else None."""
    try:
        error = job.exception()
    except Exception as e:  # noqa: BLE001 - a result file submitit cannot read is an error too
        return f"{type(e).__name__}: {e}"
    if error is None:
        return None
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    trace = [line for line in lines if not line.startswith(("-----", "You can check", "or at paths", "- /"))]
    return trace[-1] if trace else lines[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the matrix ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    spec: RunSpec
    state: str
    detail: str = ""
    log: Path | None = None


def suite_matrix(
    suite: Suite,
    store: ResultStore,
    work_dir: Path,
    models: list[str] | None = None,
    seeds: list[int] | None = None,
    epochs: int | None = None,
) -> list[Cell]:
    """The state of every planned run of `suite` (the same selection `bench run` takes)."""
    by_key: dict[str, list[tuple[str, Record]]] = {}
    waiting, _ = read_incoming(store, suite.name)
    stored = [r for r in store.read(suite.name) if r.suite == suite.name]
    for where, records in (("store", stored), ("incoming", waiting)):
        for r in records:
            key = run_name(r.model, r.dataset, r.seed, r.config_hash)
            by_key.setdefault(key, []).append((where, r))
    specs = plan(suite, models, seeds, epochs)
    entries = {name: noted_job(work_dir, suite.name, name) for name in map(spec_run_name, specs)}
    jobs = job_states({name: entry for name, entry in entries.items() if entry})
    return [
        _cell(spec, by_key.get(name, []), jobs.get(name)) for spec, name in zip(specs, entries, strict=True)
    ]


def _cell(spec: RunSpec, records: list[tuple[str, Record]], job: JobState | None) -> Cell:
    for where, r in records:
        if r.status in DONE_STATUSES:
            if where == "store":
                return Cell(spec, "done", f"record {r.record_id}, store version {r.store_version}")
            return Cell(spec, "done", "in the incoming folder; `bench collect` stores it")
    if job is not None and job.state in ("running", "pending"):
        return Cell(spec, job.state, job.reason, job.log)
    log = job.log if job else None
    failed = [r for _, r in records if r.status == "failed"]
    if failed and (job is None or job.state == "finished"):
        return Cell(spec, "failed", failed[-1].failure_reason or "", log)
    if job is not None and job.state == "failed":
        return Cell(spec, "failed", job.reason, log)
    if job is not None:  # finished without an error, yet no record anywhere
        return Cell(spec, "failed", "its job finished but left no record (see its log)", log)
    return Cell(spec, "not started")


def format_matrix(cells: list[Cell]) -> str:
    width = max((len(c.spec.name) for c in cells), default=0)
    lines = []
    for cell in cells:
        line = f"{cell.spec.name:<{width}}  {cell.state:<11}"
        if cell.detail:
            line += f"  {cell.detail}"
        if cell.log is not None and cell.state in ("failed", "running"):
            line += f"  (log: {cell.log})"
        lines.append(line.rstrip())
    counts = {state: sum(c.state == state for c in cells) for state in STATES}
    lines.append(", ".join(f"{n} {state}" for state, n in counts.items()) + f" (of {len(cells)} runs)")
    return "\n".join(lines)
