"""The table of registered models: names, builders, per-model defaults and origins (no loading)."""

from __future__ import annotations

import dataclasses
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


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError would print the message with quotes
        return self.args[0]


class DuplicateModelError(ValueError):
    """A second `register` of a name; `name` and `owner` (who registered it first) are attributes."""

    def __init__(self, name: str, owner: str):
        super().__init__(f"model name {name!r} is already registered by {owner}; choose another name")
        self.name, self.owner = name, owner


def register(name: str, builder: Callable[..., nn.Module], *, origin: str = "", **defaults: Any) -> None:
    """Register `builder` under `name`; a name can be registered once. `origin` names the plugin that
    registers it ("" for the built-in packages)."""
    if name in _MODELS:
        prev = _MODELS[name]
        owner = f"{prev.builder.__module__}.{prev.builder.__qualname__}"
        raise DuplicateModelError(name, f"{owner} (plugin {prev.origin})" if prev.origin else owner)
    _MODELS[name] = ModelEntry(name, builder, dict(defaults), origin)
    _register_with_timm(name)


def register_model(builder: Callable[..., nn.Module] | None = None, /, **defaults: Any):
    """Decorator: register a builder under its own function name, so `grep "def resnet20"` finds it.

    `@register_model` or, with per-model defaults kept as data, `@register_model(layout="v1")`.
    """

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        register(fn.__name__, fn, **defaults)
        return fn

    return wrap(builder) if builder is not None else wrap


def unregister(name: str) -> ModelEntry | None:
    """Remove `name` from the registry (a plugin that failed to load, a test's model); returns its entry."""
    return _MODELS.pop(name, None)


def set_origin(name: str, origin: str) -> None:
    """Mark a registered model as coming from the plugin `origin` (for messages)."""
    _MODELS[name] = dataclasses.replace(_MODELS[name], origin=origin)


def entries() -> dict[str, ModelEntry]:
    """A snapshot of every registered entry (as registered so far: nothing is loaded)."""
    return dict(_MODELS)


def restore(snapshot: dict[str, ModelEntry]) -> None:
    """Put the registry back to a snapshot of `entries()` (tests that register models)."""
    _MODELS.clear()
    _MODELS.update(snapshot)


def lookup(name: str) -> ModelEntry:
    """The entry of `name` among the models registered so far; UnknownModelError names the fix."""
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
        entry = lookup(name)  # registered, hence loaded
        return entry.builder(num_classes=num_classes, in_chans=in_chans, **{**entry.defaults, **kwargs})

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = _TIMM_MODULE
    setattr(module, name, entry)
    register_model(entry)
