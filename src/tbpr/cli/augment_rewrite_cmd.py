"""``tbpr augment rewrite``: LLM-DA's caption rewriting with the Text Faithfulness Filter."""

from __future__ import annotations

import argparse
import contextlib

from tbpr.cli.generation_options import (
    add_backend_options,
    add_data_options,
    add_filter_options,
    add_generation_options,
    chat_settings,
    filter_config,
    job_options,
    open_backend,
    train_split,
)


def register_rewrite_command(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "rewrite",
        help="rewrite every training caption with an LLM, keeping faithful rewrites (LLM-DA)",
        description="Ask an LLM to rewrite every training caption (LLM-DA), judge each rewrite with the Text "
        "Faithfulness Filter (sentence-embedding similarity >= alpha, plus a colour/garment consistency "
        "check) and ask again for rejected ones, up to --max-attempts. Every try is appended with its "
        "provenance to the caption store OUT; rerunning the command continues where it stopped. Training "
        "uses the store through data.text_augment (ops: {llm_rewrite: BETA}, stores: [OUT]).",
    )
    add_data_options(p)
    p.add_argument(
        "--prompt",
        default="paper",
        metavar="NAME|FILE",
        help="'paper' (the caption + 'Rewrite this image caption.'), 'few-shot' (a system message and three "
        "examples, for small models) or a YAML template file (see docs/llm-da.md) (default: paper)",
    )
    p.add_argument(
        "--per-caption", type=int, default=1, metavar="N", help="rewrites wanted per caption (default: 1)"
    )
    p.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        help="rewrites asked per wanted one before the caption keeps none (default: 3)",
    )
    p.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="process only the captions whose id is I modulo N (run N shards on N machines, then "
        "`tbpr augment merge`) (default: 0/1, everything)",
    )
    add_generation_options(p, max_tokens=96, what="rewrite")
    add_backend_options(
        p,
        "openai: any OpenAI-compatible chat server (vLLM, Ollama, llama.cpp, transformers serve, hosted "
        "APIs); transformers: a causal LM run in this process (default: openai)",
        "openai: model name sent with each request (servers with one model need none); transformers: "
        "hub name, local folder or .gguf file (required)",
        gen_batch_size=16,
        gen_what="prompts",
    )
    add_filter_options(p)
    p.set_defaults(func=_rewrite)


def _rewrite(args: argparse.Namespace) -> int:
    from tbpr.generate.llm import ChatBackend, TransformersBackend
    from tbpr.generate.text.faithfulness import FaithfulnessFilter
    from tbpr.generate.text.prompts import get_prompt
    from tbpr.generate.text.rewrite import rewrite_captions

    prompt = get_prompt(args.prompt)
    options = job_options(args)
    settings = chat_settings(args)
    manifest = train_split(args)
    with contextlib.ExitStack() as stack:
        backend = open_backend(args, settings, stack, TransformersBackend, ChatBackend)
        judge = FaithfulnessFilter(filter_config(args, args.device), prompt.instruction_texts())
        summary = rewrite_captions(
            manifest,
            args.out,
            backend,
            prompt,
            judge,
            per_caption=args.per_caption,
            **options,
        )
    print(summary.line(args.out))
    return 0
