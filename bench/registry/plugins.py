"""Methods defined outside this repository: plugins that register models with `bench.registry`.

A plugin is Python code whose import calls `bench.registry.register(name, builder, **defaults)`, exactly
as `baselines/` and `methods/` do. It reaches the registry in one of two ways:

- a file: `bench run --plugin path/to/my_method.py` (also `bench measure` and `bench list`) imports the
  file as the module `channelbench_plugins.<file stem>`. The file imports what is installed (torch,
  timm, `baselines`, `bench`); code spread over several files is better installed as a package;
- an installed distribution that declares an entry point in the group `channelbench.models`:

      [project.entry-points."channelbench.models"]
      my_method = "my_package.my_method"

  The entry point names a module (importing it registers its models) or a callable (called with no
  arguments). Installed plugins are loaded once, right after the built-in models, the first time the
  registry is used.

From then on a plugin's models are made by `registry.create_model` and trained, measured and stored
like the built-in ones: the builder, the optional `aux_losses`, `no_weight_decay` and `bench_info`, and
the gate sites are read through the same interfaces. The only trace of the plugin is the registry
entry's `origin`, which error messages name.

Everything that can go wrong while loading ends in one `PluginError` that names the plugin and the
problem, before anything is trained or stored: a file that is missing or fails to import (with the
line in the plugin that raised), a name that is already registered, a plugin that registers nothing,
a builder that cannot be called as `builder(num_classes=..., in_chans=..., **defaults)`. A model that
cannot take a dataset's shapes is caught by `runner.check_builds`; `name_plugins` puts the plugin
into that message. A failed load leaves the registry as it was.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.registry import table

ENTRY_POINT_GROUP = "channelbench.models"
FILE_MODULE_PREFIX = "channelbench_plugins"


class PluginError(ValueError):
    """A plugin that cannot be used; the message names the plugin, the problem and the fix."""


@dataclass(frozen=True)
class Plugin:
    origin: str  # how messages name it: the file's path, or the entry point and its distribution
    models: tuple[str, ...]  # the names it registered


_FILE_PLUGINS: dict[Path, Plugin] = {}


def load_file(path: str | os.PathLike) -> Plugin:
    """Import the plugin file at `path` (once per process) and return what it registered; the caller
    (`bench.registry.load_file`) has loaded the built-in and installed models first."""
    path = Path(path)
    origin = str(path)
    if not path.is_file():
        raise PluginError(
            f"plugin {origin}: no such file; pass the path of the .py file that registers "
            "your model (e.g. --plugin examples/my_method/my_method.py)"
        )
    if path.suffix != ".py":
        raise PluginError(
            f"plugin {origin}: not a .py file; a plugin is a Python file whose import calls "
            "bench.registry.register(name, builder)"
        )
    key = path.resolve()
    loaded = _FILE_PLUGINS.get(key)
    if loaded is not None:
        if all(_origin_of(name) == loaded.origin for name in loaded.models):
            return loaded
        _forget([name for name in loaded.models if _origin_of(name) == loaded.origin])
    module_name = FILE_MODULE_PREFIX + "." + re.sub(r"\W", "_", path.stem)

    def load() -> None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look the module up while it runs
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise

    plugin = _register(origin, load, str(key), fix="fix the file")
    _FILE_PLUGINS[key] = plugin
    return plugin


def load_entry_points() -> list[Plugin]:
    """Load every installed plugin of the group `channelbench.models` (called by the registry once)."""
    plugins = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else None
        origin = f"{ep.value} (entry point {ep.name!r} of {dist or 'an installed distribution'})"

        def load(ep: importlib.metadata.EntryPoint = ep) -> None:
            target = ep.load()
            if callable(target) and not isinstance(target, types.ModuleType):
                target()

        fix = f"fix it, or uninstall it (pip uninstall {dist})" if dist else "fix it, or uninstall it"
        plugins.append(_register(origin, load, None, fix=fix))
    return plugins


def name_plugins(message: str) -> str:
    """`message` with "model 'x'" written as "model 'x' from plugin P" for every plugin model it names."""
    for name in sorted(table.entries()):
        plain, described = f"model {name!r}", table.describe(name)
        if described != plain and plain in message and described not in message:
            message = message.replace(plain, described)
    return message


# --- loading ------------------------------------------------------------------------------------------


def _origin_of(name: str) -> str | None:
    entry = table.entries().get(name)
    return entry.origin if entry is not None else None


def _forget(names: list[str]) -> None:
    for name in names:
        table.unregister(name)


def _register(origin: str, load: Callable[[], None], file: str | None, fix: str) -> Plugin:
    """Run `load` and mark every model it registered as coming from `origin`; undo it on any error."""
    before = set(table.entries())
    try:
        try:
            load()
        except table.DuplicateModelError as e:
            raise PluginError(
                f"plugin {origin} registers model {e.name!r}, which is already registered by "
                f"{e.owner}; give the plugin's model another name"
            ) from None
        except (Exception, SystemExit) as e:
            raise PluginError(
                f"plugin {origin} failed to import: {_where(e, file)}{type(e).__name__}: {e}; {fix}"
            ) from e
        added = [name for name in table.entries() if name not in before]
        if not added:
            raise PluginError(
                f"plugin {origin} registered no model: its import must call "
                "bench.registry.register(name, builder)"
            )
        for name in added:
            _check_builder(table.entries()[name], origin)
    except PluginError:
        _forget([name for name in table.entries() if name not in before])
        raise
    for name in added:
        table.set_origin(name, origin)
    return Plugin(origin, tuple(added))


def _where(error: BaseException, file: str | None) -> str:
    """'line N: ' of the deepest frame in the plugin file, where the error was raised from it."""
    if file is None or isinstance(error, SyntaxError):  # a SyntaxError's message names its line
        return ""
    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__) if f.filename == file]
    return f"line {lines[-1]}: " if lines else ""


def _check_builder(entry: table.ModelEntry, origin: str) -> None:
    try:
        signature = inspect.signature(entry.builder)
    except (TypeError, ValueError):  # not introspectable (a C function): the build check will tell
        return
    try:
        signature.bind(num_classes=10, in_chans=3, **entry.defaults)
    except TypeError as e:
        raise PluginError(
            f"plugin {origin}: the builder of {entry.name!r} cannot be called as "
            f"builder(num_classes=..., in_chans=..., **defaults): {e}"
        ) from None
