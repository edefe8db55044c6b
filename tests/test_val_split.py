"""A validation split carved from the training identities (``data.val_split``), e.g. for ICFG-PEDES."""

import json
import logging
from pathlib import Path

import pytest
import yaml

from micro import MICRO as TINY_MODEL
from tbpr.data import read_dataset
from tbpr.data.holdout import carve_validation, resolve_val_split
from tbpr.data.schema import CaptionRecord, ImageRecord, Manifest
from tbpr.errors import ConfigError, DataError
from tbpr.evaluation.run_eval import load_run
from tbpr.train import engine, load_config
from tbpr.train.engine import Trainer

MICRO = [
    *TINY_MODEL,
    "optim.warmup_epochs=0",
    "eval_every=1",
    "select_metric=mAP",
]


def toy(num_ids: int = 200, with_val: bool = False) -> Manifest:
    """``num_ids`` training identities (pids 0..N-1) with 1-3 images and 2 captions each; a val id if asked."""
    images, captions = [], []
    for i in range(num_ids + with_val):
        split = "val" if i == num_ids else "train"
        for _ in range(1 + i % 3):
            image_id = len(images)
            images.append(
                ImageRecord(image_id, f"{i}/{image_id}.jpg", i if split == "train" else 9000, split)
            )
            captions += [CaptionRecord(len(captions) + k, image_id, f"person {i} view {k}") for k in range(2)]
    return Manifest("toy", Path("imgs"), images, captions)


def original_pids(full: Manifest, part: Manifest) -> set[int]:
    return {full.image(rec.id).pid for rec in part.images}


def test_carved_identities_are_held_out_whole_and_never_trained_on():
    full = toy()
    train, val = carve_validation(full, 0.05, seed=0)
    assert val.num_ids() == 10 and train.num_ids() == 190  # round(5% of 200)
    assert not original_pids(full, train) & original_pids(full, val)
    assert original_pids(full, train) | original_pids(full, val) == set(range(200))
    for pid in original_pids(full, val):  # every image and caption of a held-out person is in val
        ids = {rec.id for rec in full.images if rec.pid == pid}
        assert ids <= {rec.id for rec in val.images}
    assert {c.id for c in val.captions} == {
        c.id for c in full.captions if c.image_id in {r.id for r in val.images}
    }
    assert len(train.captions) + len(val.captions) == len(full.captions)
    assert sorted({rec.pid for rec in train.images}) == list(range(190))  # training ids stay contiguous
    assert {rec.split for rec in val.images} == {"val"}


@pytest.mark.parametrize(("fraction", "count"), [(0.05, 10), (0.2, 40), (0.001, 1)])
def test_fraction_is_honoured(fraction, count):
    assert carve_validation(toy(), fraction, seed=3)[1].num_ids() == count


def test_the_draw_is_seeded():
    full = toy()
    first, again = (original_pids(full, carve_validation(full, 0.05, seed=1)[1]) for _ in range(2))
    assert first == again
    assert first != original_pids(full, carve_validation(full, 0.05, seed=2)[1])


def test_carving_every_identity_is_an_error():
    with pytest.raises(DataError, match="leaves none to train on"):
        carve_validation(toy(num_ids=1), 0.5, seed=0)


@pytest.mark.parametrize(
    ("source", "with_val", "used"),
    [
        ("auto", False, "carved"),
        ("auto", True, "dataset"),
        ("dataset", False, "dataset"),
        ("carved", True, "carved"),
    ],
)
def test_which_split_is_used(source, with_val, used):
    full = toy(with_val=with_val)
    cfg = load_config("cpu-small", [f"data.val_split.source={source}"]).data.val_split
    train, val, chosen = resolve_val_split(full, full.split("train"), cfg)
    assert chosen == used
    if used == "carved":
        assert val.num_ids() == 10 and train.num_ids() == 190
    else:
        assert val.images == full.split("val").images and train.images == full.split("train").images


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.val_split.fraction=0", r"data.val_split.fraction=0.0: expected a fraction in \(0, 1\)"),
        ("data.val_split.fraction=1", r"data.val_split.fraction=1.0: expected a fraction in \(0, 1\)"),
        (
            "data.val_split.source=test",
            r"data.val_split.source='test': expected one of auto, dataset, carved",
        ),
    ],
)
def test_bad_settings_are_refused_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("cpu-small", [override])


@pytest.fixture
def no_val(tmp_path, synth_tiny):
    """SynthPedes 'tiny' without its val split, like ICFG-PEDES (train and test only)."""
    root = tmp_path / "no-val"
    root.mkdir()
    records = json.loads((synth_tiny / "reid_raw.json").read_text())
    kept = [rec for rec in records if rec["split"] in ("train", "test")]
    assert len(kept) < len(records)
    (root / "reid_raw.json").write_text(json.dumps(kept))
    (root / "imgs").symlink_to(synth_tiny / "imgs")
    return root


