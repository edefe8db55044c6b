"""LLM-DA's Balanced Sampling Strategy through the store ops, store selection, and expansion (DA without BSS)."""

import json
import logging
import math
import os
import pickle
import random

import pytest

from tbpr.config import from_dict
from tbpr.data.caption_store import accepted_texts
from tbpr.data.check import load_training_manifest
from tbpr.errors import ConfigError, DataError
from tbpr.text.augment import TextAugConfig, TextAugmenter, expand_manifest
from tbpr.text.operations import OPERATIONS
from tbpr.train import load_config
from tbpr.train.engine import Trainer

ORIGINAL = "a woman in a red jacket and black trousers."
REWRITES = [
    "a woman wearing a red jacket with black trousers.",
    "the woman has a red jacket and black pants.",
]
BT = "a woman in a red coat and black trousers."


def record(caption_id, n, text, accepted=True, reason=None, similarity=0.9, method="llm_rewrite", attempt=1):
    """One caption store line of an LLM rewrite (or a back translation), as the spec lays it out."""
    obj = {
        "key": f"{caption_id}:{n}",
        "caption_id": caption_id,
        "text": text,
        "source_text": ORIGINAL,
        "method": method,
        "backend": "openai",
        "model": "smollm2",
        "languages": ["en"],
        "settings": {"temperature": 0.7, "seed": attempt},
        "attempt": attempt,
        "accepted": accepted,
        "reason": reason,
        "created": "2026-11-24T20:00:00Z",
    }
    if method == "llm_rewrite":
        obj.update(
            prompt_hash="0123456789abcdef", similarity=similarity, attributes=None, filter={"alpha": 0.6}
        )
    return obj


