"""``tbpr generate pairs``: PDG's controlled pairs of a training set, made on the shared image job.

Each planned pair (``plan``) is one wanted image, keyed by its new person id (``"<pid>:0"``; shards are
taken by it): an ``EditRequest`` of the source image with the source caption (``source_prompt``), the
edited caption (``target_prompt``) and the inversion and word-swap settings (``inversion``), which
null-text inversion + prompt-to-prompt backends read. The SynthPedes renderer instead redraws the source
person from the dataset's ground truth with the swapped garment colour (``synthpedes_truth``): its
``edit`` is ``{"kind": "attributes", "value": {attribute: colour}}``; a pair the ground truth cannot
express is skipped with its reason. Every record keeps the pair's provenance (``PAIR_FIELDS``), and the
captions no pair is made from are written with their reasons to ``NAME_skipped.jsonl`` beside the store.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tbpr.atomic import write_text
from tbpr.errors import ConfigError
from tbpr.generate.images.backend import EditRequest, ImageGenerator
from tbpr.generate.images.job import ImageWork, PersonCheck, run_image_job
from tbpr.generate.images.pdg.colour_swap import ColourSwapper
from tbpr.generate.images.pdg.plan import Plan, PlannedPair, Skipped, plan_pairs, training_sources
from tbpr.generate.images.pdg.synthpedes_truth import RENDERABLE_NAMES, SynthPedesTruth
from tbpr.generate.jobs import JobSummary, Shard

log = logging.getLogger(__name__)

METHOD = "pdg_pair"
RENDERER = "synthpedes"


@dataclass(frozen=True)
class PairSettings:
    """How the images are made: sampling steps and guidance, and the null-text inversion and
    prompt-to-prompt settings (recorded; backends without inversion ignore them)."""

    steps: int = 50
    guidance: float = 7.5
    inner_steps: int = 10  # null-text optimization steps per timestep
    cross_share: float = 0.8  # share of the steps whose cross-attention maps come from the source
    self_share: float = 0.4  # likewise for self-attention

    def __post_init__(self) -> None:
        for name in ("cross_share", "self_share"):
            if not 0 <= getattr(self, name) <= 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} {getattr(self, name)}: expected a share of the steps in [0, 1]")
        if self.steps < 1 or self.inner_steps < 0:
            raise ConfigError(
                f"--steps {self.steps}, --inner-steps {self.inner_steps}: expected >= 1 and >= 0"
            )

    def inversion(self) -> dict[str, Any]:
        return {  # the keys the diffusers backend reads (NullTextSettings' and prompt-to-prompt's shares)
            "inner_steps": self.inner_steps,
            "cross_share": self.cross_share,
            "self_share": self.self_share,
        }


def pair_work(
    plan: Plan, image_root: Path, backend: str, settings: PairSettings, truth: SynthPedesTruth | None = None
) -> tuple[list[ImageWork], list[Skipped]]:
    """The image work of ``plan``'s pairs, and the pairs skipped because ``truth`` cannot render them."""
    work, skipped = [], []
    for pair in plan.pairs:
        edit: dict[str, Any] = {"kind": "word_swap", "value": pair.edit.to_json()}
        person = None
        if backend == RENDERER:
            change = truth.colour_change(pair.source.image, pair.source.caption, pair.edit)
            if isinstance(change, str):
                skipped.append(Skipped(pair.source, change))
                continue
            edit = {"kind": "attributes", "value": change, "colour_swap": pair.edit.to_json()}
            person = truth.person(pair.source.image)
        request = EditRequest(
            image_root / pair.source.image,
            edit,
            seed=0,  # the job sets each try's seed
            source_prompt=pair.source.caption,
            target_prompt=pair.caption,
            steps=settings.steps,
            guidance=settings.guidance,
            inversion=settings.inversion(),
            person=person,
        )
        work.append(ImageWork(pair.pid, 0, source_text(pair), request, pair_fields(pair)))
    return work, skipped


def source_text(pair: PlannedPair) -> str:
    """What the pair is made from: a store holding its key made from anything else is refused."""
    return f"{pair.source.image} | {pair.source.caption} -> {pair.caption}"


def pair_fields(pair: PlannedPair) -> dict[str, Any]:
    """The provenance a pair's records carry beside the image fields."""
    source = pair.source
    return {
        "source_image": source.image,
        "source_caption": source.caption,
        "caption": pair.caption,  # what the generated image shows: the training caption
        "identity_id": pair.pid,  # every pair is a new identity
        "source_person": source.person,
        "source_caption_id": source.caption_id,
        "pair": pair.index,
        "colour_swap": pair.edit.to_json(),
    }


def skipped_path(store_path: str | Path) -> Path:
    path = Path(store_path)
    return path.with_name(f"{path.stem}_skipped.jsonl")


def write_skipped(store_path: str | Path, skipped: list[Skipped], shard: Shard) -> Path:
    """``NAME_skipped.jsonl``: the captions (of ``shard``, by caption id) no pair is made from, and why."""
    lines = [
        json.dumps(
            {
                "caption_id": s.source.caption_id,
                "person": s.source.person,
                "image": s.source.image,
                "caption": s.source.caption,
                "reason": s.reason,
            },
            ensure_ascii=False,
        )
        + "\n"
        for s in skipped
        if s.source.caption_id in shard
    ]
    return write_text(skipped_path(store_path), "".join(lines))


def make_pairs(
    data: str | Path,
    store: str | Path,
    backend: ImageGenerator,
    per_person: int = 1,
    seed: int = 0,
    shard: Shard | None = None,
    settings: PairSettings | None = None,
    data_format: str | None = None,
    max_attempts: int = 3,
    batch_size: int = 8,
    check: PersonCheck | None = None,
) -> tuple[JobSummary, Plan, list[Skipped]]:
    """Plan ``per_person`` pairs per qualifying training person of dataset ``data`` and make their images
    into ``store`` with ``backend`` (rerun to continue); the summary, the plan and every skip."""
    shard = shard or Shard()
    sources, max_pid, image_root = training_sources(data, data_format)
    truth = SynthPedesTruth(data) if backend.name == RENDERER else None  # before any work
    swapper = ColourSwapper(names=RENDERABLE_NAMES if truth else None)
    plan = plan_pairs(sources, max_pid, swapper, per_person, seed)
    work, unrenderable = pair_work(plan, image_root, backend.name, settings or PairSettings(), truth)
    skipped = plan.skipped + unrenderable
    write_skipped(store, skipped, shard)
    log.info(
        "%s: %d of %d training persons qualify; %d pairs planned (%d persons short of %d), %d skipped: %s",
        data,
        plan.qualifying,
        plan.persons,
        len(work),
        plan.short,
        per_person,
        len(skipped),
        ", ".join(f"{n} {reason}" for reason, n in sorted(Counter(s.reason for s in skipped).items()))
        or "none",
    )
    summary = run_image_job(store, backend, work, METHOD, shard, max_attempts, batch_size, seed, check)
    return summary, plan, skipped
