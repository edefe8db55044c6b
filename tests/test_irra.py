"""IRRA: the ID loss, the irra recipes, their optimizer groups, the unmasked text for SDM, the ID classifier
on fine-tuning, and a CPU smoke run."""

import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from micro import MICRO_LOGGED
from tbpr.data.schema import ImageRecord, Manifest
from tbpr.errors import ConfigError
from tbpr.losses import Views, compute_losses, id_loss
from tbpr.models import DualEncoder, ModelConfig, load_model
from tbpr.models.checkpoint import atomic_torch_save, model_payload
from tbpr.train import engine, load_config, train
from tbpr.train.init_from import load_init_weights
from tbpr.train.optim import build_optimizer

MICRO = [*MICRO_LOGGED, "model.pretrained=null"]


def test_id_loss_by_hand():
    ln3 = math.log(3)
    image = torch.tensor([[ln3, 0.0], [0.0, 0.0]])  # softmax rows [3/4, 1/4] and [1/2, 1/2]
    text = torch.tensor([[0.0, ln3], [0.0, ln3]])  # [1/4, 3/4] twice
    labels = torch.tensor([0, 1])
    image_ce = (-math.log(3 / 4) - math.log(1 / 2)) / 2
    text_ce = (-math.log(1 / 4) - math.log(3 / 4)) / 2
    assert id_loss(image, text, labels).item() == pytest.approx((image_ce + text_ce) / 2)
    views = Views(
        torch.eye(2), torch.eye(2), labels, 1.0, id_logits={"image": image, "text": text}, id_labels=labels
    )
    total, record = compute_losses({"id": 2.0}, views)
    assert record["id"] == pytest.approx((image_ce + text_ce) / 2) and total.item() == pytest.approx(
        image_ce + text_ce
    )


def test_irra_recipes_load():
    big, small = load_config("irra"), load_config("irra-small")
    for cfg in (big, small):
        assert cfg.losses == {"sdm": 1.0, "id": 1.0, "mlm": 1.0} and cfg.model.mlm_head
        assert (cfg.masking.mode, cfg.masking.p, cfg.masking.replace, cfg.masking.scope) == (
            "em",
            0.15,
            "bert",
            "mlm",
        )
        assert cfg.data.hflip and cfg.data.augment.ops == ["pad_crop", "irra_erasing"]
        assert cfg.data.sampler == "random" and cfg.data.batch_size == 64
        o = cfg.optim
        assert (o.name, o.weight_decay, o.mlm_lr_factor, o.id_lr_factor, o.bias_lr_factor) == (
            "adam",
            4e-5,
            5,
            5,
            2,
        )
    assert big.model.arch == "ViT-B-16" and big.model.image_size == (384, 128) and big.model.mlm_depth == 4
    assert big.model.temperature == 0.02 and not big.model.learnable_temperature
    o = big.optim
    assert (o.lr, o.eps, o.betas, o.epochs, o.warmup_epochs, o.min_lr) == (
        1e-5,
        1e-3,
        (0.9, 0.999),
        60,
        5.0,
        0.0,
    )
    with pytest.raises(ConfigError, match="masking.scope=mlm"):
        load_config("irra-small", ["losses.mlm=0"])
    with pytest.raises(ConfigError, match="optim.name='sgd'"):
        load_config("irra-small", ["optim.name=sgd"])


def test_irra_optimizer_groups():
    cfg = load_config("irra", [*MICRO])
    cfg.model.id_classes = 7
    model = DualEncoder(cfg.model)
    optimizer = build_optimizer(model, cfg.optim)
    assert type(optimizer) is torch.optim.Adam  # L2 weight decay, as IRRA's torch.optim.Adam
    assert optimizer.defaults["eps"] == 1e-3 and optimizer.defaults["betas"] == (0.9, 0.999)
    group = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    lr, wd = 1e-5, 4e-5
    expected = {
        "id_head.weight": (5 * lr, wd),  # randomly initialized: x5
        "id_head.bias": (5 * lr, 0.0),
        "mlm_head.cross_attn.in_proj_weight": (5 * lr, wd),
        "mlm_head.cross_attn.in_proj_bias": (5 * lr, 0.0),
        "mlm_head.predict.3.weight": (5 * lr, wd),
        "clip.visual.transformer.resblocks.0.mlp.c_fc.weight": (lr, wd),
        "clip.visual.transformer.resblocks.0.mlp.c_fc.bias": (2 * lr, 0.0),  # encoder biases: x2, no decay
        "clip.transformer.resblocks.0.attn.in_proj_bias": (2 * lr, 0.0),
        "clip.transformer.resblocks.0.attn.in_proj_weight": (lr, wd),
    }
    for name, (want_lr, want_wd) in expected.items():
        got_lr, got_wd = group[id(params[name])]
        assert got_lr == pytest.approx(want_lr) and got_wd == want_wd, name
    for name, p in params.items():  # every bias outside the heads: x2 without decay
        if name.endswith("bias") and not name.startswith(("id_head.", "mlm_head.")) and p.requires_grad:
            assert group[id(p)] == (pytest.approx(2 * lr), 0.0), name
    assert len(group) == sum(p.requires_grad for p in model.parameters())


