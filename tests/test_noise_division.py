"""Clean-sample division: the mixture, min-max edge case, seeded consensus, per-epoch files, resume, training."""

import numpy as np
import pytest

from tbpr.errors import ConfigError
from tbpr.train.noise import (
    NoiseConfig,
    consensus,
    divide,
    division_path,
    gmm_clean,
    load_division,
    min_max,
    save_division,
)


def _bimodal(n_clean=400, n_noisy=100, seed=0):
    rng = np.random.default_rng(seed)
    losses = np.concatenate([rng.normal(1.0, 0.1, n_clean), rng.normal(3.0, 0.2, n_noisy)])
    return losses, np.r_[np.zeros(n_clean, bool), np.ones(n_noisy, bool)]


def test_gmm_finds_the_high_loss_mode():
    losses, noisy = _bimodal()
    clean, prob = gmm_clean(losses, seed=0)
    found = ~clean
    precision = (found & noisy).sum() / found.sum()
    recall = (found & noisy).sum() / noisy.sum()
    assert precision >= 0.99 and recall >= 0.99
    assert prob[:400].mean() > 0.95 and prob[400:].mean() < 0.05


def test_min_max_and_equal_losses_are_all_clean():
    assert min_max(np.array([2.0, 4.0, 3.0])).tolist() == [0.0, 1.0, 0.5]
    assert min_max(np.full(5, 7.0)).tolist() == [0.0] * 5
    clean, prob = gmm_clean(np.full(50, 0.3), seed=0)  # no evidence: nobody is called noisy
    assert clean.all() and (prob == 1).all()


def test_all_clean_mixture_calls_the_lowest_percent_noisy():
    # one tight mode: the mixture calls everyone clean, so (as RDE) the 1% lowest posteriors become noisy
    losses = np.random.default_rng(3).normal(1.0, 0.01, 1000)
    clean, prob = gmm_clean(losses, seed=0, threshold=1e-9)
    assert 1 <= (~clean).sum() <= 20
    assert prob[~clean].max() <= prob[clean].min()


def test_consensus_coin_flip_is_seeded_and_deterministic():
    a = np.array([True, True, False, False] * 50)
    b = np.array([True, False, True, False] * 50)
    keys = np.arange(200) + 1000
    out = consensus([a, b], seed=5, epoch=2, keys=keys)
    assert out[0::4].all() and not out[3::4].any()  # agreement is kept
    flips = np.r_[out[1::4], out[2::4]]
    assert 0.3 < flips.mean() < 0.7  # disagreement: fair coins
    assert (consensus([a, b], 5, 2, keys) == out).all()  # same seed, epoch, keys: same flips
    assert (consensus([a[::-1], b[::-1]], 5, 2, keys[::-1])[::-1] == out).all()  # per key, not per position
    assert (consensus([a, b], 5, 3, keys) != out).any()  # another epoch: other coins
    assert (consensus([a, b], 6, 2, keys) != out).any()


def test_divide_one_or_two_vectors_and_file_round_trip(tmp_path):
    losses, noisy = _bimodal()
    keys = np.arange(len(losses))
    one = divide({"recipe": losses}, 0, 1, keys, 0.5)
    assert (one["clean"] == ~noisy).mean() > 0.99
    two = divide({"sdm": losses, "tal": losses[::-1].copy()}, 0, 1, keys, 0.5)
    assert set(two) == {"clean", "loss_sdm", "prob_sdm", "loss_tal", "prob_tal"}
    path = save_division(division_path(tmp_path, 3), 3, keys, two)
    assert path == tmp_path / "noise" / "epoch-003.npz"
    back = load_division(path)
    assert int(back["epoch"]) == 3 and (back["clean"] == two["clean"]).all()
    assert not list(path.parent.glob(".*.tmp"))  # written through a temp file


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"division": "dividemix"}, "noise.division='dividemix'"),
        ({"division": "gmm", "warmup_epochs": -1}, "noise.warmup_epochs=-1"),
        ({"division": "gmm", "threshold": 1.0}, "noise.threshold=1.0"),
        ({"division": "gmm", "losses": ["sdm", "tal", "itc"]}, "at most two losses"),
        ({"division": "gmm", "losses": ["foo"]}, "unknown loss 'foo'"),
    ],
)
def test_bad_noise_settings(settings, message):
    with pytest.raises(ConfigError, match=message):
        NoiseConfig(**settings).check({"sdm": 1.0})


def test_division_refuses_a_recipe_loss_without_per_sample_form():
    with pytest.raises(ConfigError, match="no per-sample form"):
        NoiseConfig(division="gmm").check({"n_itc": 1.0, "ss_i": 0.4})
    NoiseConfig(division="none").check({"n_itc": 1.0, "ss_i": 0.4})  # off: any loss


def test_recipes_check_the_noise_block_and_soft_labels_at_load(caplog):
    from tbpr.train import load_config

    cfg = load_config("cpu-small", ["noise.division=gmm", "noise.losses=[sdm, tal]"])
    assert (cfg.noise.division, cfg.noise.losses, cfg.noise.warmup_epochs) == ("gmm", ["sdm", "tal"], 1)
    with pytest.raises(ConfigError, match=r"losses \['ss_i'\] have no per-sample form"):
        load_config("cpu-small", ["noise.division=gmm", "losses={sdm: 1.0, ss_i: 0.4}"])
    load_config("cpu-small", ["losses={tal: 1.0}", "loss_params.soft_label=0.5"])
    assert "loss_params.soft_label=0.5: none of losses ['tal'] has soft targets" in caplog.text
    caplog.clear()
    load_config("cpu-small", ["loss_params.soft_label=0.5"])  # SDM smooths its targets: no warning
    assert "soft targets" not in caplog.text


def test_a_run_saved_before_the_noise_settings_existed_still_matches():
    from tbpr.config import to_dict
    from tbpr.train import load_config
    from tbpr.train.config import config_differences

    saved = to_dict(load_config("cpu-small"))
    del saved["noise"], saved["loss_params"]["tal_tau"], saved["loss_params"]["tal_margin"]
    assert config_differences(saved, to_dict(load_config("cpu-small"))) == {}
    changed = config_differences(saved, to_dict(load_config("cpu-small", ["noise.division=gmm"])))
    assert changed == {"noise.division": ("(absent)", "gmm")}
