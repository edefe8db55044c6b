"""``tbpr synth``: generate the SynthPedes benchmark."""

from __future__ import annotations

import argparse
from pathlib import Path

from tbpr.data.synthpedes import SIZES, generate, write_contact_sheet


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate the SynthPedes benchmark (CUHK-PEDES layout)",
        description="Render procedurally generated pedestrians with captions and ground-truth attributes "
        "into OUT (imgs/, reid_raw.json, attributes.json). See docs/synthpedes.md.",
    )
    p.add_argument(
        "out",
        type=Path,
        help="output folder (created; must be new, empty or an earlier SynthPedes run: with the same "
        "settings nothing is done, other settings need --overwrite)",
    )
    p.add_argument(
        "--size",
        choices=tuple(SIZES),
        default="tiny",
        help="tiny: 40 ids for tests; small: 500 ids x 4 images; standard: 2500 ids, >=10k images; "
        "small-bigtest: small's train and val with 1000 test ids (8000 test queries)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed -> identical output)")
    p.add_argument(
        "--caption-noise",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of replacing each attribute word in a caption by a wrong value",
    )
    p.add_argument(
        "--pair-noise",
        type=float,
        default=0.0,
        metavar="P",
        help="fraction of training images whose captions are shuffled onto other people's images "
        "(noisy correspondence; recorded per caption in attributes.json; val and test stay clean)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="rendering processes (default: 1 below 1000 images, else up to 8); output is identical",
    )
    p.add_argument(
        "--contact-sheet",
        type=Path,
        default=None,
        metavar="PNG",
        help="also write a contact sheet of a few identities to this PNG file",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a complete dataset in OUT made with other settings (runs and indexes built on it "
        "go stale; without this flag the command refuses)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = generate(
        args.out,
        size=args.size,
        seed=args.seed,
        caption_noise=args.caption_noise,
        workers=args.workers,
        overwrite=args.overwrite,
        pair_noise=args.pair_noise,
    )
    if args.contact_sheet is not None:
        write_contact_sheet(args.out, args.contact_sheet)
    print(path)
    return 0
