"""The training engine: configuration, the train loop, processes and devices, plugins."""
