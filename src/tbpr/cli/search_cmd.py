"""``tbpr search``: the gallery images of an index that best match a text description."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

from tbpr.cli.options import add_device_option, resolve_device

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search an index by text",
        description="Encode a description with the model the index was built with and print the top-k "
        "gallery images (rank, cosine score, path relative to the indexed folder).",
    )
    p.add_argument("index", type=Path, help="index folder written by `tbpr index build`")
    p.add_argument(
        "query", help='the description in quotes, e.g. "a man in a black coat with a red backpack"'
    )
    p.add_argument("unquoted", nargs="*", action=_UnquotedWords, help=argparse.SUPPRESS)
    p.add_argument("-k", type=int, default=10, help="number of results (default: 10)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {rank, id, score, path}")
    p.add_argument("--sheet", type=Path, metavar="PNG", help="also write a contact sheet of the results here")
    p.add_argument(
        "--run",
        type=Path,
        help="query with this run's model (refused unless it is the model the index was built with; "
        "default: the checkpoint recorded in the index)",
    )
    add_device_option(p)
    p.set_defaults(func=run)


class _UnquotedWords(argparse.Action):
    """Words after the query (it was not quoted): a usage error that shows how to quote it."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values:
            words = " ".join([namespace.query, *values])
            parser.error(f'the query must be one argument: quote it, e.g. tbpr search INDEX "{words}"')


def run(args: argparse.Namespace) -> int:
    from tbpr.search.searcher import Searcher, format_results, write_contact_sheet

    searcher = Searcher(args.index, resolve_device(args.device), run=args.run)
    results = searcher.search(args.query, args.k)
    print(json.dumps([asdict(r) for r in results], indent=2) if args.json else format_results(results))
    if args.sheet:
        sheet = write_contact_sheet(searcher, args.query, results, args.sheet)
        if args.json:  # stdout stays one JSON document
            log.info("wrote the contact sheet to %s", sheet)
        else:
            print(f"contact sheet: {sheet}")
    return 0
