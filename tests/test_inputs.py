"""Inputs are checked before they are trusted (issue #14): suites, data files and checkpoints.

Every refusal is one line naming the file (and the key), and comes before any training: no checkpoint
under --work-dir, no store file, no leaderboard.
"""

import hashlib
import pickle

import pytest
import torch
from torch import nn
from torchvision import datasets

from bench import registry
from bench.cli import main
from bench.commands import runner
from bench.data import DataIntegrityError, DatasetNotFoundError, load_dataset
from bench.data.cifar import MANIFEST
from bench.data.synthetic import write_cifar, write_fashion_mnist
from bench.store.results import ResultStore
from tests.helpers import run_args, write_suite


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if the runner starts any training."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(runner, "train", refuse)


def _refused(argv, tmp_path, capsys, *expected: str, command: str = "run") -> str:
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"bench {command}: error: ")
    for text in expected:
        assert text in line, line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results" / "runs").exists()
    assert not (tmp_path / "lb").exists()
    return line


# --- suites -------------------------------------------------------------------------------------------

SUITE_CASES = {
    # id: (text replaced, replacement, what the message says)
    "name_escapes_the_store": ('name = "tiny"', 'name = "../../escape"', "name must be a plain identifier"),
    "name_empty": ('name = "tiny"', 'name = ""', "name must be a plain identifier"),
    "name_with_a_dot": ('name = "tiny"', 'name = "a.b"', "name must be a plain identifier"),
    "version_zero": ("version = 1", "version = 0", "version must be a positive integer, not 0"),
    "version_bool": ("version = 1", "version = true", "version must be a positive integer"),
    "version_float": ("version = 1", "version = 1.5", "version must be a positive integer"),
    "epochs_zero": ("epochs = 1", "epochs = 0", "[train]: epochs must be at least 1, not 0"),
    "lr_nan": ("lr = 0.05", "lr = nan", "[train]: lr must be a finite number in (0, inf), not nan"),
    "lr_inf": ("lr = 0.05", "lr = inf", "[train]: lr must be a finite number"),
    "lr_negative": ("lr = 0.05", "lr = -0.1", "[train]: lr must be a finite number"),
    "lr_bool": ("lr = 0.05", "lr = true", "[train]: lr should be float"),
    "gamma_nan": ("lr = 0.05", "lr = 0.05\ngamma = nan", "[train]: gamma must be a finite number"),
    "momentum_one": ("lr = 0.05", "lr = 0.05\nmomentum = 1.0", "[train]: momentum must be a finite number"),
    "weight_decay_negative": ("lr = 0.05", "lr = 0.05\nweight_decay = -1e-4", "weight_decay must be"),
    "label_smoothing_one": ("lr = 0.05", "lr = 0.05\nlabel_smoothing = 1.0", "label_smoothing must be"),
    "warmup_nan": ("lr = 0.05", "lr = 0.05\nwarmup_epochs = nan", "warmup_epochs must be"),
    "milestone_nan": ("lr = 0.05", "lr = 0.05\nmilestones = [nan]", "milestones must be"),
    "milestones_decreasing": ("lr = 0.05", "lr = 0.05\nmilestones = [2, 1]", "milestones must be increasing"),
    "train_size_zero": ("lr = 0.05", "lr = 0.05\ntrain_size = 0", "[train]: train_size must be at least 1"),
    "crop_padding_negative": ("lr = 0.05", "lr = 0.05\ncrop_padding = -1", "crop_padding must be at least 0"),
    "latency_batch_zero": (
        "latency_batch_sizes = [1]",
        "latency_batch_sizes = [0]",
        "[measure]: latency_batch_sizes must be integers >= 1",
    ),
    "latency_time_nan": (
        "latency_min_run_time_s = 0.01",
        "latency_min_run_time_s = nan",
        "latency_min_run_time_s",
    ),
    "override_lr_nan": (
        "",
        "\n[overrides.resnet20]\nlr = nan\n",
        "[overrides.resnet20]: lr must be a finite",
    ),
    "batch_larger_than_the_data": (
        "batch_size = 64",
        "batch_size = 512",
        "[train]: batch_size 512 is larger than the 256 training images of fashion_mnist",
    ),
    "batch_larger_than_train_size": (
        "lr = 0.05",
        "lr = 0.05\ntrain_size = 32",
        "batch_size 64 is larger than the 32 training images of fashion_mnist (resnet20, train_size 32)",
    ),
}


