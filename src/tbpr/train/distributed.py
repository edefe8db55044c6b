"""Process-group helpers: torchrun-aware init, an all-gather that keeps gradients, rank-0 guards.

Every helper also works in a plain single process (not launched by torchrun): it then behaves as a
world of one, so the same training code runs on a laptop CPU and on several GPUs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor

from tbpr.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, number of processes, rank on this node, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int:
    raw = os.environ.get(name, "0")
    try:
        return int(raw)
    except ValueError:
        msg = f"environment variable {name}={raw!r} must be an integer (torchrun sets it)"
        raise ConfigError(msg) from None


def _is_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), or run as a world of one.

    ``backend`` defaults to nccl when CUDA is available, else gloo. Under nccl each process uses
    cuda:LOCAL_RANK; otherwise the CPU. Calling it again returns the existing group's info.
    """
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if launched:
        rank, size, local_rank = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    else:
        rank, size, local_rank = 0, 1, 0
    use_cuda = torch.cuda.is_available() and backend in (None, "nccl")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if launched and not _is_active():
        backend = backend or ("nccl" if use_cuda else "gloo")
        dist.init_process_group(backend=backend, rank=rank, world_size=size)
        log.info("joined process group: rank %d of %d, backend %s, device %s", rank, size, backend, device)
    return DistInfo(rank=rank, world_size=size, local_rank=local_rank, device=device)


def world_size() -> int:
    """Number of processes in the group (1 when not distributed)."""
    return dist.get_world_size() if _is_active() else 1


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order, differentiable.

    Backward sums, over all ranks, the gradient each rank's loss sends to each slice, and routes it
    to the rank that owns the slice. Every rank must pass a tensor of the same shape, and every rank
    must run the backward pass (it is a collective too). With a world of one the input is returned
    unchanged.
    """
    if world_size() == 1:
        return tensor
    return torch.cat(dist_fn.all_gather(tensor), dim=0)


def all_gather_no_grad(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order, detached (e.g. person ids)."""
    if world_size() == 1:
        return tensor.detach()
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts, dim=0)


def main_decides(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (joining torchrun's process group first); ``flag`` in a world of one."""
    info = init_distributed()
    if world_size() == 1:
        return flag
    return bool(all_gather_no_grad(torch.tensor([int(flag)], device=info.device))[0])


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if _is_active():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group, if one was joined."""
    if _is_active():
        dist.destroy_process_group()
