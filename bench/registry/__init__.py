"""The one way a model is made: builders registered by name, also visible to `timm.create_model`.

A builder takes `num_classes` and `in_chans` (plus its own keyword arguments) and returns an
`nn.Module`. `defaults` are stored beside the builder as data (like timm's pretrained cfgs) and can be
overridden per call, so a suite file can set e.g. GaterNet's bottleneck width. Built-in builders are
registered with `@register_model` on a plain `def` named like the model.

Models defined outside this repository register the same way, from a plugin (`bench.registry.plugins`):
an installed distribution's entry point in the group `channelbench.models` (loaded here, after the
built-in packages) or a file given with `bench run --plugin PATH`. Their entries carry an `origin`
naming the plugin, so errors can say where a model came from; nothing else treats them differently.

Public API: `register`, `register_model`, `unregister`, `create_model`, `list_models`, `get_entry`,
`describe`, `load_file`.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
from typing import Any

from torch import nn

from bench.registry import plugins as _plugins
from bench.registry.table import (
    DuplicateModelError,
    ModelEntry,
    UnknownModelError,
    describe,
    entries,
    lookup,
    register,
    register_model,
    restore,
    set_origin,
    unregister,
)

__all__ = [
    "DuplicateModelError",
    "ModelEntry",
    "UnknownModelError",
    "create_model",
    "describe",
    "entries",
    "get_entry",
    "list_models",
    "load_file",
    "register",
    "register_model",
    "restore",
    "set_origin",
    "unregister",
]

_BUILTIN_PACKAGES = ("baselines", "methods")
_loaded = False


def _load_builtin() -> None:
    """Import the built-in model packages once, then the installed plugins (entry points), so their
    `register` calls have run; a name clash with a built-in model is then the plugin's error."""
    global _loaded
    if not _loaded:
        _loaded = True
        for package in _BUILTIN_PACKAGES:
            importlib.import_module(package)
        _plugins.load_entry_points()


def get_entry(name: str) -> ModelEntry:
    _load_builtin()
    return lookup(name)


def create_model(name: str, num_classes: int, in_chans: int = 3, **overrides: Any) -> nn.Module:
    entry = get_entry(name)
    kwargs = {**entry.defaults, **overrides}
    return entry.builder(num_classes=num_classes, in_chans=in_chans, **kwargs)


def list_models(pattern: str = "*") -> list[str]:
    _load_builtin()
    return sorted(n for n in entries() if fnmatch.fnmatch(n, pattern))


def load_file(path: str | os.PathLike) -> _plugins.Plugin:
    """Import the plugin file at `path` (once per process), after the built-in and installed models, so
    that a name clash is the plugin's error; returns what it registered."""
    _load_builtin()
    return _plugins.load_file(path)


def load_files(paths: list[str] | None) -> list[_plugins.Plugin]:
    return [load_file(p) for p in paths or []]
