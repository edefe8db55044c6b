"""The ``tbpr`` command: one entry point, one subcommand module per pipeline stage."""

from __future__ import annotations

import argparse
import importlib
import logging

from tbpr import __version__
from tbpr.errors import TbprError

# Command modules import only argparse-level code at the top (torch is imported inside ``func``), so
# ``--version``, ``--help`` and usage errors answer at once: tests/test_search_cli.py checks it.
# Each module defines ``register(subparsers)`` which adds its subcommand(s) and sets
# ``func`` (called with the parsed namespace; returns an exit code).
_COMMAND_MODULES = (
    "tbpr.cli.synth_cmd",
    "tbpr.cli.data_cmd",
    "tbpr.cli.train_cmd",
    "tbpr.cli.eval_cmd",
    "tbpr.cli.transfer_cmd",
    "tbpr.cli.ablate_cmd",
    "tbpr.cli.analyze_cmd",
    "tbpr.cli.demo_cmd",
    "tbpr.cli.index_cmd",
    "tbpr.cli.search_cmd",
    "tbpr.cli.serve_cmd",
    "tbpr.cli.augment_cmd",
    "tbpr.cli.caption_cmd",
    "tbpr.cli.generate_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tbpr",
        description="Text-based person retrieval: data, training, evaluation and search.",
    )
    parser.add_argument("--version", action="version", version=f"tbpr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    # tbpr's own messages at the chosen level; libraries (open_clip logs to the root logger) warnings only
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("tbpr").setLevel(level)
    try:
        return int(args.func(args) or 0)
    except TbprError as err:  # user errors: one clear line, no traceback
        logging.getLogger("tbpr").error("%s", err)
        return 2
