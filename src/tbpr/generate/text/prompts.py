"""Prompt templates for LLM caption rewriting (LLM-DA): the paper's prompt, a few-shot one, or a YAML file.

A template file::

    system: You rewrite captions of pedestrian photos. ...   # optional
    user: "{caption} Rewrite this image caption."            # {caption} is the caption to rewrite
    examples:                                                  # optional few-shot turns
      - caption: A man in a black jacket and blue jeans.
        rewrite: The man wears blue jeans with a black jacket.

The conversation is the system message, one user/assistant turn per example, then the caption's user
message. The template's hash (recorded with every rewrite) changes with any of its text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tbpr.errors import ConfigError

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class PromptTemplate:
    user: str
    system: str | None = None
    examples: tuple[tuple[str, str], ...] = field(default=())
    name: str = "custom"

    def __post_init__(self) -> None:
        if "{caption}" not in self.user:
            raise ConfigError(
                f"prompt {self.name!r}: the user template {self.user!r} has no {{caption}} field"
            )

    def messages(self, caption: str) -> Messages:
        out = [{"role": "system", "content": self.system}] if self.system else []
        for original, rewrite in self.examples:
            out += [
                {"role": "user", "content": self._user(original)},
                {"role": "assistant", "content": rewrite},
            ]
        return [*out, {"role": "user", "content": self._user(caption)}]

    def _user(self, caption: str) -> str:
        return self.user.replace("{caption}", caption)

    def hash(self) -> str:
        """16 hex digits of the SHA-256 of the template's text (system, user, examples)."""
        canon = json.dumps([self.system, self.user, [list(e) for e in self.examples]], ensure_ascii=False)
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def instruction_texts(self) -> list[str]:
        """The prompt's own sentences, which a rewrite must not echo."""
        return [text for text in (self.system, self._user("").strip()) if text]

    @classmethod
    def load(cls, path: str | Path) -> PromptTemplate:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"prompt file {path}: cannot be read as YAML ({err})") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("user"), str):
            raise ConfigError(f"prompt file {path}: needs a 'user' field (a template with {{caption}})")
        if not isinstance(raw.get("system"), str | None):
            raise ConfigError(
                f"prompt file {path}: 'system' must be text, got {type(raw['system']).__name__}"
            )
        unknown = raw.keys() - {"system", "user", "examples"}
        if unknown:
            raise ConfigError(
                f"prompt file {path}: unknown fields {sorted(unknown)} (known: system, user, examples)"
            )
        examples = []
        for i, ex in enumerate(raw.get("examples") or []):
            if not isinstance(ex, dict) or not {"caption", "rewrite"} <= ex.keys():
                raise ConfigError(f"prompt file {path}: examples[{i}] needs 'caption' and 'rewrite'")
            examples.append((str(ex["caption"]), str(ex["rewrite"])))
        return cls(raw["user"], raw.get("system"), tuple(examples), name=str(path))


# LLM-DA section 3.2: the caption followed by "Rewrite this image caption."
PAPER = PromptTemplate("{caption} Rewrite this image caption.", name="paper")

# For small models that need to be shown the task; the examples are written for tbpr.
FEW_SHOT = PromptTemplate(
    "{caption} Rewrite this image caption.",
    system=(
        "You rewrite captions of pedestrian photos. Keep every person, colour, garment, bag and accessory "
        "exactly as in the caption; change only the wording and the sentence structure. Reply with the "
        "rewritten caption only."
    ),
    examples=(
        (
            "A man in a black jacket and blue jeans carries a red backpack.",
            "Wearing a black jacket with blue jeans, the man has a red backpack on his back.",
        ),
        (
            "The woman has long brown hair. She wears a white shirt, a grey skirt and black shoes.",
            "This woman with long brown hair is dressed in a white shirt and a grey skirt, with black shoes.",
        ),
        (
            "A young man with short hair, wearing a green t-shirt, dark shorts and white sneakers.",
            "The young man has short hair and wears white sneakers, dark shorts and a green t-shirt.",
        ),
    ),
    name="few-shot",
)

SHIPPED = {"paper": PAPER, "few-shot": FEW_SHOT}


def get_prompt(name_or_path: str) -> PromptTemplate:
    """A shipped prompt by name (``paper``, ``few-shot``) or a YAML template file."""
    if name_or_path in SHIPPED:
        return SHIPPED[name_or_path]
    if not Path(name_or_path).is_file():
        raise ConfigError(
            f"--prompt {name_or_path!r}: neither a shipped prompt ({', '.join(SHIPPED)}) nor a YAML file"
        )
    return PromptTemplate.load(name_or_path)
