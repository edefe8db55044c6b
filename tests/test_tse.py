"""RDE's second embedding (model.tse): token selection, the head, the joint retrieval embedding, towers,
checkpoints, and a training run whose division, evaluation and index use both embeddings."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from micro import MICRO
from tbpr.errors import ConfigError
from tbpr.models import DualEncoder, ModelConfig
from tbpr.models.checkpoint import load_model, save_model
from tbpr.models.tse import SelectionHead, TseConfig, attention_row, select_tokens
from tbpr.train.optim import parameter_groups

MICRO_TSE = {"arch": "tbpr-micro", "image_size": (64, 32), "tse": TseConfig(ratio=0.3)}


def micro(**kw) -> DualEncoder:
    torch.manual_seed(0)
    return DualEncoder(ModelConfig(**{**MICRO_TSE, **kw})).eval()


def test_select_tokens_hand_case():
    attention = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.3], [0.4, 0.3, 0.2, 0.05, 0.05]])
    selectable = torch.tensor([[False, True, True, False, True], [False, True, False, False, False]])
    index, real = select_tokens(attention, selectable, k=2)
    # row 0: position 3 (0.9) is not selectable; the top two of {1: 0.5, 2: 0.2, 4: 0.3} are 1 and 4
    assert index[0].tolist() == [1, 4] and real[0].tolist() == [True, True]
    # row 1: one selectable token: it is kept, the second slot is not real
    assert index[1, 0] == 1 and real[1].tolist() == [True, False]


def test_attention_row_matches_multihead_attention_weights():
    torch.manual_seed(0)
    model = micro()
    block = model.text_blocks[-1]
    x = torch.randn(3, 7, block.attn.embed_dim)
    end = torch.tensor([6, 3, 5])
    causal = torch.full((7, 7), float("-inf")).triu(1)
    _, weights = block.attn(
        block.ln_1(x),
        block.ln_1(x),
        block.ln_1(x),
        attn_mask=causal,
        need_weights=True,
        average_attn_weights=True,
    )
    keys = torch.arange(7)[None, :] <= end[:, None]
    row = attention_row(block, x, end, keys)
    assert torch.allclose(row, weights[torch.arange(3), end], atol=1e-6)
    assert torch.allclose(row.sum(dim=1), torch.ones(3))


def test_selection_head_normalizes_and_max_pools_the_real_tokens_only():
    head = SelectionHead(2, 2)
    with torch.no_grad():  # Linear = identity, MLP output 0: the head is max-pooling of the normalized tokens
        head.linear.weight.copy_(torch.eye(2))
        head.linear.bias.zero_()
        head.mlp[-1].weight.zero_()
        head.mlp[-1].bias.zero_()
    head.eval()
    tokens = torch.tensor([[[3.0, 4.0], [1.0, 0.0], [0.0, 5.0]]])
    real = torch.tensor([[True, True, False]])
    # normalized (0.6, 0.8) and (1, 0); the third token (0, 1) would raise the second coordinate to 1
    assert head(tokens, real).tolist() == [[1.0, pytest.approx(0.8)]]


def test_joint_embedding_dot_product_is_the_mean_of_the_two_cosines():
    image = DualEncoder.embedding(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 2.0]]))
    text = DualEncoder.embedding(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
    # cos_global = 0.6, cos_tse = 1 / sqrt 2 = 0.70711: mean 0.65355
    assert float(text @ image.T) == pytest.approx((0.6 + 1 / math.sqrt(2)) / 2)
    assert float(image.norm()) == pytest.approx(1.0)


def test_text_tse_ignores_padding_start_end_and_batch_mates():
    model = micro()
    short, long = model.tokenizer(
        ["red coat", "a woman in a long green dress with a black bag and white shoes"]
    )
    alone = model.text_features(short[None])[1]
    with_long = model.text_features(torch.stack([short, long]))[1][:1]  # trimmed to the longer caption
    assert torch.allclose(alone, with_long, atol=1e-5)
    assert model.tse.text_k == 22  # int((77 - 2) * 0.3), as RDE


def test_image_and_text_features_give_the_retrieval_embedding():
    model = micro()
    images, tokens = torch.randn(2, 3, 64, 32), model.tokenizer(["a man", "a woman in red"])
    (gi, ti), (gt, tt) = model.image_features(images), model.text_features(tokens)
    assert ti.shape == (2, 128) and tt.shape == (2, 128)  # dim null: twice the joint width 64
    expected = (
        F.normalize(gt, dim=-1) @ F.normalize(gi, dim=-1).T
        + F.normalize(tt, dim=-1) @ F.normalize(ti, dim=-1).T
    ) / 2
    assert torch.allclose(model.encode_text(tokens) @ model.encode_image(images).T, expected, atol=1e-5)
    assert torch.equal(model.encode_image(images, normalize=False), gi)  # training: the global features
    g, t = model.split_embedding(model.encode_image(images))
    assert torch.allclose(g, F.normalize(gi, dim=-1), atol=1e-6) and torch.allclose(
        t, F.normalize(ti, dim=-1), atol=1e-6
    )


def test_checkpoint_rebuilds_the_tse_heads(tmp_path):
    model = micro()
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt").eval()
    assert loaded.config.tse == TseConfig(ratio=0.3) and loaded.tse is not None
    images = torch.randn(2, 3, 64, 32)
    assert torch.allclose(loaded.encode_image(images), model.encode_image(images))


def test_tse_heads_learn_at_their_own_rate():
    from tbpr.train.config import OptimConfig

    model = micro()
    groups = parameter_groups(model, OptimConfig(lr=1e-5, tse_lr_factor=100.0))
    tse_params = {id(p) for p in model.tse.parameters()}
    rates = [g["lr"] for g in groups if any(id(p) in tse_params for p in g["params"])]
    assert rates and rates == pytest.approx([1e-3] * len(rates))


def test_other_towers_are_refused_naming_them():
    with pytest.raises(ConfigError, match="transformers text tower .* timm image tower"):
        DualEncoder(ModelConfig(arch="tbpr-lite", image_size=(64, 32), tse=TseConfig()))
    from tbpr.train import load_config

    with pytest.raises(ConfigError, match="model.tse needs the last layer's attention weights"):
        load_config("cpu-small", ["model.arch=tbpr-lite", "model.tse={ratio: 0.3}"])  # before any data
    with pytest.raises(ConfigError, match="tuning=coop"):
        micro(tuning="coop")
    with pytest.raises(ConfigError, match="model.tse.ratio=0"):
        micro(tse=TseConfig(ratio=0.0))


def test_recipe_losses_train_both_embeddings_and_coteaching_swaps_the_rows():
    from tbpr.losses import LossParams, Views, tal_per_sample
    from tbpr.losses.embeddings import compute_two_embeddings, pair_losses, small_loss_rows

    assert pair_losses({"sdm": 1.0, "id": 1.0, "mlm": 1.0, "ss_i": 0.4}) == {"sdm": 1.0}
    torch.manual_seed(0)
    pids = torch.tensor([0, 0, 1, 2, 3, 4])
    g = Views(image=torch.randn(6, 4), text=torch.randn(6, 4), pids=pids, logit_scale=10.0)
    t = Views(image=torch.randn(6, 8), text=torch.randn(6, 8), pids=pids, logit_scale=10.0)
    params = LossParams()
    loss_g = tal_per_sample(
        F.normalize(g.text, dim=-1) @ F.normalize(g.image, dim=-1).T, pids, pids, 0.015, 0.1
    )
    loss_t = tal_per_sample(
        F.normalize(t.text, dim=-1) @ F.normalize(t.image, dim=-1).T, pids, pids, 0.015, 0.1
    )
    total, record = compute_two_embeddings({"tal": 1.0}, g, t, params)
    assert float(total) == pytest.approx(float(loss_g.sum() + loss_t.sum()), rel=1e-5)
    assert record["tse_tal"] == pytest.approx(float(loss_t.sum()), rel=1e-5)
    # co-teaching, keep half: the global loss sums over the 3 rows TSE finds easiest, and vice versa
    total, _ = compute_two_embeddings({"tal": 1.0}, g, t, params, keep=0.5)
    by_t, by_g = loss_t.argsort()[:3], loss_g.argsort()[:3]
    assert float(total) == pytest.approx(float(loss_g[by_t].sum() + loss_t[by_g].sum()), rel=1e-5)
    assert small_loss_rows(torch.tensor([0.5, 0.1, 0.9, 0.3]), 0.5).tolist() == [0, 1, 0, 1]
    # among the rows a division kept (not row 1): ceil(0.5 * 3) = 2 smallest
    assert small_loss_rows(torch.tensor([0.5, 0.1, 0.9, 0.3]), 0.5, torch.tensor([1, 0, 1, 1])).tolist() == [
        1,
        0,
        0,
        1,
    ]


def test_coteaching_schedule_and_settings():
    from tbpr.train import load_config
    from tbpr.train.noise import NoiseConfig

    noise = NoiseConfig(coteach=0.2, coteach_ramp_epochs=10)
    assert [noise.coteach_keep(e) for e in (0, 5, 10, 30)] == pytest.approx([1.0, 0.9, 0.8, 0.8])
    assert NoiseConfig().coteach_keep(3) is None
    with pytest.raises(ConfigError, match="noise.coteach exchanges small-loss pairs between two embeddings"):
        load_config("cpu-small", ["noise.coteach=0.2"])
    with pytest.raises(ConfigError, match="noise.coteach=1.5"):
        load_config("cpu-small", ["noise.coteach=1.5", "model.tse={ratio: 0.3}"])
    with pytest.raises(ConfigError, match="no per-sample form"):
        load_config(
            "cpu-small", ["noise.coteach=0.2", "model.tse={ratio: 0.3}", "losses={sdm: 1.0, ss_i: 1.0}"]
        )
    load_config("cpu-small", ["noise.coteach=0.2", "model.tse={ratio: 0.3}"])


def test_consensus_of_more_than_two_masks():
    from tbpr.train.noise import consensus

    masks = [np.array([1, 0, 1, 1], bool), np.array([1, 0, 1, 0], bool), np.array([1, 0, 0, 1], bool)]
    out = consensus(masks, seed=0, epoch=1, keys=np.arange(4))
    assert out[0] and not out[1]  # unanimous clean, unanimous noisy; rows 2 and 3 are coins
    coins = [consensus([np.array([True]), np.array([False])], 0, 1, np.array([k]))[0] for k in (2, 3)]
    assert out[2:].tolist() == coins


@pytest.fixture(scope="module")
def tse_run(tmp_path_factory, synth_tiny):
    from tbpr.train import load_config, train

    out = tmp_path_factory.mktemp("runs") / "tse"
    overrides = [
        *MICRO,
        "model.tse={ratio: 0.3}",
        "losses={tal: 1.0}",
        "optim.epochs=2",
        "optim.lr=1e-3",
        "max_steps=13",  # epoch 2's division and one step of it
        "log_every=1",
        "eval_every=0",
        "noise.division=gmm",
        "noise.warmup_epochs=1",
        f"data.path={synth_tiny}",
        f"output_dir={out}",
    ]
    return train(load_config("cpu-small", overrides))


@pytest.mark.slow
def test_training_divides_on_both_embeddings_and_logs_both_losses(tse_run):
    from tbpr.train.noise import division_path, load_division

    record = load_division(division_path(tse_run, 2))
    assert {"loss_recipe", "prob_recipe", "loss_recipe_tse", "prob_recipe_tse", "clean"} <= set(record)
    both = record["loss_recipe"], record["loss_recipe_tse"]
    assert not np.allclose(*both)  # two embeddings, two loss vectors
    lines = [json.loads(line) for line in (tse_run / "metrics.jsonl").read_text().splitlines()]
    first = lines[0]
    assert first["total"] == pytest.approx(first["tal"] + first["tse_tal"], rel=1e-5)


@pytest.mark.slow
def test_eval_and_index_rank_by_the_mean_of_both_similarities(tse_run, synth_tiny, tmp_path):
    from tbpr.data import read_dataset
    from tbpr.data.transforms import build_image_transform
    from tbpr.evaluation.evaluator import encode_split
    from tbpr.evaluation.run_eval import evaluate_run, load_run
    from tbpr.search import Searcher, build_index

    loaded = load_run(tse_run)
    assert loaded.model.tse is not None
    metrics = evaluate_run(loaded, [synth_tiny], num_workers=0)
    assert 0 <= next(iter(metrics.values()))["t2i"]["R1"] <= 100
    test = read_dataset(synth_tiny).split("test")
    transform = build_image_transform((64, 32), train=False)
    encoded = encode_split(
        loaded.model, test, transform, loaded.model.tokenizer, num_workers=0, progress=False
    )
    model = loaded.model
    with torch.no_grad():
        gt, tt = model.text_features(model.tokenizer([test.captions[0].text]))
    (gi, ti) = model.split_embedding(encoded.image_feats)
    mean = (F.normalize(gt, dim=-1) @ gi.T + F.normalize(tt, dim=-1) @ ti.T) / 2
    assert torch.allclose(encoded.similarity()[0], mean[0], atol=1e-5)

    index = build_index(tse_run, synth_tiny / "imgs", tmp_path / "index", num_workers=0)
    results = Searcher(index).search(test.captions[0].text, k=3)
    images = [transform(Image.open(synth_tiny / "imgs" / r.path).convert("RGB")) for r in results]
    with torch.no_grad():
        gi, ti = model.image_features(torch.stack(images))
    expected = (
        (
            F.normalize(gt, dim=-1) @ F.normalize(gi, dim=-1).T
            + F.normalize(tt, dim=-1) @ F.normalize(ti, dim=-1).T
        )
        / 2
    )[0]
    assert [r.score for r in results] == pytest.approx(expected.tolist(), abs=1e-4)


def test_rde_recipes_hold_the_papers_settings_and_round_trip(tmp_path):
    import yaml

    from tbpr.config import from_dict, save_yaml
    from tbpr.train import load_config
    from tbpr.train.config import TrainConfig

    cfg = load_config("rde")
    assert (cfg.model.arch, cfg.model.pretrained, cfg.model.image_size) == ("ViT-B-16", "openai", (384, 128))
    assert cfg.model.tse == TseConfig(ratio=0.3) and cfg.losses == {"tal": 1.0}
    assert (cfg.loss_params.tal_margin, cfg.loss_params.tal_tau) == (0.1, 0.015)
    o = cfg.optim
    assert (o.lr, o.epochs, o.warmup_epochs, o.min_lr, cfg.data.batch_size) == (1e-5, 60, 5.0, 0.0, 64)
    assert (cfg.noise.division, cfg.noise.warmup_epochs) == ("gmm", 0)
    small = load_config("rde-small")
    assert (small.model.arch, small.model.pretrained, small.model.tse) == ("tbpr-tiny", None, TseConfig())
    assert (small.noise.division, small.losses) == ("gmm", {"tal": 1.0})
    for recipe in (cfg, small):
        save_yaml(recipe, tmp_path / "r.yaml")
        assert from_dict(TrainConfig, yaml.safe_load((tmp_path / "r.yaml").read_text())) == recipe


@pytest.mark.slow
def test_rde_recipe_trains_with_masking_tse_and_a_first_epoch_division(tmp_path, synth_tiny):
    from tbpr.train import load_config, train
    from tbpr.train.noise import division_path

    overrides = [
        *MICRO,
        "model.pretrained=null",
        "data.augment.ops=[]",
        "optim.amp=false",
        "max_steps=2",
        "eval_every=0",
        f"data.path={synth_tiny}",
        f"output_dir={tmp_path}",
    ]
    out = train(load_config("rde", overrides))
    assert division_path(out, 1).is_file()  # RDE divides before the first epoch
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["tse_tal"]) for r in records if r["kind"] == "train")


@pytest.mark.slow
def test_coteaching_in_training_drops_the_peers_large_loss_rows(tmp_path, synth_tiny):
    from tbpr.train import load_config, train

    def first_step(name, *extra):
        overrides = [
            *MICRO,
            "model.tse={ratio: 0.3}",
            "losses={tal: 1.0}",
            "max_steps=1",
            "eval_every=0",
            f"data.path={synth_tiny}",
            f"output_dir={tmp_path / name}",
            *extra,
        ]
        out = train(load_config("cpu-small", overrides))
        return json.loads((out / "metrics.jsonl").read_text().splitlines()[0])

    plain = first_step("plain")
    # forget half at once (no ramp): each embedding's summed TAL keeps 8 of the 16 rows
    half = first_step("coteach", "noise.coteach=0.5", "noise.coteach_ramp_epochs=0")
    assert half["tal"] < 0.75 * plain["tal"] and half["tse_tal"] < 0.75 * plain["tse_tal"]


def test_noise_grids_have_an_rde_and_a_coteaching_row(tmp_path):
    from tbpr.train import ablation as A

    for name, tse_lr in (("noise", 100.0), ("noise-small", 1.0)):
        grid, path = A.load_grid(name)
        run = A.Ablation(grid, path, tmp_path / name, ["data.path=data/synthpedes-small"])
        rows = {rv.variant.slug: rv.config for rv in run.variants}
        rde, coteach = rows["rde"], rows["coteach"]
        assert rde.model.tse == TseConfig(ratio=0.3) and rde.losses == {"tal": 1.0}
        assert rde.noise.division == "gmm" and rde.optim.tse_lr_factor == tse_lr
        assert coteach.model.tse is not None and coteach.noise.coteach == 0.2
        assert coteach.noise.division == "none"
    assert not any("not built" in note for note in grid.notes)
