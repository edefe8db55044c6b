"""``tbpr data from-captions``: a training set from a caption store, each image its own identity, and the
``per_image`` sampler that draws one caption per image per epoch."""

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from tbpr.cli import main
from tbpr.data import read_dataset
from tbpr.data.caption_store import CaptionStore, StoreRecord
from tbpr.data.from_captions import build_from_captions
from tbpr.data.samplers import PerImageBatchSampler
from tbpr.errors import DataError
from tbpr.generate.text.caption import METHOD, image_id


def _record(rel, n, text, accepted=True, model="m1", method=METHOD):
    return StoreRecord(
        key=f"{image_id(rel)}:{n}",
        caption_id=image_id(rel),
        text=text,
        source_text=rel,
        method=method,
        backend="openai",
        model=model,
        languages=["en"],
        settings={},
        attempt=1,
        accepted=accepted,
        reason=None if accepted else "refusal",
        extra={"image": rel},
    )


@pytest.fixture
def captioned(tmp_path):
    """Twelve images and a store: image i has i % 3 + 1 accepted captions from two captioners, image 0 also
    a rejected and a duplicate one; "gone.jpg" is captioned but missing, "none.jpg" has no accepted one."""
    root = tmp_path / "imgs"
    rels = [f"p{i // 4}/{i}.jpg" for i in range(12)]
    for i, rel in enumerate(rels):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 64), (20 * i, 50, 100)).save(root / rel)
    Image.new("RGB", (32, 64)).save(root / "none.jpg")
    records = []
    for i, rel in enumerate(rels):
        for j in range(i % 3 + 1):
            records.append(_record(rel, j, f"Person {i} caption {j} wears a red coat.", model=f"m{j % 2}"))
    records += [
        _record(rels[0], 7, "I am sorry.", accepted=False),
        _record(rels[0], 8, "Person 0 caption 0 wears a red coat."),  # same text from another captioner
        _record(rels[1], 9, "A rewrite.", method="llm_rewrite"),
        _record("gone.jpg", 0, "A person who is not there."),
        _record("none.jpg", 0, "Je suis desole.", accepted=False),
    ]
    store = tmp_path / "caps.jsonl"
    CaptionStore(store).append(records)
    return store, root, rels


def test_each_image_is_its_own_identity(captioned, tmp_path):
    store, root, rels = captioned
    summary = build_from_captions(store, root, tmp_path / "ds")
    assert (summary.images, summary.captions, summary.without_captions, summary.missing) == (12, 24, 1, 1)
    manifest = read_dataset(tmp_path / "ds")
    assert manifest.name == "ds" and (tmp_path / "ds/imgs").resolve() == root.resolve()
    train = manifest.split("train")
    assert len(train.images) == 12 and train.num_ids() == 12
    assert len({im.pid for im in train.images}) == 12  # one identity per image
    by_path = {im.path: im.id for im in train.images}
    counts = Counter(c.image_id for c in train.captions)
    for i, rel in enumerate(rels):
        assert counts[by_path[rel]] == i % 3 + 1  # all accepted captions, duplicates and rejected ones not
    assert all(manifest.image_path(im).is_file() for im in manifest.images)


def test_limit_images_gives_nested_subsets(captioned, tmp_path):
    store, root, _ = captioned
    sets = []
    for n in (3, 6, 12, 50):
        build_from_captions(store, root, tmp_path / f"ds{n}", limit_images=n)
        sets.append({im.path for im in read_dataset(tmp_path / f"ds{n}").images})
    assert [len(s) for s in sets] == [3, 6, 12, 12]
    assert sets[0] < sets[1] < sets[2] == sets[3]
    lines = (tmp_path / "ds3/annotations.jsonl").read_text().splitlines()
    ids = [json.loads(line)["caption_id"] for line in lines]
    assert ids == sorted(ids)  # the stable pseudo-random order of the caption ids


def test_from_captions_command(captioned, tmp_path, capsys):
    store, root, _ = captioned
    out = tmp_path / "ds"
    argv = [
        "data",
        "from-captions",
        str(store),
        "--images",
        str(root),
        "--out",
        str(out),
        "--limit-images",
        "5",
    ]
    assert main(argv) == 0
    assert "5 images (identities)" in capsys.readouterr().out
    assert main(argv) == 0  # rerunning over the same folder is fine
    assert len(read_dataset(out).images) == 5
    (tmp_path / "other").mkdir()
    bad = ["data", "from-captions", str(store), "--images", str(tmp_path / "other"), "--out", str(out)]
    assert main(bad) == 2  # no captioned image there
    with pytest.raises(DataError, match="does not exist"):
        build_from_captions(tmp_path / "nope.jsonl", root, tmp_path / "x")


def test_per_image_sampler_draws_one_caption_per_image_per_epoch():
    image_of_caption = [i % 10 for i in range(10)] + [i for i in range(10) for _ in range(i % 3)]
    sampler = PerImageBatchSampler(image_of_caption, batch_size=4, seed=3, drop_last=False)
    assert len(sampler) == 3
    drawn = Counter()
    for epoch in range(60):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(image_of_caption[i] for i in flat) == list(range(10))  # each image exactly once
        drawn.update(flat)
    assert set(drawn) == set(range(len(image_of_caption)))  # every caption gets its turn
    sampler.set_epoch(5)
    again = PerImageBatchSampler(image_of_caption, batch_size=4, seed=3, drop_last=False)
    again.set_epoch(5)
    assert [list(b) for b in again.global_batches()] == [list(b) for b in sampler.global_batches()]
    ranks = [PerImageBatchSampler(image_of_caption, 4, seed=3, rank=r, world_size=2) for r in (0, 1)]
    split = [list(r) for r in ranks]
    assert [a + b for a, b in zip(*split)] == [list(b) for b in ranks[0].global_batches()]
    assert np.all([len(b) == 2 for b in split[0]])


@pytest.mark.slow
@pytest.mark.parametrize("masking", ["none", "nam"])
def test_training_uses_one_caption_per_image(captioned, tmp_path, caplog, masking):
    """Short training runs on a from-captions set with the data.sampler=per_image option (plain, and with
    NAM): an epoch has images // batch_size steps whatever the number of captions."""
    from tbpr.train import load_config, train

    store, root, _ = captioned
    build_from_captions(store, root, tmp_path / "ds")
    overrides = [
        "model.arch=tbpr-micro",
        "model.image_size=[64, 32]",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.sampler=per_image",
        "optim.epochs=2",
        "eval_every=0",
        f"masking.mode={masking}",
        f"data.path={tmp_path / 'ds'}",
        f"output_dir={tmp_path / 'run'}",
    ]
    with caplog.at_level("INFO", logger="tbpr.train.engine"):
        train(load_config("cpu-small", overrides))
    assert "24 captions, 12 ids, 3 steps/epoch" in caplog.text  # 12 images // 4, not 24 captions // 4