def write_store(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


@pytest.fixture
def store(tmp_path):
    return write_store(
        tmp_path / "rewrites.jsonl",
        [
            record(
                1, 0, "a man in blue.", accepted=False, reason="similarity 0.41 < alpha 0.6", similarity=0.41
            ),
            record(1, 0, REWRITES[0], attempt=2),
            record(1, 1, REWRITES[1]),
            record(1, 0, BT, method="back_translation"),
        ],
    )


@pytest.fixture
def ablation_store(tmp_path):
    """Per key, the tries that the "all" selection must tell apart."""
    return write_store(
        tmp_path / "ablation.jsonl",
        [
            # key 5:0: a failure, a basic rejection, then a TFF rejection (the first usable), then accepted
            record(5, 0, None, accepted=False, reason="HTTP 500: boom", similarity=None),
            record(
                5,
                0,
                "Rewrite this image caption.",
                accepted=False,
                reason="echoes the prompt",
                similarity=None,
            ),
            record(
                5, 0, "a man in blue.", accepted=False, reason="similarity 0.41 < alpha 0.6", similarity=0.41
            ),
            record(5, 0, "a woman with a red jacket.", similarity=0.83, attempt=4),
            # key 6:0: an attribute rejection only
            record(
                6,
                0,
                "a woman in a blue jacket.",
                accepted=False,
                reason="attribute changed: jacket",
                similarity=0.9,
            ),
            # key 7:0: only basic rejections: never usable
            record(7, 0, "", accepted=False, reason="empty", similarity=None),
            record(7, 0, "ceci n'est pas anglais.", accepted=False, reason="not English", similarity=None),
            # key 8:0: accepted but without a similarity score
            record(8, 0, "a person in grey.", similarity=None),
        ],
    )


def augmenter(ops, store=None, **cfg):
    return TextAugmenter(TextAugConfig(ops=ops, stores=[store] if store else [], **cfg))


def test_bss_uses_a_rewrite_with_probability_beta(store):
    aug, rng, draws = augmenter({"llm_rewrite": 0.2}, store), random.Random(0), 5000
    outputs = [aug(ORIGINAL, 1, rng) for _ in range(draws)]
    share = sum(out != ORIGINAL for out in outputs) / draws
    assert abs(share - 0.2) < 4 * math.sqrt(0.2 * 0.8 / draws)
    assert set(outputs) == {ORIGINAL, *REWRITES}  # never the rejected try, never the back translation
    # the rewrite is drawn uniformly among the caption's accepted ones
    assert abs(outputs.count(REWRITES[0]) / (share * draws) - 0.5) < 0.1


def test_bss_is_the_papers_rule_on_the_drawn_number(store):
    """T* = T_aug if r <= beta else T_ori, with r the first number the sample's rng draws."""
    aug, beta = augmenter({"llm_rewrite": 0.3}, store), 0.3
    for seed in range(200):
        r = random.Random(seed).random()
        out = aug(ORIGINAL, 1, random.Random(seed))
        assert (out in REWRITES) == (r <= beta), seed


def test_beta_1_always_uses_a_rewrite_when_there_is_one(store):
    aug = augmenter({"llm_rewrite": 1.0}, store)
    assert {aug(ORIGINAL, 1, random.Random(seed)) for seed in range(50)} == set(REWRITES)
    assert aug("a caption without rewrites.", 2, random.Random(0)) == "a caption without rewrites."


def test_no_ops_leave_the_caption_unchanged(store):
    aug = augmenter({})
    assert aug.store_steps == [] and aug.steps == []
    assert aug(ORIGINAL, 1, random.Random(0)) == ORIGINAL


def test_one_draw_per_store_op_whether_or_not_the_caption_has_a_rewrite(store):
    aug = augmenter({"llm_rewrite": 0.5, "back_translation": 0.5}, store)
    for caption_id, stored in ((1, ([BT], REWRITES)), (99, ([], []))):  # 99 has no stored text
        for seed in range(50):
            rng, reference = random.Random(seed), random.Random(seed)
            aug(ORIGINAL, caption_id, rng)
            for texts in stored:  # back translation first, then the LLM rewrite
                if reference.random() < 0.5 and texts:
                    reference.choice(texts)
            assert rng.getstate() == reference.getstate(), (caption_id, seed)


def test_back_translation_alone_behaves_as_before(store):
    """Bit-identical to TBPS-CLIP's back translation: one draw, then the choice, then the EDA ops."""
    ops = {"back_translation": 0.4, "random_swap": 0.3, "random_deletion": 0.2}
    aug = augmenter(ops, store)
    for seed in range(100):
        rng = random.Random(seed)
        expected = ORIGINAL
        if rng.random() < 0.4:
            expected = rng.choice([BT])
        expected = OPERATIONS["random_swap"](expected, 0.3, rng)
        expected = OPERATIONS["random_deletion"](expected, 0.2, rng)
        assert aug(ORIGINAL, 1, random.Random(seed)) == expected, seed


def test_the_llm_rewrite_wins_when_both_store_ops_fire(store):
    aug = augmenter({"back_translation": 1.0, "llm_rewrite": 1.0}, store)
    assert {aug(ORIGINAL, 1, random.Random(seed)) for seed in range(30)} == set(REWRITES)


def test_bss_is_seeded_reproducible_and_picklable(store):
    aug = augmenter({"llm_rewrite": 0.5, "random_deletion": 0.1}, store)
    copy = pickle.loads(pickle.dumps(aug))
    first = [aug(ORIGINAL, 1, random.Random(seed)) for seed in range(40)]
    assert first == [copy(ORIGINAL, 1, random.Random(seed)) for seed in range(40)]
    assert first == [aug(ORIGINAL, 1, random.Random(seed)) for seed in range(40)]
    assert len(set(first)) > 5


def test_captions_without_a_rewrite_are_counted(store, caplog):
    with caplog.at_level(logging.WARNING, logger="tbpr.text.augment"):
        TextAugmenter(TextAugConfig(ops={"llm_rewrite": 0.2}, stores=[store]), caption_ids=[1, 2, 3, 4])
    assert "3 of 4 captions have no LLM rewrite" in caplog.text


def test_store_select_all_is_the_first_output_only_the_faithfulness_filter_rejected(ablation_store):
    assert accepted_texts([ablation_store], "llm_rewrite") == {
        5: ["a woman with a red jacket."],
        8: ["a person in grey."],
    }
    assert accepted_texts([ablation_store], "llm_rewrite", select="all") == {
        5: ["a man in blue."],  # not the failure, not the echo of the prompt
        6: ["a woman in a blue jacket."],
        8: ["a person in grey."],
    }  # key 7 has only basic rejections


def test_min_similarity_requires_a_score_and_says_what_it_left_out(ablation_store, caplog):
    with caplog.at_level(logging.WARNING, logger="tbpr.data.caption_store"):
        texts = accepted_texts([ablation_store], "llm_rewrite", select="all", min_similarity=0.8)
    assert texts == {5: ["a woman with a red jacket."], 6: ["a woman in a blue jacket."]}
    assert "1 llm_rewrite record(s) have no similarity score" in caplog.text  # key 8
    assert accepted_texts([ablation_store], "llm_rewrite", min_similarity=0.85) == {}


def test_selection_options_reach_the_augmenter(ablation_store):
    aug = augmenter({"llm_rewrite": 1.0}, ablation_store, store_select="all", min_similarity=0.4)
    assert aug(ORIGINAL, 5, random.Random(0)) == "a man in blue."
    assert aug(ORIGINAL, 8, random.Random(0)) == ORIGINAL  # unscored: left out
    with pytest.raises(DataError, match=r"no accepted llm_rewrite record with similarity >= 0\.95"):
        augmenter({"llm_rewrite": 0.2}, ablation_store, min_similarity=0.95)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"ops": {"llm_rewrite": 0.2}},
            r"data\.text_augment\.ops\.llm_rewrite needs data\.text_augment\.stores",
        ),
        ({"expand": True}, r"data\.text_augment\.expand needs data\.text_augment\.stores"),
        ({"ops": {"llm_rewrite": 1.2}, "stores": ["s"]}, r"data\.text_augment\.ops\.llm_rewrite: alpha"),
        (
            {"stores": ["s"], "store_select": "some"},
            r"data\.text_augment\.store_select='some': expected one of",
        ),
        ({"stores": ["s"], "min_similarity": 1.5}, r"data\.text_augment\.min_similarity=1\.5"),
    ],
)
def test_config_errors_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(TextAugConfig, data, "data.text_augment")


