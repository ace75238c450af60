"""Baselines. Importing this package registers every baseline with `bench.registry`."""

from baselines import convnet_aig, resnet_cifar, resnet_imagenet, resnet_wider, se_resnet  # noqa: F401