@pytest.mark.slow
def test_training_without_a_val_split_carves_one_and_stops_early(tmp_path, no_val, monkeypatch, caplog):
    scores = iter([10.0, 9.0, 99.0])
    monkeypatch.setattr(
        engine,
        "score",
        lambda _e: {"t2i": {"R1": 1.0, "R5": 2.0, "R10": 3.0, "mAP": next(scores), "mINP": 0.5}},
    )
    overrides = [
        *MICRO,
        "optim.epochs=3",
        "early_stop_patience=1",
        "data.val_split.fraction=0.25",
        "data.train_fraction=0.5",
    ]
    cfg = load_config("cpu-small", [*overrides, f"data.path={no_val}", f"output_dir={tmp_path / 'run'}"])
    with caplog.at_level(logging.INFO, logger="tbpr.train.engine"):
        trainer = Trainer(cfg)
    full = read_dataset(no_val)
    train_ids, val_ids = original_pids(full, trainer.train_split), original_pids(full, trainer.val_split)
    assert len(val_ids) == round(0.25 * full.split("train").num_ids()) and not train_ids & val_ids
    assert train_ids and train_ids | val_ids <= {rec.pid for rec in full.split("train").images}
    assert "validating on 7 identities carved from the training split" in caplog.text
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["val_split"] == {"source": "carved", "fraction": 0.25, "seed": 0}

    run = trainer.train()
    kinds = [json.loads(line)["kind"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("val") == 2 and kinds.count("early_stop") == 1  # stopped after epoch 2 of 3
    # `tbpr eval --split val` and `tbpr analyze modules` score the run on the split it validated on
    assert load_run(run).split(no_val, "val").images == trainer.val_split.images


def test_a_run_that_never_validates_carves_nothing(tmp_path, no_val):
    cfg = load_config(
        "cpu-small", [*MICRO, "eval_every=0", f"data.path={no_val}", f"output_dir={tmp_path / 'run'}"]
    )
    trainer = Trainer(cfg)
    assert trainer.train_split.images == read_dataset(no_val).split("train").images
    assert not trainer.val_split.images and trainer.cfg.data.val_split.source == "dataset"


def test_source_dataset_never_carves_and_says_so(tmp_path, no_val, caplog):
    overrides = [
        *MICRO,
        "data.val_split.source=dataset",
        f"data.path={no_val}",
        f"output_dir={tmp_path / 'run'}",
    ]
    with caplog.at_level(logging.WARNING, logger="tbpr.train.engine"):
        trainer = Trainer(load_config("cpu-small", overrides))
    assert (
        trainer.train_split.images == read_dataset(no_val).split("train").images
        and not trainer.val_split.images
    )
    assert (
        "has no validation split and data.val_split.source=dataset: 'best' will be the final model"
        in caplog.text
    )


def test_a_dataset_with_a_val_split_keeps_it(tmp_path, synth_tiny):
    cfg = load_config("cpu-small", [*MICRO, f"data.path={synth_tiny}", f"output_dir={tmp_path / 'run'}"])
    trainer = Trainer(cfg)
    full = read_dataset(synth_tiny)
    assert trainer.val_split.images == full.split("val").images
    assert trainer.train_split.images == full.split("train").images
    assert (
        yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["val_split"]["source"]
        == "dataset"
    )


@pytest.mark.parametrize("grid", ["llmda-fig6-alpha", "llmda-fig7-beta"])
def test_the_llmda_sweeps_name_the_papers_dataset(grid):
    """LLM-DA ran its alpha and beta sweeps (Figs 6-7) on ICFG-PEDES, which needs the carved val split."""
    text = (Path(engine.__file__).parent.parent / "configs" / "grids" / f"{grid}.yaml").read_text()
    usage = [line for line in text.splitlines() if line.startswith("#") and "--data" in line]
    assert usage == [f"#   tbpr ablate {grid} --data PATH/TO/ICFG-PEDES"]
    assert "CUHK" not in text


def test_a_saved_resolved_source_matches_auto_but_not_another_setting():
    """config.yaml saves 'auto' resolved; resume and ablation status must not see that as a change."""
    from tbpr.config import to_dict
    from tbpr.train.config import config_differences

    new = to_dict(load_config("cpu-small"))
    saved = json.loads(json.dumps(new))
    saved["data"]["val_split"]["source"] = "carved"
    assert config_differences(saved, new) == {}
    explicit = json.loads(json.dumps(new))
    explicit["data"]["val_split"]["source"] = "dataset"
    assert config_differences(saved, explicit) == {"data.val_split.source": ("carved", "dataset")}
    explicit["seed"] = 5
    assert "seed" not in config_differences(saved, explicit, frozenset({"seed"}))