def test_expand_without_ops_and_with_a_store_op_are_valid(caplog):
    with caplog.at_level(logging.WARNING, logger="tbpr.text.augment"):
        TextAugConfig(stores=["s.jsonl"], expand=True)
        TextAugConfig(ops={"llm_rewrite": 0.2}, stores=["s.jsonl"], expand=True)
    assert "unused" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="tbpr.text.augment"):
        TextAugConfig(ops={"random_swap": 0.1}, stores=["s.jsonl"])
    assert "the stores are unused" in caplog.text


def test_expand_manifest_adds_rewrites_as_captions_of_the_same_image(synth_tiny):
    train = load_training_manifest(synth_tiny).split("train")
    first, second = train.captions[0], train.captions[3]
    texts = {first.id: ["rewrite a", "rewrite b"], second.id: ["rewrite c"], 10**6: ["not in this split"]}
    expanded = expand_manifest(train, texts)
    top = max(c.id for c in train.captions)
    assert expanded.captions[: len(train.captions)] == train.captions
    extra = expanded.captions[len(train.captions) :]
    assert [(c.id, c.image_id, c.text, c.source) for c in extra] == [
        (top + 1, first.image_id, "rewrite a", "llm_rewrite"),
        (top + 2, first.image_id, "rewrite b", "llm_rewrite"),
        (top + 3, second.image_id, "rewrite c", "llm_rewrite"),
    ]
    assert expanded.caption_pids()[-1] == train.image(second.image_id).pid
    assert [c.id for c in expand_manifest(train, texts, start_id=5000).captions[-3:]] == [5000, 5001, 5002]
    assert len(train.captions) == len(expanded.captions) - 3  # the input is not modified


def test_trainer_expands_the_training_split_from_a_store_in_the_dataset_folder(tmp_path, synth_tiny):
    manifest = load_training_manifest(synth_tiny)
    train = manifest.split("train")
    chosen = train.captions[:4]
    lines = [record(c.id, 0, f"rewrite of {c.id}.") for c in chosen]
    lines.append(record(chosen[0].id, 1, "rejected.", accepted=False, reason="similarity 0.2 < alpha 0.6"))
    store = tmp_path / "data" / "rewrites.jsonl"
    store.parent.mkdir()
    write_store(store, lines)
    overrides = [
        "model.arch=tbpr-micro",
        "model.image_size=[64, 32]",
        "data.batch_size=8",
        "data.num_workers=0",
        f"data.path={synth_tiny}",
        f"output_dir={tmp_path / 'run'}",
        # relative to data.path
        f"data.text_augment={{stores: [{os.path.relpath(store, synth_tiny)}], expand: true}}",
    ]
    trainer = Trainer(load_config("cpu-small", overrides))
    captions = trainer.train_split.captions
    assert len(captions) == len(train.captions) + 4
    start = max(c.id for c in manifest.captions) + 1
    assert [(c.id, c.image_id, c.text) for c in captions[-4:]] == [
        (start + i, c.image_id, f"rewrite of {c.id}.") for i, c in enumerate(chosen)
    ]
    assert len(trainer.loader.dataset) == len(captions)
    assert trainer.loader.dataset.dataset.text_augment is None  # expansion alone: no BSS
    # with BSS as well, the original captions are still replaced by their rewrites
    overrides[-1] = overrides[-1].replace("expand: true", "expand: true, ops: {llm_rewrite: 1.0}")
    bss = Trainer(load_config("cpu-small", overrides)).loader.dataset.dataset.text_augment
    assert bss(chosen[1].text, chosen[1].id, random.Random(0)) == f"rewrite of {chosen[1].id}."
    assert bss(captions[-1].text, captions[-1].id, random.Random(0)) == captions[-1].text
