"""``tbpr augment``: precompute text augmentations of a training set into caption stores."""

from __future__ import annotations

import argparse
import contextlib

from tbpr.cli.options import add_device_option
from tbpr.data.readers import FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    augment = sub.add_parser(
        "augment",
        help="precompute text augmentations (back translations) into caption stores",
        description="Precompute text augmentations of a dataset's training captions into a caption store "
        "(append-only JSONL with provenance) that training configs read through data.text_augment.stores.",
    )
    actions = augment.add_subparsers(dest="augment_command", metavar="ACTION", required=True)
    _register_backtranslate(actions)


def _register_backtranslate(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "backtranslate",
        help="translate every training caption to a pivot language and back",
        description="Translate every training caption English -> PIVOT -> English and append the results, "
        "with provenance, to the caption store OUT. Rerunning the command continues where it stopped: "
        "captions already in the store are skipped and failed requests are retried. Real augmentations "
        "need a real translation model (e.g. Helsinki-NLP/opus-mt-en-fr and opus-mt-fr-en, or a capable "
        "LLM behind an OpenAI-compatible server).",
    )
    p.add_argument("--data", required=True, metavar="PATH", help="dataset folder (annotation file and imgs/)")
    p.add_argument(
        "--out", required=True, metavar="STORE", help="caption store to create or continue (.jsonl)"
    )
    p.add_argument(
        "--format",
        choices=sorted(FORMATS),
        help="annotation format (default: recognized from the annotation file's name)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="use the data that passes `tbpr data check`, dropping bad records, images and captions",
    )
    p.add_argument(
        "--backend",
        choices=("marian", "openai"),
        default="marian",
        help="marian: MarianMT models run locally by transformers; openai: any OpenAI-compatible chat "
        "server (vLLM, Ollama, llama.cpp, transformers serve, the OpenAI API) (default: marian)",
    )
    p.add_argument("--pivot", default="fr", help="pivot language code (default: fr)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="captions per batch; each batch is written to the store before the next starts (default: 32)",
    )
    p.add_argument("--limit", type=int, help="process only the first N training captions (by caption id)")
    p.add_argument(
        "--max-tokens", type=int, default=256, help="longest translation, in tokens (default: 256)"
    )
    marian = p.add_argument_group("marian backend")
    marian.add_argument(
        "--model-fwd",
        metavar="NAME",
        help="English -> pivot model: hub name or local folder (default: Helsinki-NLP/opus-mt-en-PIVOT)",
    )
    marian.add_argument(
        "--model-back",
        metavar="NAME",
        help="pivot -> English model: hub name or local folder (default: Helsinki-NLP/opus-mt-PIVOT-en)",
    )
    marian.add_argument("--num-beams", type=int, default=4, help="beam search width (default: 4)")
    add_device_option(marian, default="cpu")
    chat = p.add_argument_group("openai backend")
    chat.add_argument(
        "--base-url",
        default="http://127.0.0.1:8000/v1",
        help="server URL up to /v1 (default: http://127.0.0.1:8000/v1)",
    )
    chat.add_argument(
        "--model",
        metavar="NAME",
        help="model name sent with each request (default: none; servers with one model use it)",
    )
    chat.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        metavar="VAR",
        help="environment variable holding the API key; unset means no key (default: OPENAI_API_KEY)",
    )
    chat.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (default: 4)")
    chat.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for one reply (default: 120)"
    )
    p.set_defaults(func=_backtranslate)


def _translator(args: argparse.Namespace, stack: contextlib.ExitStack):
    """The translator the options ask for (a chat client is closed with ``stack``)."""
    from tbpr.generate.chat import ChatClient, ChatSettings
    from tbpr.generate.translate import ChatTranslator, MarianTranslator, marian_hub_name

    if args.backend == "marian":
        models = {
            ("en", args.pivot): args.model_fwd or marian_hub_name("en", args.pivot),
            (args.pivot, "en"): args.model_back or marian_hub_name(args.pivot, "en"),
        }
        return MarianTranslator(models, args.device, args.batch_size, args.num_beams, args.max_tokens)
    client = ChatClient(
        args.base_url,
        model=args.model,
        api_key_env=args.api_key_env,
        settings=ChatSettings(max_tokens=args.max_tokens),
        concurrency=args.concurrency,
        timeout=args.timeout,
    )
    return ChatTranslator(stack.enter_context(client))


def _backtranslate(args: argparse.Namespace) -> int:
    from tbpr.data.check import load_training_manifest
    from tbpr.generate.translate import back_translate

    manifest = load_training_manifest(args.data, args.format, skip_bad=args.skip_bad).split("train")
    with contextlib.ExitStack() as stack:
        translator = _translator(args, stack)
        summary = back_translate(
            manifest, args.out, translator, args.pivot, batch_size=args.batch_size, limit=args.limit
        )
    print(
        f"{args.out}: {summary.captions} captions, {summary.skipped} already done, {summary.accepted} "
        f"accepted, {summary.rejected} rejected, {summary.failed} failed (rerun to retry failures)"
    )
    return 0
