"""Transfer protocols: the paper's grouped tables (Table 1/3) and the source -> target matrix (Table 4)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tbpr.atomic import write_json, write_text
from tbpr.errors import ConfigError

log = logging.getLogger(__name__)


def format_grouped_table(
    rows: dict[str, dict[str, dict]],
    metrics: tuple[str, ...] = ("R1", "R5", "R10", "mAP"),
    labels: dict[str, dict[str, str]] | None = None,
    name_header: str = "method",
) -> str:
    """A markdown table in the paper's layout: one row per method/run, a column group per target dataset.

    ``rows`` is ``{row: {dataset: metrics}}``; ``labels`` adds text columns after the row name
    (``{row: {"source": ...}}``); a missing cell is shown as ``-``.
    """
    if not rows:
        raise ValueError("no results to tabulate")
    datasets = list(dict.fromkeys(d for cells in rows.values() for d in cells))
    extra = list(dict.fromkeys(k for row in (labels or {}).values() for k in row))
    header = [name_header, *extra, *(f"{d} {m}" for d in datasets for m in metrics)]
    body = [
        [
            name,
            *((labels or {}).get(name, {}).get(k, "-") for k in extra),
            *(_number(cells.get(d, {}).get(m)) for d in datasets for m in metrics),
        ]
        for name, cells in rows.items()
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    texts = 1 + len(extra)

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i < texts else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
            )
            + " |"
        )

    rule = (
        "|"
        + "|".join("-" * (w + 2) if i < texts else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in body)])


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def parse_named(items: list[str], option: str) -> dict[str, Path]:
    """``name=PATH`` (or a bare ``PATH``, named by its (run) folder) -> ``{name: Path}``, names unique."""
    named: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = run_label(str(Path(item).resolve())), item
        if not name or not path:
            raise ConfigError(f"{option} {item!r}: expected NAME=PATH or PATH")
        if name in named:
            raise ConfigError(f"{option}: the name {name!r} is given twice; name them NAME=PATH")
        named[name] = Path(path)
    return named


def run_label(path: str) -> str:
    """A run folder's name, also when given its checkpoint file (``RUN/checkpoints/best.pt``)."""
    p = Path(path)
    return p.parent.parent.name if p.suffix == ".pt" and p.parent.name == "checkpoints" else p.name


def _cell_key(checkpoint: Path, data: Path, split: str) -> dict:
    stat = checkpoint.stat()
    return {
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_mtime": stat.st_mtime,
        "checkpoint_size": stat.st_size,
        "data": str(Path(data).resolve()),
        "split": split,
    }


def transfer_matrix(
    runs: dict[str, Path],
    targets: dict[str, Path],
    out_dir: Path,
    split: str = "test",
    checkpoint: str = "best",
    data_format: str | None = None,
    batch_size: int = 256,
    num_workers: int = 2,
    device: str = "cpu",
) -> dict[str, dict]:
    """Evaluate every run on every target; ``{run: {"source", "init", "cells": {target: {t2i, i2t}}}}``.

    Each cell is cached as ``out_dir/cells/RUN__TARGET.json`` and reused while the checkpoint file (path,
    size, mtime), the data path and the split are unchanged, so an interrupted matrix resumes where it
    stopped (delete a cell file to recompute it).
    """
    from tbpr.evaluation.run_eval import evaluate_run, load_run, resolve_checkpoint

    cell_dir = Path(out_dir) / "cells"
    matrix: dict[str, dict] = {}
    for run_name, run_path in runs.items():
        ckpt = resolve_checkpoint(run_path, checkpoint)
        row: dict = {"checkpoint": str(ckpt), "cells": {}}
        loaded = None
        for target, data in targets.items():
            path, key = cell_dir / f"{run_name}__{target}.json", _cell_key(ckpt, data, split)
            cached = json.loads(path.read_text()) if path.is_file() else None
            if cached and cached.get("key") == key:
                log.info("%s on %s: cached in %s", run_name, target, path)
                row.update(cached["labels"])
                row["cells"][target] = cached["metrics"]
                continue
            loaded = loaded or load_run(run_path, checkpoint, device)
            labels = {
                "source": Path(loaded.config.data.path).name or "-",
                "init": run_label(loaded.config.init_from) if loaded.config.init_from else "-",
            }
            result = evaluate_run(loaded, [data], split, data_format, batch_size, num_workers, device)
            metrics = next(iter(result.values()))
            write_json(path, {"key": key, "labels": labels, "metrics": metrics}, indent=2)
            row.update(labels)
            row["cells"][target] = metrics
        matrix[run_name] = row
    return matrix


def matrix_markdown(matrix: dict[str, dict], metrics: tuple[str, ...] = ("R1", "mAP")) -> str:
    """The source -> target matrix (text-to-image) as markdown, in the layout of the paper's Table 4."""
    rows = {name: {t: cell["t2i"] for t, cell in row["cells"].items()} for name, row in matrix.items()}
    labels = {
        name: {"init": row.get("init", "-"), "source": row.get("source", "-")} for name, row in matrix.items()
    }
    return format_grouped_table(rows, metrics, labels, name_header="run")


def write_matrix(matrix: dict[str, dict], out_dir: Path, metrics: tuple[str, ...] = ("R1", "mAP")) -> Path:
    """``out_dir/transfer.md`` (the table) and ``out_dir/transfer.json`` (all metrics); returns the .md."""
    out_dir = Path(out_dir)
    write_json(out_dir / "transfer.json", matrix, indent=2)
    table = matrix_markdown(matrix, metrics)
    md = out_dir / "transfer.md"
    write_text(
        md,
        "# Source -> target transfer (text-to-image)\n\n"
        "Rows: runs (init = the run it was fine-tuned from, source = its training set); "
        "columns: target datasets.\n\n" + table + "\n",
    )
    return md
