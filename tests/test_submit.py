"""`bench submit`: every malformed file is rejected with its line and field, and leaves the store and
the leaderboard byte-for-byte as they were; accepted files become one store version; concurrent
submitters lose nothing."""

import copy
import dataclasses
import json
import math
import multiprocessing as mp
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cli import main
from bench.engine.config import config_hash, load_suite
from bench.store.results import ResultStore
from bench.store.schema import Record
from bench.store.submit import SubmissionError, submit
from tests.helpers import run_workers, submit_args
from tests.test_results import record_body

CODE = "https://github.com/example/gated-nets"


def quick_body(seed=0, top1=80.0, model="resnet20", **changes) -> dict:
    """A valid submitted record of the built-in `quick` suite."""
    train = dataclasses.asdict(load_suite("quick").train_config(model))
    body = record_body(seed, "quick", top1, model=model, status="submitted", code_url=CODE, submitter="alice")
    body["train_config"] = json.loads(json.dumps(train))
    body["config_hash"] = config_hash(
        {"model": model, "model_args": {}, "dataset": "fashion_mnist", "train": train}
    )
    body.update(changes)
    return body


def write_jsonl(path: Path, bodies, raw: dict[int, str | bytes] | None = None) -> Path:
    """One line per body; `raw` replaces line i (1-based) with the given text or bytes."""
    lines = [json.dumps(b).encode() for b in bodies]
    for i, text in (raw or {}).items():
        lines[i - 1] = text if isinstance(text, bytes) else text.encode()
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def snapshot(*folders: Path) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes() for f in folders if f.exists() for p in sorted(f.rglob("*")) if p.is_file()
    }


def _cli(file, tmp_path, *extra):
    return main(submit_args(file, tmp_path, *extra))


def test_a_valid_file_is_stored_as_one_version_and_shown(tmp_path, capsys):
    file = write_jsonl(tmp_path / "sub.jsonl", [quick_body(0, 81.0), quick_body(1, 83.0)])
    assert _cli(file, tmp_path) == 0
    out = capsys.readouterr().out
    records = ResultStore(tmp_path / "results").read("quick")
    assert [r.store_version for r in records] == [1, 1] and {r.status for r in records} == {"submitted"}
    assert all(f"accepted {r.record_id}" in out for r in records) and "store version 1" in out
    board = (tmp_path / "lb" / "quick.md").read_text()
    row = next(line for line in board.splitlines() if line.startswith("| resnet20 (submitted by alice)"))
    assert "82.00 ± 1.41" in row and "`submitted`" in row and re.search(r"\|\s+2\s+\|", row)
    assert re.search(r"\| resnet20 +\| – +\| not yet run", board)  # our own run of it is still to come
    assert all(r.record_id in board for r in records) and CODE in board
    assert "| 1 | 2 | quick | 2 submitted | alice |" in (tmp_path / "lb" / "README.md").read_text()


def test_measured_records_from_bench_run_become_submissions_with_overrides(tmp_path):
    body = quick_body(
        status="measured", code_url=None, submitter="someone", store_version=7, record_id="x" * 16
    )
    file = write_jsonl(tmp_path / "run.jsonl", [body])
    version, (record,) = submit(file, ResultStore(tmp_path / "r"), submitter="team-b", code_url=CODE)
    assert version == 1 and record.status == "submitted" and record.submitter == "team-b"
    assert record.code_url == CODE and record.store_version == 1 and record.record_id != "x" * 16


def test_check_lists_every_problem_and_stores_nothing(tmp_path, capsys):
    file = write_jsonl(
        tmp_path / "sub.jsonl", [quick_body(0, top1=101.0), quick_body(1), quick_body(2, dataset="cifar10")]
    )
    assert _cli(file, tmp_path, "--check") == 2
    captured = capsys.readouterr()
    assert "line 1, field metrics.top1_pct" in captured.out and "line 3, field dataset" in captured.out
    assert captured.err.strip().splitlines() == [
        f"bench submit: error: {file}: 2 problem(s), listed above; nothing was stored"
    ]
    assert not (tmp_path / "results" / "runs").exists()
    ok = write_jsonl(tmp_path / "ok.jsonl", [quick_body(0)])
    assert (
        _cli(ok, tmp_path, "--check") == 0 and "all 1 record(s) would be accepted" in capsys.readouterr().out
    )
    assert not (tmp_path / "results" / "runs").exists()


