"""How well the faithfulness filter rejects unfaithful rewrites, measured on SynthPedes with planted rewrites.

SynthPedes' ``attributes.json`` says which attribute values each caption mentions, so rewrites of known
faithfulness can be made with the caption grammar (``tbpr.data.synthpedes.captions``), each one a new
rendering (other words, order and sentence patterns) of:

- faithful: exactly the attribute values the original mentions;
- swapped: the same, with one colour, garment or bag replaced by another value;
- dropped: the same minus one mentioned attribute (any except gender);
- invented: the same plus one thing the person does not have (a hat, glasses, a scarf, a bag or a
  pattern on a plain top).

Each is judged by TFF alone (similarity < alpha), the attribute check alone (changed or invented
findings; "+dropped" also rejects dropped ones) and both, and precision and recall of *rejecting the
unfaithful ones* (swapped, dropped, invented) are reported, with recall per kind and the share of
faithful rewrites rejected.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tbpr.data.synthpedes.attributes import COLOURS
from tbpr.data.synthpedes.captions import Mention, Slot, _Grammar, render
from tbpr.data.synthpedes.vocabulary import FORMS
from tbpr.errors import DataError
from tbpr.generate.text.faithfulness import DEFAULT_MODEL, FaithfulnessFilter, FilterConfig, Verdict

log = logging.getLogger(__name__)

KINDS = ("faithful", "swapped", "dropped", "invented")
UNFAITHFUL = KINDS[1:]
SWAPPABLE = (
    "upper_colour",
    "lower_colour",
    "shoe_colour",
    "bag_colour",
    "hair_colour",
    "upper_type",
    "lower_type",
    "bag",
)
_BOOSTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, -0.1, -0.2)  # grammar mention-probability shifts tried in turn
_TRIES = 240  # renderings tried per planted rewrite


@dataclass(frozen=True)
class Planted:
    """One planted rewrite of one SynthPedes caption."""

    image: str
    caption: int  # index of the caption among the image's captions
    kind: str
    original: str
    rewrite: str
    attribute: str | None  # the attribute swapped, dropped or invented
    detail: str  # e.g. "upper_colour: grey -> red"


@dataclass(frozen=True)
class _Caption:
    image: str
    index: int
    text: str
    view: str
    attrs: dict  # the person's attributes, with the values the caption states
    said: frozenset[tuple[str, str]]  # (attribute, value) pairs the caption mentions


def _signature(mentions: Sequence[Mention]) -> frozenset[tuple[str, str]]:
    return frozenset((m.attribute, m.value) for m in mentions)


def load_captions(data_dir: str | Path) -> list[_Caption]:
    path = Path(data_dir) / "attributes.json"
    if not path.is_file():
        raise DataError(f"{path} not found; give a SynthPedes dataset folder (made by `tbpr synth`)")
    try:
        images = json.loads(path.read_text(encoding="utf-8"))["images"]
        out = []
        for name, image in sorted(images.items()):
            for index, caption in enumerate(image["captions"]):
                said = {m["attribute"]: m["value"] for m in caption["mentions"]}
                attrs = {**image["attributes"], **said}
                out.append(
                    _Caption(name, index, caption["text"], image["view"], attrs, frozenset(said.items()))
                )
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(
            f"{path}: not a SynthPedes attributes file ({err!r}); generate the dataset again"
        ) from None
    return out


def _search(
    cap: _Caption,
    attrs: dict,
    visible: set[str],
    accept: Callable[[frozenset[tuple[str, str]]], bool],
    rng: np.random.Generator,
) -> tuple[list, str] | None:
    """Tokens and text of a rendering of ``attrs`` whose mentions ``accept`` likes (and that is not the
    original), or None after ``_TRIES`` renderings."""
    for t in range(_TRIES):
        tokens = _Grammar(attrs, sorted(visible), cap.view, rng, _BOOSTS[t % len(_BOOSTS)]).caption()
        text, mentions = render(tokens)
        if text != cap.text and accept(_signature(mentions)):
            return tokens, text
    return None


def _faithful(cap: _Caption, rng: np.random.Generator) -> tuple[list, str] | None:
    visible = {a for a, _ in cap.said}
    return _search(cap, cap.attrs, visible, lambda sig: sig == cap.said, rng)


def _swap(tokens: list, cap: _Caption, rng: np.random.Generator) -> tuple[str, str, str] | None:
    """One colour, garment or bag slot of a faithful rendering given another value."""
    slots = [i for i, tok in enumerate(tokens) if isinstance(tok, Slot) and tok.attribute in SWAPPABLE]
    if not slots:
        return None
    slot = tokens[slots[int(rng.integers(len(slots)))]]
    others = [v for v in FORMS[slot.attribute][slot.role] if v not in (slot.value, "none")]
    new = others[int(rng.integers(len(others)))]
    swapped = [replace(tok, value=new) if tok is slot else tok for tok in tokens]
    return render(swapped)[0], slot.attribute, f"{slot.attribute}: {slot.value} -> {new}"


def _drop(cap: _Caption, rng: np.random.Generator) -> tuple[str, str, str] | None:
    candidates = sorted(a for a, _ in cap.said if a != "gender")
    for k in rng.permutation(len(candidates)):
        name = candidates[int(k)]
        want = frozenset(p for p in cap.said if p[0] != name)
        found = _search(cap, cap.attrs, {a for a, _ in want}, lambda sig, want=want: sig == want, rng)
        if found is not None:
            return found[1], name, f"{name}: {cap.attrs[name]} left out"
    return None


def _inventions(cap: _Caption, rng: np.random.Generator) -> list[tuple[str, dict]]:
    """(attribute, changed attributes) for each thing the person lacks."""
    a = cap.attrs
    options = [(name, {name: "yes"}) for name in ("hat", "glasses", "scarf") if a[name] == "no"]
    if a["bag"] == "none":
        bag = ("backpack", "handbag", "shoulder bag")[int(rng.integers(3))]
        options.append(("bag", {"bag": bag, "bag_colour": list(COLOURS)[int(rng.integers(len(COLOURS)))]}))
    if a["upper_pattern"] == "plain":
        options.append(
            ("upper_pattern", {"upper_pattern": ("striped", "checked", "logo")[int(rng.integers(3))]})
        )
    return [options[int(k)] for k in rng.permutation(len(options))]


def _invent(cap: _Caption, rng: np.random.Generator) -> tuple[str, str, str] | None:
    for name, change in _inventions(cap, rng):
        keep = frozenset(p for p in cap.said if p[0] not in change)

        def accept(sig, keep=keep, change=change, name=name) -> bool:
            return (name, change[name]) in sig and frozenset(p for p in sig if p[0] not in change) == keep

        visible = {a for a, _ in cap.said} | set(change)
        found = _search(cap, {**cap.attrs, **change}, visible, accept, rng)
        if found is not None:
            return found[1], name, f"{name}: {cap.attrs[name]} -> {change[name]}"
    return None


def plant_rewrites(data_dir: str | Path, captions: int = 300, seed: int = 0) -> list[Planted]:
    """For ``captions`` captions drawn at random (seeded), one planted rewrite of each kind (``KINDS``).
    Captions where one kind cannot be made (rarely) are replaced by others."""
    pool = load_captions(data_dir)
    order = np.random.default_rng([seed, 0]).permutation(len(pool))
    out: list[Planted] = []
    used = 0
    for k in order:
        if used == captions:
            break
        cap = pool[int(k)]
        rng = np.random.default_rng([seed, 1, int(k)])
        faithful = _faithful(cap, rng)
        made = None
        if faithful is not None:
            swapped, dropped, invented = _swap(faithful[0], cap, rng), _drop(cap, rng), _invent(cap, rng)
            if swapped and dropped and invented:
                made = [(faithful[1], None, "same attributes"), swapped, dropped, invented]
        if made is None:
            log.debug("%s caption %d: cannot plant every kind; skipped", cap.image, cap.index)
            continue
        used += 1
        out += [
            Planted(cap.image, cap.index, kind, cap.text, text, attribute, detail)
            for kind, (text, attribute, detail) in zip(KINDS, made)
        ]
    if used < captions:
        log.warning("%s: only %d captions could be used (asked for %d)", data_dir, used, captions)
    return out


# -- scoring --------------------------------------------------------------------------------------------
def _reject_rules(alpha: float) -> dict[str, Callable[[Verdict], bool]]:
    """Filter variant -> whether it rejects a verdict's rewrite (all reject what failed a basic check,
    i.e. was not scored and checked)."""

    def tff(v: Verdict) -> bool:
        return v.attributes is None or (v.similarity is not None and v.similarity < alpha)

    def attributes(v: Verdict) -> bool:
        return v.attributes is None or bool(v.attributes["changed"] or v.attributes["invented"])

    def attributes_dropped(v: Verdict) -> bool:
        return attributes(v) or bool(v.attributes["dropped"])

    return {
        f"TFF (alpha {alpha:g})": tff,
        "attribute check": attributes,
        "attribute check (+dropped)": attributes_dropped,
        "TFF + attribute check": lambda v: tff(v) or attributes(v),
        "TFF + attribute check (+dropped)": lambda v: tff(v) or attributes_dropped(v),
    }


def rejection_metrics(kinds: Sequence[str], rejected: Sequence[bool]) -> dict:
    """Precision and recall of rejecting unfaithful rewrites (every kind but "faithful" is a positive),
    recall per kind, and the share of faithful rewrites rejected. None where a denominator is 0."""

    def share(num: int, den: int) -> float | None:
        return num / den if den else None

    tp = sum(r and k != "faithful" for k, r in zip(kinds, rejected))
    fp = sum(r and k == "faithful" for k, r in zip(kinds, rejected))
    positives = sum(k != "faithful" for k in kinds)
    by_kind = {
        kind: share(sum(r for k, r in zip(kinds, rejected) if k == kind), sum(k == kind for k in kinds))
        for kind in KINDS
    }
    return {
        "precision": share(tp, tp + fp),
        "recall": share(tp, positives),
        "recall_by_kind": {k: by_kind[k] for k in UNFAITHFUL},
        "false_rejection": by_kind["faithful"],
        "tp": tp,
        "fp": fp,
        "fn": positives - tp,
    }


@dataclass
class FilterEval:
    numbers: dict
    markdown: str


def evaluate_filter(
    data_dir: str | Path,
    captions: int = 300,
    alpha: float = 0.6,
    seed: int = 0,
    model: str = DEFAULT_MODEL,
    device: str = "cpu",
) -> FilterEval:
    """Plant rewrites (``plant_rewrites``), judge them, and report the filter variants' rejection
    precision/recall as numbers and as a markdown table."""
    planted = plant_rewrites(data_dir, captions, seed)
    if not planted:
        raise DataError(f"{data_dir}: no caption could be used for planted rewrites")
    judge = FaithfulnessFilter(FilterConfig(alpha=alpha, model=model, device=device, reject=()))
    verdicts = judge.judge([p.original for p in planted], [p.rewrite for p in planted])
    kinds = [p.kind for p in planted]
    basic = [(p, v.reason) for p, v in zip(planted, verdicts) if v.attributes is None]
    for p, reason in basic:
        log.warning(
            "planted %s rewrite of %s failed a basic check (%s): %s", p.kind, p.image, reason, p.rewrite
        )
    rules = _reject_rules(alpha)
    decisions = {name: [rule(v) for v in verdicts] for name, rule in rules.items()}
    numbers = {
        "data": str(data_dir),
        "captions": len(planted) // len(KINDS),
        "seed": seed,
        "alpha": alpha,
        "model": model,
        "basic_rejections": len(basic),
        "variants": {name: rejection_metrics(kinds, rejected) for name, rejected in decisions.items()},
        "similarity": _similarity_stats(kinds, verdicts),
        "by_attribute": _by_attribute(planted, decisions),
        "examples": _examples(planted, verdicts, decisions["TFF + attribute check"]),
    }
    return FilterEval(numbers, _markdown(numbers))


def _similarity_stats(kinds: Sequence[str], verdicts) -> dict:
    out = {}
    for kind in KINDS:
        sims = [v.similarity for k, v in zip(kinds, verdicts) if k == kind and v.similarity is not None]
        if sims:
            out[kind] = {"mean": float(np.mean(sims)), "min": float(np.min(sims)), "max": float(np.max(sims))}
    return out


def _by_attribute(planted: Sequence[Planted], decisions: dict[str, list[bool]]) -> list[dict]:
    """Recall of every filter variant per (kind, planted attribute)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(planted):
        if p.kind != "faithful":
            groups.setdefault((p.kind, p.attribute), []).append(i)
    order = sorted(groups.items(), key=lambda kv: (KINDS.index(kv[0][0]), kv[0][1]))
    return [
        {
            "kind": kind,
            "attribute": attribute,
            "n": len(idx),
            "recall": {
                name: sum(rejected[i] for i in idx) / len(idx) for name, rejected in decisions.items()
            },
        }
        for (kind, attribute), idx in order
    ]


