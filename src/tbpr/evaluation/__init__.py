"""Evaluation: field-exact retrieval metrics, metric tables and ranked-result figures."""

from tbpr.evaluation.figures import render_retrieval_figure
from tbpr.evaluation.metrics import retrieval_metrics, retrieval_metrics_both
from tbpr.evaluation.report import format_metrics_table

__all__ = ["format_metrics_table", "render_retrieval_figure", "retrieval_metrics", "retrieval_metrics_both"]
