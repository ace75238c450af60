"""The append-only store: validation on write and read, versions, atomic appends under a lock."""

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from bench.store.results import JOURNAL, ResultStore, StoreError, UnknownRecordError
from bench.store.schema import SCHEMA_VERSION, Record, TrainingRun, upgrade
from tests.helpers import run_workers

REPO = Path(__file__).resolve().parent.parent


TRAINING = TrainingRun.one_process(batch_size=64, lr=0.1).model_dump()


def record_body(seed=0, suite="tiny", top1=50.0, **changes) -> dict:
    body = {
        "schema_version": SCHEMA_VERSION,
        "suite": suite,
        "suite_version": 1,
        "model": "resnet20",
        "model_family": "resnet_cifar",
        "train_config": {"epochs": 1},
        "config_hash": "a" * 64,
        "dataset": "fashion_mnist",
        "data": {
            "eval_digest": "b" * 64,
            "train_size": 10,
            "eval_size": 10,
            "input_shape": [1, 28, 28],
            "source": "x",
        },
        "seed": seed,
        "status": "measured",
        "metrics": {
            "top1_pct": top1,
            "top5_pct": 90.0,
            "eval_loss": 1.0,
            "params": 10,
            "static_macs": 100,
            "macs_counter": "test",
            "train_time_s": 1.0,
            "train_images_per_s": 10.0,
        },
        "environment": {
            "python": "3.11",
            "torch": "2",
            "cuda": None,
            "cudnn": None,
            "device": "cpu",
            "device_name": "cpu",
            "num_threads": 2,
            "platform": "linux",
            "channelbench": "0",
            "commit": None,
            "dirty": None,
        },
        "submitter": "test",
        "created_at": "2026-01-01T00:00:00+00:00",
        "training": TRAINING,
    }
    body.update(changes)
    return body


def make_record(seed=0, suite="tiny", top1=50.0, **changes) -> Record:
    return Record.model_validate(record_body(seed, suite, top1, **changes))


def test_append_assigns_versions_and_ids(tmp_path):
    store = ResultStore(tmp_path)
    assert store.append([make_record(0), make_record(1)]) == 1
    assert store.append([make_record(2)]) == 2
    records = store.read("tiny")
    assert [r.store_version for r in records] == [1, 1, 2]
    assert len({r.record_id for r in records}) == 3 and all(len(r.record_id) == 16 for r in records)
    assert [r.seed for r in store.read(at=1)] == [0, 1]
    assert store.version() == 2


def test_records_are_validated_on_write():
    with pytest.raises(ValidationError):
        make_record(top1=float("nan"))
    with pytest.raises(ValidationError):
        make_record(top1=101.0)
    with pytest.raises(ValidationError, match="failure_reason"):
        make_record(status="failed")
    with pytest.raises(ValidationError, match="top-5 includes top-1"):
        make_record(top1=95.0)  # top5 is 90
    with pytest.raises(ValidationError, match="code_url"):
        make_record(status="submitted")
    with pytest.raises(ValidationError, match="http"):
        make_record(status="submitted", code_url="file:///etc/passwd")
    with pytest.raises(ValidationError, match="verification"):
        make_record(status="verified")
    with pytest.raises(ValidationError, match="ISO 8601"):
        make_record(created_at="yesterday")


def _older(version: int, **changes) -> dict:
    body = record_body(schema_version=version, store_version=1, record_id="c" * 16, **changes)
    del body["training"]  # a version-3 field
    return body


