"""Options several subcommands share."""

from __future__ import annotations

import argparse


def add_config_options(p: argparse.ArgumentParser, default_recipe: str = "cpu-small") -> None:
    """``--config`` (a shipped recipe or YAML file) and repeatable ``--set key=value`` overrides."""
    p.add_argument(
        "--config",
        default=default_recipe,
        help=f"shipped recipe name (cpu-small, clip-sdm) or a YAML file (default: {default_recipe})",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=1e-4 (repeatable; values are YAML)",
    )
