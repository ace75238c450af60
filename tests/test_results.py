"""The append-only store: validation on write and read, versions, atomic appends under a lock."""

import json
import multiprocessing as mp
from pathlib import Path

import pytest
from pydantic import ValidationError

from bench.results import ResultStore, StoreError
from bench.schema import Record

REPO = Path(__file__).resolve().parent.parent


def make_record(seed=0, suite="tiny", top1=50.0, **changes) -> Record:
    body = {
        "schema_version": 1, "suite": suite, "suite_version": 1, "model": "resnet20", "model_family": "resnet_cifar",
        "train_config": {"epochs": 1}, "config_hash": "a" * 64, "dataset": "fashion_mnist",
        "data": {"eval_digest": "b" * 64, "train_size": 10, "eval_size": 10, "input_shape": [1, 28, 28], "source": "x"},
        "seed": seed, "status": "measured",
        "metrics": {"top1_pct": top1, "top5_pct": 90.0, "eval_loss": 1.0, "params": 10, "static_macs": 100,
                    "macs_counter": "test", "train_time_s": 1.0, "train_images_per_s": 10.0},
        "environment": {"python": "3.11", "torch": "2", "cuda": None, "cudnn": None, "device": "cpu",
                        "device_name": "cpu", "num_threads": 2, "platform": "linux", "channelbench": "0",
                        "commit": None, "dirty": None},
        "submitter": "test", "created_at": "2026-01-01T00:00:00+00:00",
    }  # fmt: skip
    body.update(changes)
    return Record.model_validate(body)


def test_append_assigns_versions_and_ids(tmp_path):
    store = ResultStore(tmp_path)
    assert store.append([make_record(0), make_record(1)]) == 1
    assert store.append([make_record(2)]) == 2
    records = store.read("tiny")
    assert [r.store_version for r in records] == [1, 1, 2]
    assert len({r.record_id for r in records}) == 3 and all(len(r.record_id) == 16 for r in records)
    assert [r.seed for r in store.read(at=1)] == [0, 1]


def test_records_are_validated_on_write():
    with pytest.raises(ValidationError):
        make_record(top1=float("nan"))
    with pytest.raises(ValidationError):
        make_record(top1=101.0)
    with pytest.raises(ValidationError, match="failure_reason"):
        make_record(status="failed")


def test_a_corrupt_line_is_reported_with_file_and_line(tmp_path):
    store = ResultStore(tmp_path)
    store.append([make_record()])
    with open(store.path("tiny"), "a") as f:
        f.write('{"schema_version": 1}\n')
    with pytest.raises(StoreError, match=r"tiny.jsonl:2 is not a valid record"):
        store.read()


def _append_many(root: str, worker: int, n: int) -> None:
    store = ResultStore(root)
    for i in range(n):
        store.append([make_record(seed=worker * 1000 + i)])


def test_two_processes_appending_at_once_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, 15)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = ResultStore(tmp_path).read()
    assert sorted(r.seed for r in records) == sorted([w * 1000 + i for w in range(2) for i in range(15)])
    assert sorted(r.store_version for r in records) == list(range(1, 31))
    lines = ResultStore(tmp_path).path("tiny").read_text().splitlines()
    assert all(json.loads(line)["schema_version"] == 1 for line in lines)


def test_committed_store_validates():
    ResultStore(REPO / "results").read()