def test_older_records_are_still_read_and_upgrade_to_the_current_version(tmp_path):
    """Version 2 added `verification`, version 3 `training`; older lines read as they were written."""
    store = ResultStore(tmp_path)
    v1 = _older(1, status="submitted")  # no code_url in v1
    config = {"batch_size": 128, "lr": 0.1, "lr_scaling": "linear", "base_batch_size": 256}
    v2 = _older(2, seed=1, train_config=config)
    store.runs.mkdir(parents=True)
    store.path("tiny").write_text(json.dumps(v1) + "\n" + json.dumps(v2) + "\n")
    old1, old2 = store.read()
    assert (old1.schema_version, old1.status, old1.verification, old1.training) == (
        1,
        "submitted",
        None,
        None,
    )
    assert (old2.schema_version, old2.training) == (2, None)
    # a plain version-2 run: one process, full precision, the config's batch and scaled lr
    training = Record.model_validate(upgrade(v2)).training
    assert training.model_dump(include={"world_size", "global_batch_size", "lr", "amp_dtype"}) == {
        "world_size": 1,
        "global_batch_size": 128,
        "lr": 0.05,
        "amp_dtype": None,
    }
    # version 2 kept a distributed or mixed-precision run's facts in model_info["training"]
    ran = {
        "world_size": 2,
        "batch_size_per_rank": 32,
        "lr": 0.025,
        "amp_dtype": "float16",
        "channels_last": True,
        "sync_bn": True,
    }
    upgraded = upgrade(_older(2, model_info={"layout": "x", "training": ran}))
    assert upgraded["model_info"] == {"layout": "x"} and upgraded["schema_version"] == SCHEMA_VERSION == 4
    training = Record.model_validate(upgraded).training
    assert training.model_dump(include={"world_size", "global_batch_size", "grad_scaler", "sync_bn"}) == {
        "world_size": 2,
        "global_batch_size": 64,
        "grad_scaler": True,
        "sync_bn": True,
    }
    assert Record.model_validate(upgrade(v1) | {"code_url": "https://x.org"}).training.world_size == 1
    with pytest.raises(ValidationError, match="version-2 field"):
        make_record(
            schema_version=1,
            training=None,
            verification={"record_id": "d" * 16, "submitted": 1, "measured": 1, "tolerance": 1},
        )
    with pytest.raises(ValidationError, match="version-3 field"):
        make_record(schema_version=2)
    with pytest.raises(ValidationError, match="needs training"):
        make_record(training=None)
    with pytest.raises(ValidationError, match="version-4 field"):
        make_record(schema_version=3, plugin="my_method.models")
    store.path("tiny").write_text(json.dumps({**v1, "schema_version": 5}) + "\n")
    assert store.read() == [] and "tiny.jsonl:1 is not a valid record" in store.skipped[0]
    with pytest.raises(StoreError, match="tiny.jsonl:1 is not a valid record"):
        store.check()


def test_training_facts_must_add_up():
    with pytest.raises(
        ValidationError, match="global_batch_size 64 != batch_size_per_rank 16 x world_size 2"
    ):
        make_record(training={**TRAINING, "world_size": 2, "batch_size_per_rank": 16})
    with pytest.raises(ValidationError, match="gradient scaler"):
        make_record(training={**TRAINING, "amp_dtype": "bfloat16", "grad_scaler": True})
    fp16 = {**TRAINING, "amp_dtype": "float16", "grad_scaler": True}
    assert make_record(training=fp16).training.grad_scaler


def test_segmentation_records_carry_miou_and_pixel_accuracy_instead_of_top1():
    metrics = record_body()["metrics"]
    seg = {k: v for k, v in metrics.items() if not k.startswith("top")}
    seg |= {"miou_pct": 61.5, "pixel_acc_pct": 92.0}
    m = make_record(dataset="cityscapes", metrics=seg).metrics
    assert (m.quality_metric, m.quality, m.top1_pct) == ("miou_pct", 61.5, None)
    assert (make_record().metrics.quality_metric, make_record().metrics.quality) == ("top1_pct", 50.0)
    with pytest.raises(ValidationError, match="not both"):
        make_record(metrics={**metrics, "miou_pct": 61.5, "pixel_acc_pct": 92.0})
    with pytest.raises(ValidationError, match="pixel_acc_pct is missing: a record with miou_pct also needs"):
        make_record(metrics={**seg, "pixel_acc_pct": None})
    with pytest.raises(ValidationError, match="top5_pct is missing"):
        make_record(metrics={k: v for k, v in metrics.items() if k != "top5_pct"})
    with pytest.raises(ValidationError, match="not neither"):
        make_record(metrics={k: v for k, v in metrics.items() if not k.startswith("top")})


