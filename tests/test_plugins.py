"""Plugins: models from outside the repository, by file (`--plugin`) or entry point, used like built-ins;
every broken plugin ends in one message naming it, before anything is trained or stored."""

import importlib.metadata
import textwrap
from pathlib import Path

import pytest
import timm

from bench import plugins, registry
from bench.cli import main
from tests.helpers import run_args, write_suite

EXAMPLE = Path(__file__).parents[1] / "examples" / "my_method"

GOOD = """
from torch import nn
from bench.registry import register


def tiny_net(num_classes=10, in_chans=3, width=8):
    return nn.Sequential(nn.Conv2d(in_chans, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))


register("{name}", tiny_net, width=4)
"""


@pytest.fixture(autouse=True)
def restore_registry():
    """Each test starts from, and leaves, the registry as it was (plugins register process-wide)."""
    registry.list_models()
    saved = registry.entries()
    yield
    registry.restore(saved)


def _plugin(tmp_path, body, name="my_plugin.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_a_file_plugin_registers_like_a_builtin(tmp_path):
    path = _plugin(tmp_path, GOOD.format(name="tiny_plugin_net"), "tiny_method.py")
    plugin = plugins.load_file(path)
    assert plugin.models == ("tiny_plugin_net",) and plugin.origin == str(path)
    assert "tiny_plugin_net" in registry.list_models("tiny_*")
    entry = registry.get_entry("tiny_plugin_net")
    assert entry.family == "tiny_method" and entry.defaults == {"width": 4} and entry.origin == str(path)
    assert registry.describe("tiny_plugin_net") == f"model 'tiny_plugin_net' from plugin {path}"
    assert registry.describe("resnet20") == "model 'resnet20'"
    model = registry.create_model("tiny_plugin_net", num_classes=7, in_chans=1)
    assert model[0].out_channels == 4 and model[-1].out_features == 7  # the registered default is used
    assert timm.create_model("tiny_plugin_net", num_classes=5)[-1].out_features == 5
    assert plugins.load_file(path) is plugin  # loading again (a second --plugin) is a no-op


def test_run_with_a_plugin_stores_its_record(tmp_path, fashion_root, no_system_data, capsys):
    path = _plugin(tmp_path, GOOD.format(name="tiny_plugin_net"))
    suite = write_suite(tmp_path, models=("tiny_plugin_net",))
    assert main(run_args(suite, tmp_path, fashion_root, "--plugin", str(path))) == 0
    assert "tiny_plugin_net · fashion_mnist · seed 0: top-1" in capsys.readouterr().out
    from bench.store.results import ResultStore

    (record,) = ResultStore(tmp_path / "results").read("tiny")
    assert record.model == "tiny_plugin_net" and record.model_family == "my_plugin"
    assert record.model_args == {} and record.metrics.params == 1 * 4 * 9 + 4 + 4 * 10 + 10


BROKEN = {
    "syntax_error": ("def broken(:\n", "failed to import: SyntaxError"),
    "missing_import": (
        "import numpy\nimport channelbench_no_such_module\n",
        "failed to import: line 2: ModuleNotFoundError: No module named 'channelbench_no_such_module'",
    ),
    "raises": (
        "from bench.registry import register\nfrom torch import nn\n"
        "register('half_registered_net', lambda num_classes, in_chans: nn.Identity())\n"
        "raise RuntimeError('the weights file is missing')\n",
        "failed to import: line 4: RuntimeError: the weights file is missing",
    ),
    "name_clash": (
        "from bench.registry import register\nfrom torch import nn\n"
        "register('resnet20', lambda num_classes, in_chans: nn.Identity())\n",
        "registers model 'resnet20', which is already registered by baselines.resnet_cifar.resnet20; "
        "give the plugin's model another name",
    ),
    "registers_nothing": ("x = 1\n", "registered no model: its import must call bench.registry.register"),
    "bad_builder": (
        "from bench.registry import register\nfrom torch import nn\n"
        "register('no_args_net', lambda: nn.Identity())\n",
        "the builder of 'no_args_net' cannot be called as builder(num_classes=..., in_chans=..., **defaults)",
    ),
    "wrong_in_chans": (
        "from bench.registry import register\nfrom torch import nn\n"
        "def rgb_only(num_classes, in_chans):\n"
        "    return nn.Sequential(nn.Conv2d(3, num_classes, 28), nn.Flatten())\n"
        "register('rgb_only_net', rgb_only)\n",
        "model 'rgb_only_net' from plugin {path} cannot be built for fashion_mnist (1, 28, 28): RuntimeError",
    ),
    "wrong_output": (
        "from bench.registry import register\nfrom torch import nn\n"
        "register('features_net', lambda num_classes, in_chans: nn.Conv2d(in_chans, 4, 3))\n",
        "model 'features_net' from plugin {path} returns shape (2, 4, 26, 26) for fashion_mnist",
    ),
    "no_such_file": (None, "plugin {path}: no such file"),
}
MODEL_OF = {"wrong_in_chans": "rgb_only_net", "wrong_output": "features_net"}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_gives_one_clear_error_and_leaves_the_store_untouched(
    case, tmp_path, fashion_root, no_system_data, capsys
):
    body, expected = BROKEN[case]
    path = tmp_path / "broken_plugin.py"
    if body is not None:
        path.write_text(body)
    suite = write_suite(tmp_path, models=(MODEL_OF.get(case, "resnet20"),))
    store = tmp_path / "results" / "runs" / "tiny.jsonl"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"earlier records\n")  # never read: the plugin fails before the store is opened
    before = registry.list_models()

    assert main(run_args(suite, tmp_path, fashion_root, "--plugin", str(path))) == 2

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("bench run: error: ") and expected.format(path=path) in err[0], err[0]
    assert str(path) in err[0]  # the plugin is named
    assert store.read_bytes() == b"earlier records\n" and sorted(store.parent.iterdir()) == [store]
    assert not (tmp_path / "lb").exists() and not (tmp_path / "runs").exists()
    if case not in MODEL_OF:  # a failed load is undone: nothing it registered stays behind
        assert registry.list_models() == before


