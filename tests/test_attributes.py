import pytest
import yaml

from tbpr.errors import ConfigError
from tbpr.text.attributes import (
    LEXICON_PATH,
    Lexicon,
    Phrase,
    _nlp,
    compare_attributes,
    compare_many,
    compare_phrases,
    extract_attributes,
    extract_many,
    lexicon,
    lexicon_words,
)

ORIGINAL = "a man in a red jacket and black trousers"


def items(text):
    """item -> colours of the item phrases of ``text``; colours of no item under None."""
    out = {}
    for p in extract_attributes(text):
        out.setdefault(p.item, set()).update(p.colours)
    return out


def found(original, rewrite):
    return {kind: entries for kind, entries in compare_attributes(original, rewrite).items() if entries}


def P(item, *colours):
    return Phrase(item, frozenset(colours), " ".join([*colours, item or ""]).strip())


# -- extraction -------------------------------------------------------------------------------------------
def test_colours_attach_to_the_garments_they_precede():
    text = (
        "A woman in a light blue jacket and black trousers is carrying a white bag. She has long brown hair."
    )
    assert items(text) == {
        "woman": set(),
        "jacket": {"blue"},
        "trousers": {"black"},
        "bag": {"white"},
        "hair": {"brown"},
    }
    phrases = extract_attributes(text)
    assert [p.words for p in phrases if p.item == "jacket"] == ["light blue jacket"]


@pytest.mark.parametrize(
    "text, expected",
    [
        # SynthPedes: a colour after "in" belongs to the garment before it, the next one to the next garment
        (
            "This lady has on a jumper in grey and orange trousers.",
            {"sweater": {"grey"}, "trousers": {"orange"}},
        ),
        ("She carries a rucksack in white.", {"backpack": {"white"}}),
        ("a shirt in black and white", {"shirt": {"black", "white"}}),
        ("a black and white striped shirt", {"shirt": {"black", "white"}}),
        ("a black-and-white dress", {"dress": {"black", "white"}}),
        # predicates and relative clauses
        ("Her pants are orange.", {"trousers": {"orange"}}),
        ("Her hair is long and black.", {"hair": {"black"}}),
        (
            "The woman wears a coat that is red and trousers that are black.",
            {"jacket": {"red"}, "trousers": {"black"}},
        ),
        # modifiers between colour and item, even when the tagger calls them verbs
        ("a white short sleeve striped t-shirt", {"t-shirt": {"white"}}),
        ("a grey checked upper garment", {"top": {"grey"}}),
        ("a pair of white trainers", {"sneakers": {"white"}}),
        # shades, multi-word colours, the bare "dark"
        (
            "a navy blue coat, dark green pants and light-blue shoes",
            {"jacket": {"navy"}, "trousers": {"green"}, "shoe": {"blue"}},
        ),
        ("dark hair and a dark blue tee", {"hair": {"black"}, "t-shirt": {"navy"}}),
        ("a gray-haired man", {"hair": {"grey"}}),
    ],
)
def test_colour_attachment_rules(text, expected):
    got = {item: colours for item, colours in items(text).items() if item not in ("man", "woman")}
    assert got == expected


def test_negated_items_are_left_out_and_person_colours_ignored():
    assert items("A black man without a hat. He has no bag and a scarf.") == {"man": set(), "scarf": set()}
    assert items("She has white skin and a red top.") == {"woman": set(), "top": {"red"}}


def test_colours_of_no_item_are_kept_without_one():
    assert items("A man in red walks past a white car.") == {"man": set(), None: {"red", "white"}}


def test_extract_many_matches_one_at_a_time():
    texts = ["a red hat", "Her pants are orange.", ""]
    assert extract_many(texts) == [extract_attributes(t) for t in texts]
    assert extract_many(texts)[2] == []


# -- comparison -------------------------------------------------------------------------------------------
def test_faithful_paraphrase_has_no_findings():
    assert found(ORIGINAL, "a man wearing a red coat and dark pants") == {}
    assert (
        found(
            "This lady has on a jumper in grey and orange trousers.",
            "A woman wearing a grey sweater and orange pants.",
        )
        == {}
    )


