"""Options several subcommands share."""

from __future__ import annotations

import argparse
from pathlib import Path

_RECIPE_DIR = (
    Path(__file__).resolve().parent.parent / "configs"
)  # = tbpr.train.config.RECIPE_DIR, without torch


def add_config_options(p: argparse.ArgumentParser, default_recipe: str = "cpu-small") -> None:
    """``--config`` (a shipped recipe or YAML file) and repeatable ``--set key=value`` overrides."""
    shipped = ", ".join(sorted(path.stem for path in _RECIPE_DIR.glob("*.yaml")))
    p.add_argument(
        "--config",
        default=default_recipe,
        help=f"shipped recipe name ({shipped}) or a YAML file (default: {default_recipe})",
    )
    add_set_option(p, "override a config value, e.g. --set optim.lr=1e-4 (repeatable; values are YAML)")


def add_set_option(p: argparse.ArgumentParser, help: str) -> None:
    """Repeatable ``--set KEY=VALUE`` config overrides, collected in ``args.overrides``."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_device_option(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--device``; with no default the best available one is used (see ``resolve_device``)."""
    shown = default or "cuda if available, else cpu"
    p.add_argument(
        "--device", type=_device, default=default, help=f"cpu, cuda, cuda:1 ... (default: {shown})"
    )


def _device(name: str) -> str:
    """argparse type: a device this machine has (a missing GPU is a usage error)."""
    from tbpr.devices import check_device
    from tbpr.errors import ConfigError

    try:
        return check_device(name)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_encoding_options(p: argparse.ArgumentParser) -> None:
    """``--batch-size`` and ``--num-workers`` of a command that encodes images."""
    p.add_argument("--batch-size", type=int, default=256, help="images per encoding batch (default: 256)")
    p.add_argument("--num-workers", type=int, default=2, help="image decoding workers (default: 2)")


def resolve_device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")
