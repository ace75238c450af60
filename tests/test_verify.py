"""`bench verify`: a record's configuration re-run by the harness's own run_one; within the tolerance a
"verified" record pointing at it is appended, otherwise nothing is stored and the miss is stated."""

import json
import re
import shutil
from pathlib import Path

import pytest

import bench.engine.config
from bench.cli import main
from bench.commands.verify import VerifyError, rebuild_spec
from bench.data.synthetic import write_fashion_mnist
from bench.engine.config import config_hash
from bench.store.results import ResultStore
from tests.helpers import write_suite


def _dirs(root: Path, store: str) -> list[str]:
    return ["--out", str(root / store), "--leaderboard-dir", str(root / f"lb-{store}"), "--no-progress"]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """One tiny synthetic run (resnet20, 256 images, one epoch) stored by `bench run` in store A."""
    root = tmp_path_factory.mktemp("verify")
    data = write_fashion_mnist(root / "fashion", n_train=256, n_test=128)
    suite = write_suite(root)
    args = [
        "run",
        "--suite",
        str(suite),
        "--data-root",
        str(data),
        "--work-dir",
        str(root / "runs"),
        *_dirs(root, "A"),
    ]
    assert main(args) == 0
    (record,) = ResultStore(root / "A").read()
    shutil.copytree(root / "A", root / "C")  # an untouched copy for the error cases
    return root, data, suite, record


def _verify(root, data, suite, record_id, store, *extra):
    return main(
        ["verify", record_id, "--suite", str(suite), "--data-root", str(data), *_dirs(root, store), *extra]
    )


def test_a_measured_record_rerun_is_verified(measured, capsys):
    root, data, suite, record = measured
    capsys.readouterr()
    assert _verify(root, data, suite, record.record_id[:8], "A", "--submitter", "lab") == 0
    out = capsys.readouterr().out
    assert f"VERIFIED {record.record_id}" in out and "Δ +0.00" in out  # same seed on CPU: the same run
    verified = [r for r in ResultStore(root / "A").read() if r.status == "verified"]
    assert len(verified) == 1 and verified[0].verification.record_id == record.record_id
    assert verified[0].verification.measured == record.metrics.top1_pct and verified[0].submitter == "lab"
    assert verified[0].config_hash == record.config_hash and verified[0].store_version == 2
    board = (root / "lb-A" / "tiny.md").read_text()
    row = next(line for line in board.splitlines() if line.startswith("| resnet20"))
    assert "`measured` `verified`" in row and re.search(r"\|\s+1\s+\|", row)  # a badge, not a second seed
    assert f"verifies `{record.record_id}`" in board
    # a verified record cannot be verified twice, and a verification is not itself verifiable
    before = (root / "A" / "runs" / "tiny.jsonl").read_bytes()
    assert _verify(root, data, suite, record.record_id, "A") == 2
    assert "already verified" in capsys.readouterr().err
    assert _verify(root, data, suite, verified[0].record_id, "A") == 2
    assert "only submitted or measured" in capsys.readouterr().err
    assert (root / "A" / "runs" / "tiny.jsonl").read_bytes() == before


