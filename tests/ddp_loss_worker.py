"""Worker for tests/test_distributed.py: SDM + ITC on an all-gathered global batch under DDP.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_loss_worker.py OUT.pt

Each rank feeds its half of a fixed batch through two tiny towers wrapped in DistributedDataParallel,
gathers the features, computes the losses on the whole batch and backpropagates; rank 0 saves the loss
and the parameter gradients. Without torchrun, ``run()`` does the same on the whole batch in one process.
It does this twice: once with ``all_gather_with_grad`` and once with a plain gather that keeps only the
local slice's graph, so the test can show that the gradient needs the differentiable gather.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from tbpr.losses import LogitScale, Views, compute_losses
from tbpr.train.distributed import all_gather_no_grad, all_gather_with_grad, cleanup, init_distributed

WEIGHTS = {"sdm": 1.0, "itc": 0.5}
# Person ids 0 and 1 occur in both halves, so identity targets cross the rank boundary.
PIDS = torch.tensor([0, 1, 2, 0, 3, 1, 4, 5])

Result = tuple[float, dict[str, Tensor]]


class TwoTowers(nn.Module):
    """An image and a text linear tower with a learnable logit scale, identically initialized everywhere."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Linear(6, 4)
        self.text = nn.Linear(5, 4)
        self.logit_scale = LogitScale(init_tau=0.07, learnable=True)

    def forward(self, images: Tensor, texts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.image(images), self.text(texts), self.logit_scale()


def whole_batch() -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(len(PIDS), 6, generator=gen), torch.randn(len(PIDS), 5, generator=gen), PIDS


def gather_local_graph_only(tensor: Tensor) -> Tensor:
    """A plain all-gather: other ranks' slices arrive as constants, only this rank's slice keeps its graph."""
    parts = list(all_gather_no_grad(tensor).chunk(torch.distributed.get_world_size()))
    parts[torch.distributed.get_rank()] = tensor
    return torch.cat(parts)


def step(model: nn.Module, batch: tuple[Tensor, ...], gather: Callable[[Tensor], Tensor]) -> Result:
    """One forward/backward on this rank's share of the batch: global loss and each parameter's gradient."""
    images, texts, pids = batch
    model.zero_grad()
    image_feats, text_feats, scale = model(images, texts)
    all_pids = all_gather_no_grad(pids)
    total, _ = compute_losses(WEIGHTS, Views(gather(image_feats), gather(text_feats), all_pids, scale))
    total.backward()
    towers = model.module if isinstance(model, DistributedDataParallel) else model
    return total.item(), {name: param.grad.clone() for name, param in towers.named_parameters()}


def run() -> tuple[int, dict[str, Result]]:
    """(rank, {gather mode: (loss, gradients)}) for this process's share of the batch."""
    info = init_distributed(backend="gloo")
    size = len(PIDS) // info.world_size
    share = tuple(part[info.rank * size : (info.rank + 1) * size] for part in whole_batch())
    model: nn.Module = TwoTowers()
    modes = {"with_grad": all_gather_with_grad}
    if info.world_size > 1:
        model = DistributedDataParallel(model)
        modes["local_graph_only"] = gather_local_graph_only
    results = {name: step(model, share, gather) for name, gather in modes.items()}
    cleanup()
    return info.rank, results


def main(out: str) -> None:
    rank, results = run()
    if rank == 0:
        torch.save(results, out + ".tmp")
        os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main(sys.argv[1])
