"""SynthPedes: layout, determinism, captions, ground truth, noise, hard negatives, splits, CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tbpr.data.readers import read_dataset
from tbpr.data.synthpedes import generate
from tbpr.data.synthpedes import generation as gen_mod
from tbpr.data.synthpedes.attributes import (
    ATTRIBUTES,
    COLOURS,
    VOCABULARY,
    differing_attributes,
    is_valid,
    mutate_one,
    sample_attributes,
    sample_looks,
)
from tbpr.data.synthpedes.captions import Agree, Art, Slot, _draw_noise, make_caption, render, tokenize
from tbpr.data.synthpedes.render import render_image
from tbpr.data.synthpedes.scene import Scene, sample_scene, visible_attributes
from tbpr.data.synthpedes.vocabulary import FORMS
from tbpr.errors import ConfigError, DataError


def _load(out: Path) -> tuple[list[dict], dict]:
    rows = json.loads((out / "reid_raw.json").read_text())
    truth = json.loads((out / "attributes.json").read_text())
    return rows, truth


def _digest(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def _mentions(truth: dict) -> list[tuple[dict, dict]]:
    """(image info, mention) of every caption mention, each checked to name its span's words in one of its
    value's forms; more than five per image."""
    out = []
    for _, info, cap in _captions(truth):
        for m in cap["mentions"]:
            start, end = m["span"]
            assert cap["text"][start:end] == m["words"]
            assert m["words"] in FORMS[m["attribute"]][m["role"]][m["value"]]
            out.append((info, m))
    assert len(out) > 5 * len(truth["images"])
    return out


def _regenerated_with_noise(synth_tiny: Path, out: Path, **noise) -> tuple[list[dict], dict]:
    """``_load`` of a copy of ``synth_tiny`` regenerated in ``out`` with ``noise``, checking its images were reused."""
    shutil.copytree(synth_tiny, out)
    before = _digest(out / "imgs")
    generate(out, size="tiny", seed=0, overwrite=True, **noise)
    assert _digest(out / "imgs") == before  # images reused
    return _load(out)


def _captions(truth: dict):
    for file_path, info in truth["images"].items():
        for cap in info["captions"]:
            yield file_path, info, cap


# -- layout -----------------------------------------------------------------------------------------
def test_tiny_is_a_valid_cuhk_pedes_folder(synth_tiny):
    rows, truth = _load(synth_tiny)
    assert 120 <= len(rows) <= 160  # 40 ids x 3-4 images
    for row in rows:
        assert set(row) == {"split", "captions", "file_path", "processed_tokens", "id"}
        assert row["split"] in ("train", "val", "test")
        assert len(row["captions"]) == 2 and all(isinstance(c, str) for c in row["captions"])
        assert row["processed_tokens"] == [tokenize(c) for c in row["captions"]]
        assert all(
            t == t.lower() and re.fullmatch(r"[a-z0-9-]+", t)
            for toks in row["processed_tokens"]
            for t in toks
        )
        assert row["file_path"].startswith(f"{row['split']}/{row['id']:04d}/")
        assert (synth_tiny / "imgs" / row["file_path"]).is_file()
        assert row["file_path"] in truth["images"]
    with Image.open(synth_tiny / "imgs" / rows[0]["file_path"]) as img:
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (128, 256))
    assert sorted({r["id"] for r in rows}) == list(range(1, 41))
    assert len(list((synth_tiny / "imgs").rglob("*.jpg"))) == len(rows)
    assert not list(synth_tiny.rglob("*.tmp"))


def test_the_cuhk_pedes_reader_loads_it(synth_tiny):
    manifest = read_dataset(synth_tiny)
    rows, _ = _load(synth_tiny)
    assert len(manifest.images) == len(rows) and len(manifest.captions) == 2 * len(rows)
    train_pids = sorted({im.pid for im in manifest.images if im.split == "train"})
    assert train_pids == list(range(28))


