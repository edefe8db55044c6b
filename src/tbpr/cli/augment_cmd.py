"""``tbpr augment``: precompute text augmentations of a training set into caption stores."""

from __future__ import annotations

import argparse
import contextlib

from tbpr.cli.augment_filter_cmd import register_filter_commands
from tbpr.cli.augment_rewrite_cmd import register_rewrite_command
from tbpr.cli.augment_status_cmd import register_status_commands
from tbpr.cli.generation_options import add_chat_options, add_data_options, chat_client, train_split
from tbpr.cli.options import add_device_option


def register(sub: argparse._SubParsersAction) -> None:
    augment = sub.add_parser(
        "augment",
        help="precompute text augmentations (LLM rewrites, back translations) into caption stores",
        description="Precompute text augmentations of a dataset's training captions into a caption store "
        "(append-only JSONL with provenance) that training configs read through data.text_augment.stores.",
    )
    actions = augment.add_subparsers(dest="augment_command", metavar="ACTION", required=True)
    _register_backtranslate(actions)
    register_rewrite_command(actions)
    register_status_commands(actions)
    register_filter_commands(actions)


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
    add_data_options(p)
    p.add_argument(
        "--backend",
        choices=("marian", "openai"),
        default="marian",
        help="marian: MarianMT models run locally by transformers; openai: any OpenAI-compatible chat "
        "server (vLLM, Ollama, llama.cpp, transformers serve, the OpenAI API) (default: marian)",
    )
    p.add_argument("--pivot", default="fr", help="pivot language code (default: fr)")
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
        "--model",
        metavar="NAME",
        help="model name sent with each request (default: none; servers with one model use it)",
    )
    add_chat_options(chat)
    p.set_defaults(func=_backtranslate)


def _translator(args: argparse.Namespace, stack: contextlib.ExitStack):
    """The translator the options ask for (a chat client is closed with ``stack``)."""
    from tbpr.generate.chat import ChatSettings
    from tbpr.generate.text.translate import ChatTranslator, MarianTranslator, marian_hub_name

    if args.backend == "marian":
        models = {
            ("en", args.pivot): args.model_fwd or marian_hub_name("en", args.pivot),
            (args.pivot, "en"): args.model_back or marian_hub_name(args.pivot, "en"),
        }
        return MarianTranslator(models, args.device, args.batch_size, args.num_beams, args.max_tokens)
    return ChatTranslator(stack.enter_context(chat_client(args, ChatSettings(max_tokens=args.max_tokens))))


def _backtranslate(args: argparse.Namespace) -> int:
    from tbpr.generate.text.translate import back_translate

    manifest = train_split(args)
    with contextlib.ExitStack() as stack:
        translator = _translator(args, stack)
        summary = back_translate(
            manifest, args.out, translator, args.pivot, batch_size=args.batch_size, limit=args.limit
        )
    print(summary.line(args.out))
    return 0
