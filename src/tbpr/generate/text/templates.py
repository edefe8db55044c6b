"""Captioning instructions (MLLM4Text-ReID's static and dynamic ones), description templates (TDE), and the
cleaning rules a generated caption must pass.

Templates are sentences with ``[slot]`` markers (``[upper clothing]``, ``[hairstyle]``, ...). The shipped
list (``caption_templates.yaml``, written for tbpr) is the default; a template file is YAML with a
``templates:`` list, and a template's id is its position in that list.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections.abc import Sequence
from pathlib import Path

import yaml

from tbpr.errors import ConfigError, DataError
from tbpr.generate.chat import Failure
from tbpr.generate.llm import TextBackend
from tbpr.generate.text.faithfulness import basic_rejection, clean_rewrite

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).with_name("caption_templates.yaml")
INSTRUCTIONS = ("static", "dynamic")
STATIC = (
    "Write a description about the overall appearance of the person in the image, including the attributes: "
    "clothing, shoes, hairstyle, gender and belongings. If any attribute is not visible, you can ignore it. "
    "Do not imagine any contents that are not in the image."
)
DYNAMIC = (
    "Generate a description about the overall appearance of the person, including clothing, shoes, hairstyle, "
    "gender, and belongings, in a style similar to the template: '{template}'. If some requirements in the "
    "template are not visible, you can ignore them. Do not imagine any contents that are not in the image."
)
_CAPTION_LABEL = re.compile(r"^\s*\**(?:description|caption|answer)\**\s*:\s*", re.IGNORECASE)
_SLOT = re.compile(r"\[[^\[\]]{1,40}\]")
_MARKUP = re.compile(r"\[[^\[\]]*\]|\{[^{}]*\}|<[^<>]*>|\btemplate\b", re.IGNORECASE)
_REFUSAL = re.compile(
    r"\b(?:i'?m sorry|i am sorry|sorry, but|i can(?:no|')t|i cannot|i am unable|i'm unable|unable to "
    r"(?:see|determine|identify|describe)|as an ai|language model|no (?:person|image) (?:is )?(?:visible|"
    r"provided)|there is no (?:person|image)|cannot be determined)\b",
    re.IGNORECASE,
)


def load_templates(path: str | Path | None = None) -> list[str]:
    """The templates of a YAML file (default: the shipped list); each needs at least one ``[slot]``."""
    path = Path(path) if path is not None else SHIPPED
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read the template file {path}: {err}") from None
    templates = data.get("templates") if isinstance(data, dict) else None
    if not isinstance(templates, list) or not templates:
        raise ConfigError(f"{path}: expected a non-empty list under 'templates:'")
    for i, template in enumerate(templates):
        if not isinstance(template, str) or not _SLOT.search(template):
            raise ConfigError(f"{path}: templates[{i}] = {template!r} is not a string with a [slot]")
    return templates


def templates_hash(templates: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(templates).encode()).hexdigest()[:12]


def instruction(kind: str, template: str | None = None) -> str:
    """The static instruction, or the dynamic one with ``template`` inserted."""
    if kind == "static":
        return STATIC
    if kind == "dynamic":
        if not template:
            raise ValueError("the dynamic instruction needs a template")
        return DYNAMIC.format(template=template)
    raise ConfigError(f"instruction {kind!r}: expected one of {INSTRUCTIONS}")


def pick_template(templates: Sequence[str], seed: int) -> int:
    """The id of the template a request with ``seed`` uses (uniform, reproducible)."""
    return random.Random(seed).randrange(len(templates))


def clean_caption(raw: str) -> tuple[str, str | None]:
    """The caption in a model reply (lead-ins, labels, quotes and notes removed) and why it is
    rejected (None: kept).

    Reasons, checked in this order: "empty", "leftover template markup" ([slot], {field}, <tag> or the
    word "template"), "refusal", then those of ``basic_rejection`` (mostly non-letters, echoes the
    instruction, not English).
    """
    text = clean_rewrite(_CAPTION_LABEL.sub("", raw.strip()))
    if not text:
        return text, "empty"
    if _MARKUP.search(text):
        return text, "leftover template markup"
    if _REFUSAL.search(text):
        return text, "refusal"
    return text, basic_rejection(text, "", [STATIC, DYNAMIC.replace("{template}", "{caption}")])


DERIVE_PROMPT = (
    "Here are descriptions of pedestrians written by image captioning models:\n{captions}\n\n"
    "Here are description templates: sentence patterns whose variable parts are written in square "
    "brackets:\n{examples}\n\nWrite {count} new templates with sentence structures different from all of "
    "the above. Use square brackets for every variable part (e.g. [upper clothing], [hairstyle], [shoes]). "
    "Write one template per line and nothing else."
)


def parse_templates(reply: str) -> list[str]:
    """The templates in an LLM reply: lines with a ``[slot]``, list marks and quotes removed."""
    out = []
    for line in reply.splitlines():
        line = re.sub(r"^\s*(?:\d+[.)]|[-*•])\s*", "", line).strip().strip("\"'“”` ")
        if len(_SLOT.findall(line)) >= 2 and 4 <= len(line.split()) <= 60:
            out.append(line)
    return out


def derive_templates(
    backend: TextBackend,
    captions: Sequence[str],
    existing: Sequence[str],
    count: int = 10,
    rounds: int = 3,
    samples: int = 8,
    seed: int = 0,
) -> list[str]:
    """New templates from sample ``captions``, in up to ``rounds`` requests (a multi-turn exchange: each
    turn shows the model its earlier templates as examples); templates already known are dropped."""
    if not captions:
        raise DataError("no accepted captions to derive templates from; caption some images first")
    rng = random.Random(seed)
    known = {_key(t) for t in existing}
    new: list[str] = []
    for turn in range(rounds):
        if len(new) >= count:
            break
        shown = rng.sample(list(captions), min(samples, len(captions)))
        examples = rng.sample(list(existing) + new, min(6, len(existing) + len(new)))
        prompt = DERIVE_PROMPT.format(
            captions="\n".join(f"- {c}" for c in shown),
            examples="\n".join(f"- {t}" for t in examples),
            count=count - len(new),
        )
        reply = backend.generate([[{"role": "user", "content": prompt}]], [seed + turn])[0]
        if isinstance(reply, Failure):
            log.warning("template request %d failed: %s", turn + 1, reply.reason)
            continue
        for template in parse_templates(reply):
            if _key(template) not in known:
                known.add(_key(template))
                new.append(template)
        log.info("turn %d: %d new templates so far", turn + 1, len(new))
    return new[:count]


def _key(template: str) -> str:
    return " ".join(re.findall(r"\w+", template.lower()))


def write_templates(path: str | Path, templates: Sequence[str], source: str) -> None:
    """A template file (YAML) with a comment saying where the templates came from."""
    header = f"# Description templates derived by `tbpr caption templates` from {source}\n"
    body = yaml.safe_dump({"templates": list(templates)}, allow_unicode=True, sort_keys=False, width=1000)
    Path(path).write_text(header + body, encoding="utf-8")
