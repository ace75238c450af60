"""Measurement: parameters, static and executed MACs, latency."""

from bench.measure.macs import executed_macs, module_macs, static_macs, static_macs_fvcore

__all__ = ["executed_macs", "module_macs", "static_macs", "static_macs_fvcore"]
