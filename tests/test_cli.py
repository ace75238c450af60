"""`bench` end to end on synthetic data, and the clear errors a user can cause."""

import pytest

from bench.cli import main
from bench.store.results import ResultStore
from tests.helpers import run_args, write_suite


def test_run_stores_a_record_and_writes_the_leaderboard(tmp_path, fashion_root, no_system_data, capsys):
    suite = write_suite(tmp_path)
    assert main(run_args(suite, tmp_path, fashion_root)) == 0
    out = capsys.readouterr().out
    assert "resnet20 · fashion_mnist · seed 0: top-1" in out and str(tmp_path / "lb" / "tiny.md") in out
    (record,) = ResultStore(tmp_path / "results").read("tiny")
    assert record.status == "measured" and record.store_version == 1 and record.seed == 0
    assert (
        record.metrics.params == 269_722 - 2 * 9 * 16
    )  # in_chans 1: the stem conv has 16·9 weights, not 16·27
    assert record.metrics.static_macs == record.metrics.static_macs_fvcore
    assert record.data.train_size == 256 and record.environment.torch
    board = (tmp_path / "lb" / "tiny.md").read_text()
    assert f"{record.metrics.top1_pct:.2f}" in board and "| resnet20" in board
    assert (tmp_path / "lb" / "README.md").is_file()


def _store_bytes(tmp_path):
    path = tmp_path / "results" / "runs" / "tiny.jsonl"
    return path.read_bytes() if path.exists() else None


@pytest.mark.parametrize(
    "case,expected",
    [
        ("unknown_model", "unknown model 'resnet21'"),
        ("unknown_suite", "unknown suite 'nosuch'"),
        ("malformed_toml", "is not valid TOML"),
        ("unknown_key", "unknown key(s) ['lr_typo']"),
        ("wrong_type", "epochs should be int"),
        ("missing_data", "Fashion-MNIST not found"),
        ("unknown_dataset", "unknown dataset 'mnist3'"),
        ("name_escapes", "name must be a plain identifier (letters, digits"),
        ("epochs_zero", "--epochs must be an integer of at least 1, not 0"),
        ("control_of_itself", "control_of must name another suite"),
    ],
)
def test_user_errors_give_one_clear_message_and_write_nothing(
    case, expected, tmp_path, fashion_root, no_system_data, capsys
):
    suite, data_root, extra = write_suite(tmp_path), fashion_root, []
    if case == "unknown_model":
        extra = ["--models", "resnet21"]
    elif case == "unknown_suite":
        suite = "nosuch"
    elif case == "malformed_toml":
        suite.write_text(suite.read_text() + "\n[train\n")
    elif case == "unknown_key":
        suite.write_text(suite.read_text().replace("lr = 0.05", "lr_typo = 0.05"))
    elif case == "wrong_type":
        suite.write_text(suite.read_text().replace("epochs = 1", 'epochs = "one"'))
    elif case == "missing_data":
        data_root = tmp_path / "nowhere"
    elif case == "unknown_dataset":
        suite.write_text(suite.read_text().replace('["fashion_mnist"]', '["mnist3"]'))
    elif case == "name_escapes":  # the store file and checkpoints would land outside --out / --work-dir
        suite.write_text(suite.read_text().replace('name = "tiny"', 'name = "../../escape"'))
    elif case == "epochs_zero":  # an untrained model stored as measured
        extra = ["--epochs", "0"]
    elif case == "control_of_itself":  # its page would compare the suite with itself
        suite.write_text(suite.read_text().replace('name = "tiny"', 'name = "tiny"\ncontrol_of = "tiny"'))
    assert main(run_args(suite, tmp_path, data_root, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and err[0].startswith("bench run: error:")
    assert _store_bytes(tmp_path) is None and not (tmp_path / "lb").exists()


@pytest.mark.parametrize("rank", [0, 1])
def test_under_torchrun_an_error_every_rank_shares_is_reported_once(
    rank, tmp_path, fashion_root, no_system_data, monkeypatch, capsys
):
    from bench.commands import runner
    from bench.engine.distributed import World

    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(runner, "init_from_env", lambda device: (World(rank=rank, world_size=2), device))
    suite = write_suite(tmp_path)
    assert (
        main(run_args(suite, tmp_path, fashion_root, "--models", "resnet21")) == 2
    )  # the same plan on every rank
    err = capsys.readouterr().err.strip().splitlines()
    if rank == 0:
        (line,) = err
        assert line.startswith("bench run: error (rank 0 of 2): ") and "unknown model 'resnet21'" in line
    else:
        assert err == []
    assert main(run_args(suite, tmp_path, tmp_path / "nowhere")) == 2  # data missing: each rank says so
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"bench run: error (rank {rank} of 2): ") and "Fashion-MNIST not found" in line


def test_list_shows_suites_and_models(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "quick" in out and "cifar" in out and "resnet20" in out and "fashion_mnist" in out


def test_builtin_suites_are_valid():
    from bench.commands.runner import plan
    from bench.engine.config import list_suites, load_suite

    for name in list_suites():
        assert plan(load_suite(name)), name


def test_the_fp32_control_trains_as_the_fashion_suite_but_in_float32():
    from dataclasses import replace

    from bench.engine.config import load_suite

    fashion, control = load_suite("fashion"), load_suite("fashion_fp32")
    assert not control.train.amp and not control.train.channels_last
    assert replace(control.train, amp=True, channels_last=True) == fashion.train
    assert control.seeds == fashion.seeds and control.measure == fashion.measure
    assert set(control.models) <= set(fashion.models) and not control.overrides


def test_the_gpu_suite_trains_as_the_fashion_suite():
    from bench.engine.config import load_suite

    fashion, gpu = load_suite("fashion"), load_suite("fashion_gpu")
    assert gpu.train == fashion.train and gpu.seeds == fashion.seeds and gpu.measure == fashion.measure
    assert set(gpu.models) <= set(fashion.models) and not gpu.overrides and gpu.control_of == "fashion"


def test_leaderboard_command_regenerates(tmp_path, capsys):
    store = tmp_path / "results"
    (store / "runs").mkdir(parents=True)
    assert main(["leaderboard", "--out", str(store), "--leaderboard-dir", str(tmp_path / "lb")]) == 0
    assert (tmp_path / "lb" / "README.md").is_file()
