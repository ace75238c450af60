"""The suite matrix through submitit (`bench run --launcher local`), the incoming folder and `bench collect`,
`bench status`, `--only-missing`, and the Slurm dry run. Jobs train a tiny suite on synthetic data."""

import datetime as dt
import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import submitit

from bench.cli import main
from bench.commands.runner import plan
from bench.commands.status import spec_run_name
from bench.data.synthetic import write_fashion_mnist
from bench.engine.config import config_hash, load_suite
from bench.store.incoming import incoming_dir, read_incoming, write_incoming
from bench.store.results import ResultStore
from tests.helpers import run_args, run_workers, write_suite
from tests.test_results import make_record

SEEDS = (0, 1)
TRAIN_EXTRA = "\n[overrides.resnet20]\ncheckpoint_every_steps = 1\n"  # a checkpoint after every step


def _suite(folder: Path, seeds=SEEDS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_suite(folder, models=("resnet20",), seeds=seeds, epochs=2, extra=TRAIN_EXTRA)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("fashion"), n_train=256, n_test=128)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, data_root):
    """The records of a plain `bench run` of the tiny suite, one run after the other."""
    import torch

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("sequential")
    assert main(run_args(_suite(tmp), tmp, data_root)) == 0
    return {r.seed: r for r in ResultStore(tmp / "results").read("tiny")}


def _same_run(a, b) -> tuple:
    return (a.config_hash, a.metrics.top1_pct, a.metrics.eval_loss, a.history) == (
        b.config_hash,
        b.metrics.top1_pct,
        b.metrics.eval_loss,
        b.history,
    )


def _launch(suite, tmp_path, data_root, *extra) -> int:
    return main(run_args(suite, tmp_path, data_root, "--launcher", "local", "--threads-per-job", "1", *extra))


def _log_times(log: Path, event: str) -> list[dt.datetime]:
    stamps = re.findall(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)\) - " + event, log.read_text())
    return [dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in stamps]


def test_two_concurrent_local_jobs_store_the_records_of_a_sequential_run(
    tmp_path, data_root, sequential, capsys
):
    suite = _suite(tmp_path)
    assert _launch(suite, tmp_path, data_root, "--array-parallelism", "2") == 0
    out = capsys.readouterr().out
    assert "[2/2] " in out and "collected 2 record(s) as store version 1" in out
    records = ResultStore(tmp_path / "results").read("tiny")
    assert sorted(r.seed for r in records) == list(SEEDS) and {r.store_version for r in records} == {1}
    assert all(r.status == "measured" and _same_run(r, sequential[r.seed]) for r in records)
    assert not list(incoming_dir(ResultStore(tmp_path / "results"), "tiny").glob("*.json"))
    logs = sorted((tmp_path / "runs" / "submitit" / "tiny").glob("*_0_log.out"))
    starts = [_log_times(log, "Starting with")[0] for log in logs]
    ends = [_log_times(log, "Job completed")[-1] for log in logs]
    assert len(logs) == 2 and max(starts) < min(ends)  # the two jobs ran at the same time
    assert main(["status", "--suite", str(suite), "--out", str(tmp_path / "results")]) == 0
    assert "2 done, 0 failed, 0 running, 0 pending, 0 not started" in capsys.readouterr().out


def _preempt_at_first_checkpoint(work_dir: Path, sent: list) -> None:
    """Send the job's task submitit's pre-emption signal once the run has written a checkpoint."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        book = list((work_dir / "submitit" / "tiny" / "jobs").glob("*.json"))
        if book and list((work_dir / "tiny").glob("*/last.pt")):
            controller = int(json.loads(book[0].read_text())["job_id"])
            task = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()[0]
            os.kill(int(task), signal.SIGUSR2)
            sent.append(int(task))
            return
        time.sleep(0.02)


def test_a_preempted_job_is_requeued_and_ends_with_the_metrics_of_an_uninterrupted_run(
    tmp_path, data_root, sequential, capsys
):
    suite = _suite(tmp_path)
    sent: list[int] = []
    watcher = threading.Thread(target=_preempt_at_first_checkpoint, args=(tmp_path / "runs", sent))
    watcher.start()
    code = _launch(suite, tmp_path, data_root, "--seeds", "0")
    watcher.join()
    assert code == 0 and sent
    [log] = (tmp_path / "runs" / "submitit" / "tiny").glob("*_0_log.out")
    text = log.read_text()
    assert "this job is preempted" in text and "Requeued job" in text, text
    before, after = text.split("Requeued job")
    assert "top-1" not in before  # pre-empted mid-run: the first attempt stored nothing
    assert "continuing from its last checkpoint" in after and "top-1" in after
    [record] = ResultStore(tmp_path / "results").read("tiny")
    assert _same_run(record, sequential[0])


def test_a_run_of_two_tasks_joins_one_process_group_through_submitit(tmp_path, data_root, sequential):
    """The path a multi-node run takes (one task per GPU, here two CPU tasks over gloo): submitit's
    distributed environment in place of torchrun's; rank 0 alone writes the record, with the same fields."""
    from bench.commands.launch import RunJob

    suite = _suite(tmp_path)
    job = RunJob(
        str(suite),
        "resnet20",
        "fashion_mnist",
        0,
        1,
        str(tmp_path / "results"),
        str(tmp_path / "runs"),
        str(data_root),
        "cpu",
        False,
        1,
        (),
        "test",
    )
    executor = submitit.LocalExecutor(tmp_path / "runs" / "submitit")
    executor.update_parameters(tasks_per_node=2, timeout_min=5)
    incoming, other_rank = executor.submit(job).results()
    assert Path(incoming).is_file() and other_rank is None
    [record] = read_incoming(ResultStore(tmp_path / "results"), "tiny")[0]
    assert (record.training.world_size, record.training.backend) == (2, "gloo")
    assert record.training.batch_size_per_rank * 2 == record.training.global_batch_size
    assert record.model_dump().keys() == sequential[0].model_dump().keys()


