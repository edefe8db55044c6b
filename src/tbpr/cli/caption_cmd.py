"""``tbpr caption IMAGES_DIR --out STORE``: MLLM captioning of unlabeled images (static or dynamic
instruction), and ``tbpr caption templates --from STORE``: new description templates from an LLM."""

from __future__ import annotations

import argparse
import contextlib
import random

from tbpr.cli.generation_options import (
    add_backend_options,
    add_generation_options,
    chat_settings,
    job_options,
    open_backend,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "caption",
        help="caption a folder of person images with a vision-language model (or derive templates)",
        description="Caption every image under IMAGES_DIR (recursive; jpg, jpeg, png, webp) with a "
        "vision-language model and append each try, with its provenance, to the caption store OUT. "
        "--instruction static uses MLLM4Text-ReID's fixed instruction; dynamic inserts a description "
        "template drawn at random (TDE). Replies with leftover template markup, refusals or not in English "
        "are rejected and asked again (--max-attempts). Rerun to continue; run again with another --model "
        "or --instruction into the same store to add captioners. Unreadable images are listed, not fatal. "
        "`tbpr caption templates --from STORE [--out FILE]` instead asks a text LLM for new templates "
        "derived from the store's captions (written after the current ones to --out, or printed; to caption a folder named 'templates', write ./templates).",
    )
    p.add_argument("images", metavar="IMAGES_DIR", help="folder of images, or 'templates' (see above)")
    p.add_argument(
        "--out", metavar="STORE|FILE", help="caption store (.jsonl); templates: YAML file to write"
    )
    p.add_argument(
        "--from", dest="from_store", metavar="STORE", help="templates: caption store to learn from"
    )
    p.add_argument("--count", type=int, default=10, help="templates: new templates wanted (default: 10)")
    p.add_argument("--rounds", type=int, default=3, help="templates: dialogue turns at most (default: 3)")
    p.add_argument("--instruction", choices=("static", "dynamic"), default="static", help="(default: static)")
    p.add_argument(
        "--templates",
        metavar="FILE",
        help="template file for --instruction dynamic (default: the shipped list of tbpr's templates)",
    )
    p.add_argument("--per-image", type=int, default=1, metavar="N", help="captions per image (default: 1)")
    p.add_argument(
        "--max-attempts", type=int, default=3, help="tries per wanted caption before giving up (default: 3)"
    )
    p.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="only the images whose caption id is I modulo N (then `tbpr augment merge`) (default: 0/1)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per stored batch (default: 32)")
    p.add_argument("--limit", type=int, help="caption only the first N images (by relative path)")
    add_generation_options(p, max_tokens=128, what="caption or template reply")
    add_backend_options(
        p,
        "openai: an OpenAI-compatible server (vision chat for captions, text chat for templates); "
        "transformers: a model run in this process (default: openai)",
        "openai: model name sent with each request; transformers: hub name or folder (required)",
        gen_batch_size=8,
        gen_what="images",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from tbpr.errors import ConfigError

    settings = chat_settings(args)
    if args.images == "templates" and args.from_store:
        return _templates(args, settings)
    if not args.out:
        raise ConfigError("tbpr caption IMAGES_DIR needs --out STORE (the caption store to fill)")
    return _caption(args, settings)


def _caption(args: argparse.Namespace, settings) -> int:
    from tbpr.generate.text.caption import caption_images
    from tbpr.generate.text.templates import load_templates
    from tbpr.generate.text.vision import TransformersVisionBackend, VisionChatBackend

    options = job_options(args)
    templates = load_templates(args.templates) if args.instruction == "dynamic" else []
    with contextlib.ExitStack() as stack:
        backend = open_backend(args, settings, stack, TransformersVisionBackend, VisionChatBackend)
        summary = caption_images(
            args.images,
            args.out,
            backend,
            kind=args.instruction,
            templates=templates,
            per_image=args.per_image,
            **options,
        )
    print(summary.line(args.out))
    for rel, problem in summary.unreadable.items():
        print(f"unreadable: {rel} ({problem})")
    return 0


def _templates(args: argparse.Namespace, settings) -> int:
    import yaml

    from tbpr.data.caption_store import accepted_texts
    from tbpr.generate.llm import ChatBackend, TransformersBackend
    from tbpr.generate.text.caption import METHOD
    from tbpr.generate.text.templates import derive_templates, load_templates, write_templates

    captions = [t for texts in accepted_texts([args.from_store], METHOD).values() for t in texts]
    existing = load_templates(args.templates)
    with contextlib.ExitStack() as stack:
        backend = open_backend(args, settings, stack, TransformersBackend, ChatBackend, batch_size=1)
        rng = random.Random(args.seed)
        new = derive_templates(
            backend, captions, existing, args.count, args.rounds, seed=rng.randrange(2**31)
        )
    if args.out:
        write_templates(args.out, [*existing, *new], args.from_store)
        print(f"{args.out}: {len(existing)} templates kept and {len(new)} new ones appended")
    else:
        print(yaml.safe_dump({"templates": new}, allow_unicode=True, sort_keys=False, width=1000), end="")
    return 0