def test_sdm_reads_the_unmasked_text_and_mlm_the_masked(tmp_path, synth_tiny, monkeypatch):
    """IRRA's own code masks the caption tensor in place, so SDM sees the masked text (its issue #29):
    here SDM and ID get the features of the unmasked caption and only the MLM head the masked one's."""
    cfg = load_config(
        "irra-small", [*MICRO, f"data.path={synth_tiny}", f"output_dir={tmp_path}", "max_steps=1"]
    )
    trainer = engine.Trainer(cfg)
    model = trainer.model
    masks, encoded, views_seen, mlm_inputs = [], [], [], []
    mask, encode_text, predict = trainer.masker.mask, model.global_text, model.predict_masked

    def keep_mask(tokens, indices, epoch):
        original = tokens.clone()
        masked, chosen = mask(tokens, indices, epoch)
        masks.append((original, masked, chosen))
        return masked, chosen

    def keep_encode(tokens):
        out = encode_text(tokens)
        encoded.append((tokens.clone(), out.detach().clone()))
        return out

    def keep_predict(text_tokens, image_tokens, positions=None):
        mlm_inputs.append(text_tokens.detach().clone())
        return predict(text_tokens, image_tokens, positions)

    real_losses = engine.compute_two_embeddings

    def keep_views(weights, views, tse, params, keep):
        views_seen.append(views)
        return real_losses(weights, views, tse, params, keep)

    monkeypatch.setattr(trainer.masker, "mask", keep_mask)
    monkeypatch.setattr(model, "global_text", keep_encode)
    monkeypatch.setattr(model, "predict_masked", keep_predict)
    monkeypatch.setattr(engine, "compute_two_embeddings", keep_views)
    trainer.train()
    (original, masked, chosen), (views,) = masks[0], views_seen
    assert chosen.any() and not torch.equal(original, masked)
    (unmasked_call, features), (masked_call, _) = encoded  # the loss forward, then the MLM forward
    assert torch.equal(unmasked_call, original) and torch.equal(masked_call, masked)
    assert torch.equal(views.text, features.float())  # SDM and ID read the unmasked caption's features
    assert set(views.id_logits) == {"image", "text"} and torch.equal(views.id_labels, views.pids)
    with (
        torch.no_grad()
    ):  # the MLM head read the last text block of the masked caption (weights before the step)
        trainer.model.load_state_dict(
            torch.load(tmp_path / "checkpoints/init.pt", weights_only=False)["model"]
        )
        expected = {
            name: model.token_features(tokens=tokens, text_layer=-1, project=False, normalize=False)["text"]
            for name, tokens in (("masked", masked), ("unmasked", original))
        }
    assert torch.allclose(mlm_inputs[0], expected["masked"], atol=1e-5)
    assert not torch.allclose(mlm_inputs[0], expected["unmasked"], atol=1e-3)


def test_the_id_classifier_starts_fresh_on_another_identity_count(tmp_path, caplog):
    def model(classes):
        torch.manual_seed(classes)
        return DualEncoder(ModelConfig(arch="tbpr-micro", image_size=(64, 32), id_classes=classes))

    source = model(5)
    source.id_head.weight.data.fill_(0.5)
    atomic_torch_save(model_payload(source), tmp_path / "source.pt")
    same = model(5)
    load_init_weights(same, tmp_path / "source.pt")
    assert torch.equal(same.id_head.weight, source.id_head.weight)
    other = model(7)
    fresh = other.id_head.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="tbpr.train.init_from"):
        load_init_weights(other, tmp_path / "source.pt")
    assert (
        torch.equal(other.id_head.weight, fresh)
        and "freshly initialized: id_head.* (2 tensors)" in caplog.text
    )
    assert torch.equal(other.clip.token_embedding.weight, source.clip.token_embedding.weight)
    load_init_weights(model(0), tmp_path / "source.pt")  # a recipe without the ID loss drops it


@pytest.mark.slow
def test_irra_small_trains_an_epoch(tmp_path, synth_tiny):
    run = train(
        load_config(
            "irra-small", [*MICRO, f"data.path={synth_tiny}", f"output_dir={tmp_path}", "optim.epochs=1"]
        )
    )
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert train_records and all(
        math.isfinite(r[k]) for r in train_records for k in ("sdm", "id", "mlm", "loss")
    )
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["id_classes"] == 28  # SynthPedes tiny's training identities
    assert load_model(run / "checkpoints/best.pt").id_head.out_features == 28


def test_the_id_loss_refuses_person_ids_that_are_not_classes():
    images = [ImageRecord(i, f"{i}.jpg", pid, "train") for i, pid in enumerate([0, 2, 2])]
    trainer = SimpleNamespace(train_split=Manifest("x", Path("."), images, []), cfg=load_config("irra-small"))
    with pytest.raises(ConfigError, match=r"losses.id needs training person ids 0..1, got 0..2"):
        engine.Trainer._id_classes(trainer)
    images[1:] = [ImageRecord(i, f"{i}.jpg", 1, "train") for i in (1, 2)]
    assert engine.Trainer._id_classes(trainer) == 2
