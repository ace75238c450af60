"""Methods. Importing this package registers every method with `bench.registry`."""

from methods import (
    batch_shaping,  # noqa: F401
    channel_equilibrium,  # noqa: F401
    convnet_aig,  # noqa: F401
    decoupled,  # noqa: F401
    decoupled_imagenet,  # noqa: F401
    gaternet,  # noqa: F401
)
