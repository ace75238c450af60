"""Distributed training through torchrun: process group, batch split, rank-0 writes, reductions.

`torchrun --nproc_per_node=N -m bench run ...` starts N processes with RANK / WORLD_SIZE / LOCAL_RANK
(and MASTER_ADDR / MASTER_PORT) in their environment; `init_from_env` joins them into one process group
(NCCL on CUDA, gloo on CPU). One process without those variables is a world of one and nothing here
costs anything. The suite's `batch_size` is the global batch: each rank trains on `batch_size / N`
images of the same seeded permutation the one-process loader draws (`bench.data.loader.DeviceLoader`,
or the streaming loaders' DistributedSampler), so N processes and one process
see the same global batches (with BatchNorm statistics per rank unless `sync_bn`). The loaders are handed
the rank and world size; the split rule is `bench.data.batch_per_rank`.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place in the process group (rank 0 of 1 when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def syncs_batchnorm(sync_bn: bool, world_size: int, device: str) -> bool:
    """Whether BatchNorm statistics are synchronised: asked for, several processes, and GPUs (torch's
    SyncBatchNorm runs on CUDA only)."""
    return sync_bn and world_size > 1 and torch.device(device).type == "cuda"


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "cpu") -> tuple[World, str]:
    """Join the process group torchrun described; returns the world and this rank's device."""
    if not launched_by_torchrun():
        return World(), device
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return world(), device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world().world_size > 1:
        dist.barrier()


def all_reduce_sum(values: Tensor) -> Tensor:
    """The sum over ranks (in place, and returned); the tensor itself on one process."""
    if world().world_size > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_objects(obj) -> list:
    """`obj` of every rank, in rank order."""
    if world().world_size == 1:
        return [obj]
    out = [None] * world().world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s `obj` on every rank (rank 0 reads a checkpoint; the nodes need no shared disk)."""
    if world().world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def rng_state(device: str) -> dict:
    """This process's random state: python, numpy, torch CPU and the CUDA device, as plain tensors/lists
    (a checkpoint stays loadable with `torch.load(..., weights_only=True)`)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def set_rng_state(state: dict, device: str) -> None:
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda"], torch.device(device))


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value
