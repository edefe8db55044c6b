"""Which pairs PDG makes from a training set: n edits per qualifying person, each a new identity.

A training person qualifies when at least one of its captions has a swappable colour
(``colour_swap``); the others' captions are listed as skipped, each with its reason. A qualifying person
gets ``n`` pairs (PDG: 1 by default, 5 in its best row, Table VI). Pair ``k`` takes the ``k``-th caption
of the person's swappable captions in a seeded shuffle (cycling when it has fewer than ``n``), with its
image as the source, and draws an edit not yet used for that caption; a person with fewer distinct
edits than ``n`` gets as many as it has (counted in ``Plan.short``).

Every pair is a new identity: its clothes differ from the source person's, so it is neither that person
nor any other pair (PDG does not say; this is tbpr's reading, docs/pdg.md). Pair ``k`` of the ``r``-th
training person (in id order) gets person id ``max_pid + 1 + r * n + k``, with ``max_pid`` the largest
person id of the source dataset (every split): no id of the source dataset is reused, and a pair's id
does not depend on how many pairs other persons got.

The draws come from a generator seeded by (seed, source person id), so a person's edits do not depend on
which other persons are planned, on their order, or on a shard. (The image job seeds each image itself:
``tbpr.generate.jobs.request_seed``.)
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tbpr.data.readers import read_annotations
from tbpr.errors import ConfigError, DataError
from tbpr.generate.images.pdg.colour_swap import Analysis, ColourEdit, ColourSwapper


@dataclass(frozen=True)
class Source:
    """One training (image, caption) of a person: ids and texts of the source dataset."""

    person: int  # raw person id of the annotation file
    image_id: int
    image: str  # path relative to the source dataset's image folder
    caption_id: int
    caption: str


@dataclass(frozen=True)
class PlannedPair:
    """Pair ``index`` of ``source.person``: the source, the edit and edited caption, and the new
    identity's person id."""

    source: Source
    index: int
    pid: int
    edit: ColourEdit

    @property
    def caption(self) -> str:
        return self.edit.apply(self.source.caption)


@dataclass(frozen=True)
class Skipped:
    """A training caption no pair can be made from, and why (one of ``colour_swap.REASONS``)."""

    source: Source
    reason: str


@dataclass
class Plan:
    pairs: list[PlannedPair] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    persons: int = 0  # training persons
    qualifying: int = 0
    short: int = 0  # qualifying persons with fewer distinct edits than n

    def reasons(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped))


def training_sources(path: str | Path, format: str | None = None) -> tuple[list[Source], int, Path]:
    """The training (image, caption) pairs of dataset ``path``, its largest person id (every split) and
    its image folder."""
    annotations = read_annotations(path, format)
    if annotations.problems:
        raise DataError(
            "; ".join(annotations.problems) + f" (run `tbpr data check {path}` for a full report)"
        )
    manifest = annotations.manifest
    raw = {rec.id: pid for rec, pid in zip(manifest.images, annotations.raw_pids)}
    sources = [
        Source(raw[c.image_id], c.image_id, manifest.image(c.image_id).path, c.id, c.text)
        for c in manifest.captions
        if manifest.image(c.image_id).split == "train"
    ]
    if not sources:
        raise DataError(f"dataset {path}: the training split has no captions to make pairs from")
    return sources, max(annotations.raw_pids), manifest.image_root


def plan_pairs(
    sources: list[Source], max_pid: int, swapper: ColourSwapper, n: int = 1, seed: int = 0
) -> Plan:
    """``n`` pairs per qualifying person of ``sources``, person ids after ``max_pid``."""
    if n < 1:
        raise ConfigError(f"--per-person {n}: expected at least 1 pair per person")
    analyses = dict(zip(sources, swapper.analyse_many(s.caption for s in sources)))
    by_person: dict[int, list[Source]] = {}
    for source in sources:
        by_person.setdefault(source.person, []).append(source)
    plan = Plan(persons=len(by_person))
    for rank, person in enumerate(sorted(by_person)):
        usable = []
        for source in by_person[person]:
            analysis = analyses[source]
            if analysis.reason is None:
                usable.append(source)
            else:
                plan.skipped.append(Skipped(source, analysis.reason))
        if not usable:
            continue
        plan.qualifying += 1
        edits = person_edits(usable, analyses, n, random.Random(f"pdg-pairs:{seed}:{person}"))
        plan.short += len(edits) < n
        for index, (source, edit) in enumerate(edits):
            pid = max_pid + 1 + rank * n + index
            plan.pairs.append(PlannedPair(source, index, pid, edit))
    return plan


def person_edits(
    usable: list[Source], analyses: dict[Source, Analysis], n: int, rng: random.Random
) -> list[tuple[Source, ColourEdit]]:
    """Up to ``n`` (source, edit) of one person, distinct edits, spread over its captions in seeded order."""
    order = rng.sample(usable, len(usable))
    used: dict[Source, list[ColourEdit]] = {s: [] for s in order}
    out: list[tuple[Source, ColourEdit]] = []
    for k in range(n):
        for j in range(len(order)):
            source = order[(k + j) % len(order)]
            edit = analyses[source].draw(rng, exclude=used[source])
            if edit is not None:
                used[source].append(edit)
                out.append((source, edit))
                break
        else:
            break
    return out
