"""Baselines. Importing this package registers every baseline with `bench.registry`."""

from baselines import (  # noqa: F401
    mobilenet,
    pspnet,
    resnet_cifar,
    resnet_imagenet,
    resnet_wider,
    se_resnet,
    shufflenet,
)