def _nested(body, path, value=None, delete=False):
    body = copy.deepcopy(body)
    *head, last = path
    target = body
    for key in head:
        target = target[key]
    if delete:
        del target[last]
    else:
        target[last] = value
    return body


def _case(name: str, tmp_path: Path):
    """(file, line, field, words the message must contain) for each kind of malformed submission."""
    ok = quick_body(5)
    f = tmp_path / f"{name}.jsonl"
    cases = {
        "missing_field": (
            [ok, _nested(quick_body(6), ["metrics", "top1_pct"], delete=True)],
            None,
            2,
            "metrics",
            "top1_pct is missing",
        ),
        "wrong_type": ([_nested(ok, ["metrics", "params"], "ten")], None, 1, "metrics.params", "wrong type"),
        "float_for_int": ([_nested(ok, ["seed"], 1.5)], None, 1, "seed", "wrong type"),
        "unknown_suite": ([quick_body(5, suite="nosuch")], None, 1, "suite", "unknown suite 'nosuch'"),
        "unknown_dataset": (
            [quick_body(5, dataset="mnist3")],
            None,
            1,
            "dataset",
            "unknown dataset 'mnist3'",
        ),
        "dataset_not_in_suite": (
            [quick_body(5, dataset="cifar10")],
            None,
            1,
            "dataset",
            "not in suite 'quick'",
        ),
        "metric_out_of_range": ([quick_body(5, top1=101.0)], None, 1, "metrics.top1_pct", "out of range"),
        "negative_loss": (
            [_nested(ok, ["metrics", "eval_loss"], -1.0)],
            None,
            1,
            "metrics.eval_loss",
            "out of range",
        ),
        "top5_below_top1": ([quick_body(5, top1=95.0)], None, 1, "metrics", "top-5 includes top-1"),
        "executed_above_static": (
            [
                _nested(
                    ok, ["metrics", "executed_macs"], {"mean": 500.0, "std": 0.0, "min": 500.0, "max": 500.0}
                )
            ],
            None,
            1,
            "metrics.executed_macs.max",
            "exceed",
        ),
        "nan": (
            [ok, quick_body(6)],
            {2: json.dumps(quick_body(6)).replace('"top1_pct": 80.0', '"top1_pct": NaN')},
            2,
            "",
            "NaN",
        ),
        "infinity": (
            [ok],
            {1: json.dumps(ok).replace('"eval_loss": 1.0', '"eval_loss": -Infinity')},
            1,
            "",
            "not a number",
        ),
        "unknown_schema_version": (
            [quick_body(5, schema_version=5)],
            None,
            1,
            "schema_version",
            "not one this bench knows",
        ),
        "missing_schema_version": (
            [_nested(ok, ["schema_version"], delete=True)],
            None,
            1,
            "schema_version",
            "missing",
        ),
        "unknown_field": ([quick_body(5, top1_accuracy=80.0)], None, 1, "top1_accuracy", "unknown field"),
        "missing_code_url": ([quick_body(5, code_url=None)], None, 1, "code_url", "--code-url"),
        "code_url_not_http": (
            [quick_body(5, code_url="javascript:alert(1)")],
            None,
            1,
            "",
            "not an http(s) link",
        ),
        "status_verified": ([quick_body(5, status="verified")], None, 1, "status", "bench verify"),
        "status_failed": (
            [quick_body(5, status="failed", failure_reason="x")],
            None,
            1,
            "status",
            "cannot be submitted",
        ),
        "edited_config": (
            [_nested(ok, ["train_config", "lr"], 0.5)],
            None,
            1,
            "config_hash",
            "does not match",
        ),
        "partial_config": (
            [_nested(ok, ["train_config", "flip"], delete=True)],
            None,
            1,
            "train_config",
            "['flip']",
        ),
        "config_typo": ([_nested(ok, ["train_config", "lr_typo"], 0.1)], None, 1, "train_config", "lr_typo"),
        "old_suite_version": ([quick_body(5, suite_version=9)], None, 1, "suite_version", "at version 1"),
        "bad_time": ([quick_body(5, created_at="yesterday")], None, 1, "created_at", "ISO 8601"),
        "duplicate_key": ([ok], {1: json.dumps(ok)[:-1] + ', "seed": 9}'}, 1, "seed", "appears twice"),
        "not_json": ([ok, ok], {2: "{'seed': 1}"}, 2, "", "not valid JSON"),
        "not_an_object": ([ok, ok], {2: "[1, 2]"}, 2, "", "JSON object, not a list"),
        "pickle_bytes": (
            [ok],
            {1: b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94."},
            1,
            "",
            "not UTF-8",
        ),
        "seed_twice_in_file": (
            [quick_body(5), quick_body(5, top1=70.0)],
            None,
            2,
            "seed",
            "repeats the run of line 1",
        ),
        "duplicate_of_stored": ([quick_body(100)], None, 1, "", "a duplicate of stored record"),
        "seed_already_submitted": ([quick_body(100, top1=60.0)], None, 1, "seed", "already submitted"),
    }
    bodies, raw, line, field, words = cases[name]
    return write_jsonl(f, bodies, raw), line, field, words


CASES = [
    "missing_field",
    "wrong_type",
    "float_for_int",
    "unknown_suite",
    "unknown_dataset",
    "dataset_not_in_suite",
    "metric_out_of_range",
    "negative_loss",
    "top5_below_top1",
    "executed_above_static",
    "nan",
    "infinity",
    "unknown_schema_version",
    "missing_schema_version",
    "unknown_field",
    "missing_code_url",
    "code_url_not_http",
    "status_verified",
    "status_failed",
    "edited_config",
    "partial_config",
    "config_typo",
    "old_suite_version",
    "bad_time",
    "duplicate_key",
    "not_json",
    "not_an_object",
    "pickle_bytes",
    "seed_twice_in_file",
    "duplicate_of_stored",
    "seed_already_submitted",
]


@pytest.fixture
def populated(tmp_path, capsys):
    """A store and leaderboard holding one accepted submission (seed 100)."""
    assert _cli(write_jsonl(tmp_path / "first.jsonl", [quick_body(100)]), tmp_path) == 0
    capsys.readouterr()
    return tmp_path


@pytest.mark.parametrize("name", CASES)
def test_malformed_submissions_name_line_and_field_and_write_nothing(name, populated, capsys):
    tmp_path = populated
    file, line, field, words = _case(name, tmp_path)
    before = snapshot(tmp_path / "results", tmp_path / "lb")
    assert _cli(file, tmp_path) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"bench submit: error: {file} line {line}"), err
    if field:
        assert f"line {line}, field {field}:" in err[0], err[0]
    assert words in err[0] and "nothing was stored" in err[0], err[0]
    assert captured.out == ""
    assert snapshot(tmp_path / "results", tmp_path / "lb") == before


