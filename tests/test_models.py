import os
import subprocess
import sys

import pytest
import torch

from tbpr.errors import ConfigError
from tbpr.models import DualEncoder, ModelConfig, load_model, save_model


def micro(**kw) -> ModelConfig:
    return ModelConfig(arch="tbpr-micro", image_size=kw.pop("image_size", (64, 32)), **kw)


@pytest.fixture(scope="module")
def model() -> DualEncoder:
    torch.manual_seed(0)
    return DualEncoder(micro()).eval()


def test_encoders_return_normalized_features(model):
    images = torch.randn(3, 3, 64, 32)
    tokens = torch.randint(1, 1000, (3, 77))
    tokens[:, 10] = 49407
    out = model(images, tokens)
    assert out["image_feats"].shape == (3, 64) and out["text_feats"].shape == (3, 64)
    assert torch.allclose(out["image_feats"].norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out["text_feats"].norm(dim=-1), torch.ones(3), atol=1e-5)


def test_temperature_fixed_or_learnable():
    fixed = DualEncoder(micro(temperature=0.02))
    assert fixed.logit_scale.item() == pytest.approx(50.0, rel=1e-5)
    assert not any(p.requires_grad for p in fixed.temperature.parameters())
    learn = DualEncoder(micro(temperature=0.07, learnable_temperature=True))
    assert learn.temperature.log_scale.requires_grad
    assert learn.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_non_square_input_sets_patch_grid():
    m = DualEncoder(micro(image_size=(96, 32)))
    assert tuple(m.clip.visual.grid_size) == (6, 2)
    assert m.encode_image(torch.randn(1, 3, 96, 32)).shape == (1, 64)


def test_token_features_of_any_layer(model):
    images = torch.randn(2, 3, 64, 32)
    tokens = torch.randint(1, 1000, (2, 77))
    feats = model.token_features(images, tokens, image_layer=0, text_layer=1)
    assert feats["image"].shape == (2, 1 + 4 * 2, 64)  # CLS + 4x2 patches, projected to embed dim
    assert feats["text"].shape == (2, 77, 64)
    raw = model.token_features(images, None, image_layer=0, project=False, normalize=False)
    assert raw["image"].shape == (2, 9, 64) and "text" not in raw
    # the last layer's projected CLS token is the global image feature
    last = model.token_features(images, None, image_layer=-1)["image"][:, 0]
    assert torch.allclose(last, model.encode_image(images), atol=1e-5)
    with pytest.raises(ConfigError, match="out of range"):
        model.token_features(images, None, image_layer=5)


def test_save_and_load_tbpr_checkpoint(tmp_path, model):
    path = tmp_path / "m.pt"
    save_model(model, path)
    loaded = load_model(path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.config == model.config


def test_open_clip_weights_from_local_file_resize_position_embedding(tmp_path):
    torch.manual_seed(1)
    square = DualEncoder(micro(image_size=(64, 64)))
    path = tmp_path / "open_clip_weights.pt"
    torch.save(square.clip.state_dict(), path)
    tall = DualEncoder(micro(image_size=(128, 32), pretrained=str(path)))
    assert torch.equal(tall.clip.visual.conv1.weight, square.clip.visual.conv1.weight)
    assert torch.equal(tall.clip.token_embedding.weight, square.clip.token_embedding.weight)
    old = square.clip.visual.positional_embedding
    new = tall.clip.visual.positional_embedding
    assert new.shape == (1 + 8 * 2, 64) and old.shape == (1 + 4 * 4, 64)
    assert torch.equal(new[0], old[0])  # class token position kept, the grid interpolated
    # temperature comes from our config, not from the file
    assert tall.logit_scale.item() == pytest.approx(50.0, rel=1e-5)


def test_bad_arch_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not an open_clip architecture"):
        DualEncoder(ModelConfig(arch="ViT-X-99"))
    with pytest.raises(ConfigError, match="no such checkpoint"):
        DualEncoder(micro(pretrained=str(tmp_path / "missing.pt")))
    with pytest.raises(ConfigError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_text_padding_trim_gives_open_clip_features(model):
    tokens = torch.zeros(3, 77, dtype=torch.long)
    for row, length in enumerate((5, 12, 30)):
        tokens[row, 0] = 49406
        tokens[row, 1 : length - 1] = torch.randint(1, 1000, (length - 2,))
        tokens[row, length - 1] = 49407
    assert model._trim_padding
    ours = model.encode_text(tokens)
    reference = model.clip.encode_text(tokens, normalize=True)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    # the token features of the hooked layers keep the full context
    assert model.token_features(None, tokens, text_layer=0)["text"].shape[1] == 30


@pytest.mark.parametrize(("arch", "grid"), [("ViT-B-16", (24, 8)), ("ViT-B-32", (12, 4))])
def test_field_backbones_take_384x128_inputs(arch, grid):
    m = DualEncoder(ModelConfig(arch=arch, image_size=(384, 128))).eval()
    assert tuple(m.clip.visual.grid_size) == grid
    with torch.no_grad():
        assert m.encode_image(torch.randn(1, 3, 384, 128)).shape == (1, 512)


def test_unknown_pretrained_tag_is_a_clear_error():
    with pytest.raises(ConfigError, match="Known tags"):
        DualEncoder(micro(pretrained="no-such-tag"))


def test_offline_pretrained_tag_fails_with_advice_not_a_traceback(tmp_path, synth_tiny):
    env = dict(os.environ, HF_HUB_OFFLINE="1")  # read when huggingface_hub is imported: a fresh process
    cmd = [
        sys.executable,
        "-m",
        "tbpr",
        "train",
        "--config",
        "clip-sdm",
        "--data",
        str(synth_tiny),
        "--out",
        str(tmp_path / "run"),
        "--set",
        "model.arch=ViT-B-32",
        "--set",
        "model.image_size=[224, 224]",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "set model.pretrained to the file" in proc.stderr and "Traceback" not in proc.stderr
