"""Prompt templates of LLM caption rewriting: conversations, hashes, YAML files, shipped prompts."""

import pytest

from tbpr.errors import ConfigError
from tbpr.generate.text.prompts import FEW_SHOT, PAPER, PromptTemplate, get_prompt

CAPTION = "A man in a {red} jacket."  # braces in a caption must not be taken for template fields


def test_paper_prompt_is_the_caption_then_the_instruction():
    assert PAPER.messages(CAPTION) == [
        {"role": "user", "content": "A man in a {red} jacket. Rewrite this image caption."}
    ]
    assert PAPER.instruction_texts() == ["Rewrite this image caption."]


def test_few_shot_conversation_is_system_then_example_turns_then_the_caption():
    messages = FEW_SHOT.messages(CAPTION)
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert messages[0]["content"] == FEW_SHOT.system
    for (original, rewrite), (asked, answered) in zip(FEW_SHOT.examples, zip(messages[1::2], messages[2::2])):
        assert asked["content"] == f"{original} Rewrite this image caption."
        assert answered["content"] == rewrite
    assert messages[-1]["content"] == "A man in a {red} jacket. Rewrite this image caption."
    assert FEW_SHOT.instruction_texts() == [FEW_SHOT.system, "Rewrite this image caption."]


def test_hash_is_fixed_by_the_text_and_changes_with_any_part_of_it():
    # a literal: changing how the hash is computed would orphan the prompt_hash of every existing store
    assert PAPER.hash() == "8549e2217cc98f60"
    base = PromptTemplate("{caption} Rewrite.", system="Be brief.", examples=(("a", "b"),), name="one")
    assert len(base.hash()) == 16 and int(base.hash(), 16) >= 0
    assert PromptTemplate("{caption} Rewrite.", "Be brief.", (("a", "b"),), name="two").hash() == base.hash()
    variants = [
        PromptTemplate("{caption} Rewrite!", "Be brief.", (("a", "b"),)),
        PromptTemplate("{caption} Rewrite.", "Be short.", (("a", "b"),)),
        PromptTemplate("{caption} Rewrite.", None, (("a", "b"),)),
        PromptTemplate("{caption} Rewrite.", "Be brief.", (("a", "c"),)),
        PromptTemplate("{caption} Rewrite.", "Be brief.", ()),
    ]
    assert len({base.hash(), *(v.hash() for v in variants)}) == 6


def test_a_template_without_caption_field_is_refused():
    with pytest.raises(ConfigError, match=r"prompt 'custom'.*has no \{caption\} field"):
        PromptTemplate("Rewrite this image caption.")


def test_load_a_yaml_template(tmp_path):
    path = tmp_path / "prompt.yaml"
    path.write_text(
        "system: Keep the colours.\n"
        "user: 'Caption: {caption}\n\n  Rewrite it.'\n"
        "examples:\n"
        "  - caption: A man in red.\n"
        "    rewrite: A man dressed in red.\n"
    )
    prompt = PromptTemplate.load(path)
    assert prompt == PromptTemplate(
        "Caption: {caption}\nRewrite it.",
        "Keep the colours.",
        (("A man in red.", "A man dressed in red."),),
        name=str(path),
    )
    assert prompt.messages("A woman.")[-1] == {"role": "user", "content": "Caption: A woman.\nRewrite it."}
    assert get_prompt(str(path)) == prompt


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user: [unclosed\n", "cannot be read as YAML"),
        ("", "needs a 'user' field"),
        ("system: Hi.\n", "needs a 'user' field"),
        ("user: 3\n", "needs a 'user' field"),
        (
            "user: '{caption}'\nexampels: []\n",
            r"unknown fields \['exampels'\] \(known: system, user, examples\)",
        ),
        ("user: '{caption}'\nexamples:\n  - caption: a\n  - rewrite: b\n", r"examples\[0\] needs"),
        (
            "user: '{caption}'\nexamples:\n  - {caption: a, rewrite: b}\n  - just text\n",
            r"examples\[1\] needs",
        ),
        ("user: Rewrite this.\n", r"has no \{caption\} field"),
    ],
)
def test_bad_yaml_templates_name_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        PromptTemplate.load(path)
    assert str(path) in str(err.value)


def test_unreadable_template_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read as YAML") as err:
        PromptTemplate.load(tmp_path)  # a folder
    assert str(tmp_path) in str(err.value)


def test_get_prompt_by_name_or_path(tmp_path):
    assert get_prompt("paper") is PAPER and get_prompt("few-shot") is FEW_SHOT
    with pytest.raises(
        ConfigError, match=r"--prompt 'fewshot': neither a shipped prompt \(paper, few-shot\)"
    ):
        get_prompt("fewshot")
    with pytest.raises(ConfigError, match="nor a YAML file"):
        get_prompt(str(tmp_path / "missing.yaml"))
