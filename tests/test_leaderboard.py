"""The leaderboard is a pure function of the store: committed files match it, old versions rebuild,
rows carry status badges and paper numbers, unrun models say so."""

import re
from pathlib import Path

import pytest

from bench.cli import main
from bench.report.leaderboard import NOT_RUN, write_leaderboard
from bench.store.results import ResultStore
from bench.store.schema import Record
from tests.test_results import make_record, record_body

REPO = Path(__file__).resolve().parent.parent


def _row(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def test_committed_leaderboard_is_generated_from_the_committed_store(tmp_path):
    store = ResultStore(REPO / "results")
    written = write_leaderboard(store, tmp_path)
    committed = REPO / "leaderboard"
    for path in (p for p in written if p.suffix == ".md"):
        name = path.relative_to(tmp_path)
        assert (committed / name).is_file(), f"leaderboard/{name} is missing: run `bench leaderboard`"
        assert (committed / name).read_text() == path.read_text(), (
            f"leaderboard/{name} differs from what the store generates: run `bench leaderboard`"
        )


def test_at_an_old_version_reproduces_that_versions_files(tmp_path):
    store = ResultStore(tmp_path / "results")
    store.append([make_record(0, top1=60.0)])
    first = {p.name: p.read_bytes() for p in write_leaderboard(store, tmp_path / "v1")}
    store.append([make_record(1, top1=70.0)])
    store.append([make_record(0, suite="other")])
    write_leaderboard(store, tmp_path / "v3")
    again = {p.name: p.read_bytes() for p in write_leaderboard(store, tmp_path / "at1", at=1)}
    assert again == first  # markdown and figures, byte for byte
    assert (tmp_path / "v3" / "tiny.md").read_bytes() != first["tiny.md"]
    assert "other.md" not in again and (tmp_path / "v3" / "other.md").is_file()
    with pytest.raises(ValueError, match="versions 1 to 3"):
        write_leaderboard(store, tmp_path / "x", at=4)


def test_the_digest_on_the_page_is_the_stores(tmp_path):
    store = ResultStore(tmp_path / "results")
    store.append([make_record(0)])
    write_leaderboard(store, tmp_path / "lb")
    assert f"store sha256 `{store.digest('tiny')[:16]}`" in (tmp_path / "lb" / "tiny.md").read_text()
    assert f"store sha256 `{store.digest()[:16]}`" in (tmp_path / "lb" / "README.md").read_text()


def test_rows_show_mean_std_over_seeds(tmp_path):
    store = ResultStore(tmp_path / "results")
    store.append([make_record(0, top1=60.0), make_record(1, top1=70.0)])
    write_leaderboard(store, tmp_path / "lb", suite="tiny")
    row = _row((tmp_path / "lb" / "tiny.md").read_text(), "| resnet20")
    assert "65.00 ± 7.07" in row and re.search(r"\|\s+2\s+\|", row) and "`measured`" in row


def test_gated_rows_show_the_backbones_executed_share_without_the_gate_network(tmp_path):
    def gated(seed, executed):
        body = record_body(seed, model="gated20")
        spread = {"mean": executed, "std": 0.0, "min": executed, "max": executed}
        body["metrics"] |= {"executed_macs": spread, "gate_network_macs": 20}
        return Record.model_validate(body)

    store = ResultStore(tmp_path / "results")
    store.append([gated(0, 60.0), gated(1, 50.0), make_record(0)])
    write_leaderboard(store, tmp_path / "lb", suite="tiny")
    text = (tmp_path / "lb" / "tiny.md").read_text()
    header = [c.strip() for c in _row(text, "| Model").split("|")]

    def cell(model: str) -> str:
        row = [c.strip() for c in _row(text, f"| {model}").split("|")]
        return dict(zip(header, row, strict=True))["Backbone executed (%)"]

    assert cell("gated20") == "43.8"  # (55 - 20) / (100 - 20): the gate network counted in neither
    assert cell("resnet20") == "–"


def test_rows_are_ranked_on_the_numbers_not_on_their_rendering(tmp_path):
    store = ResultStore(tmp_path / "results")
    store.append(
        [
            make_record(0, top1=9.5, model="resnet110"),  # "9.50" sorts after "10.00" as text
            make_record(0, top1=50.001),
            make_record(0, top1=50.004, model="resnet56"),  # both "50.00"
            make_record(0, top1=10.0, model="resnet32"),
            make_record(1, top1=11.0, model="resnet32"),
        ]
    )
    write_leaderboard(store, tmp_path / "lb", suite="tiny")
    text = (tmp_path / "lb" / "tiny.md").read_text()
    models = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| resnet")]
    assert models == ["resnet56", "resnet20", "resnet32", "resnet110"]
    assert "10.50 ± 0.71" in _row(text, "| resnet32") and "50.00 " in _row(text, "| resnet56")


def test_a_distributed_or_mixed_precision_run_says_how_it_trained(tmp_path):
    from tests.test_results import TRAINING

    store = ResultStore(tmp_path / "results")
    store.append([make_record(0)])
    write_leaderboard(store, tmp_path / "lb", suite="tiny")
    assert "Training" not in _row((tmp_path / "lb" / "tiny.md").read_text(), "| Model")  # plain runs only
    ddp = {
        **TRAINING,
        "world_size": 8,
        "batch_size_per_rank": 32,
        "global_batch_size": 256,
        "amp_dtype": "bfloat16",
        "channels_last": True,
        "sync_bn": True,
        "backend": "nccl",
    }
    store.append([make_record(1, training=ddp, config_hash="e" * 64)])
    write_leaderboard(store, tmp_path / "lb", suite="tiny")
    text = (tmp_path / "lb" / "tiny.md").read_text()
    assert "| Training" in _row(text, "| Model")
    assert "8 × 32, bfloat16, channels_last, SyncBN" in _row(text, "| resnet20 (config eeeeeeee)")
    assert re.search(r"\| 1 × 64\s+\|$", _row(text, "| resnet20 (config aaaaaaaa)"))
    store.append([make_record(2, training={**TRAINING, "compile": "default"}, config_hash="c" * 64)])
    write_leaderboard(store, tmp_path / "lb", suite="tiny")
    text = (tmp_path / "lb" / "tiny.md").read_text()
    assert "1 × 64, compiled (default)" in _row(text, "| resnet20 (config cccccccc)")


def test_a_seed_run_again_counts_once_with_its_newest_record(tmp_path):
    store = ResultStore(tmp_path / "results")
    store.append([make_record(0, top1=60.0), make_record(1, top1=80.0)])
    store.append([make_record(0, top1=70.0, created_at="2026-01-02T00:00:00+00:00")])  # `make run` again
    write_leaderboard(store, tmp_path / "lb", suite="tiny")
    row = _row((tmp_path / "lb" / "tiny.md").read_text(), "| resnet20")
    assert "75.00 ± 7.07" in row and re.search(r"\|\s+2\s+\|", row)
    assert len(store.read("tiny")) == 3  # the older run stays in the store


def test_declared_but_unrun_models_say_so_and_no_cell_is_blank(tmp_path):
    store = ResultStore(tmp_path / "results")
    store.append([make_record(0, suite="quick")])
    write_leaderboard(store, tmp_path / "lb", suite="quick")
    from bench.engine.config import load_suite

    unrun = [m for m in load_suite("quick").models if m != "resnet20"]
    text = (tmp_path / "lb" / "quick.md").read_text()
    assert all(re.search(rf"\| {m} +\| – +\| {NOT_RUN}", text) for m in unrun)
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("|:"):
            assert not re.search(r"\|\s+\|", line), line  # every cell says something


def test_every_built_in_suite_gets_a_page_and_the_index_lists_versions(tmp_path):
    store = ResultStore(tmp_path / "results")
    store.append([make_record(0, suite="quick")])
    store.append(
        [make_record(1, suite="quick", status="submitted", code_url="https://x.org/c", submitter="bo")]
    )
    written = {p.name for p in write_leaderboard(store, tmp_path / "lb")}
    assert {"cifar.md", "fashion.md", "quick.md", "README.md", "paper.md"} <= written
    index = (tmp_path / "lb" / "README.md").read_text()
    assert "Store version 2, 2 records" in index
    assert re.search(r"\| 2 \| 1 \| quick \| 1 submitted \| bo \|", index)
    assert re.search(r"\| 1 \| 1 \| quick \| 1 measured \| test \|", index)
    assert index.index("| 2 | 1 |") < index.index("| 1 | 1 |")  # newest first
    assert "| [cifar](cifar.md) | 1 | cifar10, cifar100 | 0 of " in index


def test_verified_records_badge_their_row_and_are_not_extra_seeds(tmp_path):
    store = ResultStore(tmp_path / "results")
    store.append(
        [
            make_record(0, top1=60.0, status="submitted", code_url="https://x.org/c", submitter="ann"),
            make_record(1, top1=62.0, status="submitted", code_url="https://x.org/c", submitter="ann"),
        ]
    )
    first = store.read()[0]
    check = {"record_id": first.record_id, "submitted": 60.0, "measured": 60.5, "tolerance": 1.0}
    store.append([make_record(0, top1=60.5, status="verified", verification=check, submitter="lab")])
    write_leaderboard(store, tmp_path / "lb", suite="tiny")
    text = (tmp_path / "lb" / "tiny.md").read_text()
    row = _row(text, "| resnet20 (submitted by ann)")
    assert "`submitted` `verified` 1/2" in row and "61.00 ± 1.41" in row and re.search(r"\|\s+2\s+\|", row)
    assert f"`{first.record_id}`" in text and "verified by `" in text and "Δ +0.50" in text
    assert "## Verifications" in text


def test_leaderboard_command_regenerates_and_rejects_unknown_versions(tmp_path, capsys):
    store = tmp_path / "results"
    (store / "runs").mkdir(parents=True)
    assert main(["leaderboard", "--out", str(store), "--leaderboard-dir", str(tmp_path / "lb")]) == 0
    assert (tmp_path / "lb" / "README.md").is_file()
    assert (
        main(["leaderboard", "--out", str(store), "--leaderboard-dir", str(tmp_path / "lb2"), "--at", "3"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and err[0].startswith("bench leaderboard: error: --at 3")
        and not (tmp_path / "lb2").exists()
    )
    assert (
        main(
            ["leaderboard", "--out", str(store), "--leaderboard-dir", str(tmp_path / "lb3"), "--suite", "zz"]
        )
        == 2
    )
    assert "no built-in suite" in capsys.readouterr().err and not (tmp_path / "lb3").exists()


def test_a_submissions_model_info_does_not_replace_the_built_in_models_notes(tmp_path):
    store = ResultStore(tmp_path / "results")
    store.append([make_record(0, model_info={"block": "basic"})])
    store.append(
        [
            make_record(
                1,
                model_info={"block": "theirs"},
                status="submitted",
                code_url="https://x.org/c",
                submitter="aaa",  # sorts before our runs
            )
        ]
    )
    write_leaderboard(store, tmp_path / "lb", suite="tiny")
    text = (tmp_path / "lb" / "tiny.md").read_text()
    notes, submitted = text.split("## Model notes")[1].split("## Notes from submissions")
    assert '- `resnet20`: `{"block": "basic"}`' in notes and "theirs" not in notes
    assert re.search(r'- `resnet20` in `[0-9a-f]{16}`, submitted by aaa: `\{"block": "theirs"\}`', submitted)


def _control_rows(section: str) -> list[list[str]]:
    """The cells of a control section's table rows."""
    return [
        [c.strip() for c in line.split("|")[1:-1]]
        for line in section.splitlines()
        if "| fashion_mnist" in line
    ]


@pytest.mark.parametrize("bf16_top1,verdict", [((63.9, 64.1), "within"), ((63.0, 63.2), "outside")])
def test_a_control_suite_compares_its_models_with_the_suite_it_controls_seed_by_seed(
    bf16_top1, verdict, tmp_path
):
    from tests.test_results import TRAINING

    bf16 = {**TRAINING, "amp_dtype": "bfloat16", "channels_last": True}
    store = ResultStore(tmp_path / "results")  # the built-in fashion_fp32 declares control_of = "fashion"
    store.append([make_record(0, "fashion_fp32", 64.0), make_record(1, "fashion_fp32", 64.2)])
    store.append(
        [
            make_record(s, "fashion", t, training=bf16)
            for s, t in zip((0, 1, 2), (*bf16_top1, 64.1), strict=True)
        ]
    )
    write_leaderboard(store, tmp_path / "lb")
    section = (tmp_path / "lb" / "fashion_fp32.md").read_text().split("## Against `fashion`")[1]
    rows = _control_rows(section)
    assert [row[2:6] for row in rows] == [
        ["0", "64.00", f"{bf16_top1[0]:.2f}", f"{bf16_top1[0] - 64.0:+.2f}"],
        ["1", "64.20", f"{bf16_top1[1]:.2f}", f"{bf16_top1[1] - 64.2:+.2f}"],
        ["2", "–", "64.10", "–"],  # a seed only one side ran is shown, and left out of the verdict
    ]
    assert rows[0][6:] == ["1 × 64", "1 × 64, bfloat16, channels_last"]
    assert f"seeds 0, 1: `fashion_fp32` 64.10 ± 0.14, `fashion` {sum(bf16_top1) / 2:.2f} ± 0.14" in section
    assert f"{verdict} the spread over seeds (0.14)" in section
    assert "## Against" not in (tmp_path / "lb" / "fashion.md").read_text()  # only the control compares
    assert "Device (" not in section  # both sides ran on the same device


def test_a_control_on_another_device_shows_each_sides_device(tmp_path):
    from tests.test_results import TRAINING, record_body

    on_gpu = {**record_body()["environment"], "device": "cuda", "device_name": "NVIDIA H200"}
    bf16 = {**TRAINING, "amp_dtype": "bfloat16", "channels_last": True}
    store = ResultStore(tmp_path / "results")  # the built-in fashion_gpu declares control_of = "fashion"
    store.append([make_record(s, "fashion_gpu", 64.0, training=bf16, environment=on_gpu) for s in (0, 1)])
    store.append([make_record(s, "fashion", 64.2, training=bf16) for s in (0, 1)])
    write_leaderboard(store, tmp_path / "lb")
    section = (tmp_path / "lb" / "fashion_gpu.md").read_text().split("## Against `fashion`")[1]
    rows = _control_rows(section)
    assert [row[8:] for row in rows] == [["cuda (NVIDIA H200)", "cpu"]] * 2
    assert "the Device cells: where it ran" in section
