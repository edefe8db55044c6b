"""``tbpr generate persons|edit|pairs|status|merge|finetune``: synthetic person images and their edits
(SynTBPR) and PDG's controlled pairs into generation stores, what a store holds, and diffusion fine-tuning
(docs/image-generation.md)."""

from __future__ import annotations

import argparse

from tbpr.cli.generate_finetune_cmd import register_finetune_command
from tbpr.cli.generation_options import add_chat_options, open_backend
from tbpr.cli.options import add_device_option


def _add_job_options(p: argparse.ArgumentParser) -> None:
    """The backend, the store and the job loop's options shared by the image jobs."""
    p.add_argument(
        "--out", required=True, metavar="STORE", help="generation store to create or continue (.jsonl)"
    )
    p.add_argument(
        "--backend",
        default="synthpedes",
        help="image backend: synthpedes (the procedural renderer, default) or diffusers (Stable Diffusion)",
    )
    p.add_argument(
        "--model",
        metavar="NAME",
        help="the backend's model; synthpedes: a renderer style, synthpedes (default), synthetic or vivid; "
        "diffusers: a hub name or pipeline folder (required)",
    )
    p.add_argument(
        "--edit-model",
        metavar="NAME",
        help="diffusers: an InstructPix2Pix model for the edits that have an instruction (every edit of "
        "`tbpr generate edit` has one; `pairs` and `persons` refuse this option); edits without one, and all edits when "
        "it is not given, use null-text inversion + prompt-to-prompt on the source and target prompts "
        "(default: none)",
    )
    add_device_option(p)
    p.add_argument("--workers", type=int, default=1, help="synthpedes: render processes (default: 1)")
    p.add_argument("--steps", type=int, default=50, help="denoising steps, recorded (default: 50)")
    p.add_argument(
        "--seed", type=int, default=0, help="job seed; every try's seed derives from it (default: 0)"
    )
    p.add_argument(
        "--shard", default="0/1", metavar="I/N", help="only items whose id is I modulo N (default: 0/1)"
    )
    p.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        help="tries per image while the person filter refuses it (default: 3)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="images asked and stored at once (default: 8)")
    p.add_argument(
        "--filter",
        default="basic",
        choices=("basic", "none"),
        help="person filter: basic (not empty, portrait aspect, not flat; no person detection) or none "
        "(default: basic)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser(
        "generate", help="generate person images and edits (SynTBPR) and PDG pairs into generation stores"
    )
    actions = gen.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser(
        "persons",
        help="new identities from attribute vocabularies, k images each",
        description="Build --count prompts from the attribute vocabularies (each a new identity: age, gender, "
        "hair, upper garment with sleeve and pattern, lower garment with its adjective, shoes, accessory, "
        "camera angle; gender constraints apply) and generate --per-prompt images of each into STORE, with "
        "every identity's attributes. Rerun to continue; --shard splits the identities.",
    )
    _add_job_options(p)
    p.add_argument("--count", type=int, required=True, metavar="N", help="identities (prompts) to generate")
    p.add_argument("--per-prompt", type=int, default=5, metavar="K", help="images per prompt (default: 5)")
    p.add_argument(
        "--vocabulary", metavar="FILE", help="vocabulary YAML (default: the shipped person_vocabulary.yaml)"
    )
    p.add_argument("--negative-prompt", default="", help="negative prompt of every image (default: none)")
    p.add_argument("--guidance", type=float, default=8.5, help="guidance scale, recorded (default: 8.5)")
    p.add_argument("--width", type=int, default=128, help="image width in pixels (default: 128)")
    p.add_argument("--height", type=int, default=256, help="image height in pixels (default: 256)")
    polish = p.add_argument_group("prompt polishing (an LLM rewrites each template prompt as one sentence)")
    polish.add_argument(
        "--polish",
        choices=("openai", "transformers"),
        help="polish the prompts with an OpenAI-compatible server or a local model (default: no polishing)",
    )
    polish.add_argument(
        "--polish-model", metavar="NAME", help="openai: model name sent; transformers: hub name or folder"
    )
    add_chat_options(polish)
    p.set_defaults(func=_persons)

    e = actions.add_parser(
        "edit",
        help="the same identities under a new background, weather, picture style, posture or view",
        description="Edit every accepted image of --from into STORE, once per value of each --KIND given "
        "(values the image already has are skipped), recording the edit, its instruction and prompts.",
    )
    _add_job_options(e)
    e.add_argument(
        "--from", dest="source", required=True, metavar="STORE", help="the store of the source images"
    )
    e.add_argument("--guidance", type=float, default=7.5, help="guidance scale, recorded (default: 7.5)")
    for kind, example in (
        ("background", "park,street (renderer: street, wall, park, plain, shopfront)"),
        ("weather", "rainy,snowy (renderer: clear, rainy, snowy, foggy)"),
        ("picture-style", "painting (renderer: photo, painting, cartoon)"),
        ("posture", "running (renderer: standing, walking, running)"),
        ("view", "back (renderer: front, back, left, right)"),
    ):
        e.add_argument(
            f"--{kind}", metavar="V1,V2", help=f"new {kind.replace('-', ' ')} values, e.g. {example}"
        )
    e.set_defaults(func=_edit)

    _register_pairs(actions)

    s = actions.add_parser(
        "status",
        help="counts, failures with reasons and a contact sheet of a generation store",
        description="Report what STORE holds per method (tries accepted, rejected by the person filter, "
        "failed, with reasons) and write summary.json and contact_sheet.png (the first 32 accepted images, "
        'each labelled with its edit, e.g. "posture: running", or else its key) to --out.',
    )
    s.add_argument("store", metavar="STORE", help="generation store (.jsonl)")
    s.add_argument("--out", metavar="DIR", help="folder for the files (default: STORE.status/ beside it)")
    s.set_defaults(func=_status)

    m = actions.add_parser(
        "merge",
        help="merge the shard stores of one image job into one store in their folder",
        description="Write the records of every STORE, in order, into OUT (replaced atomically), as `tbpr "
        "augment merge` does; identical records are kept once. OUT and the STOREs must be in one folder, "
        "since image files are recorded relative to the store's folder.",
    )
    m.add_argument("out", metavar="OUT", help="the merged store to write (.jsonl)")
    m.add_argument("stores", metavar="STORE", nargs="+", help="shard stores to merge")
    m.set_defaults(func=_merge)

    register_finetune_command(actions)