def _tiny_record(seed: int, suite="tiny", **changes):
    return make_record(seed=seed, suite=suite, **changes)


def test_collect_is_idempotent_and_sets_malformed_files_aside(tmp_path, capsys):
    store = ResultStore(tmp_path / "results")
    for seed in (2, 0, 1):
        write_incoming(store, _tiny_record(seed))
    folder = incoming_dir(store, "tiny")
    (folder / "garbage.json").write_text("{not json")
    (folder / "bad-seed.json").write_text(
        json.dumps(json.loads(_tiny_record(7).model_dump_json()) | {"seed": "x"})
    )
    (folder / "other-suite.json").write_text(_tiny_record(8, suite="cifar").model_dump_json())
    (folder / ".x.json.123.tmp").write_text("a job still writing")  # a temporary file: not collected
    args = ["collect", "--out", str(tmp_path / "results"), "--leaderboard-dir", str(tmp_path / "lb")]
    assert main(args) == 1
    out = capsys.readouterr().out
    rejected = store.runs / "rejected" / "tiny"
    for name in ("garbage", "bad-seed", "other-suite"):
        assert re.search(rf"set aside {re.escape(str(rejected))}/{name}\.\d+\.json: ", out), out
    assert "of suite 'cifar' in the incoming folder of suite 'tiny'" in out
    assert len(list(rejected.glob("*.reason.txt"))) == 3
    assert "collected 3 record(s) as store version 1" in out
    assert [r.seed for r in store.read("tiny")] == [0, 1, 2]  # in the order of the files' names
    assert main(args) == 0 and "nothing to collect" in capsys.readouterr().out
    assert [r.seed for r in store.read()] == [0, 1, 2] and store.version() == 1
    # a collector stopped after appending, before deleting: its claimed file is not appended again
    claimed = folder / "claimed"
    claimed.mkdir(exist_ok=True)
    (claimed / "left.json").write_text(_tiny_record(1).model_dump_json())
    assert main(args) == 0 and "1 incoming record(s) were already stored" in capsys.readouterr().out
    assert len(store.read()) == 3 and not list(claimed.glob("*.json"))
    # bench leaderboard collects first
    write_incoming(store, _tiny_record(5))
    assert main(["leaderboard", "--suite", "tiny", *args[1:]]) == 0
    assert [r.seed for r in store.read()] == [0, 1, 2, 5]


def _write_and_collect(root: str, worker: int, per_worker: int) -> None:
    store = ResultStore(root)
    for i in range(per_worker):
        write_incoming(store, _tiny_record(worker * 100 + i))
        from bench.store.incoming import collect

        collect(store)


def test_collectors_at_once_lose_nothing_and_duplicate_nothing(tmp_path):
    root = str(tmp_path / "results")
    run_workers(_write_and_collect, root, n_workers=4, per_worker=6, start="fork", timeout_s=120)
    from bench.store.incoming import collect

    collect(ResultStore(root))  # what the last writer left, if it wrote after every collector looked
    seeds = [r.seed for r in ResultStore(root).read()]
    assert sorted(seeds) == sorted(w * 100 + i for w in range(4) for i in range(6))
    assert not list(incoming_dir(ResultStore(root), "tiny").rglob("*.json"))


