"""``tbpr eval``: Rank-K, mAP and mINP of a trained run on one or more datasets."""

from __future__ import annotations

import argparse
from pathlib import Path

from tbpr.cli.options import add_device_option, add_encoding_options, resolve_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a trained run (text-to-image and image-to-text)",
        description="Encode a split's gallery images and captions with a run's model and print Rank-1/5/10, "
        "mAP and mINP as the field defines them. Several --data give one table (direct transfer).",
    )
    p.add_argument("run", type=Path, help="run folder written by `tbpr train` (or a checkpoint file)")
    p.add_argument(
        "--data",
        type=Path,
        action="append",
        help="dataset folder(s) to evaluate on (repeatable; default: the run's training data)",
    )
    p.add_argument("--format", help="annotation format if not recognized from the file name")
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "val", "train"],
        help="split to evaluate (default: test); 'val' of the run's own training data is the split the run "
        "validated on, carved from the training identities if it carved one (data.val_split)",
    )
    p.add_argument("--checkpoint", default="best", help="best, last, or a checkpoint file (default: best)")
    p.add_argument("--json", type=Path, help="write the metrics here (default: RUN/eval_<split>.json)")
    p.add_argument(
        "--visualize",
        type=int,
        default=0,
        metavar="N",
        help="write RUN/retrieval_<data>_<split>.png: N queries and their top-10 images (green: match, "
        "red: miss) with scores, titled with the run, checkpoint and split; a query whose first true "
        "match ranks lower says at which rank",
    )
    add_encoding_options(p)
    add_device_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tbpr.atomic import write_json
    from tbpr.evaluation.report import format_metrics_table
    from tbpr.evaluation.run_eval import evaluate_run, load_run
    from tbpr.evaluation.transfer import format_grouped_table, run_label

    device = resolve_device(args.device)
    loaded = load_run(args.run, args.checkpoint, device)
    data = args.data or [Path(loaded.config.data.path)]
    run_dir = args.run if args.run.is_dir() else args.run.parent
    results = evaluate_run(
        loaded,
        data,
        args.split,
        args.format,
        args.batch_size,
        args.num_workers,
        device,
        visualize=args.visualize,
        figure_dir=run_dir,
    )
    write_json(args.json or run_dir / f"eval_{args.split}.json", results, indent=2)
    if len(results) > 1:  # direct transfer: the paper's Table 1/3 layout, a column group per dataset
        rows = transfer_rows(run_label(str(args.run.resolve())), results)
        print(format_grouped_table(rows, name_header="run"))
    else:
        print(format_metrics_table(rows_for_table(results)))
    return 0


def transfer_rows(run_name: str, results: dict) -> dict:
    """``{dataset: {direction: metrics}}`` -> ``{"RUN t2i": {dataset: metrics}, "RUN i2t": ...}``."""
    return {f"{run_name} {d}": {name: res[d] for name, res in results.items()} for d in ("t2i", "i2t")}


def rows_for_table(results: dict) -> dict:
    """``{dataset: {direction: metrics}}`` -> ``{"dataset t2i": metrics, ...}``."""
    return {f"{name} {d}": res[d] for name, res in results.items() for d in ("t2i", "i2t")}
