"""What a caption store holds (``tbpr augment status``) and merging shard stores (``tbpr augment merge``).

The status of a store is, per method: how many captions, keys and tries it holds, how many tries were
accepted, rejected (an output the checks refused) or failed (no output), the acceptance rate, the
rejection and failure reasons grouped by kind, how many tries the keys took, the similarity histogram
of the rewrites (the paper's Fig. 4: the first scored try of each key, i.e. what the model writes
before the filter asks again, in bins of 0.1) and a few examples of kept and rejected outputs.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tbpr.atomic import atomic_write, write_json
from tbpr.data.caption_store import CaptionStore, StoreRecord
from tbpr.errors import ConfigError, DataError

log = logging.getLogger(__name__)

BINS = 10  # similarity bins of 0.1 over [0, 1]
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_LANGUAGE_PAIR = re.compile(r"^[A-Za-z_-]{2,8}->[A-Za-z_-]{2,8}$")


def reason_kind(reason: str | None) -> str:
    """The kind of a rejection or failure reason: its head before ':' with the numbers left out.

    "similarity 0.41 < alpha 0.6" -> "similarity < alpha"; "attribute changed: jacket red->blue" ->
    "attribute changed"; a back-translation leg is kept: "en->fr: HTTP 500: ..." -> "en->fr: HTTP".
    """
    if not reason:
        return "(no reason)"
    parts = reason.split(": ")
    head = [parts[0]]
    if _LANGUAGE_PAIR.match(parts[0]) and len(parts) > 1:
        head.append(parts[1])
    text = ": ".join(" ".join(_NUMBER.sub(" ", part).split()) for part in head)
    return text or "(numbers only)"


def similarity_bin(value: float) -> int:
    """The 0.1-wide bin of a similarity (values below 0 count in the first, 1 in the last)."""
    return min(max(math.floor(value * BINS + 1e-9), 0), BINS - 1)


class _Reservoir:
    """A uniform sample of at most ``size`` items of a stream (Algorithm R), seeded."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng, self.seen, self.items = size, rng, 0, []

    def add(self, item: dict) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        elif (j := self.rng.randrange(self.seen)) < self.size:
            self.items[j] = item


@dataclass
class _KeyState:
    tries: int = 0
    accepted_on: int | None = None  # the ordinal of the first accepted try
    scored: bool = False  # whether the histogram already has this key's first scored try


