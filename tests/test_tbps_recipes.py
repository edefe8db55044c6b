"""TBPS-CLIP recipes in the engine: shipped configs load and train, views, soft-label ramp, few-shot, init.pt."""

import json
import shutil

import pytest
import torch

from tbpr.data import read_dataset
from tbpr.data.datasets import CaptionPairDataset
from tbpr.data.tokenizer import Tokenizer
from tbpr.data.transforms import build_image_transform
from tbpr.errors import ConfigError
from tbpr.models import load_model
from tbpr.train import load_config, train
from tbpr.train.engine import Trainer

RECIPES = ["clip-baseline", "tbps-clip", "tbps-clip-simplified"]
MICRO = [
    "model.arch=tbpr-micro",
    "model.image_size=[64, 32]",
    "data.batch_size=8",
    "data.num_workers=0",
    "log_every=1",
    "eval_every=0",
]


@pytest.mark.parametrize("name", [*RECIPES, *(f"{r}-small" for r in RECIPES)])
def test_shipped_recipes_load(name):
    cfg = load_config(name)
    assert cfg.optim.lr == pytest.approx(1e-4 if not name.endswith("-small") else 5e-4)
    if name.startswith("tbps-clip"):
        assert cfg.model.text_attn_dropout == 0.05 and cfg.model.freeze == ["clip.visual.conv1"]
        assert cfg.loss_params.soft_label == 0.5 and cfg.data.augment.mode == "pool"
        assert set(cfg.losses) >= {"n_itc", "r_itc"}
    if name.startswith("tbps-clip") and "simplified" not in name:
        assert cfg.model.ss_heads == ["image"]  # derived from the ss_i loss
        assert set(cfg.losses) == {"n_itc", "mvs_i", "ss_i", "r_itc", "c_itc"}


@pytest.mark.parametrize("name", [f"{r}-small" for r in RECIPES])
def test_small_recipes_train_a_step(tmp_path, synth_tiny, name):
    cfg = load_config(
        name, [*MICRO, f"data.path={synth_tiny}", f"output_dir={tmp_path / name}", "max_steps=2"]
    )
    run = train(cfg)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    terms = {k for r in records if r["kind"] == "train" for k in r}
    assert set(cfg.losses) <= terms
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if r["kind"] == "train")
    # the starting weights are kept for module analysis, and differ from the trained ones
    init = load_model(run / "checkpoints/init.pt").state_dict()
    last = load_model(run / "checkpoints/last.pt").state_dict()
    assert init.keys() == last.keys()
    assert any(not torch.equal(init[k], last[k]) for k in init)


def test_second_views_are_encoded_only_when_a_loss_needs_them(synth_tiny):
    train_split = read_dataset(synth_tiny).split("train")
    transform = build_image_transform((64, 32), train=True)
    tok = Tokenizer(77)
    plain = CaptionPairDataset(train_split, transform, tok)[0]
    assert "image2" not in plain and "tokens2" not in plain
    both = CaptionPairDataset(
        train_split,
        transform,
        tok,
        image_views=2,
        text_views=2,
        text_augment=lambda t, i, rng: f"{t} {rng.random()}",
    )
    torch.manual_seed(0)
    sample = both[0]
    assert sample["image2"].shape == sample["image"].shape
    assert not torch.equal(sample["tokens"], sample["tokens2"])  # each view augmented independently
    torch.manual_seed(0)
    again = both[0]
    assert torch.equal(sample["tokens2"], again["tokens2"])  # reproducible under the per-sample seed