@pytest.mark.parametrize("case", list(SUITE_CASES))
def test_a_bad_suite_is_refused_before_any_training(
    case, tmp_path, fashion_root, no_system_data, no_training, capsys
):
    old, new, expected = SUITE_CASES[case]
    suite = write_suite(tmp_path)
    text = suite.read_text()
    suite.write_text(text + new if old == "" else text.replace(old, new, 1))
    assert suite.read_text() != text
    _refused(run_args(suite, tmp_path, fashion_root), tmp_path, capsys, str(suite), expected)
    assert not (tmp_path / "escape.jsonl").exists() and not list(tmp_path.parent.glob("escape*"))


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({"seeds": (0, 0)}, "seeds must not repeat; duplicated: [0]"),
        ({"seeds": (-1,)}, "seeds must be integers in [0, 2**32)"),
        ({"models": ("resnet20", "resnet20")}, "models must not repeat"),
    ],
)
def test_repeated_or_bad_seeds_and_models_are_refused(
    kwargs, expected, tmp_path, fashion_root, no_system_data, no_training, capsys
):
    suite = write_suite(tmp_path, **kwargs)
    _refused(run_args(suite, tmp_path, fashion_root), tmp_path, capsys, str(suite), expected)


@pytest.mark.parametrize(
    "extra,expected",
    [
        (["--epochs", "0"], "--epochs must be an integer of at least 1, not 0"),
        (["--epochs", "-3"], "--epochs must be an integer of at least 1, not -3"),
        (["--seeds", "1,1"], "--seeds names 1 more than once"),
        (["--models", "resnet20,resnet20"], "--models names resnet20 more than once"),
    ],
)
def test_command_line_values_are_checked_too(
    extra, expected, tmp_path, fashion_root, no_system_data, no_training, capsys
):
    suite = write_suite(tmp_path)
    _refused(run_args(suite, tmp_path, fashion_root, *extra), tmp_path, capsys, expected)


# --- runs ---------------------------------------------------------------------------------------------


class NaNInEvaluation(nn.Module):
    """Trains normally; its evaluation-mode output is NaN."""

    def __init__(self, num_classes: int, in_chans: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 4, 3)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        out = self.fc(self.conv(x).mean((2, 3)))
        return out if self.training else out * float("nan")


@pytest.fixture
def nan_model():
    registry.register("nan_in_eval_net", NaNInEvaluation)
    yield "nan_in_eval_net"
    registry.unregister("nan_in_eval_net")


def test_a_nan_only_in_evaluation_is_a_failed_record(
    tmp_path, fashion_root, no_system_data, nan_model, capsys
):
    suite = write_suite(tmp_path, models=(nan_model,))
    assert main(run_args(suite, tmp_path, fashion_root)) == 0
    assert (
        f"FAILED {nan_model} · fashion_mnist · seed 0: non-finite evaluation metric"
        in capsys.readouterr().out
    )
    (record,) = ResultStore(tmp_path / "results").read("tiny")
    assert (
        record.status == "failed"
        and record.metrics is None
        and "non-finite evaluation" in record.failure_reason
    )
    assert len(record.history) == 1  # it trained: the history is kept


