"""Per-query scores of an evaluated run, and the paired bootstrap that compares two runs on them.

Two runs evaluated on the same test queries differ query by query; resampling the queries (with
replacement) and recomputing the mean difference gives the spread of the difference that the choice of
queries alone would cause. The 95% interval is the 2.5th and 97.5th percentiles of the resampled means
(the percentile bootstrap). Pairing removes what both runs share (easy and hard queries), so the
interval is much narrower than the two runs' own intervals combined.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tbpr.atomic import atomic_write
from tbpr.errors import DataError

PER_QUERY_FILE = "per_query.npz"
RESAMPLES, SEED, LEVEL = 2000, 0, 0.95
FIELDS = ("rank", "ap", "valid")
_SEP = "::"
_CHUNK = 1 << 22  # resampled query indices per chunk (32 MB of int64)


def split_per_query(results: dict[str, dict]) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """``evaluate_run(..., per_query=True)`` results -> (the plain results, the arrays by flat key)."""
    plain, arrays = {}, {}
    for dataset, directions in results.items():
        plain[dataset] = {}
        for direction, metrics in directions.items():
            if isinstance(metrics, dict) and "per_query" in metrics:
                metrics = dict(metrics)
                for name, values in metrics.pop("per_query").items():
                    arrays[_SEP.join((dataset, direction, name))] = np.asarray(values)
            plain[dataset][direction] = metrics
    return plain, arrays


def save_per_query(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write the arrays as one compressed ``.npz`` file, atomically."""

    return atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))


def query_scores(path: Path, dataset: str, direction: str, metric: str) -> np.ndarray | None:
    """Per-query ``metric`` ('R<k>' or 'mAP') in percent over the queries with a positive; None if absent."""
    if not Path(path).is_file():
        return None
    try:
        with np.load(path) as data:
            arrays = {f: data[_SEP.join((dataset, direction, f))] for f in FIELDS}
    except KeyError:
        return None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a per-query score file ({err}); delete it to evaluate again") from err
    valid = arrays["valid"].astype(bool)
    if metric == "mAP":
        return 100.0 * arrays["ap"][valid]
    return 100.0 * (arrays["rank"][valid] <= int(metric[1:]))


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> tuple[float, float]:
    """The ``level`` percentile-bootstrap interval of mean(a - b) over paired queries (same order).

    Deterministic for a given ``seed``: the same scores always give the same interval.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"need two equally long, non-empty score vectors, got shapes {a.shape} and {b.shape}"
        )
    diff = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    rows = max(1, _CHUNK // diff.size)
    for start in range(0, resamples, rows):
        n = min(rows, resamples - start)
        means[start : start + n] = diff[rng.integers(0, diff.size, size=(n, diff.size))].mean(1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)
