"""``tbpr augment filter`` (re-judge a rewrite store) and ``tbpr augment filter-eval`` (measure the filter)."""

from __future__ import annotations

import argparse

from tbpr.cli.generation_options import add_filter_options, filter_config
from tbpr.cli.options import add_device_option


def register_filter_commands(actions: argparse._SubParsersAction) -> None:
    _register_filter(actions)
    _register_filter_eval(actions)


def _register_filter(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "filter",
        help="judge the LLM rewrites of a caption store again with other filter settings",
        description="Judge every LLM rewrite of the caption store STORE again with the Text Faithfulness "
        "Filter settings given here (e.g. another alpha, for an alpha sweep without generating again) and "
        "write the store with the new verdicts to --out; provenance is kept and each re-judged record "
        "names its source in refiltered_from. Other records are copied unchanged. No caption is rewritten "
        "again, so a caption whose rewrites all fail the new settings keeps none.",
    )
    p.add_argument("store", metavar="STORE", help="caption store (.jsonl) holding LLM rewrites")
    p.add_argument("--out", required=True, metavar="STORE2", help="new caption store to write (.jsonl)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse to)")
    p.add_argument(
        "--prompt",
        metavar="NAME|FILE",
        help="the prompt the rewrites were made with ('paper', 'few-shot' or a YAML template), to check "
        "again that rewrites do not echo it (default: rewrites rejected for echoing it stay rejected)",
    )
    p.add_argument(
        "--batch-size", type=int, default=64, help="texts per sentence-embedding batch (default: 64)"
    )
    add_device_option(p, default="cpu")
    add_filter_options(p)
    p.set_defaults(func=_filter)


def _register_filter_eval(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "filter-eval",
        help="measure the faithfulness filter on SynthPedes with planted unfaithful rewrites",
        description="Plant rewrites of SynthPedes captions whose faithfulness is known (faithful, one "
        "attribute swapped, one dropped, one invented), judge them with TFF alone, the attribute check "
        "alone and both, and print precision and recall of rejecting the unfaithful ones as a markdown "
        "table.",
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="SynthPedes dataset folder (with attributes.json, made by `tbpr synth`)",
    )
    p.add_argument(
        "--captions",
        type=int,
        default=300,
        metavar="M",
        help="captions to plant rewrites for; each gets one rewrite of every kind (default: 300)",
    )
    p.add_argument(
        "--alpha", type=float, default=0.6, help="TFF similarity threshold (default: 0.6, as in the paper)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of caption choice and rewrites (default: 0)")
    p.add_argument(
        "--similarity-model",
        default="all-MiniLM-L6-v2",
        metavar="NAME",
        help="sentence-transformers model: hub name or local folder (default: all-MiniLM-L6-v2)",
    )
    p.add_argument("--out", metavar="FILE.md", help="also write the markdown report to this file")
    add_device_option(p, default="cpu")
    p.set_defaults(func=_filter_eval)


def _filter(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tbpr.generate.text.faithfulness import refilter
    from tbpr.generate.text.prompts import get_prompt

    cfg = replace(filter_config(args, args.device), batch_size=args.batch_size)
    prompt_texts = get_prompt(args.prompt).instruction_texts() if args.prompt else None
    s = refilter(args.store, args.out, cfg, prompt_texts, overwrite=args.overwrite)
    print(
        f"{args.out}: {s.records} records, {s.rejudged} rewrites judged again: {s.accepted} accepted, "
        f"{s.rejudged - s.accepted} rejected, {s.flipped} with a new verdict"
    )
    return 0


def _filter_eval(args: argparse.Namespace) -> int:
    from tbpr.atomic import write_text
    from tbpr.errors import ConfigError
    from tbpr.generate.text.filter_eval import evaluate_filter

    if args.captions < 1:
        raise ConfigError(f"--captions {args.captions}: give at least 1")
    result = evaluate_filter(
        args.data, args.captions, args.alpha, args.seed, args.similarity_model, args.device
    )
    if args.out:
        write_text(args.out, result.markdown)
    print(result.markdown, end="")
    return 0