def test_status_shows_each_state_of_a_run(tmp_path, monkeypatch, capsys):
    suite_path = _suite(tmp_path, seeds=(0, 1, 2, 3, 4, 5))
    specs = {s.seed: s for s in plan(load_suite(str(suite_path)))}
    store = ResultStore(tmp_path / "results")

    def record(seed, **changes):
        return _tiny_record(seed, config_hash=config_hash(specs[seed].config), **changes)

    store.append([record(0)])  # done
    write_incoming(store, record(1, status="failed", metrics=None, failure_reason="loss is nan at step 3"))
    book = tmp_path / "runs" / "submitit" / "tiny" / "jobs"
    book.mkdir(parents=True)
    failing = submitit.LocalExecutor(tmp_path / "runs" / "submitit" / "tiny")
    job = failing.submit(int, "not a number")  # a job that raises
    job.wait()
    entries = {
        2: {"cluster": "local", "job_id": job.job_id},  # failed: its error and its log
        3: {"cluster": "local", "job_id": str(os.getpid())},  # running: its process is alive
        4: {"cluster": "slurm", "job_id": "4242_4"},  # pending in the Slurm queue
    }
    for seed, entry in entries.items():
        entry["folder"] = str(tmp_path / "runs" / "submitit" / "tiny")
        (book / f"{spec_run_name(specs[seed])}.json").write_text(json.dumps(entry))
    sacct = {"4242_4": "PENDING"}  # what Slurm's sacct says of the job
    monkeypatch.setattr(submitit.SlurmJob.watcher, "get_state", lambda job_id, mode: sacct[job_id])
    args = ["status", "--suite", str(suite_path), "--out", str(tmp_path / "results")]
    assert main([*args, "--work-dir", str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_seed = {int(re.search(r"seed (\d+)", line).group(1)): line for line in lines[:-1]}
    assert re.search(r"seed 0\s+done\s+record \w{16}, store version 1", by_seed[0])
    assert re.search(r"seed 1\s+failed\s+loss is nan at step 3", by_seed[1])
    log = tmp_path / "runs" / "submitit" / "tiny" / f"{job.job_id}_0_log.err"
    assert (
        re.search(r"seed 2\s+failed\s+ValueError: invalid literal", by_seed[2])
        and f"(log: {log})" in by_seed[2]
    )
    assert re.search(r"seed 3\s+running\s+local job", by_seed[3])
    assert re.search(r"seed 4\s+pending\s+Slurm job 4242_4 PENDING", by_seed[4])
    assert re.search(r"seed 5\s+not started$", by_seed[5])
    assert lines[-1] == "1 done, 2 failed, 1 running, 1 pending, 1 not started (of 6 runs)"


def test_only_missing_runs_nothing_that_is_done(tmp_path, fashion_root, no_system_data, capsys):
    suite_path = write_suite(tmp_path, seeds=(0, 1))
    specs = {s.seed: s for s in plan(load_suite(str(suite_path)))}
    store = ResultStore(tmp_path / "results")
    store.append([_tiny_record(0, config_hash=config_hash(specs[0].config))])
    write_incoming(store, _tiny_record(1, config_hash=config_hash(specs[1].config)))
    assert main(run_args(suite_path, tmp_path, fashion_root, "--only-missing")) == 0
    out = capsys.readouterr().out
    assert "seed 0: done (record" in out and "seed 1: done (its record waits in" in out
    assert "0 run(s) stored" in out and len(store.read()) == 1


def test_the_dry_run_prints_the_job_array_and_the_sbatch_parameters(
    tmp_path, fashion_root, no_system_data, capsys
):
    suite = write_suite(tmp_path, seeds=(0, 1, 2, 3, 4))
    cluster = ["--launcher", "slurm", "--dry-run", "--partition", "gpu", "--device", "cuda"]
    cluster += ["--gpus-per-run", "8", "--nodes-per-run", "2", "--time", "600", "--array-parallelism", "4"]
    cluster += ["--sbatch", "account=proj", "--sbatch", "cpus-per-task=10"]
    assert main(run_args(suite, tmp_path, fashion_root, *cluster)) == 0
    out = capsys.readouterr().out
    assert "job array bench-tiny: 5 job(s), one per run (slurm)" in out
    assert "  [4] resnet20 · fashion_mnist · seed 4" in out
    folder = tmp_path / "runs" / "submitit" / "tiny"
    for line in (
        "--array=0-4%4",
        "--partition=gpu",
        "--nodes=2",
        "--ntasks-per-node=8",
        "--gpus-per-node=8",
        "--time=600",
        "--job-name=bench-tiny",
        "--account=proj",
        "--cpus-per-task=10",
        "--signal=USR2@90",
        f"--output={folder}/%A_%a_0_log.out",
    ):
        assert f"  #SBATCH {line}\n" in out, line
    assert "  additional_parameters = {'account': 'proj', 'cpus-per-task': '10'}" in out
    assert (
        not list(folder.glob("*.pkl")) and not (tmp_path / "results" / "runs").exists()
    )  # nothing submitted


@pytest.mark.parametrize(
    "extra,expected",
    [
        (["--launcher", "slurm", "--sbatch", "account"], "--sbatch 'account': give KEY=VALUE"),
        (["--dry-run"], "--dry-run shows what a launcher would submit: add --launcher slurm"),
        (
            ["--launcher", "local", "--gpus-per-run", "2"],
            "--gpus-per-run 2 trains on GPUs: add --device cuda",
        ),
        (["--launcher", "local", "--no-wait"], "--no-wait is for --launcher slurm"),
        (["--launcher", "slurm"], "--launcher slurm: there is no Slurm here (no `srun`)"),
    ],
)
def test_cluster_options_a_run_cannot_take_give_one_line(
    extra, expected, tmp_path, fashion_root, no_system_data, monkeypatch, capsys
):
    monkeypatch.setattr(
        submitit.SlurmExecutor, "affinity", classmethod(lambda cls: -1)
    )  # no Slurm, even on one
    suite = write_suite(tmp_path)
    assert main(run_args(suite, tmp_path, fashion_root, *extra)) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err
