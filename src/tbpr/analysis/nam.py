"""Does Noise-Aware Masking find caption noise? Mean NAM probability of corrupted vs clean tokens per epoch.

Reads the per-epoch dumps of a NAM run (``run_dir/nam/epoch_XXX.pt``, one probability row per training
caption) and the attributes.json of a SynthPedes set generated with ``tbpr synth --caption-noise P``,
whose caption mentions carry character spans and ``noise`` (the original value) when corrupted. Each
BPE token inherits the character span of the word it comes from (CLIP's tokenizer pattern over the
cleaned, lower-cased caption); a token is *corrupted* if its word overlaps a corrupted mention,
a *clean mention* token if it overlaps an uncorrupted attribute mention, *other* otherwise.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from tbpr.data import read_dataset
from tbpr.data.tokenizer import Tokenizer
from tbpr.errors import DataError

log = logging.getLogger(__name__)
KINDS = ("corrupted", "clean_mention", "other")


def token_spans(tokenizer: Tokenizer, text: str) -> list[tuple[int, int]] | None:
    """The character span of every BPE token of ``text`` (start and end tokens excluded), or None if
    the tokenizer's cleaning changes the text's length (the spans would not line up)."""
    bpe = tokenizer._bpe
    cleaned = bpe.clean_fn(text)
    if len(cleaned) != len(text):
        return None
    spans = []
    for match in bpe.pat.finditer(cleaned):
        word = "".join(bpe.byte_encoder[b] for b in match.group().encode("utf-8"))
        spans.extend([match.span()] * len(bpe.bpe(word).split(" ")))
    return spans


def token_kinds(tokenizer: Tokenizer, text: str, mentions: list[dict]) -> list[str] | None:
    """Per caption token (in tokenized order, truncated to the context): its kind in ``KINDS``."""
    spans = token_spans(tokenizer, text)
    if spans is None:
        return None
    kinds = []
    for start, end in spans[: tokenizer.context_length - 2]:
        hit = [m for m in mentions if m["span"][0] < end and start < m["span"][1]]
        if any(m.get("noise") for m in hit):
            kinds.append("corrupted")
        else:
            kinds.append("clean_mention" if hit else "other")
    return kinds


def _caption_mentions(data: Path) -> dict[tuple[str, str], list[dict]]:
    path = data / "attributes.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; generate the data with `tbpr synth --caption-noise P`")
    images = json.loads(path.read_text()).get("images", {})
    return {(img, cap["text"]): cap["mentions"] for img, rec in images.items() for cap in rec["captions"]}


def nam_noise_table(run: Path, data: Path) -> list[dict]:
    """One row per dumped epoch: mean probability and token count of each kind."""
    dumps = sorted((run / "nam").glob("epoch_*.pt"))
    if not dumps:
        raise DataError(f"{run}/nam has no epoch_XXX.pt: train with masking.mode=nam and masking.dump=true")
    manifest = read_dataset(data)
    captions = {c.id: c for c in manifest.captions}
    image_path = {rec.id: rec.path for rec in manifest.images}
    mentions = _caption_mentions(data)
    rows = []
    for dump_path in dumps:
        dump = torch.load(dump_path, weights_only=True)
        probs = dump["probs"].float()
        tokenizer = Tokenizer(probs.shape[1])
        values: dict[str, list[torch.Tensor]] = {k: [] for k in KINDS}
        skipped = 0
        for row, caption_id in enumerate(dump["caption_ids"].tolist()):
            caption = captions.get(caption_id)
            found = caption and mentions.get((image_path[caption.image_id], caption.text))
            kinds = found and token_kinds(tokenizer, caption.text, found)
            if not kinds:
                skipped += 1
                continue
            for kind in KINDS:
                where = torch.tensor([k == kind for k in kinds])
                values[kind].append(probs[row, 1 : 1 + len(kinds)][where])
        record = {"epoch": dump["epoch"], "captions": len(dump["caption_ids"]) - skipped}
        for kind in KINDS:
            joined = torch.cat(values[kind]) if values[kind] else torch.zeros(0)
            record[kind] = joined.mean().item() if len(joined) else float("nan")
            record[f"{kind}_tokens"] = len(joined)
        if skipped:
            log.warning("%s: %d captions without attribute mentions in %s skipped", dump_path, skipped, data)
        rows.append(record)
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| epoch | corrupted | clean mention | other | corrupted / clean mention | corrupted tokens |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["corrupted"] / r["clean_mention"] if r["clean_mention"] else float("nan")
        lines.append(
            f"| {r['epoch']} | {r['corrupted']:.4f} | {r['clean_mention']:.4f} | {r['other']:.4f} "
            f"| {ratio:.2f} | {r['corrupted_tokens']} |"
        )
    return "\n".join(lines)
