"""Baselines. Importing this package registers every baseline with `bench.registry`."""

from baselines import pspnet, resnet_cifar, resnet_imagenet, resnet_wider, se_resnet  # noqa: F401
