"""Hostile submissions (issue #14): no one can pose as a measured result, inject markup, brick the
leaderboard or run code. Each hostile record is refused with the store byte-for-byte unchanged, or
accepted and rendered inert; our measured rows never change; concurrent writers neither crash nor lose
anything; the journal is data, confined to the store; `--out` never overwrites the default pages."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bench.store.submit as submit_mod
from bench.cli import leaderboard_dir, main
from bench.commands.perf import bench_store
from bench.engine.config import config_hash
from bench.store.limits import MAX_DEPTH, MAX_TEXT
from bench.store.results import JOURNAL, ResultStore
from tests.helpers import run_workers, submit_args
from tests.test_submit import CODE, quick_body, snapshot, write_jsonl

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "results" / "runs" / "quick.jsonl"
_COMMITTED_LINES = COMMITTED.read_bytes().splitlines()
NEXT_VERSION = max(json.loads(line)["store_version"] for line in _COMMITTED_LINES) + 1  # of the next append
NEXT_LINE = len(_COMMITTED_LINES) + 1  # the line number the next record takes
OURS_ID = "951ac688c6415f4e"  # the committed measured resnet20 record (top-1 85.26)


@pytest.fixture
def ours(tmp_path, capsys):
    """A copy of the committed store (paper numbers included) and its leaderboard."""
    root = tmp_path / "results"
    (root / "runs").mkdir(parents=True)
    shutil.copyfile(COMMITTED, root / "runs" / "quick.jsonl")
    shutil.copytree(REPO / "results" / "paper", root / "paper")
    assert main(["leaderboard", "--out", str(root), "--leaderboard-dir", str(tmp_path / "lb")]) == 0
    capsys.readouterr()
    return tmp_path


def _submit(tmp_path, file, *extra) -> int:
    return main(submit_args(file, tmp_path, *extra))


def _measured_rows(tmp_path) -> list[str]:
    page = (tmp_path / "lb" / "quick.md").read_text()
    return [[cell.strip() for cell in line.split("|")] for line in page.splitlines() if "`measured`" in line]


def _refused(tmp_path, capsys, bodies, *extra, words: str = "", raw: bytes | None = None) -> str:
    """Submit; assert it is refused with one line and that the store and pages are byte-for-byte unchanged."""
    before = snapshot(tmp_path / "results", tmp_path / "lb")
    file = tmp_path / "hostile.jsonl"
    if raw is not None:
        file.write_bytes(raw)
    else:
        write_jsonl(file, bodies)
    assert _submit(tmp_path, file, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing was stored" in err[0], err
    assert words in err[0], err[0]
    assert snapshot(tmp_path / "results", tmp_path / "lb") == before
    return err[0]


# --- posing as a measured result -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["measured", "Measured", " measured", "verified", "submitted"])
def test_no_one_can_submit_as_measured_and_our_row_stays(ours, capsys, name):
    rows = _measured_rows(ours)
    assert any("85.26" in cell for row in rows for cell in row)
    _refused(ours, capsys, [quick_body(0, top1=89.5)], "--submitter", name, words="field submitter")
    _refused(ours, capsys, [quick_body(0, top1=89.5, submitter=name)], words="field submitter")
    assert _measured_rows(ours) == rows


def test_a_status_or_verification_in_the_text_never_makes_a_measured_or_verified_row(ours, capsys):
    rows = _measured_rows(ours)
    _refused(ours, capsys, [quick_body(0, status="verified")], words="status")
    _refused(ours, capsys, [quick_body(0, status="failed", failure_reason="x")], words="status")
    check = {"record_id": OURS_ID, "submitted": 85.26, "measured": 85.3, "tolerance": 1.0}
    _refused(ours, capsys, [quick_body(0, verification=check)], words="verification")
    # a record that says "measured" is entered as what it is: a submission, in its own row
    assert _submit(ours, write_jsonl(ours / "m.jsonl", [quick_body(0, top1=89.5, status="measured")])) == 0
    capsys.readouterr()
    (record,) = [r for r in ResultStore(ours / "results").read() if r.store_version == NEXT_VERSION]
    assert record.status == "submitted" and _measured_rows(ours) == rows


def test_a_copy_of_our_record_is_refused_naming_it(ours, capsys):
    raw = COMMITTED.read_bytes().splitlines()[0]
    _refused(ours, capsys, None, "--code-url", CODE, "--submitter", "mallory", raw=raw + b"\n", words=OURS_ID)
    body = json.loads(raw)
    body.update(submitter="mallory", created_at="2027-01-01T00:00:00+00:00", code_url=CODE)
    _refused(ours, capsys, [body], words=f"duplicate of stored record {OURS_ID}")


# --- bricking the leaderboard ----------------------------------------------------------------------

GATES = {
    "gates": 2,
    "always_on": 1,
    "always_off": 0,
    "input_dependent": 1,
    "active_fraction": {"mean": 0.75, "std": 0.25, "min": 0.5, "max": 1.0},
    "pass_rate": {"layer1.0:conv1": [1.0, 0.5]},
    "active_fraction_per_sample": [0.5, 1.0],
}
METRICS = quick_body()["metrics"]
LATENCY = {
    "batch_size": 1,
    "median_ms": 2.0,
    "p10_ms": 1.0,
    "p90_ms": 3.0,
    "repeats": 3,
    "warmup": 1,
    "device": "cpu",
    "device_name": "cpu",
    "num_threads": 1,
    "timer": "t",
    "malloc_tuned": True,
}
CASES = {
    "gates_hello": ({"gates": {"hello": 1}}, "field gates"),
    "gates_without_pass_rate": ({"gates": {k: v for k, v in GATES.items() if k != "pass_rate"}}, "gates"),
    "gates_counts_disagree": ({"gates": {**GATES, "always_on": 5}}, "gates"),
    "gates_rate_above_one": ({"gates": {**GATES, "pass_rate": {"u": [2.0]}}}, "gates"),
    "params_10e400": ({"metrics": {**METRICS, "params": 10**400}}, "metrics.params"),
    "macs_beyond_max_count": ({"metrics": {**METRICS, "static_macs": 10**16}}, "MAX_COUNT"),
    "seed_beyond_max_int": ({"seed": 2**60}, "MAX_INT"),
    "huge_float": ({"metrics": {**METRICS, "train_time_s": 1e300}}, "MAX_FLOAT"),
    "long_text": ({"model_info": {"note": "x" * (MAX_TEXT + 1)}}, "MAX_TEXT"),
    "deep": ({"model_info": {"a": json.loads("[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2))}}, "MAX_DEPTH"),
    "many_keys": ({"model_info": {f"k{i}": i for i in range(300)}}, "MAX_KEYS"),
    "bad_key": ({"model_info": {"<b>x</b>": 1}}, "MAX_KEY"),
    "control_chars": ({"model_info": {"note": "a\u202eb"}}, "control characters"),
    "newline_in_text": ({"model_info": {"note": "a\n# heading"}}, "control characters"),
    "history_not_finite": ({"history": [{"epoch": 1, "train_loss": 1e400}]}, "not a number"),
    "long_history": ({"history": [{"epoch": i} for i in range(10_001)]}, "MAX_ITEMS"),
    "many_latencies": ({"metrics": {**METRICS, "latency": [LATENCY] * 17}}, "MAX_LATENCIES"),
    "url_with_markup": ({"code_url": "https://x.org/a)<script>alert(1)</script>"}, "field code_url"),
    "url_javascript": ({"code_url": "javascript:alert(1)"}, "code_url"),
    "submitter_markup": ({"submitter": "<script>alert(1)</script>"}, "field submitter"),
    "submitter_too_long": ({"submitter": "a" * 65}, "MAX_SUBMITTER"),
    "model_family_markup": ({"model_family": "x | y"}, "model_family"),
    "unregistered_model_without_plugin": (None, "field plugin"),
}


def _case(name: str) -> dict:
    changes, _ = CASES[name]
    if changes is None:  # a model the registry does not hold, with a consistent config_hash
        body = quick_body(7)
        run = {
            "model": "mystery_net",
            "model_args": {},
            "dataset": "fashion_mnist",
            "train": body["train_config"],
        }
        return {**body, "model": "mystery_net", "config_hash": config_hash(run)}
    changes = copy.deepcopy(changes)
    return quick_body(changes.pop("seed", 7), **changes)


@pytest.mark.parametrize("name", sorted(CASES))
def test_what_the_leaderboard_cannot_render_is_never_stored(ours, capsys, name):
    _refused(ours, capsys, [_case(name)], words=CASES[name][1])
    assert main(["leaderboard", "--out", str(ours / "results"), "--leaderboard-dir", str(ours / "lb")]) == 0


def test_nan_and_infinity_tokens_are_refused(ours, capsys):
    text = json.dumps(quick_body(3)).replace('"eval_loss": 1.0', '"eval_loss": NaN')
    assert "NaN" in text
    _refused(ours, capsys, None, raw=text.encode() + b"\n", words="not a number")


def test_a_model_outside_the_registry_names_its_plugin_and_code(ours, capsys):
    body = {**_case("unregistered_model_without_plugin"), "schema_version": 4, "plugin": "mystery.models"}
    assert _submit(ours, write_jsonl(ours / "p.jsonl", [body])) == 0
    capsys.readouterr()
    (record,) = [r for r in ResultStore(ours / "results").read() if r.model == "mystery_net"]
    assert record.plugin == "mystery.models" and record.code_url == CODE
    _refused(ours, capsys, [{**body, "seed": 8, "plugin": "os; rm -rf /"}], words="field plugin")


def test_the_file_size_and_record_count_are_limited_by_name(ours, capsys, monkeypatch):
    monkeypatch.setattr(submit_mod, "MAX_SUBMISSION_RECORDS", 2)
    _refused(ours, capsys, [quick_body(i) for i in range(3)], words="MAX_SUBMISSION_RECORDS (2)")
    monkeypatch.setattr(submit_mod, "MAX_SUBMISSION_BYTES", 1000)
    _refused(ours, capsys, [quick_body(1)], words="MAX_SUBMISSION_BYTES")


def test_a_submission_the_leaderboard_fails_to_render_is_not_stored(ours, capsys, monkeypatch):
    import bench.report.leaderboard as leaderboard

    def broken(*args, **kwargs):
        raise KeyError("pass_rate")

    monkeypatch.setattr(leaderboard, "write_leaderboard", broken)
    _refused(ours, capsys, [quick_body(5)], words="cannot be rendered")


def test_an_unreadable_line_from_an_older_version_is_named_and_skipped(ours, capsys):
    bad = json.loads(COMMITTED.read_bytes().splitlines()[0])
    bad.update(store_version=NEXT_VERSION, seed=99, gates={"hello": 1})  # what the old store accepted
    with open(ours / "results" / "runs" / "quick.jsonl", "a") as f:
        f.write(json.dumps(bad) + "\n")
    assert main(["leaderboard", "--out", str(ours / "results"), "--leaderboard-dir", str(ours / "lb")]) == 0
    assert f"quick.jsonl:{NEXT_LINE} is not a valid record, skipped" in capsys.readouterr().err
    assert (
        _submit(ours, write_jsonl(ours / "ok.jsonl", [quick_body(4)])) == 0
    )  # the store still takes records


# --- markup in every text field (hypothesis) -------------------------------------------------------

META = "<>&\"'`|*_[]()#!\\/:;=\n\r\t -"
hostile_text = st.one_of(
    st.text(alphabet=st.sampled_from(list(META) + list("abcXYZ019")), min_size=1, max_size=40),
    st.sampled_from(
        [
            "<script>alert(1)</script>",
            "javascript:alert(1)",
            "| x | y |\n| --- | --- |",
            "\n# Injected heading",
            "[click](javascript:alert(1))",
            "<img src=x onerror=alert(1)>",
            "![x](https://evil.example/t.png)",
            "</td></tr><tr><td>",
            "<!-- -->",
        ]
    ),
)
TEXT_FIELDS = {  # where a submitter's text lands
    "submitter": lambda b, s: b.update(submitter=s),
    "model_info": lambda b, s: b.update(model_info={"note": s}),
    "model_info_key": lambda b, s: b.update(model_info={s: 1}),
    "source": lambda b, s: b["data"].update(source=s),
    "macs_counter": lambda b, s: b["metrics"].update(macs_counter=s),
    "device_name": lambda b, s: b["environment"].update(device_name=s),
    "model_family": lambda b, s: b.update(model_family=s),
    "code_url": lambda b, s: b.update(code_url=CODE + "/" + s),
    "created_at": lambda b, s: b.update(created_at="2026-01-01T00:00:00+00:00" + s),
}


def _structure(page: str) -> tuple:
    """What markup can inject: headings, table rows, raw HTML, script links."""
    lines = page.splitlines()
    return (
        [line for line in lines if line.lstrip().startswith("#")],
        sum(line.lstrip().startswith("|") for line in lines),
    )


@pytest.fixture(scope="module")
def hyp_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hyp")
    (root / "results" / "runs").mkdir(parents=True)
    shutil.copyfile(COMMITTED, root / "results" / "runs" / "quick.jsonl")
    assert main(["leaderboard", "--out", str(root / "results"), "--leaderboard-dir", str(root / "lb")]) == 0
    return root


_seed = iter(range(1000, 10**6))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=hostile_text, field=st.sampled_from(sorted(TEXT_FIELDS)))
def test_markup_in_any_text_field_is_refused_or_rendered_inert(
    hyp_root, tmp_path_factory, capsys, text, field
):
    seed = next(_seed)
    body, twin = quick_body(seed, top1=50.0 + seed % 40), quick_body(seed, top1=50.0 + seed % 40)
    TEXT_FIELDS[field](body, text)
    TEXT_FIELDS[field](twin, "plain")
    twin_root = tmp_path_factory.mktemp("twin")  # the same store, given the same record with plain text
    shutil.copytree(hyp_root / "results", twin_root / "results")
    before = snapshot(hyp_root / "results", hyp_root / "lb")
    code = _submit(hyp_root, write_jsonl(hyp_root / "h.jsonl", [body]))
    capsys.readouterr()
    if code != 0:  # refused: nothing changed
        assert snapshot(hyp_root / "results", hyp_root / "lb") == before
        return
    # accepted: the rendering contract of bench/report (docs/threat-model.md)
    for page in (hyp_root / "lb").glob("*.md"):
        content = page.read_text()
        assert "<script" not in content.lower(), (page, field, text)
        assert not re.search(r"\]\(\s*javascript:|href=[\"']?\s*javascript:", content, re.I), (page, text)
    assert _submit(twin_root, write_jsonl(twin_root / "t.jsonl", [twin])) == 0
    capsys.readouterr()
    hostile = _structure((hyp_root / "lb" / "quick.md").read_text())
    plain = _structure((twin_root / "lb" / "quick.md").read_text())
    assert len(hostile[0]) == len(plain[0]) and hostile[1] == plain[1], (field, text)  # no heading, no row


# --- concurrency -----------------------------------------------------------------------------------


def _mixed(root: str, worker: int, n: int) -> None:
    """Even workers submit `n` records, odd ones regenerate the leaderboard `n` times; none may fail."""
    base = Path(root)
    for i in range(n):
        if worker % 2 == 0:
            file = write_jsonl(base / f"w{worker}-{i}.jsonl", [quick_body(worker * 100 + i)])
            argv = ["submit", str(file)]
        else:
            argv = ["leaderboard", "--suite", "quick"]
        code = main([*argv, "--out", str(base / "results"), "--leaderboard-dir", str(base / "lb")])
        if code != 0:
            raise SystemExit(code)


def test_eight_processes_mixing_submit_and_leaderboard_neither_crash_nor_lose_anything(tmp_path):
    run_workers(_mixed, str(tmp_path), n_workers=8, per_worker=3, start="fork", timeout_s=300)
    store = ResultStore(tmp_path / "results")
    records = store.read()
    assert sorted(r.seed for r in records) == sorted(w * 100 + i for w in range(0, 8, 2) for i in range(3))
    assert sorted(r.store_version for r in records) == list(range(1, 13)) and store.skipped == []
    leftovers = [p.name for p in (tmp_path / "lb").iterdir() if p.name.endswith(".tmp")]
    leftovers += [p.name for p in store.runs.iterdir() if p.name.startswith(JOURNAL)]
    assert leftovers == []


# --- where pages go; the store benchmark ------------------------------------------------------------


def test_a_store_other_than_the_default_gets_its_own_leaderboard(tmp_path):
    from argparse import Namespace

    assert leaderboard_dir(Namespace(out="results", leaderboard_dir=None)) == Path("leaderboard")
    assert leaderboard_dir(Namespace(out=str(tmp_path), leaderboard_dir=None)) == tmp_path / "leaderboard"
    assert leaderboard_dir(Namespace(out=str(tmp_path), leaderboard_dir="x")) == Path("x")


def test_submit_into_a_scratch_store_leaves_the_committed_pages_alone(tmp_path, capsys):
    committed = snapshot(REPO / "leaderboard")
    file = write_jsonl(tmp_path / "s.jsonl", [quick_body(0)])
    assert main(["submit", str(file), "--out", str(tmp_path / "scratch")]) == 0
    assert "scratch/leaderboard/quick.md" in capsys.readouterr().out
    assert (tmp_path / "scratch" / "leaderboard" / "quick.md").is_file()
    assert snapshot(REPO / "leaderboard") == committed


def test_the_store_benchmark_times_appends_to_a_large_store():
    r = bench_store(records=300, appends=3, log=lambda *_: None)
    assert r["benchmark"] == "store" and r["records"] == 300 and len(r["append_ms_all"]) == 3
    assert r["append_ms_median"] > 0


def test_the_plot_writer_uses_a_temporary_name_of_its_own(tmp_path):
    from bench.report.plots import Point, plot_accuracy_macs

    points = [Point("a", "f", 1e6, False, 50.0), Point("b", "f", 2e6, False, 60.0)]
    path = plot_accuracy_macs(points, "t", tmp_path / "x.png")
    (tmp_path / "x.png.tmp").mkdir()  # the old shared temporary name, taken by someone else
    assert plot_accuracy_macs(points, "t", tmp_path / "x.png") == path and path.read_bytes()[:4] == b"\x89PNG"
