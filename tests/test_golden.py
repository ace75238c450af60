"""Golden values of every registered model: for a fixed seed and a fixed small input, the parameter
count, a checksum of the seeded initial state and a few eval-mode outputs must not drift.

A change to a model's construction order, initialisation or forward shows here at once. If the change is
intended, regenerate the file and say why in the commit:

    PYTHONPATH=. python tests/test_golden.py            # rewrites tests/golden/models.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from bench import registry

GOLDEN = Path(__file__).with_name("golden") / "models.json"
SEED, INPUT_SEED = 0, 123
# outputs: float32 on the CPU, one thread. oneDNN picks its kernels by CPU (AVX2, AVX-512, AMX), and their
# summation orders differ by up to ~5e-4 relative on deep nets at init; a change of construction, init or
# forward moves the outputs by far more (the seeded-init checksum is compared exactly)
RTOL, ATOL = 2e-3, 1e-4


def _is_imagenet_sized(name: str) -> bool:
    """ImageNet-type models and PSPNet get 3×64×64 inputs, CIFAR-type 3×32×32."""
    return (
        name.startswith("pspnet")
        or registry.get_entry(name).family == "resnet_imagenet"
        or name
        in {
            "se_resnet50",
            "se_resnet101",
            "ce_resnet18",
            "ce_resnet50",
            "bas_resnet18",
            "bas_resnet34",
            "bas_resnet50",
            "aig_resnet50",
            "aig_resnet101",
            "gaternet_resnet50",
            "se_resnet18",
            "ce_resnet101",
            "mobilenet_v2",
            "se_mobilenet_v2",
            "ce_mobilenet_v2",
            "shufflenet_v2_x1_0",
            "se_shufflenet_v2_x1_0",
            "ce_shufflenet_v2_x1_0",
            "dcnet_tanh_cos_resnet18m",
        }
    )


def measure(name: str) -> dict:
    """The golden record of model `name` (built with seed 0, in eval mode on two fixed inputs)."""
    torch.manual_seed(SEED)
    num_classes = 19 if name.startswith("pspnet") else 10
    model = registry.create_model(name, num_classes=num_classes, in_chans=3)
    shape = (3, 64, 64) if _is_imagenet_sized(name) else (3, 32, 32)
    state = model.state_dict()
    init = sum(v.double().abs().sum().item() for v in state.values() if v.is_floating_point())
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(INPUT_SEED))
    with torch.no_grad():
        out = model.eval()(x)
    if out.dim() > 2:  # segmentation logits [2, classes, H, W]: sums and a few pixels
        flat = out.flatten(1).double()
        values = torch.cat([flat.sum(1), flat.abs().sum(1), flat[:, :: flat.shape[1] // 4].flatten()])
    else:
        values = out.flatten()
    return {
        "num_classes": num_classes,
        "shape": list(shape),
        "params": sum(p.numel() for p in model.parameters()),
        "state_keys": len(state),
        "init_abs_sum": init,
        "outputs": [float(v) for v in values],
    }


def _golden() -> dict:
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one summation order for the pinned outputs
    yield
    torch.set_num_threads(threads)


def test_every_registered_model_has_golden_values():
    builtin = {n for n, e in registry.entries().items() if not e.origin} or set(registry.list_models())
    assert sorted(builtin & set(registry.list_models())) == sorted(_golden())


@pytest.mark.parametrize("name", sorted(json.loads(GOLDEN.read_text())) if GOLDEN.exists() else [])
def test_model_matches_its_golden_values(name):
    want, got = _golden()[name], measure(name)
    assert got["params"] == want["params"] and got["state_keys"] == want["state_keys"]
    assert got["init_abs_sum"] == pytest.approx(want["init_abs_sum"], rel=1e-9), "seeded init moved"
    torch.testing.assert_close(
        torch.tensor(got["outputs"]), torch.tensor(want["outputs"]), rtol=RTOL, atol=ATOL
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    names = sys.argv[1:] or [n for n in registry.list_models() if not registry.get_entry(n).origin]
    golden = _golden() if GOLDEN.exists() and sys.argv[1:] else {}
    for name in names:
        golden[name] = measure(name)
        print(name, golden[name]["params"], flush=True)
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(dict(sorted(golden.items())), indent=1) + "\n")
