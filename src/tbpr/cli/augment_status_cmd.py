"""``tbpr augment status`` and ``tbpr augment merge``: inspect caption stores and merge shard stores."""

from __future__ import annotations

import argparse


def register_status_commands(actions: argparse._SubParsersAction) -> None:
    """Add the ``status`` and ``merge`` actions to ``tbpr augment``."""
    status = actions.add_parser(
        "status",
        help="counts, acceptance, rejection reasons, similarity histogram and examples of a caption store",
        description="Report what the caption store STORE holds, per method: captions, keys and tries; "
        "accepted, rejected and failed tries with the acceptance rate; rejection and failure reasons "
        "grouped by kind; tries per key; the similarity histogram of the rewrites (the LLM-DA paper's "
        "Fig. 4, as a PNG, when the store has similarity scores); and examples of kept and rejected "
        "outputs. Writes summary.json and the PNGs to --out.",
    )
    status.add_argument("store", metavar="STORE", help="caption store (.jsonl)")
    status.add_argument(
        "--out", metavar="DIR", help="folder for summary.json and the PNGs (default: STORE.status/ beside it)"
    )
    status.add_argument(
        "--examples",
        type=int,
        default=3,
        metavar="K",
        help="kept and rejected examples to show per method, drawn at random (default: 3)",
    )
    status.set_defaults(func=_status)

    merge = actions.add_parser(
        "merge",
        help="merge caption stores (e.g. the shards of one job) into one",
        description="Write the records of every STORE, in order, into OUT (replaced atomically). "
        "Identical records are kept once; stores made from different text of one caption are refused. "
        "OUT may be one of the STOREs, to merge others into it; an existing OUT that is not among them is "
        "refused.",
    )
    merge.add_argument("out", metavar="OUT", help="the merged store to write (.jsonl)")
    merge.add_argument("stores", metavar="STORE", nargs="+", help="stores to merge")
    merge.set_defaults(func=_merge)


def _status(args: argparse.Namespace) -> int:
    from tbpr.errors import ConfigError
    from tbpr.generate.status import format_status, write_status

    if args.examples < 0:
        raise ConfigError(f"--examples {args.examples}: give a count >= 0")
    print(format_status(write_status(args.store, args.out, args.examples)))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from tbpr.generate.status import merge_stores

    summary = merge_stores(args.out, args.stores)
    print(
        f"{args.out}: {summary.records} records from {summary.stores} stores, {summary.duplicates} identical "
        f"duplicates dropped, {summary.overlapping_keys} keys with tries in more than one store"
    )
    return 0
