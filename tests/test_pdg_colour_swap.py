"""PDG's colour swap with the real spaCy pipeline and CLIP's BPE tokenizer, on hand-written captions."""

from __future__ import annotations

import random

import pytest
from open_clip.tokenizer import SimpleTokenizer

from tbpr.errors import ConfigError
from tbpr.generate.images.pdg import colour_swap as C

BPE = SimpleTokenizer()


def all_edits(analysis: C.Analysis) -> list[C.ColourEdit]:
    return [edit for slot in analysis.slots for edit in slot.edits()]


def test_shirt_or_trousers_change_never_the_backpack(swapper):
    caption = "a man in a red shirt and black trousers carrying a blue backpack"
    analysis = swapper.analyse(caption)
    assert analysis.reason is None
    # one chunk "a red shirt and black trousers" is cut into two phrases, each with its own head
    assert {(s.phrase, s.old) for s in analysis.slots} == {
        ("a red shirt", "red"),
        ("black trousers", "black"),
    }
    edits = all_edits(analysis)
    for edit in edits:
        edited = edit.apply(caption)
        assert edited.endswith("carrying a blue backpack") and edited != caption
        assert len(BPE.encode(edited)) == len(BPE.encode(caption))
    drawn = {analysis.draw(random.Random(seed)).phrase for seed in range(40)}
    assert drawn == {"a red shirt", "black trousers"}


def test_hat_and_bag_edits_the_hat_only(swapper):
    caption = "A woman wearing a dark blue hat and carrying a red bag."
    analysis = swapper.analyse(caption)
    assert [(s.phrase, s.old, s.family) for s in analysis.slots] == [("a dark blue hat", "dark blue", "blue")]
    for edit in all_edits(analysis):
        assert edit.apply(caption).endswith("carrying a red bag.")


def test_multi_word_colour_is_replaced_whole_by_a_same_length_name_of_another_family(swapper):
    caption = "A woman wearing a dark blue hat."
    (slot,) = swapper.analyse(caption).slots
    assert slot.token_count == 2 and "blue" not in slot.targets  # never "navy blue": the same family
    names = {name for names in slot.targets.values() for name in names}
    assert "light green" in names and "red" not in names  # a one-token colour would shift the tokens
    edit = slot.edit("green", "light green")
    assert edit.apply(caption) == "A woman wearing a light green hat."
    # the recorded token position is the colour's: the prompts differ exactly there
    before, after = BPE.encode(caption), BPE.encode(edit.apply(caption))
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert changed and set(changed) <= set(range(edit.token_start, edit.token_start + edit.token_count))


def test_a_phrase_never_gets_a_colour_it_already_has(swapper):
    caption = "A girl in a red and white striped t-shirt"
    analysis = swapper.analyse(caption)
    assert [s.old for s in analysis.slots] == ["red", "white"]
    assert all({"red", "white"}.isdisjoint(s.targets) for s in analysis.slots)


@pytest.mark.parametrize(
    ("caption", "reason"),
    [
        ("A man carrying a red bag and a blue backpack.", C.NO_CLOTHES),
        ("The man has black hair.", C.NO_CLOTHES),
        ("A man in a shirt and trousers.", C.NO_COLOUR),
        ("A woman in a light-grey coat.", C.NO_SAME_LENGTH),  # 3 tokens: Co has no 3-token name
        ("A man " + "who walks slowly " * 25 + "in a red shirt.", C.PAST_CONTEXT),
    ],
)
def test_captions_without_a_swap_are_skipped_with_a_reason(swapper, caption, reason):
    analysis = swapper.analyse(caption)
    assert analysis.slots == () and analysis.reason == reason
    assert analysis.draw(random.Random(0)) is None


def test_draw_is_deterministic_and_avoids_excluded_edits(swapper):
    analysis = swapper.analyse("a man in a red shirt and black trousers")
    assert analysis.draw(random.Random(7)) == analysis.draw(random.Random(7))
    every = all_edits(analysis)
    assert analysis.draw(random.Random(0), exclude=every[1:]) == every[0]
    assert analysis.draw(random.Random(0), exclude=every) is None


def test_a_broken_set_file_is_one_clear_error(tmp_path):
    path = tmp_path / "sets.yaml"
    path.write_text("clothes: [shirt]\n")
    with pytest.raises(ConfigError, match="sets.yaml: not a PDG set file.*colours"):
        C.ColourSets.load(path)


def test_the_shipped_sets_leave_bags_out_of_the_clothes():
    sets = C.ColourSets.load()
    assert {"bag", "backpack"} <= sets.excluded and not {"bag", "backpack"} & sets.clothes
    assert sets.family_of[("dark", "blue")] == "blue"


def test_a_colour_after_the_garment_behind_in_belongs_to_it(swapper):
    analysis = swapper.analyse("A man in a jumper in grey and orange trousers.")
    assert [(s.phrase, s.old) for s in analysis.slots] == [
        ("a jumper in grey", "grey"),
        ("orange trousers", "orange"),
    ]
    analysis = swapper.analyse("A woman in a shirt in black and white.")
    assert [s.old for s in analysis.slots] == ["black", "white"]
    assert all({"black", "white"}.isdisjoint(s.targets) for s in analysis.slots)


def test_a_clothes_phrase_without_a_colour_beside_one_with_a_colour(swapper):
    analysis = swapper.analyse("A man in a shirt and red trousers.")
    assert [(s.phrase, s.old) for s in analysis.slots] == [("red trousers", "red")]