@dataclass
class _MethodTally:
    examples: int
    rng: random.Random
    keys: dict[str, _KeyState] = field(default_factory=dict)
    captions: set[int] = field(default_factory=set)
    outcomes: Counter = field(default_factory=Counter)
    rejections: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    models: Counter = field(default_factory=Counter)
    alphas: Counter = field(default_factory=Counter)
    histogram: list[int] = field(default_factory=lambda: [0] * BINS)
    similarities: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kept = _Reservoir(self.examples, self.rng)
        self.rejected = _Reservoir(self.examples, self.rng)

    def add(self, rec: StoreRecord) -> None:
        state = self.keys.setdefault(rec.key, _KeyState())
        state.tries += 1
        self.captions.add(rec.caption_id)
        self.models[rec.model] += 1
        filter_settings = rec.extra.get("filter")
        if isinstance(filter_settings, dict) and isinstance(filter_settings.get("alpha"), int | float):
            self.alphas[float(filter_settings["alpha"])] += 1
        similarity = rec.extra.get("similarity")
        if isinstance(similarity, int | float) and not isinstance(similarity, bool) and not state.scored:
            state.scored = True
            self.histogram[similarity_bin(similarity)] += 1
            self.similarities.append(float(similarity))
        example = {
            "key": rec.key,
            "original": rec.source_text,
            "text": rec.text,
            "similarity": similarity,
            "reason": rec.reason,
        }
        if rec.accepted:
            self.outcomes["accepted"] += 1
            if state.accepted_on is None:
                state.accepted_on = state.tries
            self.kept.add(example)
        elif rec.text is None:
            self.outcomes["failed"] += 1
            self.failures[reason_kind(rec.reason)] += 1
        else:
            self.outcomes["rejected"] += 1
            self.rejections[reason_kind(rec.reason)] += 1
            self.rejected.add(example)

    def summary(self) -> dict[str, Any]:
        accepted, rejected = self.outcomes["accepted"], self.outcomes["rejected"]
        keys_accepted = sum(s.accepted_on is not None for s in self.keys.values())
        scored = len(self.similarities)
        alpha = self.alphas.most_common(1)[0][0] if self.alphas else None
        similarity = None
        if scored:
            ordered = sorted(self.similarities)
            similarity = {
                "scored_keys": scored,
                "mean": sum(ordered) / scored,
                "median": ordered[scored // 2]
                if scored % 2
                else (ordered[scored // 2 - 1] + ordered[scored // 2]) / 2,
                "bin_edges": [round(i / BINS, 1) for i in range(BINS + 1)],
                "counts": self.histogram,
                "shares": [count / scored for count in self.histogram],
                "alpha": alpha,
                "below_alpha": None if alpha is None else sum(v < alpha for v in ordered) / scored,
            }
        return {
            "captions": len(self.captions),
            "keys": len(self.keys),
            "tries": sum(self.outcomes.values()),
            "accepted": accepted,
            "rejected": rejected,
            "failed": self.outcomes["failed"],
            "acceptance_rate": accepted / (accepted + rejected) if accepted + rejected else None,
            "keys_accepted": keys_accepted,
            "key_acceptance_rate": keys_accepted / len(self.keys),
            "rejection_reasons": dict(self.rejections.most_common()),
            "failure_reasons": dict(self.failures.most_common()),
            "tries_per_key": _histogram(s.tries for s in self.keys.values()),
            "accepted_on_try": _histogram(s.accepted_on for s in self.keys.values() if s.accepted_on),
            "models": dict(self.models.most_common()),
            "similarity": similarity,
            "examples": {"kept": self.kept.items, "rejected": self.rejected.items},
        }


def _histogram(values) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(values).items())}


def store_status(path: str | Path, examples: int = 3, seed: int = 0) -> dict[str, Any]:
    """The status summary of the store at ``path`` (``examples`` kept and rejected outputs per method)."""
    store = CaptionStore(path)
    if not store.path.is_file():
        raise DataError(f"caption store {store.path} does not exist; check the path")
    rng = random.Random(seed)
    tallies: dict[str, _MethodTally] = {}
    for rec in store:
        tallies.setdefault(rec.method, _MethodTally(examples, rng)).add(rec)
    return {"store": str(store.path), "methods": {m: t.summary() for m, t in sorted(tallies.items())}}


def default_status_dir(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".status")


def write_status(path: str | Path, out: str | Path | None = None, examples: int = 3) -> dict[str, Any]:
    """``store_status`` written to ``out`` (default ``<store>.status/``): ``summary.json`` and one
    ``similarity_<method>.png`` per method with similarity scores. Returns the summary, with the
    written files under ``"files"``."""
    out = Path(out) if out is not None else default_status_dir(path)
    summary = store_status(path, examples)
    files = {}
    for method, stats in summary["methods"].items():
        if stats["similarity"]:
            png = plot_similarity(stats["similarity"], method, out / f"similarity_{method}.png")
            files[f"similarity_{method}"] = str(png)
    files["summary"] = str(out / "summary.json")
    summary["files"] = files
    write_json(out / "summary.json", summary, indent=2, ensure_ascii=False)
    return summary


def plot_similarity(similarity: dict[str, Any], method: str, path: Path) -> Path:
    """A PNG like the paper's Fig. 4: the share of outputs per similarity bin, with the alpha line."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    fig = Figure(figsize=(5, 3.2), layout="constrained")
    ax = fig.subplots()
    edges = similarity["bin_edges"]
    ax.bar(
        edges[:-1], [100 * s for s in similarity["shares"]], width=1 / BINS, align="edge", edgecolor="black"
    )
    if similarity["alpha"] is not None:
        ax.axvline(
            similarity["alpha"], color="tab:red", linestyle="--", label=f"alpha = {similarity['alpha']:g}"
        )
        ax.legend(loc="upper left")
    ax.set_xlim(0, 1)
    ax.set_xticks(edges)
    ax.set_xlabel("similarity s(T_ori, T_aug)")
    ax.set_ylabel("outputs (%)")
    ax.set_title(f"{method}: first scored try of {similarity['scored_keys']} keys", fontsize=9)
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120))


def format_status(summary: dict[str, Any], unit: str = "captions") -> str:
    """A compact human-readable report of a ``store_status`` summary; ``unit`` names what a store's ids
    count (captions of a text store, source items of an image store)."""
    lines = [f"{summary['store']}:"]
    for method, s in summary["methods"].items():
        rate = "n/a" if s["acceptance_rate"] is None else f"{100 * s['acceptance_rate']:.1f}%"
        lines.append(
            f"  {method}: {s['captions']} {unit}, {s['keys']} keys, {s['tries']} tries: {s['accepted']} "
            f"accepted, {s['rejected']} rejected, {s['failed']} failed; acceptance {rate} of outputs, "
            f"{s['keys_accepted']} keys ({100 * s['key_acceptance_rate']:.1f}%) have an accepted one"
        )
        tries = ", ".join(f"{k} for {v} keys" for k, v in s["tries_per_key"].items())
        lines.append(f"    tries per key: {tries}")
        for title, reasons in (("rejected", s["rejection_reasons"]), ("failed", s["failure_reasons"])):
            if reasons:
                lines.append(f"    {title}: {_inline(reasons)}")
        if sim := s["similarity"]:
            below = "" if sim["below_alpha"] is None else f", {100 * sim['below_alpha']:.1f}% below alpha"
            lines.append(f"    similarity: mean {sim['mean']:.3f}, median {sim['median']:.3f}{below}")
        for title, items in s["examples"].items():
            for ex in items:
                score = "" if ex["similarity"] is None else f" [{ex['similarity']:.2f}]"
                why = f" ({ex['reason']})" if ex["reason"] else ""
                lines.append(f"    {title}{score}{why}: {ex['original']!r} -> {ex['text']!r}")
    for name, path in summary.get("files", {}).items():
        lines.append(f"  {name}: {path}")
    return "\n".join(lines)


def _inline(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} ({v})" for k, v in counts.items())


# ------------------------------------------------------------------------------------------- merge
@dataclass
class MergeSummary:
    """What ``merge_stores`` did: stores read, records written, duplicates dropped, keys in several stores."""

    stores: int
    records: int
    duplicates: int
    overlapping_keys: int


def merge_stores(out: str | Path, stores: list[str | Path]) -> MergeSummary:
    """Write the records of ``stores`` (e.g. the shards of one job), in order, into the store ``out``.

    Identical records (a shard merged twice) are kept once; two stores made from different text of one
    caption are refused. ``out`` is replaced atomically; it may be one of ``stores`` (to merge into it),
    but an existing ``out`` that is not among them is refused rather than overwritten. Records are
    streamed: memory holds a digest per record and per caption, not the records.
    """
    out = Path(out)
    paths = [Path(s) for s in stores]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"caption store(s) {missing} do not exist; check the paths")
    if out.exists() and out.resolve() not in {p.resolve() for p in paths}:
        raise ConfigError(
            f"{out} exists and is not among the stores to merge: add it to them to merge into it, "
            "or choose another output path"
        )
    seen: set[bytes] = set()
    sources: dict[int, tuple[bytes, int]] = {}  # caption id -> digest of its source text, first store
    key_store: dict[str, int] = {}
    overlapping: set[str] = set()  # keys with tries in more than one store
    counts = Counter()

    def write(fh) -> None:
        for index, path in enumerate(paths):
            for rec in _read_unlocked(path):
                source, first = sources.setdefault(rec.caption_id, (_digest(rec.source_text), index))
                if source != _digest(rec.source_text):
                    raise DataError(
                        f"caption {rec.caption_id} has different source text in {paths[first]} and {path} "
                        f"({rec.source_text[:80]!r}): the stores were made from different data; merge only "
                        "stores of one dataset version"
                    )
                line = rec.to_line()
                digest = _digest(line)
                if digest in seen:
                    counts["duplicates"] += 1
                    continue
                seen.add(digest)
                fh.write(line)
                counts["records"] += 1
                if key_store.setdefault(rec.key, index) != index:
                    overlapping.add(rec.key)

    atomic_write(out, write)
    if overlapping:
        log.warning(
            "%d keys have tries in more than one store (overlapping shards?): all their tries are kept",
            len(overlapping),
        )
    log.info(
        "merged %d records of %d stores into %s (%d identical duplicates dropped)",
        counts["records"],
        len(paths),
        out,
        counts["duplicates"],
    )
    return MergeSummary(len(paths), counts["records"], counts["duplicates"], len(overlapping))


def _digest(text: str | bytes) -> bytes:
    return hashlib.blake2b(text.encode() if isinstance(text, str) else text, digest_size=16).digest()


def _read_unlocked(path: Path) -> Iterator[StoreRecord]:
    """The records of the store at ``path``; refused while a job is writing it."""
    with open(path, "rb") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"caption store {path} is being written by another process; merge it when that job ends"
            ) from None
        yield from CaptionStore(path)