@pytest.mark.parametrize(
    "rewrite, expected",
    [
        ("a man in a blue jacket and black trousers", {"changed": ["jacket: red -> blue"]}),
        (
            "a man in a black jacket and red trousers",
            {"changed": ["jacket: red -> black", "trousers: black -> red"]},
        ),
        ("a man in a red hoodie and black trousers", {"changed": ["jacket -> hoodie"]}),
        ("a woman in a red jacket and black trousers", {"changed": ["man -> woman"]}),
        ("a man in a red jacket and black trousers with a hat", {"invented": ["hat"]}),
        ("a man in a red jacket and black trousers, carrying a green bag", {"invented": ["green bag"]}),
        ("a man in a red and green jacket and black trousers", {"invented": ["jacket: green"]}),
        ("a man in a red jacket and black trousers riding a yellow bike", {"invented": ["colour yellow"]}),
        ("a man in a red jacket", {"dropped": ["black trousers"]}),
        ("a man in a jacket and black trousers", {"dropped": ["jacket: red"]}),
        # a generic word ("top") pairs with any garment of its category
        ("a man in a red top and black trousers", {}),
    ],
)
def test_findings(rewrite, expected):
    assert found(ORIGINAL, rewrite) == expected


def test_compare_phrases_by_hand():
    lex = lexicon()
    original = [P("woman"), P("t-shirt", "white"), P("jeans", "blue"), P(None, "red")]
    # "the person is a woman": the generic person word refers to the woman; the loose red excuses a red item
    rewrite = [P("person"), P("woman"), P("top", "white"), P("jeans", "blue", "red")]
    assert compare_phrases(original, rewrite, lex) == {"changed": [], "invented": [], "dropped": []}
    swapped = [P("woman"), P("shirt", "white"), P("skirt", "blue")]
    assert compare_phrases(original, swapped, lex) == {
        "changed": ["t-shirt -> shirt", "jeans -> skirt"],
        "invented": [],
        "dropped": ["colour red"],
    }


def test_compare_many_pairs_up_and_checks_lengths():
    assert compare_many([ORIGINAL, ORIGINAL], [ORIGINAL, "a man in a blue jacket and black trousers"]) == [
        compare_attributes(ORIGINAL, ORIGINAL),
        compare_attributes(ORIGINAL, "a man in a blue jacket and black trousers"),
    ]
    with pytest.raises(ValueError, match="1 originals but 0 rewrites"):
        compare_many([ORIGINAL], [])


# -- lexicon ----------------------------------------------------------------------------------------------
def test_lexicon_covers_synthpedes_words():
    from tbpr.data.synthpedes.vocabulary import COLOUR_WORDS, FORMS

    lex, tokenizer = lexicon(), _nlp().tokenizer

    def canonical(table, phrase):
        return table.get(tuple(t.text.lower() for t in tokenizer(phrase)))

    for value, words in COLOUR_WORDS.items():
        assert {canonical(lex.colours, w) for w in words} == {value}, value
    for attribute in ("upper_type", "lower_type", "bag"):
        for value, words in FORMS[attribute]["noun"].items():
            names = {canonical(lex.items, w).name for w in words}
            assert len(names) == 1, (attribute, value, names)
    assert {canonical(lex.colours, w) for w in FORMS["hair_colour"]["adj"]["grey"]} == {"grey"}


def test_lexicon_rejects_a_word_with_two_meanings():
    data = yaml.safe_load(LEXICON_PATH.read_text())
    data["colours"]["blue"].append("navy")
    with pytest.raises(ConfigError, match="'navy' is listed under both colours.blue and colours.navy"):
        Lexicon(data, str.split, "test.yaml")
    data = yaml.safe_load(LEXICON_PATH.read_text())
    data["items"]["hat"]["hat"] = "hat"
    with pytest.raises(ConfigError, match="items.hat.hat must be a non-empty list"):
        Lexicon(data, str.split, "test.yaml")


def test_lexicon_words_need_no_spacy():
    words = lexicon_words()
    assert {"jumper", "grey", "gray", "navy", "sneaker", "shirt", "rucksack"} <= words
