"""Per-split dataset statistics, as the papers print them."""

from __future__ import annotations

from dataclasses import dataclass

from tbpr.data.schema import SPLITS, Manifest


@dataclass(frozen=True)
class SplitStats:
    ids: int
    images: int
    captions: int
    mean_words: float | None  # None when the split has no captions

    def counts(self) -> dict[str, int]:
        return {"ids": self.ids, "images": self.images, "captions": self.captions}


def split_stats(manifest: Manifest) -> dict[str, SplitStats]:
    """Identities, images, captions and mean caption length (whitespace words) of each split."""
    stats = {}
    for name in SPLITS:
        part = manifest.split(name)
        words = [len(c.text.split()) for c in part.captions]
        mean = sum(words) / len(words) if words else None
        stats[name] = SplitStats(part.num_ids(), len(part.images), len(part.captions), mean)
    return stats


def stats_json(stats: dict[str, SplitStats]) -> dict[str, dict[str, int]]:
    """``{"train": {"ids": N, "images": N, "captions": N}, "val": ..., "test": ...}``."""
    return {name: s.counts() for name, s in stats.items()}


def format_stats_table(stats: dict[str, SplitStats]) -> str:
    """The statistics as an aligned text table, one row per split."""
    header = ("split", "ids", "images", "captions", "mean words")
    rows = [header]
    for name, s in stats.items():
        words = "-" if s.mean_words is None else f"{s.mean_words:.2f}"
        rows.append((name, str(s.ids), str(s.images), str(s.captions), words))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells))
    return "\n".join(lines)
