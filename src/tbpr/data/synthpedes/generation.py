"""Generating a SynthPedes dataset folder in the CUHK-PEDES layout.

Output (``OUT``)::

    imgs/<split>/<pid>/<pid>_<k>.jpg   128x256 RGB JPEG images
    attributes.json                    ground truth: attributes, scenes, caption attribute spans, noise
    reid_raw.json                      CUHK-PEDES annotation list (written after the images)
    synthpedes.json                    generation state: parameters and completion flags (written last)

Randomness is drawn from ``numpy`` generators seeded by (seed, stream, pid, image, caption), so the
output does not depend on the number of worker processes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tbpr.atomic import atomic_write, write_json
from tbpr.data.synthpedes.attributes import ATTRIBUTES, VOCABULARY, Identity, sample_split_identities
from tbpr.data.synthpedes.captions import make_caption, tokenize
from tbpr.data.synthpedes.pair_noise import shuffle_pairs
from tbpr.data.synthpedes.render import render_image
from tbpr.data.synthpedes.scene import Scene, sample_scene, sample_views, visible_attributes
from tbpr.errors import ConfigError, DataError

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
STATE_FILE = "synthpedes.json"
SPLIT_SHARES = (("train", 0.7), ("val", 0.1), ("test", 0.2))
HARD_NEGATIVE_SHARE = 0.2
CAPTIONS_PER_IMAGE = 2
JPEG_QUALITY = 90

# Random streams (first entry after the seed in every numpy seed sequence).
_IDENTITIES, _VIEWS, _SCENE, _CAPTION, _NOISE, _PAIRS = range(6)


@dataclass(frozen=True)
class SizeSpec:
    identities: int  # split 70/10/20 into train/val/test
    images_per_id: tuple[int, int]  # inclusive range
    test_identities: int | None = None  # a bigger test split; train and val stay those of ``identities``

    def split_counts(self) -> dict[str, int]:
        counts = split_counts(self.identities)
        return {**counts, "test": self.test_identities or counts["test"]}


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(40, (3, 4)),
    "small": SizeSpec(500, (4, 4)),
    "standard": SizeSpec(2500, (4, 5)),
    # small's train and val identities and images (the same seed gives the same ones), 10x its test
    # identities: 8,000 test queries make seed-to-seed and row-to-row differences measurable
    "small-bigtest": SizeSpec(500, (4, 4), test_identities=1000),
}


@dataclass(frozen=True)
class ImagePlan:
    pid: int
    index: int
    file_path: str  # relative to OUT/imgs
    scene: Scene


def split_counts(n: int) -> dict[str, int]:
    """Identities per split (70/10/20, the remainder going to train)."""
    counts = {name: round(share * n) for name, share in SPLIT_SHARES[1:]}
    return {"train": n - sum(counts.values()), **counts}


def plan_identities(size: str, seed: int) -> list[Identity]:
    """All identities, pids 1..N: train first (so train pids are contiguous), then val, then test."""
    rng = np.random.default_rng([seed, _IDENTITIES])
    seen: set[tuple] = set()
    people: list[Identity] = []
    for split, n in SIZES[size].split_counts().items():
        people += sample_split_identities(split, n, len(people) + 1, rng, seen, HARD_NEGATIVE_SHARE)
    return people


def plan_images(person: Identity, size: str, seed: int) -> list[ImagePlan]:
    lo, hi = SIZES[size].images_per_id
    rng = np.random.default_rng([seed, _VIEWS, person.pid])
    views = sample_views(rng, int(rng.integers(lo, hi + 1)))
    return [
        ImagePlan(
            person.pid,
            k,
            f"{person.split}/{person.pid:04d}/{person.pid:04d}_{k:02d}.jpg",
            sample_scene(np.random.default_rng([seed, _SCENE, person.pid, k]), view),
        )
        for k, view in enumerate(views)
    ]


def _render_job(job: tuple[dict, dict, Scene, str]) -> None:
    attrs, looks, scene, dest = job
    image = render_image(attrs, looks, scene)
    atomic_write(dest, lambda fh: image.save(fh, format="JPEG", quality=JPEG_QUALITY))


def _read_state(out: Path) -> dict | None:
    path = out / STATE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err}); delete the folder and generate again") from err


def _complete_and_matching(out: Path, state: dict | None, params: dict) -> bool:
    if not state or not state.get("complete") or state.get("params") != params:
        return False
    try:
        rows = json.loads((out / "reid_raw.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return (out / "attributes.json").is_file() and all(
        (out / "imgs" / r["file_path"]).is_file() for r in rows
    )


def _render_all(jobs: list[tuple[dict, dict, Scene, str]], workers: int) -> None:
    bar = tqdm(total=len(jobs), desc="synthpedes: rendering", unit="img")
    if workers <= 1:
        for job in jobs:
            _render_job(job)
            bar.update()
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_job, jobs, chunksize=16):
                bar.update()
    bar.close()


def _caption_image(person: Identity, image: ImagePlan, seed: int, noise: float) -> list[dict]:
    visible = visible_attributes(person.attributes, image.scene)
    captions = []
    for c in range(CAPTIONS_PER_IMAGE):
        text, mentions = make_caption(
            person.attributes,
            visible,
            image.scene.view,
            np.random.default_rng([seed, _CAPTION, person.pid, image.index, c]),
            noise,
            np.random.default_rng([seed, _NOISE, person.pid, image.index, c]),
        )
        captions.append({"text": text, "mentions": [m.to_json() for m in mentions]})
    return captions


def _shuffle_train_pairs(
    plan_list: list[tuple[Identity, ImagePlan]], captions: list[list[dict]], fraction: float, seed: int
) -> list[list[dict]]:
    """Each caption with its ``pair_noise`` record: null, or where it came from when it was moved."""
    train = [i for i, (person, _) in enumerate(plan_list) if person.split == "train"]
    moves = shuffle_pairs(
        [plan_list[i][0].pid for i in train],
        CAPTIONS_PER_IMAGE,
        fraction,
        np.random.default_rng([seed, _PAIRS]),
    )
    out = [[{**c, "pair_noise": None} for c in image_captions] for image_captions in captions]
    for (dest, c), (src, c_src) in moves.items():
        person, image = plan_list[train[src]]
        out[train[dest]][c] = {
            **captions[train[src]][c_src],
            "pair_noise": {"file_path": image.file_path, "id": person.pid, "caption": c_src},
        }
    if moves:
        moved_from = len({src for _, (src, _) in moves.items()})
        log.info(
            "pair noise: moved %d captions (those of %d of the %d training images) to other people",
            len(moves),
            moved_from,
            len(train),
        )
    return out


def generate(
    out_dir: str | Path,
    size: str = "tiny",
    seed: int = 0,
    caption_noise: float = 0.0,
    workers: int | None = None,
    pair_noise: float = 0.0,
    overwrite: bool = False,
) -> Path:
    """Write a SynthPedes dataset to ``out_dir`` and return the path of its ``reid_raw.json``.

    ``pair_noise``: the fraction of training images whose captions are shuffled onto other
    identities' images (see ``pair_noise.py``). Regenerating into a complete folder with the same
    parameters returns at once. A complete dataset of other parameters is replaced only with
    ``overwrite`` (runs and indexes built on it would go stale); changing only ``caption_noise`` or
    ``pair_noise`` then reuses the images. ``workers`` (default: 1 for under 1000 images, else up to
    8 processes) does not change the output.
    """
    if size not in SIZES:
        raise ConfigError(f"size {size!r} is unknown; use one of {', '.join(SIZES)}")
    for name, value in (("caption_noise", caption_noise), ("pair_noise", pair_noise)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name}={value} must be between 0 and 1")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; give a folder for the SynthPedes dataset")
    params = {
        "generator_version": GENERATOR_VERSION,
        "size": size,
        "seed": int(seed),
        "caption_noise": float(caption_noise),
        "pair_noise": float(pair_noise),
    }
    state = _read_state(out)
    if state is None and out.exists() and any(out.iterdir()):
        raise DataError(f"{out} is not empty and holds no {STATE_FILE}; choose a new or empty folder")
    if _complete_and_matching(out, state, params):
        log.info("%s is already complete for %s; nothing to do", out, params)
        return out / "reid_raw.json"
    if state and state.get("complete") and state.get("params") != params and not overwrite:
        differ = ", ".join(
            f"{k} {state['params'].get(k)!r} -> {v!r}"
            for k, v in params.items()
            if state["params"].get(k) != v
        )
        raise ConfigError(
            f"{out} already holds a complete SynthPedes dataset with other settings ({differ}); runs and "
            "indexes built on it would go stale: choose another folder, or pass --overwrite to replace it"
        )
    image_params = {k: params[k] for k in ("generator_version", "size", "seed")}
    images_ready = bool(state and state.get("images_complete") and state.get("image_params") == image_params)

    out.mkdir(parents=True, exist_ok=True)
    for name in ("reid_raw.json", "attributes.json"):  # never leave annotations next to other images
        (out / name).unlink(missing_ok=True)
    new_state = {
        "format": "synthpedes/1",
        "params": params,
        "image_params": image_params,
        "images_complete": images_ready,
        "complete": False,
    }
    write_json(out / STATE_FILE, new_state, indent=2)

    people = plan_identities(size, seed)
    plans = {p.pid: plan_images(p, size, seed) for p in people}
    n_images = sum(len(v) for v in plans.values())
    if not images_ready:
        shutil.rmtree(out / "imgs", ignore_errors=True)
        jobs = []
        for person in people:
            for image in plans[person.pid]:
                dest = out / "imgs" / image.file_path
                dest.parent.mkdir(parents=True, exist_ok=True)
                jobs.append((person.attributes, person.looks, image.scene, str(dest)))
        if workers is None:
            workers = 1 if n_images < 1000 else min(os.cpu_count() or 1, 8)
        _render_all(jobs, workers)
        new_state["images_complete"] = True
        write_json(out / STATE_FILE, new_state, indent=2)
    else:
        log.info("reusing the images in %s (same size and seed)", out / "imgs")

    plan_list = [(person, image) for person in people for image in plans[person.pid]]
    captions = [
        _caption_image(person, image, seed, caption_noise)
        for person, image in tqdm(plan_list, desc="synthpedes: captions", unit="img")
    ]
    captions = _shuffle_train_pairs(plan_list, captions, pair_noise, seed)
    rows, images = [], {}
    for (person, image), image_captions in zip(plan_list, captions):
        texts = [c["text"] for c in image_captions]
        rows.append(
            {
                "split": person.split,
                "captions": texts,
                "file_path": image.file_path,
                "processed_tokens": [tokenize(t) for t in texts],
                "id": person.pid,
            }
        )
        images[image.file_path] = {
            "id": person.pid,
            "split": person.split,
            "view": image.scene.view,
            "attributes": person.attributes,
            "visible": visible_attributes(person.attributes, image.scene),
            "scene": image.scene.to_json(),
            "captions": image_captions,
        }
    identities = {
        str(p.pid): {
            "split": p.split,
            "attributes": p.attributes,
            "hard_negative_of": p.hard_negative_of,
            "differs_in": p.differs_in,
        }
        for p in people
    }
    ground_truth = {
        "format": "synthpedes-attributes/1",
        "params": params,
        "attribute_names": list(ATTRIBUTES),
        "vocabulary": {k: list(v) for k, v in VOCABULARY.items()},
        "identities": identities,
        "images": images,
    }
    write_json(out / "attributes.json", ground_truth)
    write_json(out / "reid_raw.json", rows)
    new_state.update(complete=True, n_identities=len(people), n_images=n_images)
    write_json(out / STATE_FILE, new_state, indent=2)
    log.info(
        "wrote %d identities, %d images, %d captions to %s",
        len(people),
        n_images,
        CAPTIONS_PER_IMAGE * n_images,
        out,
    )
    return out / "reid_raw.json"
