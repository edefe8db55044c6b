"""The field's straightforward retrieval evaluation (IRRA utils/metrics.py::rank): the BASELINE.

Not for use: it argsorts the whole (queries x gallery) matrix, builds several matrices of the same
size (12.8 GB peak for ICFG-PEDES, docs/benchmarks.md) and loops in Python per query and per column.
It exists as the in-run baseline of benchmarks/eval_speed.py and the slow reference of the tests.
It keeps IRRA's computation (float32 precision, per-column precision, per-query mINP loop) with two
changes so its numbers can be compared with ``tbpr.evaluation.retrieval_metrics``: the argsort is
stable (equal scores rank in gallery order), and queries without a positive in the gallery are
left out of every mean (IRRA returns NaN mAP and crashes in mINP).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tbpr.evaluation.metrics import DEFAULT_KS


def reference_retrieval_metrics(
    similarity: torch.Tensor | np.ndarray,
    query_pids: torch.Tensor | np.ndarray | Sequence[int],
    gallery_pids: torch.Tensor | np.ndarray | Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
) -> dict:
    """Same dict as ``retrieval_metrics`` (without the warning), computed the field's way."""
    similarity = torch.as_tensor(similarity)
    q_pids = torch.as_tensor(query_pids, device=similarity.device).long()
    g_pids = torch.as_tensor(gallery_pids, device=similarity.device).long()
    max_rank = max(ks)

    indices = torch.argsort(similarity, dim=1, descending=True, stable=True)
    matches = g_pids[indices].eq(q_pids.view(-1, 1))
    num_rel = matches.sum(1)
    keep = num_rel > 0
    if not keep.any():
        return {
            **{f"R{k}": 0.0 for k in ks},
            "mAP": 0.0,
            "mINP": 0.0,
            "skipped_queries": list(range(len(q_pids))),
            "num_queries": len(q_pids),
        }

    all_cmc = matches[:, :max_rank].cumsum(1)
    all_cmc[all_cmc > 1] = 1
    all_cmc = all_cmc[keep].float().mean(0) * 100

    tmp_cmc = matches.cumsum(1)
    inp = [
        tmp_cmc[i][match_row.nonzero()[-1]] / (match_row.nonzero()[-1] + 1.0)
        for i, match_row in enumerate(matches)
        if keep[i]
    ]
    m_inp = torch.cat(inp).mean() * 100

    tmp_cmc = [tmp_cmc[:, i] / (i + 1.0) for i in range(tmp_cmc.shape[1])]
    tmp_cmc = torch.stack(tmp_cmc, 1) * matches
    ap = tmp_cmc.sum(1) / num_rel
    m_ap = ap[keep].mean() * 100

    return {
        **{f"R{k}": all_cmc[k - 1].item() if k <= all_cmc.numel() else all_cmc[-1].item() for k in ks},
        "mAP": m_ap.item(),
        "mINP": m_inp.item(),
        "skipped_queries": (~keep).nonzero().flatten().tolist(),
        "num_queries": len(q_pids),
    }
