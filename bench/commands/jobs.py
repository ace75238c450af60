"""`bench run --jobs N`: N runs of a suite's matrix at once, as separate processes on one machine.

Small models leave a device idle most of the time; several runs side by side keep it busy. The parent
process checks the plan exactly as `run_suite` does (models, data, builds, `--resume`), then hands each
pending run to a pool of N worker processes (`concurrent.futures.ProcessPoolExecutor`, spawn context:
no forked torch state). A worker trains, evaluates and measures its run with `runner.run_one`, the same
function the sequential path calls, and returns the record; the parent alone appends it to the store
(one writer, so the store's order is the order runs finish) and reports it. Each record is the one a
sequential run gives: same config hash, and the same metrics as a sequential run with the same threads.

Where the workers run:
- CPU: each worker sets `torch.set_num_threads(threads_per_job)`, by default `max(1, cores // N)`, so N
  workers share the cores instead of oversubscribing them.
- CUDA: worker k sees one GPU, `CUDA_VISIBLE_DEVICES = gpus[k % len(gpus)]` (the GPUs this process may
  see: `$CUDA_VISIBLE_DEVICES`, else every GPU torch counts), and trains on its `cuda`. N up to the
  number of GPUs gives one run per GPU; a larger N shares GPUs round-robin.

Progress: the workers draw no progress bars; the parent prints one line per finished run. Latency is
measured by each worker while the other workers run, so under `--jobs` > 1 it shares the device: time
models with `--jobs 1` or `bench measure` when latency matters. `--jobs` cannot be combined with
torchrun (one run already spans every rank).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

import torch

from bench.commands.runner import RunSpec, default_submitter, run_one, runs_to_train
from bench.data import load_dataset
from bench.engine.config import PlanError, Suite
from bench.engine.distributed import launched_by_torchrun
from bench.store.results import ResultStore
from bench.store.schema import Record


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(jobs: int) -> int:
    return max(1, cores() // jobs)


def visible_gpus() -> list[str]:
    """The GPUs this process may see, as `CUDA_VISIBLE_DEVICES` entries."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [g.strip() for g in given.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def check_jobs(jobs: int, threads_per_job: int | None) -> None:
    """One line for what `--jobs` / `--threads-per-job` cannot do."""
    if jobs < 1:
        raise PlanError(f"--jobs must be at least 1, not {jobs}")
    if threads_per_job is not None and threads_per_job < 1:
        raise PlanError(f"--threads-per-job must be at least 1, not {threads_per_job}")
    if jobs > 1 and launched_by_torchrun():
        raise PlanError(
            f"--jobs {jobs} cannot run under torchrun (each run already spans every rank); "
            "use --jobs 1 with torchrun, or --jobs without it"
        )


# --- the worker process ----------------------------------------------------------------------------

_WORKER: dict = {}  # this worker's number and its datasets, loaded once


def _start_worker(slots, threads: int, gpus: list[str], plugin_files: list[str]) -> None:
    slot = slots.get()
    if gpus:  # before anything touches CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    torch.set_num_threads(threads)
    if plugin_files:  # models registered by --plugin files exist in the parent only: register them here
        from bench.plugins import load_files

        load_files(plugin_files)
    _WORKER.update(slot=slot, datasets={})


def _train_one(spec: RunSpec, data_root: str | None, run_options: dict) -> tuple[int, float, Record | None]:
    """One run in this worker, as `run_suite` trains it (`run_options`: run_one's keywords)."""
    datasets = _WORKER["datasets"]
    if spec.dataset not in datasets:
        datasets[spec.dataset] = load_dataset(spec.dataset, data_root)
    t0 = time.perf_counter()
    record = run_one(spec, datasets[spec.dataset], **run_options)
    return _WORKER["slot"], time.perf_counter() - t0, record


# --- the parent ------------------------------------------------------------------------------------


def run_suite_jobs(
    suite: Suite,
    *,
    jobs: int,
    store: ResultStore,
    threads_per_job: int | None = None,
    plugin_files: list[str] | None = None,
    device: str = "cpu",
    work_dir: Path = Path("runs"),
    resume: bool = False,
    only_missing: bool = False,
    progress: bool = True,
    on_record: Callable[[Record], None] | None = None,
    **selection,
) -> list[Record]:
    """`run_suite` with `jobs` runs at once in worker processes; each record is stored (by this process)
    as soon as its run finishes, with a line `[i/n] <run>: finished in <s> (worker k)`, then `on_record`
    is called. `selection` is `run_suite`'s (models, seeds, epochs, data_root); `progress` is accepted for
    its signature: workers draw no progress bars."""
    check_jobs(jobs, threads_per_job)
    build_device = "cpu" if device.startswith("cuda") else device  # no CUDA in the parent
    pending, datasets = runs_to_train(
        suite, **selection, store=store, resume=resume, only_missing=only_missing, build_device=build_device
    )
    if not pending:
        return []
    threads = threads_per_job or default_threads(jobs)
    gpus = visible_gpus() if device.startswith("cuda") else []
    if device.startswith("cuda") and not gpus:
        raise PlanError("--device cuda: no GPU is visible to this process")
    workers = min(jobs, len(pending))
    where = f"GPU(s) {','.join(gpus[:workers])}" if gpus else f"{threads} thread(s) each on {cores()} core(s)"
    print(f"{len(pending)} run(s) on {workers} worker process(es), {where}", flush=True)
    ctx = mp.get_context("spawn")
    slots = ctx.Queue()
    for slot in range(workers):
        slots.put(slot)
    submitter = default_submitter()
    worker_device = "cuda" if gpus else device  # a worker sees its one GPU as cuda:0
    run_options = dict(
        device=worker_device, work_dir=work_dir, resume=resume, progress=False, submitter=submitter
    )
    records: list[Record] = []
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_start_worker,
        initargs=(slots, threads, gpus, list(plugin_files or [])),
    ) as pool:
        running: dict[Future, RunSpec] = {
            pool.submit(_train_one, spec, selection.get("data_root"), run_options): spec for spec in pending
        }
        error: BaseException | None = None
        try:
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: pending.index(running[f])):
                    spec = running.pop(future)
                    if future.cancelled():
                        continue
                    if future.exception() is not None:  # the suite ends: no run starts, those running finish
                        error = error or future.exception()
                        for other in running:
                            other.cancel()
                        continue
                    slot, seconds, record = future.result()
                    print(
                        f"[{len(records) + 1}/{len(pending)}] {spec.name}: finished in {seconds:.0f} s "
                        f"(worker {slot})",
                        flush=True,
                    )
                    store.append([record])
                    records.append(record)
                    if on_record is not None:
                        on_record(record)
        except BaseException:  # Ctrl-C: no run starts; the workers got the signal too
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    if error is not None:
        raise error
    return records