def test_trainer_wires_views_heads_and_soft_label_ramp(tmp_path, synth_tiny):
    cfg = load_config(
        "cpu-small",
        [
            *MICRO,
            f"data.path={synth_tiny}",
            f"output_dir={tmp_path}",
            "losses={n_itc: 1, ss_it: 0.4, mvs_i: 0.5}",
            "loss_params.soft_label=0.4",
            "data.text_augment.ops={random_swap: 0.2}",
        ],
    )
    trainer = Trainer(cfg)
    assert trainer.forward.ss_towers == ["image", "text"]
    assert trainer.loader.dataset.dataset.image_views == 2 and trainer.loader.dataset.dataset.text_views == 2
    batch = next(iter(trainer.loader))
    out = trainer.forward({k: batch[k] for k in ("image", "image2", "tokens", "tokens2")})
    assert set(out["ss"]) == {"image", "image2", "text", "text2"}
    assert out["image2"].shape == out["image"].shape
    # alpha ramps linearly from 0 over the first epoch, then stays
    steps = trainer.steps_per_epoch
    for step, expected in (
        (0, 0.0),
        (steps // 2, 0.4 * (steps // 2) / steps),
        (steps, 0.4),
        (3 * steps, 0.4),
    ):
        trainer.global_step = step
        assert trainer.soft_label_alpha() == pytest.approx(expected)
    trainer.cfg.loss_params.soft_label_ramp = False
    trainer.global_step = 0
    assert trainer.soft_label_alpha() == pytest.approx(0.4)


def test_train_fraction_keeps_whole_identities(tmp_path, synth_tiny):
    full = read_dataset(synth_tiny).split("train")
    cfg = load_config(
        "cpu-small", [*MICRO, f"data.path={synth_tiny}", f"output_dir={tmp_path}", "data.train_fraction=0.5"]
    )
    trainer = Trainer(cfg)
    kept = trainer.train_split
    assert kept.num_ids() == round(0.5 * full.num_ids())
    kept_ids = {rec.id for rec in kept.images}
    by_pid: dict[int, set[int]] = {}
    for rec in full.images:
        by_pid.setdefault(rec.pid, set()).add(rec.id)
    assert all(ids <= kept_ids or not ids & kept_ids for ids in by_pid.values())  # no identity split
    assert sorted({rec.pid for rec in kept.images}) == list(range(kept.num_ids()))  # contiguous pids
    with pytest.raises(ConfigError, match="train_fraction"):
        load_config("cpu-small", ["data.train_fraction=0"])


def test_back_translations_come_from_a_store_inside_the_dataset_folder(tmp_path, synth_tiny):
    from tbpr.data.caption_store import CaptionStore, StoreRecord, record_key, utc_now

    data = tmp_path / "data"
    shutil.copytree(synth_tiny, data)
    captions = read_dataset(data).split("train").captions
    CaptionStore(data / "bt.jsonl").append(
        [
            StoreRecord(
                key=record_key(c.id),
                caption_id=c.id,
                text=f"translated caption number {c.id}",
                source_text=c.text,
                method="back_translation",
                backend="test",
                model="none",
                languages=["en", "fr", "en"],
                settings={},
                attempt=1,
                accepted=True,
                reason=None,
                created=utc_now(),
            )
            for c in captions
        ]
    )
    overrides = [*MICRO, f"data.path={data}", f"output_dir={tmp_path / 'run'}"]
    overrides.append("data.text_augment={ops: {back_translation: 1.0}, stores: [bt.jsonl]}")
    trainer = Trainer(load_config("cpu-small", overrides))
    pairs = trainer.loader.dataset.dataset
    tokenizer = Tokenizer(77)
    for index in (0, 5):
        caption_id = pairs.manifest.captions[index].id
        assert tokenizer.decode(pairs[index]["tokens"]) == f"translated caption number {caption_id}"


def test_init_checkpoint_can_be_turned_off(tmp_path, synth_tiny):
    cfg = load_config(
        "cpu-small",
        [*MICRO, f"data.path={synth_tiny}", f"output_dir={tmp_path}", "max_steps=1", "save_init=false"],
    )
    run = train(cfg)
    assert (run / "checkpoints/last.pt").exists() and not (run / "checkpoints/init.pt").exists()
