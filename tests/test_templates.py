"""Description templates (TDE): the shipped list, template insertion, the cleaning rules, and deriving new
templates with an LLM (scripted replies, and SmolLM2-135M-Instruct through ``tbpr caption templates``)."""

import re

import pytest
import yaml

from llm_server import smollm2_folder
from tbpr.cli import main
from tbpr.data.caption_store import CaptionStore, StoreRecord
from tbpr.errors import ConfigError, DataError
from tbpr.generate.chat import Failure, Reply
from tbpr.generate.text.caption import METHOD, image_id
from tbpr.generate.text.templates import (
    DYNAMIC,
    STATIC,
    clean_caption,
    derive_templates,
    instruction,
    load_templates,
    parse_templates,
    pick_template,
    write_templates,
)

GOOD = "A man with short black hair wears a grey hoodie, dark jeans and white sneakers, carrying a backpack."


def test_shipped_templates_are_many_distinct_and_slotted():
    templates = load_templates()
    assert len(templates) >= 46
    assert len({t.lower() for t in templates}) == len(templates)
    assert all(re.search(r"\[[^\]]+\]", t) for t in templates)
    openings = {" ".join(t.split()[:2]).lower() for t in templates}
    assert len(openings) >= 35  # the sentence structures differ, not only the words


def test_template_file_errors_name_the_file_and_entry(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("templates:\n  - 'A [gender] in [clothing].'\n  - 'no slot here'\n")
    with pytest.raises(ConfigError, match=r"t\.yaml: templates\[1\]"):
        load_templates(bad)
    bad.write_text("other: 1\n")
    with pytest.raises(ConfigError, match="under 'templates:'"):
        load_templates(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_templates(tmp_path / "missing.yaml")


def test_instructions_and_template_insertion():
    assert instruction("static") == STATIC
    template = load_templates()[3]
    text = instruction("dynamic", template)
    assert f"the template: '{template}'. If some" in text
    assert text == DYNAMIC.replace("{template}", template)
    with pytest.raises(ConfigError, match="expected one of"):
        instruction("fancy")
    with pytest.raises(ValueError):
        instruction("dynamic")
    ids = [pick_template(range(50), seed) for seed in range(500)]
    assert ids == [pick_template(range(50), seed) for seed in range(500)]  # reproducible
    assert set(ids) == set(range(50))  # every template gets used


@pytest.mark.parametrize(
    ("raw", "text", "reason"),
    [
        (GOOD, GOOD, None),
        (f'Description: "{GOOD}"', GOOD, None),
        (f"Sure! Here is a description:\n{GOOD}", GOOD, None),
        (f"{GOOD}\n\nNote: the shoes are partly hidden.", GOOD, None),
        ("", "", "empty"),
        ("A [gender] with [hairstyle] wears a red coat.", None, "leftover template markup"),
        ("A woman wearing a {color} dress and sandals.", None, "leftover template markup"),
        ("<image> A woman wearing a dress and sandals.", None, "leftover template markup"),
        ("Following the template, a woman wears a dress.", None, "leftover template markup"),
        ("I'm sorry, but I can't help with identifying people.", None, "refusal"),
        ("As an AI language model, I cannot see the image.", None, "refusal"),
        ("There is no person visible in this picture.", None, "refusal"),
        ("Un homme portant une veste noire et un pantalon gris.", None, "not English"),
        ("一个穿着红色外套的女人", None, "not English"),
        ("... --- 123 ### !!!", None, "mostly non-letters"),
    ],
)
def test_cleaning_rules(raw, text, reason):
    cleaned, why = clean_caption(raw)
    assert why == reason
    if text is not None:
        assert cleaned == text


def test_parse_templates_keeps_slotted_lines():
    reply = (
        "Here are new templates:\n1. A [gender] strolls past in [upper clothing] and [shoes].\n"
        '- "Spotted: [hairstyle], [upper clothing], [belongings]."\n* Only one [slot] here.\nThanks!'
    )
    assert parse_templates(reply) == [
        "A [gender] strolls past in [upper clothing] and [shoes].",
        "Spotted: [hairstyle], [upper clothing], [belongings].",
    ]


class ScriptedLLM:
    backend, model, settings = "openai", "scripted-llm", {}

    def __init__(self, replies):
        self.replies, self.prompts = list(replies), []

    def generate(self, conversations, seeds):
        self.prompts.append(conversations[0][-1]["content"])
        reply = self.replies.pop(0)
        return [reply if isinstance(reply, Failure) else Reply(reply)]


def test_derive_templates_over_several_turns():
    existing = load_templates()
    llm = ScriptedLLM(
        [
            f"1. {existing[0]}\n2. Seen from the side, a [gender] wears [upper clothing] and [shoes].",
            Failure("HTTP 500"),
            "Seen from the side, a [gender] wears [upper clothing] and [shoes].\n"
            "Two things stand out: [upper clothing] and [belongings].",
        ]
    )
    new = derive_templates(llm, [GOOD, "A woman in a red coat."], existing, count=5, rounds=3)
    assert new == [
        "Seen from the side, a [gender] wears [upper clothing] and [shoes].",
        "Two things stand out: [upper clothing] and [belongings].",
    ]
    assert GOOD in llm.prompts[0] and "Write 5 new templates" in llm.prompts[0]
    assert "Write 4 new templates" in llm.prompts[2]
    with pytest.raises(DataError, match="no accepted captions"):
        derive_templates(llm, [], existing)


def test_written_templates_load_back(tmp_path):
    path = tmp_path / "t.yaml"
    write_templates(path, ["A [gender] in [upper clothing]."], "caps.jsonl")
    assert load_templates(path) == ["A [gender] in [upper clothing]."]
    assert path.read_text().startswith("# Description templates derived")


def _store_with_captions(path, texts):
    records = [
        StoreRecord(
            key=f"{image_id(f'{i}.jpg')}:0",
            caption_id=image_id(f"{i}.jpg"),
            text=text,
            source_text=f"{i}.jpg",
            method=METHOD,
            backend="openai",
            model="m",
            languages=["en"],
            settings={},
            attempt=1,
            accepted=True,
        )
        for i, text in enumerate(texts)
    ]
    CaptionStore(path).append(records)


@pytest.mark.slow
def test_templates_command_with_a_real_llm(tmp_path, capsys):
    """``tbpr caption templates`` with SmolLM2-135M-Instruct in-process: the command runs end to end; the
    small model may propose few usable templates, so only the file's validity is checked."""
    store = tmp_path / "caps.jsonl"
    _store_with_captions(store, [GOOD, "A woman in a long red coat and black boots, holding an umbrella."])
    out = tmp_path / "more.yaml"
    argv = ["caption", "templates", "--from", str(store), "--out", str(out), "--backend", "transformers"]
    argv += ["--model", str(smollm2_folder()), "--rounds", "2", "--max-tokens", "96", "--count", "5"]
    assert main(argv) == 0
    assert "templates kept" in capsys.readouterr().out
    written = yaml.safe_load(out.read_text())["templates"]
    assert written[: len(load_templates())] == load_templates()  # ids of the shipped ones unchanged
    assert load_templates(out) == written
