import os

import pytest
import torch

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def one_thread():
    """The machines running tests are shared, and two spinning threads on a busy pair of cores run ~10x
    slower than one (measured on the ConvNet-AIG tests: 80 s against 10 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fashion_root(tmp_path):
    from bench.data.synthetic import write_fashion_mnist

    return write_fashion_mnist(tmp_path / "fashion", n_train=256, n_test=128)


@pytest.fixture
def no_system_data(monkeypatch):
    """Make the loaders see only what a test hands them (no $BENCH_DATA, no system folder, no download)."""
    from bench.data import fashion_mnist

    monkeypatch.delenv("BENCH_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_ROOT", "/nonexistent/fashion-mnist")
    monkeypatch.setattr(fashion_mnist, "_download", lambda roots: None)


def real_fashion_mnist_available() -> bool:
    return os.path.isdir(FASHION_MNIST)


CUDA_SKIP_REASON = (
    "needs a CUDA GPU (torch.cuda.is_available() is False here); run `make test-gpu` on a GPU node"
)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are skipped, with the reason, where there is no GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=CUDA_SKIP_REASON)
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)
