"""Metric tables for the terminal and for markdown reports."""

from __future__ import annotations


def format_metrics_table(results: dict[str, dict], name_header: str = "task") -> str:
    """A markdown table: one row per entry of ``results`` (e.g. 't2i', 'i2t' or a dataset name).

    Each value is a ``retrieval_metrics`` dict; columns are its Rank-K keys (R1 R5 R10 by default),
    mAP and mINP with 2 decimals, then the skipped queries as ``skipped/queries``.
    """
    if not results:
        raise ValueError("no results to tabulate")
    rank_columns = list(
        dict.fromkeys(key for metrics in results.values() for key in metrics if _is_rank(key))
    )
    columns = [name_header, *rank_columns, "mAP", "mINP", "skipped"]
    rows = [
        [
            name,
            *(_number(metrics.get(key)) for key in [*rank_columns, "mAP", "mINP"]),
            _skipped(metrics),
        ]
        for name, metrics in results.items()
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *rows)]

    def line(cells: list[str]) -> str:
        padded = (
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths))
        )
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(columns), rule, *(line(row) for row in rows)])


def _is_rank(key: str) -> bool:
    return key.startswith("R") and key[1:].isdigit()


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _skipped(metrics: dict) -> str:
    skipped = len(metrics.get("skipped_queries", []))
    total = metrics.get("num_queries")
    return str(skipped) if total is None else f"{skipped}/{total}"
