"""``tbpr index build`` / ``tbpr index update``: a searchable index of an image folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from tbpr.cli.options import add_device_option, add_encoding_options, resolve_device

# build option -> index parameter (see tbpr.search.index.DEFAULT_PARAMS)
_PARAM_OPTIONS = {"hnsw_m": "m", "ef_construction": "ef_construction", "ef_search": "ef_search"}
_PARAM_OPTIONS.update(nlist="nlist", nprobe="nprobe")


def _add_encoding_options(p: argparse.ArgumentParser) -> None:
    add_encoding_options(p)
    p.add_argument(
        "--chunk-size",
        type=int,
        default=4096,
        help="images per saved chunk: an interrupted run resumes after the last saved chunk (default: 4096)",
    )
    add_device_option(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="build or update a searchable index of an image folder",
        description="Encode a folder of person crops with a trained run and store the embeddings and a FAISS "
        "index, so that `tbpr search` (or the HTTP service) can search it by text.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    b = actions.add_parser(
        "build",
        help="encode every image under a folder into a new index",
        description="Encode every .jpg/.jpeg/.png/.webp under --images (recursively) with the run's model and "
        "preprocessing. Unreadable files are skipped and listed. Running the same command again after an "
        "interruption (at any point) resumes the build, and does nothing once it is complete. A second build "
        "or update of the same folder while one runs is refused.",
    )
    b.add_argument(
        "--run", type=Path, required=True, help="run folder written by `tbpr train` (or a checkpoint)"
    )
    b.add_argument(
        "--images", type=Path, required=True, help="folder of images to index (searched recursively)"
    )
    b.add_argument("--out", type=Path, required=True, help="index folder to create")
    b.add_argument("--checkpoint", default="best", help="best, last, or a checkpoint file (default: best)")
    b.add_argument(
        "--kind",
        default="flat",
        choices=["flat", "hnsw", "ivf"],
        help="flat: exact search (default); hnsw or ivf: approximate, for very large galleries",
    )
    b.add_argument("--hnsw-m", type=int, help="hnsw: neighbours per node (default: 32)")
    b.add_argument(
        "--ef-construction", type=int, help="hnsw: candidate list size while building (default: 80)"
    )
    b.add_argument("--ef-search", type=int, help="hnsw: candidate list size per query (default: 64)")
    b.add_argument("--nlist", type=int, help="ivf: number of lists (default: 4 * sqrt(gallery size))")
    b.add_argument("--nprobe", type=int, help="ivf: lists visited per query (default: 16)")
    _add_encoding_options(b)
    b.set_defaults(func=run_build)

    u = actions.add_parser(
        "update",
        help="re-scan an index's folder: add new images, re-encode changed ones, drop deleted ones",
        description="Bring an index up to date with its image folder without re-encoding unchanged images "
        "(size and mtime checked first, then the content hash), then rebuild its FAISS index. An interrupted "
        "update resumes when run again; a running `tbpr serve` picks up the result without a restart.",
    )
    u.add_argument("index", type=Path, help="index folder written by `tbpr index build`")
    _add_encoding_options(u)
    u.set_defaults(func=run_update)


def run_build(args: argparse.Namespace) -> int:
    from tbpr.search.index import build_index, read_index_meta

    given = {key: getattr(args, opt) for opt, key in _PARAM_OPTIONS.items() if getattr(args, opt) is not None}
    out = build_index(
        args.run,
        args.images,
        args.out,
        checkpoint=args.checkpoint,
        kind=args.kind,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=resolve_device(args.device),
        chunk_size=args.chunk_size,
        params=given,
    )
    meta = read_index_meta(out)
    print(f"indexed {meta['size']} images ({meta['unreadable']} unreadable skipped) into {out}")
    return 0


def run_update(args: argparse.Namespace) -> int:
    from tbpr.search.index import update_index

    r = update_index(
        args.index,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=resolve_device(args.device),
        chunk_size=args.chunk_size,
    )
    print(f"{args.index}: {r}")
    return 0
