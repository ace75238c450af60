"""ChannelBench: a benchmark and reproducibility suite for channel-level CNN methods."""

__version__ = "0.1.0"