def test_resume_of_a_finished_run_stores_no_second_record(tmp_path, fashion_root, no_system_data, capsys):
    suite = write_suite(tmp_path, seeds=(0, 1))
    assert main(run_args(suite, tmp_path, fashion_root, "--seeds", "0")) == 0
    (first,) = ResultStore(tmp_path / "results").read("tiny")
    capsys.readouterr()
    assert main(run_args(suite, tmp_path, fashion_root, "--resume")) == 0  # seed 0 is done, seed 1 is not
    out = capsys.readouterr().out
    assert f"resnet20 · fashion_mnist · seed 0: already finished (record {first.record_id}" in out
    assert "--resume does not run it again" in out and "1 run(s) stored" in out
    records = ResultStore(tmp_path / "results").read("tiny")
    assert sorted(r.seed for r in records) == [0, 1]


# --- data ---------------------------------------------------------------------------------------------


def _crafted_pickle(target) -> bytes:
    """A pickle that, when loaded by pickle.load, writes `target`."""

    class WritesAFile:
        def __reduce__(self):
            return exec, (f"open({str(target)!r}, 'w').write('ran')",)

    return pickle.dumps({"data": WritesAFile(), "labels": [0]})


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_the_crafted_pickle_would_run_code(tmp_path):
    """The premise of the tests below: pickle.load runs it."""
    target = tmp_path / "ran.txt"
    pickle.loads(_crafted_pickle(target))
    assert target.read_text() == "ran"


@pytest.mark.parametrize("manifest", ["kept", "rewritten", "removed"])
def test_a_cifar_batch_that_would_run_code_is_refused_and_runs_nothing(tmp_path, manifest):
    """Replaced after the manifest was written: its MD5 no longer matches. Manifest rewritten to match (a
    folder the attacker controls entirely): the restricted unpickler refuses it. No manifest: the
    published MD5 does not match."""
    write_cifar(tmp_path, "cifar10", n_train=20, n_test=10)
    folder, target = tmp_path / "cifar-10-batches-py", tmp_path / "ran.txt"
    (folder / "data_batch_1").write_bytes(_crafted_pickle(target))
    if manifest == "rewritten":
        lines = (folder / MANIFEST).read_text().splitlines()
        fixed = [
            f"{_md5(folder / 'data_batch_1')}  data_batch_1" if ln.endswith(" data_batch_1") else ln
            for ln in lines
        ]
        (folder / MANIFEST).write_text("\n".join(fixed) + "\n")
    elif manifest == "removed":
        (folder / MANIFEST).unlink()
    with pytest.raises(DataIntegrityError) as err:
        load_dataset("cifar10", str(tmp_path), download=False)
    message = str(err.value)
    assert str(folder / "data_batch_1") in message and "\n" not in message
    expected = {
        "kept": f"does not match the MD5 listed in {folder / MANIFEST}",
        "rewritten": "it names builtins.exec, which a CIFAR batch never holds",
        "removed": "does not match the published MD5 (c99cafc152244af753f735de768cd75f)",
    }[manifest]
    assert expected in message
    assert "Fix: download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz again" in message
    assert not target.exists()


def test_bench_measure_refuses_the_crafted_batch_in_one_line(tmp_path, capsys):
    write_cifar(tmp_path, "cifar10", n_train=20, n_test=10)
    target = tmp_path / "ran.txt"
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(_crafted_pickle(target))
    argv = ["measure", "resnet20", "--dataset", "cifar10", "--data-root", str(tmp_path)]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bench measure: error: ") and "data_batch_1: MD5" in line
    assert not target.exists()


def test_published_cifar_files_are_checked_against_the_published_md5(tmp_path, monkeypatch):
    """Without a manifest the loader takes torchvision's published list (here: pointed at our files)."""
    write_cifar(tmp_path, "cifar100", n_train=20, n_test=10)
    folder = tmp_path / "cifar-100-python"
    (folder / MANIFEST).unlink()
    monkeypatch.setattr(datasets.CIFAR100, "train_list", [["train", _md5(folder / "train")]])
    monkeypatch.setattr(datasets.CIFAR100, "test_list", [["test", _md5(folder / "test")]])
    data = load_dataset("cifar100", str(tmp_path), download=False)
    assert data.train_images.shape == (20, 3, 32, 32) and data.num_classes == 100