def test_splits_are_disjoint_by_identity_with_train_first(synth_tiny):
    rows, truth = _load(synth_tiny)
    split_of: dict[int, set[str]] = {}
    for row in rows:
        split_of.setdefault(row["id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in split_of.values())
    counts = Counter(next(iter(s)) for s in split_of.values())
    assert counts == {"train": 28, "val": 4, "test": 8}
    assert {pid for pid, s in split_of.items() if s == {"train"}} == set(range(1, 29))
    assert all(truth["identities"][str(pid)]["split"] in s for pid, s in split_of.items())


# -- determinism --------------------------------------------------------------------------------------
def test_same_seed_gives_identical_files_whatever_the_worker_count(synth_tiny, tmp_path):
    generate(tmp_path / "again", size="tiny", seed=0, workers=2)
    assert _digest(tmp_path / "again") == _digest(synth_tiny)


def test_another_seed_gives_another_dataset(synth_tiny, tmp_path):
    other = gen_mod.plan_identities("tiny", 1)
    same = gen_mod.plan_identities("tiny", 0)
    assert [p.attributes for p in other] != [p.attributes for p in same]
    rows, _ = _load(synth_tiny)
    assert [p.attributes for p in same] == [
        json.loads((synth_tiny / "attributes.json").read_text())["identities"][str(p.pid)]["attributes"]
        for p in same
    ]
    assert len(rows) == sum(len(gen_mod.plan_images(p, "tiny", 0)) for p in same)


# -- captions -----------------------------------------------------------------------------------------
def test_captions_have_15_to_40_words_and_many_structures(synth_tiny):
    rows, truth = _load(synth_tiny)
    captions = [c for row in rows for c in row["captions"]]
    assert all(15 <= len(c.split()) <= 40 for c in captions)
    templates = set()
    for _, _, cap in _captions(truth):
        text = cap["text"]
        for m in sorted(cap["mentions"], key=lambda m: -m["span"][0]):
            text = text[: m["span"][0]] + "<" + m["attribute"] + ">" + text[m["span"][1] :]
        templates.add(text)
    assert len(templates) > 0.8 * len(captions)  # almost never the same sentence skeleton
    openings = Counter(" ".join(c.split()[:2]) for c in captions)
    assert len(openings) >= 10 and openings.most_common(1)[0][1] < 0.35 * len(captions)
    skeletons = {re.sub(r"<[a-z_]+>|\b(a|an|the|this)\b", "", t).split(".")[0] for t in templates}
    assert len(skeletons) >= 40


def test_upper_and_lower_garments_are_usually_mentioned(synth_tiny):
    _, truth = _load(synth_tiny)
    caps = list(_captions(truth))
    has = Counter(
        m["attribute"] for _, _, cap in caps for m in {m["attribute"]: m for m in cap["mentions"]}.values()
    )
    assert has["upper_type"] > 0.75 * len(caps) and has["lower_type"] > 0.8 * len(caps)
    assert has["upper_colour"] > 0.75 * len(caps) and has["lower_colour"] > 0.75 * len(caps)
    assert 0.1 * len(caps) < has["shoe_colour"] < 0.9 * len(caps)  # omitted in some captions


def test_mentions_match_caption_text_and_ground_truth(synth_tiny):
    _, truth = _load(synth_tiny)
    for info, m in _mentions(truth):
        assert m["noise"] is None and m["value"] == info["attributes"][m["attribute"]]
        assert m["attribute"] in info["visible"]


def test_only_visible_attributes_are_described():
    attrs = {**sample_attributes(np.random.default_rng(0)), "glasses": "yes", "upper_pattern": "logo"}
    back = sample_scene(np.random.default_rng(1), "back")
    assert "glasses" not in visible_attributes(attrs, back)
    assert "upper_pattern" not in visible_attributes(attrs, back)
    front = Scene(**{**back.to_json(), "view": "front", "occluder": "low"})
    assert {"glasses", "upper_pattern"} <= set(visible_attributes(attrs, front))
    assert "shoe_colour" not in visible_attributes(attrs, front)
    for seed in range(200):
        rng = np.random.default_rng(seed)
        text, mentions = make_caption(attrs, visible_attributes(attrs, back), "back", rng, 0.0, rng)
        assert not {"glasses", "upper_pattern"} & {m.attribute for m in mentions}


def test_articles_and_agreement_follow_the_noised_value():
    text, mentions = render(
        [
            Art(True),
            Slot("upper_colour", "orange", "adj"),
            Slot("upper_type", "jacket", "noun"),
            "and",
            Agree("lower_type", "a", ""),
            Slot("lower_type", "skirt", "noun"),
            ".",
        ]
    )
    assert text == "An orange jacket and a skirt."
    assert [(m.words, m.start, m.end) for m in mentions] == [
        ("orange", 3, 9),
        ("jacket", 10, 16),
        ("skirt", 23, 28),
    ]
    tokens = ["Her", Slot("lower_type", "skirt", "noun"), Agree("lower_type", "is", "are"), "black", "."]
    noisy_text, noisy = render(_draw_noise(tokens, 1.0, np.random.default_rng(0)))
    assert noisy[0].original == "skirt" and noisy[0].value in ("trousers", "jeans", "shorts")
    assert noisy_text == f"Her {noisy[0].words} are black."


def test_caption_noise_one_changes_every_word_and_zero_none(synth_tiny, tmp_path):
    rows, truth = _regenerated_with_noise(synth_tiny, tmp_path / "noisy", caption_noise=1.0)
    _, clean = _load(synth_tiny)
    for info, m in _mentions(truth):
        assert m["noise"] == {"original": info["attributes"][m["attribute"]], "new": m["value"]}
        assert m["value"] != m["noise"]["original"]
    assert [r["captions"] for r in rows] != [
        [c["text"] for c in i["captions"]] for i in clean["images"].values()
    ]
    assert truth["params"]["caption_noise"] == 1.0


def test_partial_caption_noise_rate():
    rng = np.random.default_rng(3)
    hit = total = 0
    for seed in range(300):
        attrs = sample_attributes(rng)
        scene = sample_scene(np.random.default_rng(seed), "front")
        _, mentions = make_caption(
            attrs,
            visible_attributes(attrs, scene),
            "front",
            np.random.default_rng(seed),
            0.3,
            np.random.default_rng(seed + 1000),
        )
        hit += sum(m.original is not None for m in mentions)
        total += len(mentions)
        assert all((m.original is None) == (m.value == attrs[m.attribute]) for m in mentions)
    assert abs(hit / total - 0.3) < 0.04


# -- pair noise ---------------------------------------------------------------------------------------------
def test_pair_noise_moves_captions_of_a_fraction_of_train_images_to_other_people(synth_tiny, tmp_path):
    rows, truth = _regenerated_with_noise(synth_tiny, tmp_path / "pairs", pair_noise=0.5)
    clean_rows, clean = _load(synth_tiny)
    assert truth["params"]["pair_noise"] == 0.5 and clean["params"]["pair_noise"] == 0.0
    assert [r["captions"] for r in rows] == [
        [c["text"] for c in truth["images"][r["file_path"]]["captions"]] for r in rows
    ]
    train = [f for f, info in truth["images"].items() if info["split"] == "train"]
    moved_images = {f for f in train if any(c["pair_noise"] for c in truth["images"][f]["captions"])}
    assert len(moved_images) == round(0.5 * len(train))
    sources = []
    for file_path, info, cap in _captions(truth):
        noise = cap["pair_noise"]
        if file_path not in moved_images:  # val, test and unchosen train images keep their own captions
            assert noise is None
            continue
        assert noise is not None and noise["id"] != info["id"]  # never the same identity
        origin = clean["images"][noise["file_path"]]
        assert origin["id"] == noise["id"] and noise["file_path"] in moved_images
        assert {**origin["captions"][noise["caption"]], "pair_noise": noise} == cap  # text and mentions
        sources.append((noise["file_path"], noise["caption"]))
    assert sorted(sources) == sorted((f, c) for f in moved_images for c in range(gen_mod.CAPTIONS_PER_IMAGE))
    assert all(c["pair_noise"] is None for _, _, c in _captions(clean))
    test_rows = [r for r in rows if r["split"] != "train"]
    assert test_rows == [r for r in clean_rows if r["split"] != "train"]
    # deterministic, and read by the ordinary reader with the moved captions
    generate(tmp_path / "again", size="tiny", seed=0, pair_noise=0.5)
    assert _load(tmp_path / "again") == (rows, truth)
    manifest = read_dataset(tmp_path / "pairs").split("train")
    assert {c.text for c in manifest.captions} == {
        c for r in rows if r["split"] == "train" for c in r["captions"]
    }


@pytest.mark.parametrize("seed", range(20))
def test_cross_identity_derangement_never_keeps_an_owner(seed):
    from tbpr.data.synthpedes.pair_noise import cross_identity_derangement

    rng = np.random.default_rng(seed)
    owners = rng.integers(0, 5, size=int(rng.integers(4, 30)))
    if 2 * np.bincount(owners).max() > len(owners):
        owners = np.array([0, 0, 1, 1, 2, 2, 3])
    perm = cross_identity_derangement(owners, rng)
    assert sorted(perm.tolist()) == list(range(len(owners)))
    assert (owners[perm] != owners).all()


def test_pair_noise_fraction_is_nested_and_infeasible_shuffles_are_refused():
    from tbpr.data.synthpedes.pair_noise import shuffle_pairs

    pids = [i // 4 for i in range(100)]  # 25 people x 4 images
    small, large = (shuffle_pairs(pids, 2, f, np.random.default_rng(7)) for f in (0.2, 0.6))
    assert len(small) == 2 * 20 and len(large) == 2 * 60
    assert {i for i, _ in small} <= {i for i, _ in large}
    assert all(pids[dest] != pids[src] for (dest, _), (src, _) in large.items())
    assert shuffle_pairs(pids, 2, 0.0, np.random.default_rng(0)) == {}
    with pytest.raises(ConfigError, match="pair_noise=0.001 moves none of the 100 training images"):
        shuffle_pairs(pids, 2, 0.001, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="pair_noise=0.5 moves the captions of 2 training images"):
        shuffle_pairs([1, 1, 1, 1], 2, 0.5, np.random.default_rng(0))  # two images, one person
    with pytest.raises(ConfigError, match="pair_noise"):
        generate(Path("unused"), pair_noise=-0.1)


def test_cli_synth_pair_noise(tmp_path, caplog):
    from tbpr.cli import main

    assert main(["synth", str(tmp_path / "bad"), "--pair-noise", "1.5"]) == 2
    assert "pair_noise=1.5 must be between 0 and 1" in caplog.text


# -- identities -----------------------------------------------------------------------------------------
def test_hard_negatives_differ_in_exactly_one_attribute_within_their_split(synth_tiny):
    _, truth = _load(synth_tiny)
    ids = truth["identities"]
    hard = [info for info in ids.values() if info["hard_negative_of"] is not None]
    for info in hard:
        source = ids[str(info["hard_negative_of"])]
        assert differing_attributes(info["attributes"], source["attributes"]) == [info["differs_in"]]
        assert source["split"] == info["split"]
    per_split = Counter(info["split"] for info in hard)
    assert per_split == {"train": 6, "val": 1, "test": 2}  # round(20%) of 28 / 4 / 8 identities
    keys = {tuple(info["attributes"][a] for a in ATTRIBUTES) for info in ids.values()}
    assert len(keys) == len(ids)  # all identities distinct


def test_mutate_one_keeps_combinations_valid():
    rng = np.random.default_rng(0)
    changed = Counter()
    for _ in range(500):
        attrs = sample_attributes(rng)
        assert is_valid(attrs)
        new, name = mutate_one(attrs, rng)
        assert is_valid(new) and differing_attributes(attrs, new) == [name]
        changed[name] += 1
    assert len(changed) == len(ATTRIBUTES)
    assert not is_valid({**attrs, "lower_type": "skirt", "gender": "man"})
    assert not is_valid({**attrs, "upper_type": "hoodie", "sleeve": "short"})
    assert not is_valid({**attrs, "bag": "none", "bag_colour": "red"})


# -- rendering ------------------------------------------------------------------------------------------
def _plain_scene(view: str) -> Scene:
    return Scene(
        view=view,
        height=0.85,
        x_offset=0.0,
        top=0.06,
        arm_swing=0.0,
        stride=0.5,
        bag_side=1,
        background="plain",
        horizon=0.6,
        bg_hue=200,
        occluder="none",
        occluder_pos=0.5,
        brightness=1.0,
        contrast=1.0,
        tint=(1.0, 1.0, 1.0),
        blur=0.0,
        noise_seed=1,
    )


def _patch(img: Image.Image, scene: Scene, x_heads: float, y_heads: float) -> np.ndarray:
    unit = scene.height * 256 / 7.7
    x = 64 + x_heads * unit
    y = scene.top * 256 + y_heads * unit
    return np.asarray(img, dtype=float)[round(y) - 2 : round(y) + 3, round(x) - 2 : round(x) + 3].mean(
        axis=(0, 1)
    )


def test_rendered_garments_have_their_attribute_colours():
    attrs = {
        **sample_attributes(np.random.default_rng(0)),
        "upper_colour": "red",
        "upper_pattern": "plain",
        "upper_type": "t-shirt",
        "lower_type": "trousers",
        "lower_colour": "blue",
        "bag": "backpack",
        "bag_colour": "yellow",
        "scarf": "no",
        "hair_style": "short",
    }
    looks = sample_looks(np.random.default_rng(0))
    front = render_image(attrs, looks, _plain_scene("front"))
    assert front.size == (128, 256) and front.mode == "RGB"
    tol = 45  # side lighting ramp, JPEG-free here
    assert np.abs(_patch(front, _plain_scene("front"), 0.0, 2.6) - COLOURS["red"]).max() < tol
    assert np.abs(_patch(front, _plain_scene("front"), -0.3, 5.5) - COLOURS["blue"]).max() < tol
    back = render_image(attrs, looks, _plain_scene("back"))
    assert np.abs(_patch(back, _plain_scene("back"), 0.0, 2.2) - COLOURS["yellow"]).max() < tol
    recoloured = render_image({**attrs, "upper_colour": "green"}, looks, _plain_scene("front"))
    assert np.abs(_patch(recoloured, _plain_scene("front"), 0.0, 2.6) - COLOURS["green"]).max() < tol
    assert np.array_equal(np.asarray(render_image(attrs, looks, _plain_scene("front"))), np.asarray(front))


# -- regeneration, atomicity, errors ----------------------------------------------------------------------
def test_regenerating_a_complete_folder_is_a_no_op(synth_tiny):
    stamps = {p: p.stat().st_mtime_ns for p in synth_tiny.rglob("*") if p.is_file()}
    assert generate(synth_tiny, size="tiny", seed=0) == synth_tiny / "reid_raw.json"
    assert {p: p.stat().st_mtime_ns for p in synth_tiny.rglob("*") if p.is_file()} == stamps


def test_other_settings_over_a_complete_folder_are_refused_unless_overwrite(synth_tiny, tmp_path, caplog):
    from tbpr.cli import main

    out = tmp_path / "data"
    shutil.copytree(synth_tiny, out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"other settings \(seed 0 -> 1\).*--overwrite"):
        generate(out, size="tiny", seed=1)
    caplog.clear()
    assert main(["synth", str(out), "--size", "small", "--caption-noise", "0.5"]) == 2
    (message,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "size 'tiny' -> 'small', caption_noise 0.0 -> 0.5" in message and "another folder" in message
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps  # nothing touched
    assert main(["synth", str(out), "--seed", "0"]) == 0  # the same settings: nothing to do
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
    assert main(["synth", str(out), "--seed", "1", "--overwrite"]) == 0
    assert json.loads((out / "synthpedes.json").read_text())["params"]["seed"] == 1
    assert _digest(out / "imgs") != _digest(synth_tiny / "imgs")


def test_an_interrupted_run_leaves_no_annotations_and_can_resume(tmp_path, monkeypatch):
    calls = []

    def failing(job):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(job)
        real(job)

    real = gen_mod._render_job
    monkeypatch.setattr(gen_mod, "_render_job", failing)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "out", size="tiny", seed=0, workers=1)
    assert not (tmp_path / "out" / "reid_raw.json").exists()
    assert not (tmp_path / "out" / "attributes.json").exists()
    assert json.loads((tmp_path / "out" / "synthpedes.json").read_text())["complete"] is False
    monkeypatch.setattr(gen_mod, "_render_job", real)
    rows = json.loads(generate(tmp_path / "out", size="tiny", seed=0, workers=1).read_text())
    assert all((tmp_path / "out" / "imgs" / r["file_path"]).is_file() for r in rows)


def test_refuses_foreign_folders_and_bad_parameters(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        generate(tmp_path, size="tiny")
    with pytest.raises(DataError, match="is a file"):
        generate(tmp_path / "notes.txt", size="tiny")
    with pytest.raises(ConfigError, match="caption_noise"):
        generate(tmp_path / "x", caption_noise=1.5)
    with pytest.raises(ConfigError, match="size"):
        generate(tmp_path / "x", size="huge")


def test_size_table():
    sizes = gen_mod.SIZES
    assert sizes["small"].identities * sizes["small"].images_per_id[0] == 2000
    assert (
        sizes["standard"].identities >= 2000
        and sizes["standard"].identities * sizes["standard"].images_per_id[0] >= 10000
    )
    assert gen_mod.split_counts(2500) == {"train": 1750, "val": 250, "test": 500}
    assert sizes["small-bigtest"].split_counts() == {"train": 350, "val": 50, "test": 1000}


def test_small_bigtest_trains_on_small_and_tests_on_ten_times_the_ids():
    small, big = (gen_mod.plan_identities(size, 0) for size in ("small", "small-bigtest"))
    seen = [p for p in big if p.split != "test"]
    assert seen == [p for p in small if p.split != "test"]  # same people, pids, attributes, looks
    assert all(gen_mod.plan_images(p, "small", 0) == gen_mod.plan_images(p, "small-bigtest", 0) for p in seen)
    assert sum(p.split == "test" for p in big) == 1000
    assert set(VOCABULARY["upper_colour"]) == set(COLOURS) and len(COLOURS) == 12


# -- CLI ----------------------------------------------------------------------------------------------------
def test_cli_synth(synth_tiny, tmp_path, capsys):
    from tbpr.cli import main

    out = tmp_path / "cli"
    shutil.copytree(synth_tiny, out)
    sheet = tmp_path / "sheet.png"
    assert main(["synth", str(out), "--size", "tiny", "--seed", "0", "--contact-sheet", str(sheet)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "reid_raw.json")
    with Image.open(sheet) as img:
        assert img.size[1] == 6 * 256
    assert main(["synth", str(tmp_path / "bad"), "--caption-noise", "2"]) == 2
    help_text = argparse.ArgumentParser()
    from tbpr.cli import synth_cmd

    synth_cmd.register(help_text.add_subparsers())
    assert all(a.help for a in help_text._subparsers._group_actions[0].choices["synth"]._actions)