def test_a_submission_is_verified_within_the_tolerance_and_the_miss_is_stated(measured, monkeypatch, capsys):
    root, data, suite, record = measured
    suites = root / "suites"
    suites.mkdir(exist_ok=True)
    shutil.copy(suite, suites / "tiny.toml")
    monkeypatch.setattr(bench.engine.config, "SUITES_DIR", suites)  # `tiny` becomes a built-in suite
    body = json.loads(record.model_dump_json())
    stated = record.metrics.top1_pct - 2.0 if record.metrics.top1_pct >= 2 else record.metrics.top1_pct + 2.0
    body["metrics"] |= {"top1_pct": stated, "top5_pct": max(stated, body["metrics"]["top5_pct"])}
    (root / "sub.jsonl").write_text(json.dumps(body) + "\n")
    capsys.readouterr()
    args = ["submit", str(root / "sub.jsonl"), "--code-url", "https://example.org/x", "--submitter", "ann"]
    assert main([*args, *_dirs(root, "B")[:4]]) == 0
    (submitted,) = ResultStore(root / "B").read()
    assert submitted.status == "submitted"

    before = (root / "B" / "runs" / "tiny.jsonl").read_bytes()
    assert _verify(root, data, suite, submitted.record_id, "B", "--tolerance", "1.0") == 1
    out = capsys.readouterr().out
    assert f"NOT VERIFIED {submitted.record_id}" in out and "misses by 1.00 points" in out
    assert "nothing was stored" in out and (root / "B" / "runs" / "tiny.jsonl").read_bytes() == before

    assert _verify(root, data, suite, submitted.record_id, "B", "--tolerance", "2.5") == 0
    assert "VERIFIED" in capsys.readouterr().out
    row = next(
        line for line in (root / "lb-B" / "tiny.md").read_text().splitlines() if "submitted by ann" in line
    )
    assert "`submitted` `verified`" in row and f"{stated:.2f}" in row


def test_verify_refuses_other_data_and_unknown_ids_with_one_line(measured, tmp_path, capsys):
    root, data, suite, record = measured
    other = write_fashion_mnist(tmp_path / "other", n_train=256, n_test=64, seed=1)
    before = (root / "C" / "runs" / "tiny.jsonl").read_bytes()
    capsys.readouterr()
    for args, words in [
        ([record.record_id, "--suite", str(suite), "--data-root", str(other)], "is not the record's"),
        (["0123456789", "--suite", str(suite), "--data-root", str(data)], "no record '0123456789'"),
        ([record.record_id, "--data-root", str(data)], "needs --suite PATH"),
        ([record.record_id, "--suite", str(suite), "--tolerance", "-1"], "--tolerance must be >= 0"),
    ]:
        assert main(["verify", *args, *_dirs(root, "C")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("bench verify: error:") and words in err[0], err
    assert (root / "C" / "runs" / "tiny.jsonl").read_bytes() == before
    assert not (root / "lb-C").exists()


def test_an_older_record_without_newer_config_fields_is_rebuilt_with_their_defaults(measured):
    root, data, suite, record = measured
    train = {k: v for k, v in record.train_config.items() if k != "flip"}  # as if `flip` came later
    older = record.model_copy(update={"train_config": train})
    older = older.model_copy(update={"config_hash": config_hash(older.run_config())})
    spec = rebuild_spec(older, str(suite))
    assert spec.train.flip is False and (spec.model, spec.dataset, spec.seed) == (
        "resnet20",
        "fashion_mnist",
        0,
    )
    with pytest.raises(VerifyError, match="edited"):
        rebuild_spec(older.model_copy(update={"seed": 0, "train_config": {**train, "lr": 1.0}}), str(suite))


def test_a_record_of_a_model_outside_the_registry_names_its_plugin_and_code_and_runs_nothing(measured):
    root, data, suite, record = measured
    run = {**record.run_config(), "model": "mystery_net"}
    other = record.model_copy(
        update={
            "model": "mystery_net",
            "config_hash": config_hash(run),
            "plugin": "mystery.models",
            "code_url": "https://example.org/mystery",
        }
    )
    with pytest.raises(VerifyError, match=r"module 'mystery.models', from https://example.org/mystery"):
        rebuild_spec(other, str(suite))
    import sys

    assert "mystery" not in sys.modules  # never imported


def test_a_verified_record_enters_only_through_verify(tmp_path):
    store = ResultStore(tmp_path)
    with pytest.raises(ValueError, match="cannot enter the store through `bench submit`"):
        store.append([_verified_like()], channel="submit")
    assert not store.path("tiny").exists()


def _verified_like():
    from tests.test_results import make_record

    check = {"record_id": "d" * 16, "submitted": 50.0, "measured": 50.0, "tolerance": 1.0}
    return make_record(status="verified", verification=check)