@pytest.mark.parametrize(
    "damage,expected",
    [
        (lambda b: b[: len(b) // 2], "EOFError"),  # a download cut short
        (lambda b: b[:-8] + bytes([b[-8] ^ 0xFF]) + b[-7:], "CRC check failed"),  # a flipped CRC byte
        (lambda b: b"\x1f\x8b" + b"\x00" * 20, "cannot be read"),  # a broken header
    ],
)
def test_a_damaged_gz_file_is_one_line_naming_it(
    damage, expected, tmp_path, fashion_root, no_system_data, capsys
):
    path = fashion_root / "train-labels-idx1-ubyte.gz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataIntegrityError, match="truncated or damaged"):
        load_dataset("fashion_mnist", str(fashion_root))
    argv = ["measure", "resnet20", "--data-root", str(fashion_root)]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bench measure: error: ") and str(path) in line and expected in line


def test_a_file_missing_from_data_root_is_an_error_not_the_system_copy(
    tmp_path, fashion_root, no_system_data, monkeypatch
):
    from bench.data import fashion_mnist

    system = write_fashion_mnist(tmp_path / "system", n_train=64, n_test=32)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_ROOT", str(system))
    assert load_dataset("fashion_mnist", str(tmp_path / "empty")).source == str(system)  # no copy: fall back
    (fashion_root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion_mnist", str(fashion_root))
    assert f"Fashion-MNIST in {fashion_root} is incomplete: t10k-labels-idx1-ubyte" in str(err.value)


def test_a_cifar_batch_missing_is_named(tmp_path):
    write_cifar(tmp_path, "cifar10", n_train=20, n_test=10)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DatasetNotFoundError, match="test_batch is missing"):
        load_dataset("cifar10", str(tmp_path), download=False)


# --- checkpoints --------------------------------------------------------------------------------------


def _checkpoint(tmp_path, kind: str):
    path = tmp_path / "ckpt.pt"
    if kind == "missing":
        return tmp_path / "nowhere.pt", "does not exist"
    if kind == "truncated":
        torch.save({"model": registry.create_model("bas_resnet20", 10, 1).state_dict()}, path)
        path.write_bytes(path.read_bytes()[:5000])
        return path, "cannot be read"
    if kind == "garbage":
        path.write_bytes(b"not a checkpoint at all")
        return path, "cannot be read"
    if kind == "runs_code":
        path.write_bytes(_crafted_pickle(tmp_path / "ran.txt"))
        return path, "cannot be read"
    if kind == "a_list":
        torch.save([torch.zeros(2)], path)
        return path, "holds a list that is not a state dict"
    if kind == "a_tensor":
        torch.save(torch.zeros(2), path)
        return path, "holds a Tensor that is not a state dict"
    if kind == "wrong_model":
        torch.save(registry.create_model("resnet32", 10, 1).state_dict(), path)
        return path, "does not fit model 'bas_resnet20'"
    raise AssertionError(kind)


CHECKPOINTS = ["missing", "truncated", "garbage", "runs_code", "a_list", "a_tensor", "wrong_model"]


@pytest.mark.parametrize("command", ["measure", "gates"])
@pytest.mark.parametrize("kind", CHECKPOINTS)
def test_a_bad_checkpoint_is_one_line(command, kind, tmp_path, fashion_root, no_system_data, capsys):
    path, expected = _checkpoint(tmp_path, kind)
    argv = [command, "bas_resnet20", "--checkpoint", str(path), "--data-root", str(fashion_root)]
    if command == "gates":
        argv += ["--out", str(tmp_path / "gates")]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"bench {command}: error: checkpoint {path}") and expected in line, line
    assert not (tmp_path / "ran.txt").exists() and not (tmp_path / "gates").exists()
