"""Public import path of the plugin loader (`bench.registry.plugins`; `load_file` loads the built-in
models first)."""

from bench.registry import load_file, load_files
from bench.registry.plugins import ENTRY_POINT_GROUP, Plugin, PluginError, load_entry_points, name_plugins

__all__ = [
    "ENTRY_POINT_GROUP",
    "Plugin",
    "PluginError",
    "load_entry_points",
    "load_file",
    "load_files",
    "name_plugins",
]
