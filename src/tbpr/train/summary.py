"""The summary ``tbpr train`` ends with: the selected epoch, its validation metrics, the checkpoints."""

from __future__ import annotations

from pathlib import Path

from tbpr.models.checkpoint import load_checkpoint

METRICS = ("R1", "R5", "R10", "mAP", "mINP")


def run_summary(run_dir: Path) -> str:
    """Lines naming the run folder, what ``best.pt`` holds (epoch, val metrics) and both checkpoints."""
    ckpt = Path(run_dir) / "checkpoints"
    if not (ckpt / "best.pt").is_file():
        return f"run folder: {run_dir}\nno checkpoint in {ckpt}"
    selected = load_checkpoint(ckpt / "best.pt")["selected"]
    if selected.get("metric") is None:
        best = f"best.pt is the final model (epoch {selected['epoch']}): no validation ran"
    else:
        val = "  ".join(f"{k} {selected['val'][k]:.2f}" for k in METRICS)
        best = f"best: epoch {selected['epoch']} (highest val {selected['metric']}); val {val}"
    return "\n".join(
        [
            f"run folder: {run_dir}",
            best,
            f"checkpoints: {ckpt / 'best.pt'} (best on validation), {ckpt / 'last.pt'} (resumable)",
        ]
    )
