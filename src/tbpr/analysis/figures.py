"""Heatmaps of module contribution scores, laid out like TBPS-CLIP's Figure 5."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

from tbpr.analysis.modules import KINDS
from tbpr.atomic import atomic_write

ROW_LABELS = {"attn": "SA", "mlp": "FF", "whole": "Whole"}
TOWER_LABELS = {"text": "Txt enc.", "image": "Img enc."}
PANEL_SCORES = ("C1", "C2")
# tables written before the per-tower default normalized over both towers
NORMALIZE_LABELS = {"tower": "per tower", "all": "over both towers"}


def render_contribution_heatmap(table: dict, out_path: Path) -> Path:
    """Write a PNG with one panel per tower and score (rows SA/FF/Whole, columns layers, values in cells)."""
    scores = table.get("scores", table)
    towers = [t for t in TOWER_LABELS if t in scores]
    panels = [(tower, name) for tower in towers for name in PANEL_SCORES]
    widest = max(len(scores[tower]) for tower in towers)
    fig = Figure(figsize=(1.5 + 0.6 * widest, 1.6 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)
    for ax, (tower, name) in zip(axes[:, 0], panels):
        layers = sorted(scores[tower], key=int)
        values = np.array([[scores[tower][layer][kind][name] for layer in layers] for kind in KINDS])
        image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
        for (row, col), value in np.ndenumerate(values):
            colour = "white" if value > 0.6 else "black"
            ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
        ax.set_xticks(range(len(layers)), layers)
        ax.set_yticks(range(len(KINDS)), [ROW_LABELS[k] for k in KINDS])
        ax.set_xlabel("layer")
        ax.set_title(f"{TOWER_LABELS[tower]} {name}", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.03)
    if "metric" in table:
        fig.suptitle(
            f"t2i {table['metric']} {table['baseline']:.1f} on {table['split']}; "
            f"C1 {NORMALIZE_LABELS[table.get('normalize', 'all')]}; C2: epsilon {table['epsilon']:g}",
            fontsize=9,
        )
    return atomic_write(out_path, lambda fh: fig.savefig(fh, format="png", dpi=120))
