"""Data-parallel training on PyTorch's own engine: torchrun's environment, DDP, and each rank's shard of a batch.

`torchrun --nproc-per-node N -m cnnkit train ...` (or `cnnkit train --nproc N`, which runs exactly that) starts N
processes with RANK, LOCAL_RANK and WORLD_SIZE set. Every rank draws the same epoch permutation from the shared
seed and takes a disjoint, strided share of each global batch; DDP all-reduces (averages) the gradients, so a step
sees the same global batch as a one-process run. Rank 0 alone evaluates, logs and writes files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from cnnkit.errors import DeviceError


@dataclass(frozen=True, kw_only=True)
class World:
    """Where this process stands: rank 0 of 1 outside torchrun."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    torchrun: bool = False  # started by torchrun (its environment is set), even as its only process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """In a process group with DDP: several processes, or one that torchrun started (`--nproc-per-node 1`
        runs the same NCCL/gloo path as many, so it can be tried on one GPU)."""
        return self.size > 1 or self.torchrun


def from_env() -> World:
    """The world torchrun describes in the environment (one plain process when WORLD_SIZE is unset)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise DeviceError(f"torchrun environment is malformed ({exc})") from None
    return World(rank=rank, local_rank=local, size=size, torchrun="TORCHELASTIC_RUN_ID" in os.environ)


def init(world: World, device_type: str) -> World:
    """Join the process group: NCCL on CUDA (one GPU per local rank), gloo on CPU. A no-op for one process."""
    if not world.distributed:
        return world
    import torch
    import torch.distributed as dist

    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise DeviceError(
                f"local rank {world.local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                "use --nproc-per-node at most the number of GPUs, or --device cpu"
            )
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return world


def backend() -> str | None:
    """The process group's backend (nccl, gloo), or None outside one."""
    import torch.distributed as dist

    return str(dist.get_backend()) if dist.is_available() and dist.is_initialized() else None


def shutdown(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def steps_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    """Global batches in an epoch; a last batch too small to give every rank a sample is dropped."""
    full, tail = divmod(n, batch_size)
    return full + (1 if tail >= world_size else 0)


def shard_positions(n: int, batch_size: int, world: World):
    """This rank's positions in the epoch's visiting order, and how many fall in each global batch.

    Global batch i covers positions [i*B, (i+1)*B); rank r takes every world-size-th of them from r. Over all ranks
    the shares are disjoint and cover the epoch (less a dropped tail, see steps_per_epoch).
    """
    import torch

    steps = steps_per_epoch(n, batch_size, world.size)
    positions, sizes = [], []
    for i in range(steps):
        part = torch.arange(i * batch_size + world.rank, min((i + 1) * batch_size, n), world.size)
        positions.append(part)
        sizes.append(len(part))
    return torch.cat(positions) if positions else torch.zeros(0, dtype=torch.int64), sizes


def all_sum(world: World, *tensors) -> None:
    """Sum tensors across ranks in place (epoch statistics every rank needs)."""
    if world.distributed:
        import torch.distributed as dist

        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def from_rank0(world: World, value):
    """Rank 0's `value` on every rank (a choice that must be the same everywhere, e.g. a measured precision)."""
    if not world.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def launch(nproc: int, train_args: Sequence[str]) -> int:
    """`cnnkit train --nproc N ...`: run the same command under torchrun on this machine; return its exit code."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "cnnkit",
        "train",
        *train_args,
    ]
    env = dict(os.environ)
    # torchrun would set 1 thread per process and print a banner about it; share this machine's cores instead
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(cmd, env=env)
