"""``tbpr analyze``: analyses of a trained run (module contributions C1/C2, NAM vs caption noise, division vs pair noise)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tbpr.cli.options import add_device_option, add_encoding_options, resolve_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="analyze a trained run (module contributions, NAM vs caption noise, clean-sample division vs pair noise)",
        description="Analyses of a trained run's model.",
    )
    kinds = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    m = kinds.add_parser(
        "modules",
        help="contribution scores C1 and C2 of every attention, feed-forward and whole layer",
        description="For every self-attention (SA), feed-forward (FF) and whole layer of the image and text "
        "towers, compute TBPS-CLIP's contribution scores (appendix A.4): C1 = the drop of the text-to-image "
        "metric when the module is removed, divided by the largest drop among the modules of its tower (or of "
        "both towers: --normalize all); C2 = the smallest "
        "alpha on the grid 0, STEP, 2*STEP, ... such that moving only that module's weights to "
        "(1 - alpha) * initial + alpha * fine-tuned keeps the metric drop from the fine-tuned model below "
        "EPSILON (1 if none does). The initial weights come from RUN/checkpoints/init.pt, or are rebuilt from the "
        "run's model.pretrained. Writes modules.json and modules.png (the heatmaps of Figure 5); the "
        "layers with the lowest C1 + C2 of their whole layer are the ones to drop or freeze "
        "(tbpr.analysis.lowest_contribution_layers). Cost: one encoding of one tower per removal and per "
        "alpha tried, so use --limit-queries for a quick look.",
    )
    m.add_argument("run", type=Path, help="run folder written by `tbpr train` (or a checkpoint file)")
    m.add_argument("--data", type=Path, help="dataset folder to score on (default: the run's training data)")
    m.add_argument("--format", help="annotation format if not recognized from the file name")
    m.add_argument(
        "--split",
        default="val",
        choices=["val", "test"],
        help="split whose text-to-image retrieval is scored (default: val; of the run's own training data, the "
        "split the run validated on, carved from the training identities if it carved one)",
    )
    m.add_argument(
        "--checkpoint",
        default="best",
        help="fine-tuned weights: best, last, or a checkpoint file (default: best)",
    )
    m.add_argument(
        "--metric",
        default="R1",
        choices=["R1", "R5", "R10", "mAP", "mINP"],
        help="text-to-image metric (percent) that C1 and C2 are computed from (default: R1)",
    )
    m.add_argument(
        "--epsilon",
        type=float,
        default=3.0,
        help="C2's tolerance: the metric must drop by less than this many points (default: 3, the paper's "
        "value for Rank-1)",
    )
    m.add_argument(
        "--step", type=float, default=0.1, help="spacing of the alpha grid searched for C2 (default: 0.1)"
    )
    m.add_argument(
        "--normalize",
        default="tower",
        choices=["tower", "all"],
        help="C1's denominator: the largest drop of the module's own tower (default; the paper's Figure 5 shows "
        "each encoder separately) or the largest drop of all modules of both towers",
    )
    m.add_argument(
        "--limit-queries",
        type=int,
        metavar="N",
        help="score only N captions spread over the split (the gallery stays whole; default: all)",
    )
    m.add_argument(
        "--out", type=Path, help="folder for modules.json and modules.png (default: the run folder)"
    )
    add_encoding_options(m)
    add_device_option(m)
    m.set_defaults(func=run_modules)
    n = kinds.add_parser(
        "nam",
        help="mean NAM masking probability of corrupted vs clean caption tokens per epoch",
        description="For a run trained with masking.mode=nam (and masking.dump=true) on SynthPedes generated "
        "with `tbpr synth --caption-noise P`: per epoch, the mean masking probability NAM gives tokens of "
        "corrupted attribute words, of clean attribute words and of the other words (markdown table; also "
        "written to RUN/nam/noise.json).",
    )
    n.add_argument("run", type=Path, help="run folder written by `tbpr train` (with nam/epoch_XXX.pt)")
    n.add_argument("--data", type=Path, required=True, help="the SynthPedes folder the run trained on")
    n.set_defaults(func=run_nam)
    z = kinds.add_parser(
        "noise",
        help="precision / recall / F1 of a clean-sample division's noisy pairs per epoch",
        description="For a run trained with noise.division=gmm on SynthPedes generated with "
        "`tbpr synth --pair-noise P`: per epoch, how well the pairs the division did not call clean match the "
        "pairs whose caption pair noise moved (precision, recall and F1 of the noisy set, percent; markdown "
        "table; also written to RUN/noise/scores.json).",
    )
    z.add_argument("run", type=Path, help="run folder written by `tbpr train` (with noise/epoch-NNN.npz)")
    z.add_argument("--data", type=Path, required=True, help="the SynthPedes folder the run trained on")
    z.set_defaults(func=run_noise)


def run_modules(args: argparse.Namespace) -> int:
    from tbpr.analysis import analyze_run, lowest_contribution_layers
    from tbpr.analysis.figures import render_contribution_heatmap
    from tbpr.atomic import write_json

    table = analyze_run(
        args.run,
        data=args.data,
        split=args.split,
        data_format=args.format,
        metric=args.metric,
        epsilon=args.epsilon,
        step=args.step,
        normalize=args.normalize,
        limit_queries=args.limit_queries,
        checkpoint=args.checkpoint,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=resolve_device(args.device),
    )
    out = args.out or (args.run if args.run.is_dir() else args.run.parent)
    json_path = write_json(out / "modules.json", table, indent=2)
    png_path = render_contribution_heatmap(table, out / "modules.png")
    text_layers = len(table["scores"]["text"])
    print(f"fine-tuned t2i {table['metric']}: {table['baseline']:.2f} ({table['seconds']:.0f} s)")
    for n in range(1, min(5, text_layers - 1) + 1):
        print(f"text layers to drop/freeze (n={n}): {lowest_contribution_layers(table, n)}")
    print(f"wrote {json_path} and {png_path}")
    return 0


def run_nam(args: argparse.Namespace) -> int:
    from tbpr.analysis.nam import markdown_table, nam_noise_table
    from tbpr.atomic import write_json

    rows = nam_noise_table(args.run, args.data)
    print(markdown_table(rows))
    print(f"wrote {write_json(args.run / 'nam' / 'noise.json', rows, indent=2)}")
    return 0


def run_noise(args: argparse.Namespace) -> int:
    from tbpr.analysis.noise import markdown_table, noise_detection_table
    from tbpr.atomic import write_json

    rows = noise_detection_table(args.run, args.data)
    print(markdown_table(rows))
    print(f"wrote {write_json(args.run / 'noise' / 'scores.json', rows, indent=2)}")
    return 0
