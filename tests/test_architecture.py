"""The layering of docs/architecture.md, checked on the source: imports point down, no cycles, and every
registered model keeps the model contract (bench.contract)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from bench import registry
from bench.contract import check_model

ROOT = Path(__file__).resolve().parent.parent
# top to bottom; a module may import from its own layer or any layer below it
LAYERS = [
    {"bench.cli", "bench.__main__"},
    {"integrations"},
    {"bench.commands"},
    {"bench.report"},
    {"bench.measure"},
    {"bench.store"},
    {"bench.engine"},
    {"methods"},
    {"baselines"},
    {"bench.plugins", "bench.registry", "bench.contract", "bench.gates", "bench.sparse", "bench.data"},
    {"bench"},
]
PACKAGES = ("bench", "baselines", "methods", "integrations")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> project modules it imports (a `from package import submodule` names the submodule)."""
    graph = {}
    for name, path in mods.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = {f"{node.module}.{a.name}" for a in node.names} & mods.keys()
                targets |= subs
                if len(subs) < len(node.names) and node.module in mods:
                    targets.add(node.module)
        graph[name] = targets - {name}
    return graph


def layer_of(module: str) -> int:
    for depth, layer in enumerate(LAYERS):
        if any(module == room or module.startswith(room + ".") for room in layer if room != "bench"):
            return depth
    return len(LAYERS) - 1  # the `bench` package itself


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_imports_point_down():
    graph = imports(modules())
    upward = [f"{m} -> {t}" for m, ts in graph.items() for t in ts if layer_of(t) < layer_of(m)]
    assert upward == []


def test_no_import_cycle_of_files_or_packages():
    graph = imports(modules())
    assert cycles(graph) == []

    def room(m: str) -> str:
        parts = m.split(".")
        return ".".join(parts[:2]) if parts[0] == "bench" and len(parts) > 1 else parts[0]

    rooms: dict[str, set[str]] = {}
    for m, ts in graph.items():
        rooms.setdefault(room(m), set()).update(room(t) for t in ts if room(t) != room(m))
    assert cycles(rooms) == []


def test_only_baselines_and_methods_define_models():
    """A class deriving from nn.Module outside the model packages (and the adapters of integrations/ to
    other frameworks) is a model in the wrong room."""
    offenders = []
    for name, path in modules().items():
        if name.split(".")[0] in ("baselines", "methods", "integrations"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                if bases & {"nn.Module", "torch.nn.Module", "Module", "nn.Sequential"}:
                    offenders.append(f"{name}.{node.name}")
    assert offenders == []


@pytest.mark.parametrize("name", registry.list_models())
def test_every_registered_model_keeps_the_contract(name):
    torch.manual_seed(0)
    num_classes = 19 if name.startswith("pspnet") else 10
    model = registry.create_model(name, num_classes=num_classes, in_chans=3)
    size = 32 if _cifar_type(model) else 64
    x = torch.randn(2, 3, size, size)
    assert check_model(model, x) == []


def _cifar_type(model: torch.nn.Module) -> bool:
    """CIFAR networks have no max-pooling stem."""
    return not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
