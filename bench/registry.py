"""The one way a model is made: builders registered by name, also visible to `timm.create_model`.

A builder takes `num_classes` and `in_chans` (plus its own keyword arguments) and returns an
`nn.Module`. `defaults` are stored beside the builder as data (like timm's pretrained cfgs) and can be
overridden per call, so a suite file can set e.g. GaterNet's bottleneck width.

Models defined outside this repository register the same way, from a plugin (`bench.plugins`): an
installed distribution's entry point in the group `channelbench.models` (loaded here, after the
built-in packages) or a file given with `bench run --plugin PATH`. Their entries carry an `origin`
naming the plugin, so errors can say where a model came from; nothing else treats them differently.
"""

from __future__ import annotations

import fnmatch
import importlib
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    origin: str = ""  # the plugin that registered it ("" for the built-in packages)

    @property
    def family(self) -> str:
        """The module that defines the builder (`resnet_cifar`, `gaternet`, ...): one marker per family."""
        return self.builder.__module__.rsplit(".", 1)[-1]


_MODELS: dict[str, ModelEntry] = {}
_BUILTIN_PACKAGES = ("baselines", "methods", "bench.segmentation")
_loaded = False


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError would print the message with quotes
        return self.args[0]


class DuplicateModelError(ValueError):
    """A second `register` of a name; `name` and `owner` (who registered it first) are attributes."""

    def __init__(self, name: str, owner: str):
        super().__init__(f"model name {name!r} is already registered by {owner}; choose another name")
        self.name, self.owner = name, owner


def register(name: str, builder: Callable[..., nn.Module], **defaults: Any) -> None:
    """Register `builder` under `name`; a name can be registered once."""
    if name in _MODELS:
        prev = _MODELS[name]
        owner = f"{prev.builder.__module__}.{prev.builder.__qualname__}"
        raise DuplicateModelError(name, f"{owner} (plugin {prev.origin})" if prev.origin else owner)
    _MODELS[name] = ModelEntry(name, builder, dict(defaults))
    _register_with_timm(name)


def _load_builtin() -> None:
    """Import the built-in model packages once, then the installed plugins (entry points), so their
    `register` calls have run; a name clash with a built-in model is then the plugin's error."""
    global _loaded
    if not _loaded:
        _loaded = True
        for package in _BUILTIN_PACKAGES:
            importlib.import_module(package)
        from bench.plugins import load_entry_points  # bench.plugins imports this module

        load_entry_points()


def get_entry(name: str) -> ModelEntry:
    _load_builtin()
    if name not in _MODELS:
        close = [m for m in _MODELS if name.split("_")[0] in m][:5]
        hint = f" Similar names: {', '.join(close)}." if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Run `bench list` to see every registered model "
            "(a model defined in a plugin file needs `--plugin PATH`)."
        )
    return _MODELS[name]


def describe(name: str) -> str:
    """`model 'name'`, and the plugin it came from if it is not built in: for error messages."""
    entry = _MODELS.get(name)
    return f"model {name!r} from plugin {entry.origin}" if entry and entry.origin else f"model {name!r}"


def create_model(name: str, num_classes: int, in_chans: int = 3, **overrides: Any) -> nn.Module:
    entry = get_entry(name)
    kwargs = {**entry.defaults, **overrides}
    return entry.builder(num_classes=num_classes, in_chans=in_chans, **kwargs)


def list_models(pattern: str = "*") -> list[str]:
    _load_builtin()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


# --- timm -------------------------------------------------------------------------------------
# timm.create_model(name) calls `fn(pretrained=..., **kwargs)`; each name gets a small entry function
# in a synthetic module so timm's registry (which keys on function name and module) accepts it.
_TIMM_MODULE = "bench.timm_models"


def _register_with_timm(name: str) -> None:
    try:
        from timm.models import is_model, register_model
    except ImportError:  # timm is a dependency, but the registry itself must not need it
        return
    module = sys.modules.setdefault(_TIMM_MODULE, types.ModuleType(_TIMM_MODULE))
    if hasattr(module, name) or is_model(name):  # never shadow one of timm's own models
        return

    def entry(pretrained: bool = False, num_classes: int = 1000, in_chans: int = 3, **kwargs):
        if pretrained:
            raise ValueError(f"{name}: ChannelBench ships no pretrained weights")
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        return create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = _TIMM_MODULE
    setattr(module, name, entry)
    register_model(entry)
