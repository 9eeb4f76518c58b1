"""Data-parallel training across processes: `torchrun --nproc_per_node=N latentcast train ...`.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them (plain
`latentcast train`) everything here is a no-op world of one. Backend: NCCL on CUDA, gloo on the CPU.
Each rank trains on its own shard of every epoch's permutation, gradients are averaged by
DistributedDataParallel, and only rank 0 validates and writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import gc
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist

from latentcast.models.checkpoint import weights_digest
from latentcast.models.solve import SolverError


@dataclasses.dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def from_env() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def start(world: World, device: torch.device) -> torch.device:
    """Join the process group; returns this rank's device (cuda:LOCAL_RANK on a GPU machine)."""
    if not world.active:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return device


def stop(world: World, together: bool = True) -> None:
    """Leave the process group. `together` (a run that ended normally): wait for every rank first, so no
    rank tears gloo down while another still talks to it. After an error, leave at once: the others may
    never arrive, and torchrun stops them when this process exits.

    Before the group goes, collect the garbage: DistributedDataParallel's reducer sits in reference
    cycles that hold the group and gloo's pending work (tensors with Python references). Left to the
    interpreter's finalisation, they are freed after Python is gone, and gloo's threads then abort the
    process ("terminate called without an active exception", pytorch/pytorch#190489 and the
    abandoned #179291 describe that teardown)."""
    if world.active and dist.is_initialized():
        gc.collect()
        if together:
            dist.barrier()
        dist.destroy_process_group()
        gc.collect()


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def all_ok(world: World, ok: bool, device: torch.device) -> bool:
    """True only if `ok` on every rank (so every rank takes the same branch around a collective)."""
    if not world.active:
        return ok
    flag = torch.tensor([1 if ok else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def any_true(world: World, flag: bool, device: torch.device) -> bool:
    """True if `flag` on any rank (rank 0's decision to stop reaches every rank)."""
    if not world.active:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def shard(indices: Iterable[Any], world: World) -> Iterator[int]:
    """This rank's share of an epoch's permutation: every size-th item from `rank`, the same count on
    every rank (the remainder of len / size is left out this epoch), so all ranks take the same steps."""
    items = [int(i) for i in indices]
    per_rank = len(items) // world.size
    return iter(items[world.rank : per_rank * world.size : world.size])


def gather_digests(world: World, module: torch.nn.Module) -> list[str]:
    mine = weights_digest(module)
    if not world.active:
        return [mine]
    out: list[str] = [""] * world.size
    dist.all_gather_object(out, mine)
    return out


class LossModule(torch.nn.Module):
    """`model.loss(...)` as a forward, so DistributedDataParallel sees the call that uses the weights
    (its gradient hooks are armed in forward). A solver failure does not escape: it returns a zero loss
    that still touches every parameter, with ok=False, so every rank can take the same steps (a zero
    backward, no update) instead of one rank leaving the collective and the others hanging."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.error: Exception | None = None

    def forward(self, *args: object, **kwargs: object) -> tuple[torch.Tensor, object, bool]:
        try:
            loss, stats = self.model.loss(*args, **kwargs)  # type: ignore[operator]
        except SolverError as exc:
            self.error = exc
            zero = torch.stack([p.sum() for p in self.model.parameters()]).sum() * 0.0
            return zero, None, False
        return loss, stats, True