def test_empty_and_missing_files_are_user_errors(tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert _cli(tmp_path / "empty.jsonl", tmp_path) == 2
    assert "no records in the file" in capsys.readouterr().err
    assert _cli(tmp_path / "nope.jsonl", tmp_path) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "results").exists() and not (tmp_path / "lb").exists()


# --- fuzzing -------------------------------------------------------------------------------------

ANY_TYPED = {"model_args", "model_info", "train_config", "gates", "history", "record_id", "store_version"}
BASE = quick_body(3)
BASE["metrics"] |= {
    "executed_macs": {"mean": 50.0, "std": 1.0, "min": 40.0, "max": 60.0},
    "latency": [
        {
            "batch_size": 1,
            "median_ms": 2.0,
            "p10_ms": 1.5,
            "p90_ms": 2.5,
            "repeats": 10,
            "warmup": 1,
            "device": "cpu",
            "device_name": "x",
            "num_threads": 2,
            "timer": "t",
            "malloc_tuned": True,
        }
    ],
}
Record.model_validate(BASE)  # the base of every mutation is valid


def _leaves(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            if not (path == () and key in ANY_TYPED):
                yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, i))
    else:
        yield path, value


def _required(path) -> bool:
    """Is the field at `path` required by the schema (no default)?"""
    model = Record
    for key in path[:-1]:
        annotation = model.model_fields[key].annotation
        model = next(a for a in getattr(annotation, "__args__", (annotation,)) if hasattr(a, "model_fields"))
    return model.model_fields[path[-1]].is_required()


