"""The GPU-node make targets, without network and without a GPU.

`make gpu-setup` is run for real: into a fresh `--system-site-packages` venv that sees a torch from outside
itself (as a GPU node's own PyTorch is), from a wheelhouse holding only the project's wheel and one
dependency's wheel (tabulate, which the "node" lacks; and setuptools, newer than a fresh venv's own), with pip's index and find-links switched off. It
must install both from the wheelhouse and leave the node's torch where it was, at the same version.

What is not run here: `make wheelhouse`'s `pip download`, which needs an index. Its requirement list
(`make wheelhouse-requirements`) is built for real and its pip command lines are checked in make's dry
mode. The node's Python is a venv (as /opt/torch/.venv on a GPU node) whose site is this venv's
site-packages, less the project (and tabulate), seen through a .pth file; a venv made from a venv sees the
base interpreter's site alone, which has no torch here, so gpu-setup must add the node's site itself.
"""

import base64
import csv
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)  # the venv running the tests: `make VENV=...` uses its python
PROJECT = ("pyproject.toml", "README.md", "bench", "baselines", "methods", "integrations")


def _offline_env() -> dict:
    """No pip configuration (this machine's has a local index and find-links), no index, no network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")  # any download fails fast
    return env


def _make(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), f"VENV={VENV}", "-o", f"{VENV}/.installed", *args],
        capture_output=True,
        text=True,
        env=env or os.environ.copy(),
        timeout=timeout,
    )


def _repack_as_wheel(name: str, out: Path) -> Path:
    """A wheel of an installed pure-Python distribution, from its files and RECORD (no download)."""
    dist = importlib.metadata.distribution(name)
    site = Path(dist.locate_file(""))
    files = [f for f in dist.files if not str(f).startswith("..") and "__pycache__" not in str(f)]
    info = next(f for f in files if str(f).endswith(".dist-info/METADATA")).parent
    wheel = out / f"{dist.metadata['Name']}-{dist.version}-py3-none-any.whl"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(wheel, "w") as z:
        for f in files:
            if f.name in ("RECORD", "INSTALLER", "direct_url.json", "REQUESTED"):
                continue
            data = (site / f).read_bytes()
            z.writestr(str(f), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            writer.writerow([str(f), f"sha256={digest}", len(data)])
        writer.writerow([f"{info}/RECORD", "", ""])
        z.writestr(f"{info}/RECORD", record.getvalue())
    return wheel


def _purelib(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def _torch_seen_by(python: Path) -> str:
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import torch, torchvision; print(torch.__version__, torch.__file__, torchvision.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=_offline_env(),
    )
    return out.stdout.strip()


@pytest.mark.slow
def test_gpu_setup_installs_the_project_offline_and_never_replaces_the_nodes_torch(tmp_path):
    started = time.perf_counter()
    env = _offline_env()
    # the node's own site: torch, torchvision and every other dependency, but not the project nor tabulate
    node_site = tmp_path / "node-site"
    node_site.mkdir()
    own = Path(sysconfig.get_paths()["purelib"])
    for entry in own.iterdir():
        if not entry.name.lower().startswith(("channelbench", "__editable__", "tabulate", "_distutils_hack")):
            (node_site / entry.name).symlink_to(entry)
    # the wheelhouse: the project's wheel (built from a copy of the sources, so the tree stays clean)
    # and tabulate's
    source, wheels = tmp_path / "source", tmp_path / "wheels"
    source.mkdir()
    for name in PROJECT:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, source / name)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(source),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    for name in ("tabulate", "setuptools"):  # a fresh venv's own setuptools is older than torch asks for
        _repack_as_wheel(name, wheels)
    assert sorted(p.name.split("-")[0] for p in wheels.glob("*.whl")) == [
        "channelbench",
        "setuptools",
        "tabulate",
    ]
    # the node's Python: a venv whose own site holds torch (as /opt/torch/.venv on a GPU node), so that a
    # venv made from it with --system-site-packages sees the base interpreter's site and not torch, unless
    # gpu-setup adds the node's site itself
    node = tmp_path / "node"
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(node)], check=True, env=env, timeout=120)
    (_purelib(node / "bin/python") / "node-site.pth").write_text(f"{node_site}\n")
    before = _torch_seen_by(node / "bin/python")
    assert str(node_site) in before
    gpu = tmp_path / "gpu"

    out = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(REPO),
            "gpu-setup",
            f"VENV={gpu}",
            f"WHEELS={wheels}",
            f"NODE_PYTHON={node / 'bin/python'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert _torch_seen_by(gpu / "bin/python") == before  # same torch, same version, same file
    gpu_site = _purelib(gpu / "bin/python")
    assert not any(p.name.lower().startswith(("torch", "nvidia")) for p in gpu_site.iterdir())
    pins = (gpu / "node-torch.txt").read_text().split()
    metadata = importlib.metadata.version
    assert pins == [f"torch=={metadata('torch')}", f"torchvision=={metadata('torchvision')}"]
    where = subprocess.run(
        [
            str(gpu / "bin/python"),
            "-c",
            "import bench, tabulate; print(bench.__file__); print(tabulate.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tmp_path,  # not the repository, whose bench/ would shadow the installed one
    ).stdout.split()
    assert all(Path(p).is_relative_to(gpu_site) for p in where), where  # both from the wheelhouse
    listed = subprocess.run(
        [str(gpu / "bin/bench"), "list"], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )
    assert listed.returncode == 0 and "resnet20" in listed.stdout, listed.stderr[-2000:]
    assert (gpu / ".installed").is_file() and "gpu-setup: channelbench in" in out.stdout
    assert time.perf_counter() - started < 150


def test_the_wheelhouse_holds_every_dependency_but_torch_torchvision_and_their_cuda_libraries(tmp_path):
    out = _make("wheelhouse-requirements", f"WHEELS={tmp_path}")
    assert out.returncode == 0, out.stderr
    pinned = dict(line.split("==") for line in (tmp_path / "requirements.txt").read_text().splitlines())
    names = {n.lower() for n in pinned}
    assert {
        "timm",
        "fvcore",
        "pandas",
        "tabulate",
        "torchmetrics",
        "pydantic",
        "pytest",
        "hypothesis",
    } <= names
    assert "setuptools" in names and not names & {"torch", "torchvision", "triton", "channelbench", "pip"}
    assert not [n for n in names if n.startswith(("nvidia-", "cuda-"))]
    assert pinned["tabulate"] == importlib.metadata.version("tabulate")
    # what `make wheelhouse` then runs (needs an index: on a connected machine)
    dry = _make("-n", "wheelhouse", f"WHEELS={tmp_path}").stdout
    assert f"pip download --no-deps  -d {tmp_path} -r {tmp_path}/requirements.txt" in dry
    assert f"pip wheel --no-deps -w {tmp_path} ." in dry


def test_gpu_setup_without_a_wheelhouse_says_how_to_make_one(tmp_path):
    out = _make("gpu-setup", f"WHEELS={tmp_path / 'missing'}")
    assert out.returncode != 0 and "make wheelhouse" in out.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: gpu-check would run")
def test_gpu_check_without_cuda_ends_at_once_in_one_line():
    started = time.perf_counter()
    out = _make("-s", "gpu-check", timeout=120)
    lines = out.stdout.splitlines()
    assert out.returncode != 0 and len(lines) == 1, out.stdout
    assert lines[0].startswith("gpu-check: no CUDA GPU here (torch.cuda.is_available() is False")
    assert lines[0].endswith("run it on a GPU node")
    assert time.perf_counter() - started < 60


def test_gpu_check_runs_every_step_and_the_seeds_that_fit_its_budget(tmp_path, monkeypatch, capsys):
    """The check's flow with its steps stubbed (the real ones need a GPU): each seed of the suite takes
    100 s of a 250 s budget, so seeds 0 and 1 run and seed 2 is left out; the summary is written."""
    from bench.commands import gpu_check

    clock = [0.0]
    monkeypatch.setattr(gpu_check.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check.torch.cuda, "get_device_name", lambda *a: "a stub GPU")
    monkeypatch.setattr(gpu_check, "run_tests", lambda log, timeout: ("passed", "28 passed"))
    monkeypatch.setattr(gpu_check, "throughput", lambda args, out, timeout: ("measured", "runs/h"))
    monkeypatch.setattr(gpu_check, "perf_train", lambda out, root, amp, det: ("measured", f"amp {amp}"))
    monkeypatch.setattr(gpu_check, "perf_gated", lambda out, model, batch: ("measured", f"{model} {batch}"))
    seeds = []

    def suite(args, seed, timeout):
        seeds.append(seed)
        clock[0] += 100
        return "stored", f"seed {seed}"

    monkeypatch.setattr(gpu_check, "run_suite", suite)
    assert gpu_check.main(["--budget", "250", "--out", str(tmp_path)]) == 0
    assert seeds == [0, 1]
    summary = json.loads((tmp_path / "perf/gpu-check.json").read_text())
    steps = {row["step"]: row["status"] for row in summary["steps"]}
    assert (
        steps["pytest -m cuda"] == "passed" and steps["perf train resnet20 amp+channels_last"] == "measured"
    )
    assert [s for s in steps if s.startswith("perf gated")] == [
        f"perf gated {m} bs{b}" for m in gpu_check.GATED_MODELS for b in (1, 64)
    ]
    assert steps["throughput bench run --jobs 1,4 (2 epochs a run)"] == "measured"
    assert steps["fashion_gpu resnet20 seed 2 (the suite's epochs)"] == "left out"
    assert "| step" in capsys.readouterr().out  # the one table


def test_gpu_check_leaves_out_a_seed_the_throughput_step_says_will_not_fit(tmp_path, monkeypatch, capsys):
    """The --jobs 1 throughput runs took 20 s each for 2 epochs: a 15-epoch seed needs ~150 s, more than
    the 140 s left, so no seed starts (a started one would only time out)."""
    from bench.commands import gpu_check

    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check.torch.cuda, "get_device_name", lambda *a: "a stub GPU")
    monkeypatch.setattr(gpu_check, "perf_train", lambda out, root, amp, det: ("measured", ""))
    monkeypatch.setattr(gpu_check, "perf_gated", lambda out, model, batch: ("measured", ""))

    def throughput(args, perf_dir, timeout):
        perf_dir.mkdir(parents=True, exist_ok=True)
        rows = [{"jobs": 1, "runs": 4, "wall_s": 80.0, "runs_per_hour": 180.0}]
        (perf_dir / "gpu-jobs-fashion_gpu.json").write_text(json.dumps({"rows": rows, "epochs_per_run": 2}))
        return "measured", ""

    monkeypatch.setattr(gpu_check, "throughput", throughput)
    monkeypatch.setattr(gpu_check, "run_suite", lambda *a: pytest.fail("a seed that cannot fit started"))
    assert gpu_check.main(["--budget", "140", "--skip-tests", "--out", str(tmp_path)]) == 0
    steps = json.loads((tmp_path / "perf/gpu-check.json").read_text())["steps"]
    assert [s["status"] for s in steps if s["step"].startswith("fashion_gpu")] == ["left out"] * 3
    assert "needs ~150 s" in capsys.readouterr().out