def _open_job(args: argparse.Namespace):
    """The shard, the person filter and the backend the job options ask for (errors before any work)."""
    from tbpr.generate.images.backend import make_backend
    from tbpr.generate.images.filters import make_filter
    from tbpr.generate.jobs import Shard

    shard, check = Shard.parse(args.shard), make_filter(args.filter)
    options = {
        "synthpedes": {"workers": args.workers},
        "diffusers": {"device": args.device, "edit_model": args.edit_model},
    }.get(args.backend, {})
    return shard, check, make_backend(args.backend, args.model, **options)


def _run_job(args: argparse.Namespace, work, method: str) -> int:
    from tbpr.generate.images.job import run_image_job

    shard, check, backend = _open_job(args)
    summary = run_image_job(
        args.out, backend, work, method, shard, args.max_attempts, args.batch_size, args.seed, check
    )
    print(summary.line(args.out))
    return 0


def _register_pairs(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "pairs",
        help="PDG's controlled text-image pairs: one garment colour swapped, as new identities",
        description="For each training person of DATA with a caption whose garment colour can be swapped "
        "(spaCy phrases, clothes set Cl, colour set Co, same CLIP token count: docs/pdg.md), make --per-person "
        "pairs: the edited caption and its image, into STORE. The synthpedes backend redraws the SynthPedes "
        "person with the new colour (DATA must be a SynthPedes folder); an inversion backend inverts the "
        "source image and regenerates it with the prompt-to-prompt word swap (diffusers: --model a Stable "
        "Diffusion pipeline, ideally fine-tuned on DATA with `tbpr generate finetune`). Captions without a pair are "
        "written with their reasons to STORE_skipped.jsonl. Rerun to continue; --shard splits the pairs; --seed also draws the edits; "
        "`tbpr data from-generated STORE` makes the training set.",
    )
    p.add_argument("data", metavar="DATA", help="the dataset folder whose training split the pairs come from")
    p.add_argument("--format", help="annotation format of DATA (default: recognized by file name)")
    p.add_argument(
        "--per-person",
        type=int,
        default=1,
        metavar="N",
        help="pairs per qualifying person, each with another edit (default: 1; PDG's best row: 5)",
    )
    _add_job_options(p)
    p.add_argument("--guidance", type=float, default=7.5, help="guidance scale (default: 7.5)")
    p.add_argument(
        "--inner-steps",
        type=int,
        default=10,
        help="null-text inversion: optimization steps of the null embedding per timestep (default: 10)",
    )
    p.add_argument(
        "--cross-share",
        type=float,
        default=0.8,
        help="prompt-to-prompt: share of the steps whose cross-attention maps come from the source (default: 0.8)",
    )
    p.add_argument(
        "--self-share",
        type=float,
        default=0.4,
        help="prompt-to-prompt: share of the steps whose self-attention maps come from the source (default: 0.4)",
    )
    p.set_defaults(func=_pairs)


