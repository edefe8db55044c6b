"""The training-time text augmenter: config validation, back translation from a caption store, op order."""

import json
import logging
import math
import pickle
import random

import pytest

from tbpr.config import from_dict
from tbpr.errors import ConfigError, DataError
from tbpr.text import wordnet
from tbpr.text.augment import TextAugConfig, TextAugmenter

ORIGINAL = "a man in a grey coat and blue jeans."
BT = {1: ["a man wearing a grey coat and blue jeans.", "a man in a gray coat with blue jeans."]}


def record(caption_id, n, text, accepted=True, method="back_translation", attempt=1):
    """One caption store line, in the record format of the spec."""
    return {
        "key": f"{caption_id}:{n}",
        "caption_id": caption_id,
        "text": text,
        "source_text": ORIGINAL,
        "method": method,
        "backend": "marian",
        "model": "Helsinki-NLP/opus-mt-en-fr+opus-mt-fr-en",
        "languages": ["en", "fr", "en"],
        "settings": {"num_beams": 4},
        "attempt": attempt,
        "accepted": accepted,
        "reason": None if accepted else "too similar",
        "created": "2026-11-24T19:00:00Z",
    }


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "bt.jsonl"
    lines = [
        record(1, 0, "a man in a grey coat and blue jeans.", accepted=False),  # rejected: never used
        record(1, 0, BT[1][0], attempt=2),
        record(1, 1, BT[1][1]),
        record(2, 0, "an llm rewrite.", method="llm_rewrite"),  # another method: not a back translation
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def augmenter(ops, store=None, **kwargs):
    return TextAugmenter(TextAugConfig(ops=ops, stores=[store] if store else []), **kwargs)


def test_config_reads_ops_and_stores():
    cfg = from_dict(TextAugConfig, {"ops": {"random_deletion": 0.05}}, "data.text_augment")
    assert cfg == TextAugConfig(ops={"random_deletion": 0.05}, stores=[])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ops": {"shuffle": 0.1}}, r"data\.text_augment\.ops\.shuffle: unknown text augmentation"),
        (
            {"ops": {"random_swap": 1.5}},
            r"data\.text_augment\.ops\.random_swap: alpha must be within \[0, 1\]",
        ),
        ({"ops": {"random_swap": -0.1}}, r"data\.text_augment\.ops\.random_swap: alpha"),
        ({"ops": {"eda": "lots"}}, r"data\.text_augment\.ops\.eda: expected a number"),
        (
            {"ops": {"back_translation": 0.1}},
            r"data\.text_augment\.ops\.back_translation needs data\.text_augment\.stores",
        ),
    ],
)
def test_config_errors_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(TextAugConfig, data, "data.text_augment")


def test_unused_stores_are_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="tbpr.text.augment"):
        TextAugConfig(ops={"random_deletion": 0.1}, stores=["bt.jsonl"])
    assert "the stores are unused" in caplog.text


def test_back_translation_with_alpha_1_always_returns_a_stored_text(store):
    aug = augmenter({"back_translation": 1.0}, store)
    outputs = {aug(ORIGINAL, 1, random.Random(seed)) for seed in range(40)}
    assert outputs == set(BT[1])  # both accepted texts, never the rejected one


def test_back_translation_with_alpha_0_never_replaces(store):
    aug = augmenter({"back_translation": 0.0}, store)
    assert {aug(ORIGINAL, 1, random.Random(seed)) for seed in range(40)} == {ORIGINAL}


def test_back_translation_replaces_with_probability_alpha(store):
    aug, rng, draws = augmenter({"back_translation": 0.3}, store), random.Random(0), 4000
    replaced = sum(aug(ORIGINAL, 1, rng) != ORIGINAL for _ in range(draws))
    assert abs(replaced / draws - 0.3) < 4 * math.sqrt(0.3 * 0.7 / draws)


def test_captions_without_back_translation_keep_their_text_and_are_counted(store, caplog):
    with caplog.at_level(logging.WARNING, logger="tbpr.text.augment"):
        aug = augmenter({"back_translation": 1.0}, store, caption_ids=[1, 2, 3])
    assert "2 of 3 captions have no back translation" in caplog.text  # caption 2 only has an llm rewrite
    assert aug("an unstored caption.", 3, random.Random(0)) == "an unstored caption."
    assert aug("caption two.", 2, random.Random(0)) == "caption two."


def test_back_translation_runs_before_the_eda_operations(store):
    aug = augmenter({"random_deletion": 1.0, "back_translation": 1.0}, store)
    for seed in range(20):
        out = aug(ORIGINAL, 1, random.Random(seed))
        assert len(out.split()) == 1  # deletion ran last, on the back translation
        assert out in BT[1][0].rstrip(".").split() + BT[1][1].rstrip(".").split()


def test_augmenter_is_deterministic_and_picklable(store):
    aug = augmenter({"back_translation": 0.5, "random_swap": 0.2, "random_deletion": 0.1}, store)
    copy = pickle.loads(pickle.dumps(aug))
    first = [aug(ORIGINAL, 1, random.Random(seed)) for seed in range(30)]
    assert first == [copy(ORIGINAL, 1, random.Random(seed)) for seed in range(30)]
    assert len(set(first)) > 5


def test_store_without_back_translations_is_a_data_error(tmp_path):
    path = tmp_path / "rewrites.jsonl"
    path.write_text(json.dumps(record(1, 0, "x", method="llm_rewrite")) + "\n")
    with pytest.raises(DataError, match="no accepted back_translation record"):
        augmenter({"back_translation": 0.1}, str(path))
    with pytest.raises(DataError, match="does not exist"):
        augmenter({"back_translation": 0.1}, str(tmp_path / "missing.jsonl"))


def test_wordnet_is_loaded_up_front_only_for_synonym_ops(monkeypatch):
    def missing():
        raise ConfigError("WordNet is not installed")

    monkeypatch.setattr(wordnet, "reader", missing)
    augmenter({"random_deletion": 0.1, "random_swap": 0.1})
    for name in ("synonym_replacement", "random_insertion", "eda"):
        with pytest.raises(ConfigError, match="WordNet is not installed"):
            augmenter({name: 0.1})