LEAVES = list(_leaves(BASE))
REQUIRED = [p for p, _ in LEAVES if all(isinstance(k, str) for k in p) and _required(p)]


def _wrong_values(value):
    if isinstance(value, bool):
        return ["yes", 1, [], {}]
    if isinstance(value, int):
        return ["7", [7], {"v": 7}, True, 7.5]
    if isinstance(value, float):
        return ["7.0", [7.0], {}, True]
    if isinstance(value, str):
        return [123, 1.5, [value], {"v": value}, True]
    return [[], {"v": 1}]  # None: invalid for any str / int / bool / model it may stand for


mutation = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(REQUIRED), st.none()),
    st.sampled_from(LEAVES).flatmap(
        lambda leaf: st.tuples(st.just("retype"), st.just(leaf[0]), st.sampled_from(_wrong_values(leaf[1])))
    ),
    st.tuples(
        st.just("nan"),
        st.sampled_from([p for p, v in LEAVES if isinstance(v, float)]),
        st.sampled_from([math.nan, math.inf, -math.inf]),
    ),
)


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    submit(write_jsonl(root / "first.jsonl", [quick_body(100)]), ResultStore(root / "results"))
    return root


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=mutation, position=st.integers(1, 3))
def test_fuzzed_records_are_rejected_naming_line_and_field(fuzz_store, mutation, position):
    kind, path, value = mutation
    bad = _nested(BASE, list(path), delete=True) if kind == "delete" else _nested(BASE, list(path), value)
    bodies = [quick_body(10 + i) for i in range(3)]
    bodies[position - 1] = bad
    store = ResultStore(fuzz_store / "results")
    before = snapshot(store.root)
    with tempfile.TemporaryDirectory() as tmp:
        file = write_jsonl(Path(tmp) / "sub.jsonl", bodies)
        with pytest.raises(SubmissionError) as info:
            submit(file, store)
    message = str(info.value)
    assert f" line {position}" in message and "nothing was stored" in message, message
    if kind == "nan":
        assert "NaN" in message or "not a number" in message, message
    else:
        field = ".".join(str(k) for k in path)
        assert field in message, (field, message)
    assert snapshot(store.root) == before


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    garbage=st.binary(min_size=1, max_size=300).filter(
        lambda b: b.strip() and b"\n" not in b and b"\r" not in b
    )
)
def test_fuzzed_garbage_lines_are_rejected(fuzz_store, garbage):
    store = ResultStore(fuzz_store / "results")
    before = snapshot(store.root)
    with tempfile.TemporaryDirectory() as tmp:
        file = write_jsonl(Path(tmp) / "sub.jsonl", [quick_body(20), quick_body(21)], raw={2: garbage})
        with pytest.raises(SubmissionError, match=r" line 2.*nothing was stored"):
            submit(file, store)
    assert snapshot(store.root) == before


# --- concurrency ---------------------------------------------------------------------------------


def _submit_many(root: str, worker: int, n: int) -> None:
    for i in range(n):
        path = write_jsonl(Path(root) / f"w{worker}-{i}.jsonl", [quick_body(worker * 100 + i)])
        submit(path, ResultStore(Path(root) / "results"))


def test_two_processes_submitting_at_once_lose_nothing(tmp_path):
    # fork: the children only parse JSON and write files; spawn would re-import torch
    run_workers(_submit_many, str(tmp_path), n_workers=2, per_worker=8, start="fork", timeout_s=120)
    records = ResultStore(tmp_path / "results").read()
    assert sorted(r.seed for r in records) == sorted(w * 100 + i for w in range(2) for i in range(8))
    assert sorted(r.store_version for r in records) == list(range(1, 17))


def test_the_same_file_from_two_processes_is_stored_once(tmp_path):
    """The duplicate check runs under the store's lock: of two racing identical submissions one fails."""
    file = write_jsonl(tmp_path / "sub.jsonl", [quick_body(1), quick_body(2)])
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_submit_file, args=(str(file), str(tmp_path / "results"))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert sorted(p.exitcode for p in procs) == [0, 3]
    assert sorted(r.seed for r in ResultStore(tmp_path / "results").read()) == [1, 2]


def _submit_file(file: str, root: str) -> None:
    try:
        submit(file, ResultStore(root))
    except SubmissionError:
        raise SystemExit(3) from None