def test_a_clash_between_two_plugins_names_both(tmp_path, capsys):
    first = _plugin(tmp_path, GOOD.format(name="shared_name_net"), "first.py")
    second = _plugin(tmp_path, GOOD.format(name="shared_name_net"), "second.py")
    assert main(["list", "--plugin", str(first), "--plugin", str(second)]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert f"plugin {second} registers model 'shared_name_net', which is already registered by " in err
    assert f"(plugin {first})" in err


def test_unknown_model_hints_at_the_plugin_option(tmp_path, fashion_root, no_system_data, capsys):
    suite = write_suite(tmp_path, models=("my_unloaded_net",))
    assert main(run_args(suite, tmp_path, fashion_root)) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert "unknown model 'my_unloaded_net'" in err and "--plugin PATH" in err


def _fake_entry_points(monkeypatch, tmp_path, module_body, value):
    """One installed entry point whose module (named like `value`'s module part) holds `module_body`."""
    (tmp_path / (value.split(":")[0] + ".py")).write_text(textwrap.dedent(module_body))
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint(name="demo", value=value, group=plugins.ENTRY_POINT_GROUP)

    def entry_points(group=None, **_):
        return [ep] if group == plugins.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_installed_entry_points_are_loaded_with_the_builtins(monkeypatch, tmp_path):
    _fake_entry_points(monkeypatch, tmp_path, GOOD.format(name="ep_module_net"), "ep_plugin_module")
    monkeypatch.setattr(registry, "_loaded", False)  # as in a fresh process: built-ins, then entry points
    assert "ep_module_net" in registry.list_models()
    assert "entry point 'demo'" in registry.get_entry("ep_module_net").origin
    assert registry.create_model("ep_module_net", 3, 1)[-1].out_features == 3


def test_an_entry_point_may_name_a_function_that_registers(monkeypatch, tmp_path):
    body = "def register_all():\n" + textwrap.indent(GOOD.format(name="ep_function_net"), "    ")
    _fake_entry_points(monkeypatch, tmp_path, body, "ep_function_module:register_all")
    (plugin,) = plugins.load_entry_points()
    assert plugin.models == ("ep_function_net",) and plugin.origin.startswith(
        "ep_function_module:register_all"
    )


def test_a_broken_entry_point_names_itself_and_the_fix(monkeypatch, tmp_path):
    _fake_entry_points(monkeypatch, tmp_path, "raise ImportError('needs cuda')\n", "ep_broken_module")
    with pytest.raises(plugins.PluginError) as e:
        plugins.load_entry_points()
    assert str(e.value).startswith(
        "plugin ep_broken_module (entry point 'demo' of an installed distribution) "
        "failed to import: ImportError: needs cuda; fix it, or uninstall it"
    )


def test_a_user_suite_file_is_validated_like_a_builtin(tmp_path, fashion_root, no_system_data, capsys):
    suite = tmp_path / "my_suite.toml"
    suite.write_text((EXAMPLE / "my_suite.toml").read_text().replace("\nepochs =", "\nepoch ="))
    args = run_args(suite, tmp_path, fashion_root, "--plugin", str(EXAMPLE / "my_method.py"))
    assert main(args) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert f"{suite} [train]: unknown key(s) ['epoch']" in err


def test_the_example_suite_plans_with_the_plugin():
    from bench.commands.runner import plan
    from bench.engine.config import load_suite

    plugins.load_file(EXAMPLE / "my_method.py")
    suite = load_suite(str(EXAMPLE / "my_suite.toml"))
    runs = plan(suite)
    assert {r.model for r in runs} == set(suite.models) and "my_gate_resnet20" in suite.models
    assert len(runs) == len(suite.models) * len(suite.seeds)
    assert {r.model: r.model_args for r in runs}["my_gate_resnet20"] == suite.model_args["my_gate_resnet20"]
