"""`bench run --jobs N`: several runs at once give the records one run at a time gives, each stored once."""

import pytest

from bench.cli import main
from bench.store.results import ResultStore
from tests.helpers import run_args, write_suite

MODELS, SEEDS = ("resnet20", "se_resnet20"), (0, 1)


def _run(tmp_path, fashion_root, *extra):
    tmp_path.mkdir(exist_ok=True)
    suite = write_suite(tmp_path, models=MODELS, seeds=SEEDS)
    assert main(run_args(suite, tmp_path, fashion_root, "--threads-per-job", "1", *extra)) == 0
    return ResultStore(tmp_path / "results").read("tiny")


def _cells(records):
    return {
        (r.model, r.seed): (r.config_hash, r.metrics.top1_pct, r.metrics.eval_loss, r.history)
        for r in records
    }


def test_jobs_2_stores_every_cell_once_with_the_records_of_jobs_1(
    tmp_path, fashion_root, no_system_data, capsys
):
    one = _run(tmp_path / "one", fashion_root)
    two = _run(tmp_path / "two", fashion_root, "--jobs", "2")
    out = capsys.readouterr().out
    assert "4 run(s) on 2 worker process(es), 1 thread(s) each" in out and "[4/4] " in out
    assert len(two) == 4 and len({(r.model, r.seed) for r in two}) == 4  # every cell, once
    assert sorted(r.store_version for r in two) == [1, 2, 3, 4]
    assert _cells(two) == _cells(one)  # same config hash, same top-1, loss and training history
    assert all(r.status == "measured" and r.environment.num_threads == 1 for r in two)
    assert (tmp_path / "two" / "lb" / "tiny.md").is_file()  # the leaderboard, written at the end
    # --resume with --jobs: every cell is stored, nothing runs again
    again = _run(tmp_path / "two", fashion_root, "--jobs", "2", "--resume")
    assert len(again) == 4 and "already finished" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra,expected",
    [
        (["--jobs", "0"], "--jobs must be at least 1, not 0"),
        (["--jobs", "2", "--threads-per-job", "0"], "--threads-per-job must be at least 1, not 0"),
    ],
)
def test_bad_jobs_give_one_line(extra, expected, tmp_path, fashion_root, no_system_data, capsys):
    suite = write_suite(tmp_path)
    assert main(run_args(suite, tmp_path, fashion_root, *extra)) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
    assert not (tmp_path / "results" / "runs" / "tiny.jsonl").exists()


def test_jobs_under_torchrun_is_refused_with_one_line(
    tmp_path, fashion_root, no_system_data, monkeypatch, capsys
):
    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(key, value)
    suite = write_suite(tmp_path)
    assert main(run_args(suite, tmp_path, fashion_root, "--jobs", "2")) == 2
    err = capsys.readouterr().err
    assert "--jobs 2 cannot run under torchrun" in err and err.count("\n") == 1
