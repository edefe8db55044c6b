"""Identity-aware matching targets: every pair that shares a person id is a positive."""

from __future__ import annotations

from torch import Tensor


def identity_mask(row_pids: Tensor, col_pids: Tensor) -> Tensor:
    """The (rows x cols) float 0/1 matrix y with y_ij = 1 when row i and column j share a person id."""
    return (row_pids.reshape(-1, 1) == col_pids.reshape(1, -1)).float()


def identity_targets(row_pids: Tensor, col_pids: Tensor) -> Tensor:
    """The row-normalized positive mask q_ij = y_ij / sum_b y_ib (each row a distribution over columns).

    Every row needs at least one positive column (true whenever the columns hold the row's own pair),
    otherwise its target distribution is undefined and a ValueError is raised.
    """
    mask = identity_mask(row_pids, col_pids)
    positives = mask.sum(dim=1, keepdim=True)
    if not bool((positives > 0).all()):
        missing = row_pids.reshape(-1)[positives.reshape(-1) == 0].tolist()
        raise ValueError(f"person ids {missing} have no positive column, so their targets are undefined")
    return mask / positives
