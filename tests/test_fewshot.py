"""Few-shot sampling of training identities (``data.train_fraction`` / ``--train-fraction``)."""

from collections import defaultdict
from pathlib import Path

import pytest

from tbpr.cli import main
from tbpr.data.fewshot import sample_identities
from tbpr.data.schema import CaptionRecord, ImageRecord, Manifest
from tbpr.errors import ConfigError


def make_manifest(num_ids: int = 200) -> Manifest:
    """``num_ids`` identities with 1-3 images each and 2 captions per image; raw pids 7*i + 3."""
    images, captions = [], []
    for i in range(num_ids):
        for _ in range(1 + i % 3):
            image_id = len(images)
            images.append(ImageRecord(image_id, f"{i}/{image_id}.jpg", 7 * i + 3, "train"))
            captions += [CaptionRecord(len(captions) + k, image_id, f"person {i} view {k}") for k in range(2)]
    return Manifest("toy", Path("imgs"), images, captions)


def images_by_pid(manifest: Manifest) -> dict[int, set[int]]:
    groups = defaultdict(set)
    for rec in manifest.images:
        groups[rec.pid].add(rec.id)
    return groups


@pytest.mark.parametrize(("fraction", "count"), [(0.01, 2), (0.05, 10), (0.1, 20), (1.0, 200), (0.001, 1)])
def test_keeps_round_fraction_of_identities_at_least_one(fraction, count):
    assert sample_identities(make_manifest(), fraction, seed=0).num_ids() == count


def test_identities_are_kept_whole_with_all_their_captions():
    full = make_manifest()
    few = sample_identities(full, 0.1, seed=1)
    originals = images_by_pid(full)
    kept_ids = {rec.id for rec in few.images}
    for image_ids in images_by_pid(few).values():
        (original,) = [pid for pid, ids in originals.items() if ids & image_ids]  # one source identity
        assert image_ids == originals[original]  # all of its images
    assert {c.id for c in few.captions} == {c.id for c in full.captions if c.image_id in kept_ids}
    assert full.images == make_manifest().images  # the input is not modified


def test_person_ids_are_contiguous_in_original_order():
    full = make_manifest()
    few = sample_identities(full, 0.05, seed=2)
    assert sorted(images_by_pid(few)) == list(range(10))
    raw_pid = {rec.id: rec.pid for rec in full.images}
    order = sorted({(raw_pid[rec.id], rec.pid) for rec in few.images})
    assert [new for _, new in order] == list(range(10))


def test_seeded_sampling():
    full = make_manifest()

    def chosen(seed):
        return {rec.id for rec in sample_identities(full, 0.05, seed).images}

    assert chosen(0) == chosen(0)
    assert chosen(0) != chosen(1)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fraction_outside_unit_interval_is_a_config_error(fraction):
    with pytest.raises(ConfigError, match="data.train_fraction"):
        sample_identities(make_manifest(), fraction, seed=0)


def test_train_fraction_flag_sets_the_config(monkeypatch, tmp_path):
    import tbpr.train

    seen = {}

    def fake_train(cfg, resume):
        seen["fraction"] = cfg.data.train_fraction
        return tmp_path

    monkeypatch.setattr(tbpr.train, "train", fake_train)
    assert main(["train", "--config", "cpu-small", "--out", str(tmp_path), "--train-fraction", "0.05"]) == 0
    assert seen["fraction"] == 0.05
