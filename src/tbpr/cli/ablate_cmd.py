"""``tbpr ablate``: train and evaluate every variant of an ablation grid, write the paper-style table."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from tbpr.cli.options import add_set_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate",
        help="run an ablation grid (one trained and evaluated variant per table row)",
        description="Train each variant of GRID in turn under OUT/<variant>/, evaluate its best checkpoint "
        "(chosen on val) on the test split and write OUT/table.md (rows = variants, columns = metrics, "
        "plus the change in Rank-1 and mAP from the first row with its 95% paired-bootstrap interval over "
        "the test queries; '*' marks a change whose interval excludes 0). Resumable: finished variants are "
        "not rerun, an interrupted one resumes from its checkpoint, one whose config changed is retrained. "
        "Several processes may share one OUT (e.g. different --seeds or --only on two machines): each run "
        "folder is locked while it trains, a run another process is training is skipped, and the table "
        "is built from every run finished in OUT, so whichever process writes it last writes it whole. "
        "Shipped grids mirror "
        "TBPS-CLIP's Tables 1-5: table1-tricks ... table5-losses (GPU, paper settings) and their "
        "-small versions (CPU, SynthPedes).",
    )
    p.add_argument("grid", help="shipped grid name (e.g. table1-tricks-small) or a grid YAML file")
    p.add_argument("--data", help="dataset folder for every variant (shortcut for --set data.path=...)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/ablate/<grid name>)")
    add_set_option(
        p, "override a config value in every variant, after the grid's own (repeatable; values are YAML)"
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[],
        metavar="S",
        help="train every variant once per seed (config key seed=S, run folder OUT/<variant>/seed-S/); "
        "the table shows mean ± standard deviation over the seeds, and the intervals pair the test "
        "queries with each row's per-query scores averaged over its seeds. A row waits until all these "
        "seeds have finished; then it also covers any other seed finished in OUT/<variant>/ (e.g. by "
        "another command's --seeds), and the table says which seeds each row covers (default: one run "
        "per variant with the recipe's seed, in OUT/<variant>/)",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this variant (its row label or folder name; repeatable); the table keeps every "
        "row, with the results other commands finished in OUT",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print each variant's resolved config and what a run would do with it, then stop",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from tbpr.config import to_dict
    from tbpr.train.ablation import Ablation, is_main_process, load_grid

    grid, grid_file = load_grid(args.grid)
    out = args.out or Path("runs/ablate") / grid_file.stem
    overrides = list(args.overrides) + ([f"data.path={args.data}"] if args.data else [])
    ablation = Ablation(grid, grid_file, out, overrides, command=command_line(args), seeds=args.seeds)
    selected = ablation.select(args.only)
    if args.dry_run:
        for rv in selected:
            print(f"# {rv.variant.name} -> {rv.run_dir}: {ablation.describe(rv)}")
            print(f"# overrides: {shlex.join(rv.overrides)}")
            print(yaml.safe_dump(to_dict(rv.config), sort_keys=False))
        return 0
    table = ablation.run(args.only)
    if is_main_process():  # under torchrun the first process writes the table
        print(table.read_text())
        print(f"table: {table}")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The ``tbpr ablate`` command that reproduces this run (recorded under the table)."""
    parts = ["tbpr", "ablate", args.grid]
    if args.data:
        parts += ["--data", args.data]
    if args.out:
        parts += ["--out", str(args.out)]
    for item in args.overrides:
        parts += ["--set", item]
    if args.seeds:
        parts += ["--seeds", *map(str, args.seeds)]
    for name in args.only:
        parts += ["--only", name]
    return shlex.join(parts)
