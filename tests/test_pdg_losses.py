"""PDG's hardness-aware InfoNCE and CMPM against hand-computed values."""

import math

import pytest
import torch

from tbpr.errors import ConfigError
from tbpr.losses import LOSSES, LossParams, Views, cmpm_loss, compute_losses, hardness_infonce_loss

IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
TEXTS = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # cos(I0, T1) = cos(I1, T1) = 1/sqrt(2)


def test_hardness_infonce_is_the_sum_of_both_directions_over_pairs():
    r = 2**0.5
    # tau 0.5: logits 2 * cos; i2t rows (2, r), (0, r); t2i rows (2, 0), (r, r)
    expected = math.log1p(math.exp(r - 2)) + math.log1p(math.exp(-r)) + math.log1p(math.exp(-2)) + math.log(2)
    loss = hardness_infonce_loss(IMAGES, TEXTS, tau=0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # cosines: the features' lengths do not matter
    assert hardness_infonce_loss(3 * IMAGES, 0.5 * TEXTS, tau=0.5).item() == pytest.approx(expected, rel=1e-6)


def test_hardness_infonce_sums_one_term_per_pair():
    # identical perfect pairs: every term is log(1 + (N - 1) exp(-1/tau)), N terms per direction
    n, tau = 4, 0.5
    eye = torch.eye(n)
    per_term = math.log1p((n - 1) * math.exp(-1 / tau))
    assert hardness_infonce_loss(eye, eye, tau).item() == pytest.approx(2 * n * per_term, rel=1e-6)


def test_hardness_infonce_default_temperature_and_registry_ignore_person_ids():
    assert LossParams().infonce_tau == 0.005
    views = Views(image=IMAGES, text=TEXTS, pids=torch.tensor([3, 3]), logit_scale=50.0)
    total, record = compute_losses({"hinfonce": 1.0}, views, LossParams(infonce_tau=0.5))
    assert total.item() == pytest.approx(hardness_infonce_loss(IMAGES, TEXTS, 0.5).item())
    assert "hinfonce" in LOSSES and record["hinfonce"] == pytest.approx(total.item())
    # tau 0.005 is not clamped like the model's logit scale (1/tau = 200 > 100)
    sharp = hardness_infonce_loss(IMAGES, TEXTS)
    assert sharp.item() == pytest.approx(math.log(2) + math.log1p(math.exp(-200 * (1 - 0.5**0.5))), rel=1e-5)


def test_infonce_temperature_must_be_positive():
    with pytest.raises(ConfigError, match="loss_params.infonce_tau"):
        LossParams(infonce_tau=0.0)


def _kl(p, q, eps=1e-8):
    return sum(pj * (math.log(pj) - math.log(qj + eps)) for pj, qj in zip(p, q))


def _softmax(row):
    exps = [math.exp(x) for x in row]
    return [e / sum(exps) for e in exps]


def test_cmpm_projects_unnormalized_features_on_normalized_ones():
    images = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    pids = torch.tensor([7, 8])
    # i2t: images @ unit texts = [[2, 0], [0, 1]]; t2i: texts @ unit images = [[1, 0], [0, 3]]
    i2t = (_kl(_softmax([2, 0]), [1, 0]) + _kl(_softmax([0, 1]), [0, 1])) / 2
    t2i = (_kl(_softmax([1, 0]), [1, 0]) + _kl(_softmax([0, 3]), [0, 1])) / 2
    assert cmpm_loss(images, texts, pids, pids).item() == pytest.approx(i2t + t2i, rel=1e-5)


def test_cmpm_normalizes_the_targets_by_their_l2_norm():
    # one person: q = (1, 1) / sqrt(2) in every row, so each KL is -H(p) + log(sqrt(2))
    images = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    pids = torch.tensor([5, 5])
    q = [2**-0.5, 2**-0.5]
    rows = [[2, 0], [0, 1], [1, 0], [0, 3]]
    expected = sum(_kl(_softmax(r), q) for r in rows) / 2
    assert cmpm_loss(images, texts, pids, pids).item() == pytest.approx(expected, rel=1e-5)
    views = Views(image=images, text=texts, pids=pids, logit_scale=50.0)
    assert compute_losses({"cmpm": 1.0}, views)[0].item() == pytest.approx(expected, rel=1e-5)