def test_a_corrupt_line_is_named_and_skipped_and_the_store_stays_usable(tmp_path, capsys):
    store = ResultStore(tmp_path)
    store.append([make_record()])
    with open(store.path("tiny"), "a") as f:
        f.write('{"schema_version": 1}\n')
    assert [r.seed for r in store.read()] == [0]
    assert "tiny.jsonl:2 is not a valid record" in capsys.readouterr().err
    with pytest.raises(StoreError, match=r"tiny.jsonl:2 is not a valid record"):
        store.check()
    assert store.append([make_record(1)]) == 2 and [r.seed for r in store.read()] == [0, 1]


def test_a_line_out_of_version_order_was_edited_by_hand(tmp_path):
    store = ResultStore(tmp_path)
    store.append([make_record(0)])
    store.append([make_record(1)])
    lines = store.path("tiny").read_text().splitlines()
    store.path("tiny").write_text("\n".join(reversed(lines)) + "\n")
    assert [r.seed for r in store.read()] == [1] and "store_version 1 after 2" in store.skipped[0]


def test_a_failed_check_leaves_the_store_untouched(tmp_path):
    store = ResultStore(tmp_path)
    store.append([make_record(0)])
    before = store.path("tiny").read_bytes()

    def refuse(stored):
        assert len(stored) == 1
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        store.append([make_record(1)], check=refuse)
    assert store.path("tiny").read_bytes() == before and store.version() == 1


def _line(seed, suite, version) -> bytes:
    record = make_record(seed, suite=suite).model_copy(update={"store_version": version}).with_id()
    return record.model_dump_json().encode() + b"\n"


def test_a_batch_over_two_suites_cut_short_is_rolled_back_by_the_next_reader(tmp_path):
    store = ResultStore(tmp_path)
    store.append([make_record(0, suite="a"), make_record(0, suite="b")])
    assert {r.suite for r in store.read(at=1)} == {"a", "b"}
    # what a writer killed mid-batch leaves: the journal of sizes, one file appended, one half-appended
    sizes = {s: store.path(s).stat().st_size for s in "ab"}
    (store.runs / JOURNAL).write_text(
        json.dumps({"version": 2, "files": [["a.jsonl", sizes["a"]], ["b.jsonl", sizes["b"]]]})
    )
    with open(store.path("a"), "ab") as f:
        f.write(_line(1, "a", 2))
    with open(store.path("b"), "ab") as f:
        f.write(_line(1, "b", 2)[:40])
    assert sorted((r.suite, r.seed) for r in store.read()) == [("a", 0), ("b", 0)]
    assert not (store.runs / JOURNAL).exists()
    assert {s: store.path(s).stat().st_size for s in "ab"} == sizes
    assert store.append([make_record(1, suite="b")]) == 2


def test_an_older_versions_journal_of_renames_is_finished(tmp_path):
    store = ResultStore(tmp_path)
    store.append([make_record(0, suite="a"), make_record(0, suite="b")])
    tmp_b = store.path("b").with_name("b.jsonl.tmp")
    tmp_b.write_bytes(store.path("b").read_bytes() + _line(1, "b", 2))
    (store.runs / JOURNAL).write_text(json.dumps([[str(tmp_b), str(store.path("b"))]]))
    assert sorted((r.suite, r.seed) for r in store.read()) == [("a", 0), ("b", 0), ("b", 1)]
    assert not (store.runs / JOURNAL).exists() and not tmp_b.exists()


@pytest.mark.parametrize(
    "journal",
    [
        b'{"version": 2, "files": [["a.jsonl", 1',  # cut short while being written
        b"\x00\x00\x00",
        b'{"version": 2, "files": [["../../victim.jsonl", 0]]}',
        b'{"version": 2, "files": [["a.jsonl", -1]]}',
        b'{"version": 2, "files": [["/etc/passwd", 0]]}',
    ],
)
def test_a_journal_that_cannot_be_trusted_is_set_aside_and_nothing_is_touched(tmp_path, journal, capsys):
    store = ResultStore(tmp_path / "store")
    store.append([make_record(0, suite="a")])
    victim = tmp_path / "victim.jsonl"
    victim.write_text("precious\n")
    before = store.path("a").read_bytes()
    (store.runs / JOURNAL).write_bytes(journal)
    assert [r.seed for r in store.read()] == [0]
    assert store.path("a").read_bytes() == before and victim.read_text() == "precious\n"
    assert not (store.runs / JOURNAL).exists() and len(list(store.runs.glob(".batch.broken-*"))) == 1
    assert "set aside" in capsys.readouterr().err
    assert store.append([make_record(1, suite="a")]) == 2


