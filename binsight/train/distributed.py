"""Single-process and torchrun (DistributedDataParallel) training through the same code path.

Under torchrun, RANK / WORLD_SIZE / LOCAL_RANK are set; otherwise this is one process of one.
"""

import contextlib
import math
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    def sum(self, tensor):
        """Sum a tensor over all processes (in place); a no-op for one process."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def join(self, ddp_model):
        """Let ranks with fewer batches finish an epoch without hanging the others."""
        if not self.enabled:
            return contextlib.nullcontext()
        from torch.distributed.algorithms.join import Join

        return Join([ddp_model])

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def close(self):
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def under_torchrun():
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_world(backend="auto"):
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return World()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    world = World(dist.get_rank(), dist.get_world_size(), local_rank)
    # Share the CPU between the local processes instead of each taking every core.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world.world_size))))
    return world


def torchrun_command(nproc_per_node, module, argv):
    """The command that relaunches `python -m module argv...` under torchrun on this node."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc_per_node}",
        "-m",
        module,
        *argv,
    ]


class ShardSampler(Sampler):
    """Each rank takes every world_size-th index of one seeded permutation, without padding, so
    each sample is seen exactly once per epoch (DistributedSampler repeats some to even out the
    shards; the `World.join` context handles the uneven ends instead). Call set_epoch each epoch."""

    def __init__(self, n, rank=0, world_size=1, shuffle=True, seed=0):
        self.n, self.rank, self.world_size, self.shuffle, self.seed, self.epoch = n, rank, world_size, shuffle, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def indices(self):
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.n))
        return order[self.rank :: self.world_size]

    def __iter__(self):
        return iter(self.indices())

    def __len__(self):
        return math.ceil((self.n - self.rank) / self.world_size) if self.n > self.rank else 0


class BalancedShardSampler(ShardSampler):
    """An epoch of len(labels) indices drawn with replacement so that every label is equally
    likely (class-balanced sampling), seeded by epoch, then sharded like ShardSampler."""

    def __init__(self, labels, rank=0, world_size=1, seed=0):
        super().__init__(len(labels), rank, world_size, shuffle=True, seed=seed)
        counts = {}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        self.weights = torch.tensor([1.0 / counts[label] for label in labels], dtype=torch.double)

    def indices(self):
        if self.n == 0:
            return []
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.multinomial(self.weights, self.n, replacement=True, generator=generator).tolist()
        return order[self.rank :: self.world_size]