def _examples(
    planted: Sequence[Planted], verdicts, rejected: Sequence[bool], per_kind: int = 2
) -> list[dict]:
    """A few mistakes of "TFF + attribute check": missed unfaithful rewrites and rejected faithful ones."""
    out, seen = [], dict.fromkeys(KINDS, 0)
    for p, v, r in zip(planted, verdicts, rejected):
        if r == (p.kind != "faithful") or seen[p.kind] >= per_kind:
            continue
        seen[p.kind] += 1
        out.append(
            {
                "kind": p.kind,
                "detail": p.detail,
                "original": p.original,
                "rewrite": p.rewrite,
                "similarity": v.similarity,
                "attributes": v.attributes,
            }
        )
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _markdown(n: dict) -> str:
    lines = [
        f"Planted rewrites of {n['captions']} SynthPedes captions ({n['data']}, seed {n['seed']}): one faithful, "
        "swapped, dropped and invented rewrite each. TFF rejects a similarity below alpha "
        f"({n['model']}); the attribute check rejects changed or invented colours and items (+dropped: "
        "dropped ones too). Positives are the unfaithful rewrites (swapped, dropped, invented).",
        "",
        "| filter | precision | recall | recall swapped | recall dropped | recall invented | faithful rejected |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in n["variants"].items():
        by = m["recall_by_kind"]
        cells = [
            m["precision"],
            m["recall"],
            by["swapped"],
            by["dropped"],
            by["invented"],
            m["false_rejection"],
        ]
        lines.append(f"| {name} | " + " | ".join(map(_pct, cells)) + " |")
    sims = ", ".join(f"{kind} {s['mean']:.2f} (min {s['min']:.2f})" for kind, s in n["similarity"].items())
    if sims:
        lines += ["", f"Similarity by kind, mean (min): {sims}."]
    if n["basic_rejections"]:
        lines.append(f"{n['basic_rejections']} planted rewrites failed a basic check (counted as rejected).")
    shown = [name for name in n["variants"] if "+ attribute" not in name]  # TFF, attribute check (+dropped)
    lines += [
        "",
        "Recall per planted attribute:",
        "",
        "| kind | planted attribute | n | " + " | ".join(shown) + " |",
        "|---|---|---|" + "---|" * len(shown),
    ]
    for row in n["by_attribute"]:
        cells = " | ".join(_pct(row["recall"][name]) for name in shown)
        lines.append(f"| {row['kind']} | {row['attribute']} | {row['n']} | {cells} |")
    if n["examples"]:
        lines += ["", "Mistakes of TFF + attribute check (examples):", ""]
        for ex in n["examples"]:
            found = {k: v for k, v in (ex["attributes"] or {}).items() if v}
            verdict = "rejected" if ex["kind"] == "faithful" else "kept"
            lines.append(
                f"- {ex['kind']} ({ex['detail']}), {verdict}, similarity {_num(ex['similarity'])}, "
                f"findings {found}: "
                f'"{ex["original"]}" -> "{ex["rewrite"]}"'
            )
    return "\n".join(lines) + "\n"