def test_an_older_journal_naming_a_path_outside_the_store_moves_nothing(tmp_path):
    store = ResultStore(tmp_path / "store")
    store.append([make_record(0, suite="a")])
    outside, target = tmp_path / "evil.tmp", tmp_path / "target.txt"
    outside.write_text("evil")
    target.write_text("mine")
    (store.runs / JOURNAL).write_text(json.dumps([[str(outside), str(target)]]))
    assert [r.seed for r in store.read()] == [0]
    assert target.read_text() == "mine" and outside.exists()


def test_a_torn_last_line_is_left_out_then_set_aside_by_the_next_append(tmp_path, capsys):
    store = ResultStore(tmp_path)
    store.append([make_record(0)])
    with open(store.path("tiny"), "ab") as f:
        f.write(_line(1, "tiny", 2)[:50])
    assert [r.seed for r in store.read()] == [0] and "not a whole line" in store.skipped[0]
    assert store.version() == 1
    assert store.append([make_record(2)]) == 2
    assert [r.seed for r in store.read()] == [0, 2] and store.skipped == []
    (aside,) = store.runs.glob("tiny.jsonl.torn-*")
    assert aside.read_bytes() == _line(1, "tiny", 2)[:50]


def test_the_store_refuses_non_finite_numbers_and_oversized_values(tmp_path):
    store = ResultStore(tmp_path)
    for bad in (
        {"train_config": {"gamma": float("nan")}},
        {"model_info": {"x": float("inf")}},
        {"history": [{"epoch": 1, "train_loss": float("nan")}]},
        {"metrics": {**record_body()["metrics"], "params": 10**400}},
        {"gates": {"hello": 1}},
        {"model_info": {"x": "y" * 10_000}},
    ):
        with pytest.raises(ValueError, match="field "):
            store.append([make_record(**bad)])
    assert not store.path("tiny").exists()


def test_appending_does_not_rewrite_the_file(tmp_path):
    store = ResultStore(tmp_path)
    store.append([make_record(0)])
    inode = store.path("tiny").stat().st_ino
    store.append([make_record(1)])
    assert store.path("tiny").stat().st_ino == inode  # appended in place, not replaced by a rename


def test_digest_is_over_stored_bytes_and_reproducible_at_a_version(tmp_path):
    store = ResultStore(tmp_path)
    store.append([make_record(0)])
    first = store.digest()
    store.append([make_record(1)])
    assert store.digest(at=1) == first != store.digest()
    assert (
        store.digest("tiny") == store.digest()
        and store.digest("other") == ResultStore(tmp_path / "x").digest()
    )


def test_find_by_id_or_prefix(tmp_path):
    store = ResultStore(tmp_path)
    store.append([make_record(0), make_record(1)])
    record = store.read()[1]
    assert store.find(record.record_id) == record and store.find(record.record_id[:8]) == record
    with pytest.raises(UnknownRecordError, match="no record"):
        store.find("ffffffffff")
    with pytest.raises(UnknownRecordError, match="too short"):
        store.find("ab")


def _append_many(root: str, worker: int, n: int) -> None:
    store = ResultStore(root)
    for i in range(n):
        store.append([make_record(seed=worker * 1000 + i)])


def test_two_processes_appending_at_once_lose_nothing(tmp_path):
    run_workers(_append_many, str(tmp_path), n_workers=2, per_worker=15, start="spawn", timeout_s=60)
    records = ResultStore(tmp_path).read()
    assert sorted(r.seed for r in records) == sorted([w * 1000 + i for w in range(2) for i in range(15)])
    assert sorted(r.store_version for r in records) == list(range(1, 31))
    lines = ResultStore(tmp_path).path("tiny").read_text().splitlines()
    assert all(json.loads(line)["schema_version"] == SCHEMA_VERSION for line in lines)
    assert not [f for f in os.listdir(tmp_path / "runs") if f.endswith(".tmp") or f.startswith(".batch")]


def test_committed_store_validates():
    store = ResultStore(REPO / "results")
    assert store.read() and store.skipped == []
    assert ResultStore(REPO / "results").paper_files()
