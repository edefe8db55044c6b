"""Analyses of trained runs: module contributions (C1, C2) and the layers they single out."""

from tbpr.analysis.modules import (
    KINDS,
    TOWERS,
    ModuleRef,
    analyze_run,
    interpolated,
    list_modules,
    lowest_contribution_layers,
    module_contributions,
    removed,
    smallest_alpha,
)

__all__ = [
    "KINDS",
    "TOWERS",
    "ModuleRef",
    "analyze_run",
    "interpolated",
    "list_modules",
    "lowest_contribution_layers",
    "module_contributions",
    "removed",
    "smallest_alpha",
]