def _pairs(args: argparse.Namespace) -> int:
    from tbpr.generate.images.pdg.job import PairSettings, make_pairs

    _refuse_edit_model(args, "pairs", "edits by null-text inversion + prompt-to-prompt word swap")
    shard, check, backend = _open_job(args)
    settings = PairSettings(args.steps, args.guidance, args.inner_steps, args.cross_share, args.self_share)
    summary, _, _ = make_pairs(
        args.data,
        args.out,
        backend,
        args.per_person,
        args.seed,
        shard,
        settings,
        args.format,
        args.max_attempts,
        args.batch_size,
        check,
    )
    print(summary.line(args.out))
    return 0


def _refuse_edit_model(args: argparse.Namespace, command: str, what: str) -> None:
    """One clear error when --edit-model is given to a command that would load it and never use it."""
    from tbpr.errors import ConfigError

    if args.edit_model:
        raise ConfigError(
            f"tbpr generate {command} {what}; --edit-model (instruction editing) does not apply: leave it out"
        )


def _persons(args: argparse.Namespace) -> int:
    from tbpr.generate.images.persons import METHOD, load_vocabulary, person_work

    _refuse_edit_model(args, "persons", "draws new persons from text prompts and edits none")
    vocab = load_vocabulary(args.vocabulary)
    work = person_work(
        vocab,
        args.count,
        args.per_prompt,
        args.seed,
        args.negative_prompt,
        (args.width, args.height),
        args.steps,
        args.guidance,
    )
    if args.polish:
        work = _polished(args, work)
    return _run_job(args, work, METHOD)


def _polished(args: argparse.Namespace, work):
    """``work`` with its prompts polished by the ``--polish`` backend (temperature 0.7, top-p 0.9, 96 tokens)."""
    import contextlib

    from tbpr.errors import ConfigError
    from tbpr.generate.chat import ChatSettings
    from tbpr.generate.images.polish import polish_work
    from tbpr.generate.llm import ChatBackend, TransformersBackend

    if args.polish == "transformers" and not args.polish_model:
        raise ConfigError("--polish transformers needs --polish-model (a hub name, folder or .gguf file)")
    llm = argparse.Namespace(
        **{**vars(args), "backend": args.polish, "model": args.polish_model, "device": "cpu"}
    )
    with contextlib.ExitStack() as stack:
        backend = open_backend(llm, ChatSettings(0.7, 0.9, 96), stack, TransformersBackend, ChatBackend, 8)
        return polish_work(work, backend, args.out, args.seed)


def _edit(args: argparse.Namespace) -> int:
    from tbpr.errors import ConfigError
    from tbpr.generate.images.edits import METHOD, edit_work

    edits = {
        kind: [v.strip() for v in value.split(",") if v.strip()]
        for kind in ("background", "weather", "picture_style", "posture", "view")
        if (value := getattr(args, kind))
    }
    if not edits:
        raise ConfigError(
            "tbpr generate edit needs at least one of --background, --weather, --picture-style, "
            "--posture, --view"
        )
    return _run_job(args, edit_work(args.source, edits, args.steps, args.guidance), METHOD)


def _status(args: argparse.Namespace) -> int:
    from tbpr.generate.images.sheet import write_image_status
    from tbpr.generate.status import format_status

    print(format_status(write_image_status(args.store, args.out), unit="source items"))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tbpr.errors import ConfigError
    from tbpr.generate.status import merge_stores

    folders = {Path(p).resolve().parent for p in [args.out, *args.stores]}
    if len(folders) > 1:
        raise ConfigError(
            f"{args.out} and the stores to merge are in different folders; their image paths are relative to "
            "the store's folder: merge into a store in the shards' folder"
        )
    summary = merge_stores(args.out, args.stores)
    print(
        f"{args.out}: {summary.records} records from {summary.stores} stores, {summary.duplicates} duplicates dropped"
    )
    return 0
