"""Methods. Importing this package registers every method with `bench.registry`."""

from methods import (
    channel_equilibrium,  # noqa: F401
    decoupled,  # noqa: F401
)
