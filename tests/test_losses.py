"""Losses against hand-computed values, an independent pure-Python reference, and CLIP's formulation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tbpr.errors import ConfigError
from tbpr.losses import (
    LOSSES,
    LogitScale,
    LossParams,
    Views,
    c_itc_loss,
    check_loss_weights,
    compute_losses,
    identity_mask,
    identity_targets,
    itc_loss,
    r_itc_loss,
    required_ss_heads,
    required_views,
    sdm_loss,
    simclr_loss,
)

# 2x2 case: images e1, e2; texts e1, (0.6, 0.8); unique pids; logit scale 2.
# cos(image_i, text_j) = [[1, .6], [0, .8]] -> i2t logits [[2, 1.2], [0, 1.6]], t2i logits = transpose.
IMAGES_2 = [[1.0, 0.0], [0.0, 1.0]]
TEXTS_2 = [[1.0, 0.0], [0.6, 0.8]]
# 3x3 case: images e1, e2, e3; texts e1, (.6, .8, 0), (0, .6, .8); pids [7, 7, 9]; logit scale 2.
# cos = [[1, .6, 0], [0, .8, .6], [0, 0, .8]]
IMAGES_3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
TEXTS_3 = [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.6, 0.8]]


def t(rows, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype)


def pids(*values: int) -> torch.Tensor:
    return torch.tensor(values)


def reference_losses(images, texts, image_pids, text_pids, scale, eps=1e-8) -> tuple[float, float]:
    """(itc, sdm) by the papers' formulas in plain Python: lists and math, no torch."""

    def unit(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    def direction(rows, cols, row_pids, col_pids):
        ce = kl = 0.0
        for r, rp in zip(rows, row_pids):
            logits = [scale * sum(a * b for a, b in zip(unit(r), unit(c))) for c in cols]
            z = sum(math.exp(x) for x in logits)
            p = [math.exp(x) / z for x in logits]
            y = [1.0 if cp == rp else 0.0 for cp in col_pids]
            q = [v / sum(y) for v in y]
            ce += -sum(qj * math.log(pj) for pj, qj in zip(p, q))
            kl += sum(pj * (math.log(pj) - math.log(qj + eps)) for pj, qj in zip(p, q))
        return ce / len(rows), kl / len(rows)

    ce_i2t, kl_i2t = direction(images, texts, image_pids, text_pids)
    ce_t2i, kl_t2i = direction(texts, images, text_pids, image_pids)
    return (ce_i2t + ce_t2i) / 2, kl_i2t + kl_t2i


# --- identity targets -------------------------------------------------------------------------------


def test_identity_targets_split_mass_over_every_shared_pid():
    ids = pids(7, 7, 9)
    assert torch.equal(identity_mask(ids, ids), t([[1, 1, 0], [1, 1, 0], [0, 0, 1]], torch.float32))
    expected = t([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]], torch.float32)
    assert torch.equal(identity_targets(ids, ids), expected)


def test_identity_targets_rectangular():
    q = identity_targets(pids(9, 7), pids(7, 7, 9, 7))
    assert torch.allclose(q, t([[0, 0, 1, 0], [1 / 3, 1 / 3, 0, 1 / 3]], torch.float32))


def test_identity_targets_reject_a_row_without_positive():
    with pytest.raises(ValueError, match=r"\[5\]"):
        identity_targets(pids(1, 5), pids(1, 2))


# --- hand-computed values ---------------------------------------------------------------------------


def test_itc_2x2_hand_computed():
    # Each row's CE against its own column: -log softmax = log(1 + exp(-(own - other))).
    # i2t rows: log(1+e^-0.8), log(1+e^-1.6); t2i rows (logits [2, 0], [1.2, 1.6]): log(1+e^-2), log(1+e^-0.4)
    # mean of the two directions = (0.371101 + 0.183900 + 0.126928 + 0.513015) / 4 = 0.298736
    expected = sum(math.log1p(math.exp(-d)) for d in (0.8, 1.6, 2.0, 0.4)) / 4
    assert expected == pytest.approx(0.2987361675697604, abs=1e-12)
    got = itc_loss(t(IMAGES_2), t(TEXTS_2), pids(0, 1), pids(0, 1), 2.0)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_sdm_2x2_hand_computed():
    # q = identity. p_i2t = [[.689974, .310026], [.167982, .832018]],
    # p_t2i = [[.880797, .119203], [.401312, .598688]]
    # KL row (p on the positive pos, on the negative neg) = pos*log(pos/(1+eps)) + neg*(log(neg) - log(eps)),
    # log(1e-8) = -18.420681; i2t rows 5.091768, 2.641633 -> 3.866712; t2i -> 4.274686; SDM = sum = 8.141398
    eps = 1e-8

    def row(pos, neg):
        return pos * math.log(pos / (1 + eps)) + neg * (math.log(neg) - math.log(eps))

    def sigmoid(x):
        return 1 / (1 + math.exp(-x))

    i2t = (row(sigmoid(0.8), sigmoid(-0.8)) + row(sigmoid(1.6), sigmoid(-1.6))) / 2
    t2i = (row(sigmoid(2.0), sigmoid(-2.0)) + row(sigmoid(0.4), sigmoid(-0.4))) / 2
    assert i2t + t2i == pytest.approx(8.141397893371984, abs=1e-9)
    got = sdm_loss(t(IMAGES_2), t(TEXTS_2), pids(0, 1), pids(0, 1), 2.0)
    assert got.item() == pytest.approx(i2t + t2i, abs=1e-6)


def test_3x3_shared_pids_hand_computed():
    # q rows for pids [7, 7, 9]: [.5, .5, 0], [.5, .5, 0], [0, 0, 1] in both directions.
    # p_i2t = [[.631049, .283548, .085403], [.107838, .534126, .358036], [.143822, .143822, .712356]]
    # p_t2i = [[.786986, .106507, .106507], [.358036, .534126, .107838], [.107838, .358036, .534126]]
    # ITC = (0.875558 + 0.897930) / 2 = 0.886744;  SDM = 3.981889 + 3.738829 = 7.720718
    images, texts, ids = t(IMAGES_3), t(TEXTS_3), pids(7, 7, 9)
    assert itc_loss(images, texts, ids, ids, 2.0).item() == pytest.approx(0.8867440626827663, abs=1e-6)
    assert sdm_loss(images, texts, ids, ids, 2.0).item() == pytest.approx(7.72071837061147, abs=1e-6)
    reference = reference_losses(IMAGES_3, TEXTS_3, [7, 7, 9], [7, 7, 9], 2.0)
    assert reference == pytest.approx((0.8867440626827663, 7.72071837061147), abs=1e-12)


@pytest.mark.parametrize("eps", [1e-8, 1e-2])
def test_rectangular_random_batch_matches_reference(eps):
    gen = torch.Generator().manual_seed(0)
    images, texts = torch.randn(4, 5, generator=gen, dtype=torch.float64), torch.randn(6, 5, generator=gen)
    image_ids, text_ids = [3, 1, 3, 2], [1, 3, 2, 2, 3, 3]
    itc_ref, sdm_ref = reference_losses(images.tolist(), texts.tolist(), image_ids, text_ids, 5.0, eps)
    args = (images, texts.double(), pids(*image_ids), pids(*text_ids), 5.0)
    assert itc_loss(*args).item() == pytest.approx(itc_ref, abs=1e-6)
    assert sdm_loss(*args, eps=eps).item() == pytest.approx(sdm_ref, abs=1e-6)


# --- properties -------------------------------------------------------------------------------------


def test_itc_equals_clip_loss_for_unique_pids():
    gen = torch.Generator().manual_seed(1)
    images, texts = torch.randn(6, 8, generator=gen), torch.randn(6, 8, generator=gen)
    logits = 14.3 * F.normalize(images, dim=1) @ F.normalize(texts, dim=1).t()
    labels = torch.arange(6)
    clip = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    ours = itc_loss(images, texts, torch.arange(6), torch.arange(6), 14.3)
    assert ours.item() == pytest.approx(clip.item(), abs=1e-6)
    # With a repeated pid the targets change, so CLIP's arange labels no longer give the same value.
    repeated = pids(0, 1, 2, 0, 4, 5)
    assert itc_loss(images, texts, repeated, repeated, 14.3).item() != pytest.approx(clip.item(), abs=1e-3)


def test_sdm_vanishes_when_prediction_equals_identity_targets():
    # Texts 0 and 1 share pid 7 and identical features: at a large scale p_i = [.5, .5, 0] = q_i exactly,
    # so KL(p||q) = 0, while ITC bottoms out at the targets' entropy (2/3 of log 2 over three rows).
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    feats, ids = t([e1, e1, e2]), pids(7, 7, 9)
    assert sdm_loss(feats, feats, ids, ids, 100.0).item() == pytest.approx(0.0, abs=1e-6)
    assert itc_loss(feats, feats, ids, ids, 100.0).item() == pytest.approx(2 / 3 * math.log(2), abs=1e-6)


def test_sdm_is_kl_of_prediction_from_targets_not_the_reverse():
    # Identical features, distinct pids: p_i = [.5, .5], q_i = one-hot. KL(p||q+eps) puts log(.5/eps) on the
    # negative (about 8.16 per row), whereas the reverse KL(q||p) would be only log 2.
    feats, eps = t([[1.0, 0.0], [1.0, 0.0]]), 1e-8
    row = 0.5 * math.log(0.5 / (1 + eps)) + 0.5 * math.log(0.5 / eps)
    assert sdm_loss(feats, feats, pids(0, 1), pids(0, 1), 10.0).item() == pytest.approx(2 * row, abs=1e-6)


@pytest.mark.parametrize("loss", [itc_loss, sdm_loss])
def test_gradient_step_on_features_lowers_the_loss(loss):
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(6, 4, generator=gen, requires_grad=True)
    texts = torch.randn(6, 4, generator=gen, requires_grad=True)
    ids = pids(0, 1, 0, 2, 3, 1)
    before = loss(images, texts, ids, ids, 10.0)
    before.backward()
    with torch.no_grad():
        after = loss(images - 0.05 * images.grad, texts - 0.05 * texts.grad, ids, ids, 10.0)
    assert after < before


@pytest.mark.parametrize("loss", [itc_loss, sdm_loss])
def test_features_are_normalized_inside(loss):
    gen = torch.Generator().manual_seed(3)
    images, texts = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    ids = pids(0, 1, 0, 2, 3)
    base = loss(images, texts, ids, ids, 20.0)
    assert loss(3.7 * images, 0.1 * texts, ids, ids, 20.0).item() == pytest.approx(base.item(), abs=1e-5)


@pytest.mark.parametrize("loss", [itc_loss, sdm_loss])
def test_both_directions_count_equally(loss):
    gen = torch.Generator().manual_seed(4)
    images, texts = torch.randn(4, 3, generator=gen), torch.randn(5, 3, generator=gen)
    image_ids, text_ids = pids(0, 1, 2, 1), pids(1, 0, 2, 2, 1)
    forward = loss(images, texts, image_ids, text_ids, 7.0)
    swapped = loss(texts, images, text_ids, image_ids, 7.0)
    assert forward.item() == pytest.approx(swapped.item(), abs=1e-6)


def test_sdm_eps_keeps_zero_targets_finite():
    images, texts, ids = t(IMAGES_3), t(TEXTS_3), pids(7, 7, 9)
    assert torch.isinf(sdm_loss(images, texts, ids, ids, 2.0, eps=0.0))
    assert torch.isfinite(sdm_loss(images, texts, ids, ids, 2.0))
    # A zero q entry costs p * (log p - log eps): a larger eps lowers the loss.
    assert sdm_loss(images, texts, ids, ids, 2.0, eps=1e-2) < sdm_loss(images, texts, ids, ids, 2.0)


@pytest.mark.parametrize("loss", [itc_loss, sdm_loss])
def test_gradients_are_finite_at_large_scale_with_zero_targets(loss):
    gen = torch.Generator().manual_seed(5)
    images = torch.randn(6, 4, generator=gen, requires_grad=True)
    texts = torch.randn(6, 4, generator=gen, requires_grad=True)
    scale = LogitScale(init_tau=0.0125, learnable=True)  # 1/tau = 80, below the clamp
    ids = pids(0, 0, 1, 2, 2, 2)
    loss(images, texts, ids, ids, scale()).backward()
    for grad in (images.grad, texts.grad, scale.log_scale.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_logit_scale_as_float_or_tensor_and_low_precision_features():
    gen = torch.Generator().manual_seed(6)
    images, texts, ids = torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen), pids(0, 1, 2, 0)
    as_float = sdm_loss(images, texts, ids, ids, 50.0)
    as_tensor = sdm_loss(images, texts, ids, ids, torch.tensor(50.0))
    assert as_tensor.item() == pytest.approx(as_float.item(), abs=1e-6)
    low = sdm_loss(images.bfloat16(), texts.bfloat16(), ids, ids, 50.0)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(as_float.item(), rel=0.1)


# --- logit scale ------------------------------------------------------------------------------------


def test_fixed_logit_scale_is_a_buffer():
    scale = LogitScale(init_tau=0.02)
    assert scale().item() == pytest.approx(50.0, rel=1e-6)
    assert list(scale.parameters()) == [] and "log_scale" in scale.state_dict()


def test_learnable_logit_scale_is_a_parameter_and_clamped():
    scale = LogitScale(init_tau=0.07, learnable=True, max_scale=100.0)
    assert [p is scale.log_scale for p in scale.parameters()] == [True]
    with torch.no_grad():
        scale.log_scale.fill_(math.log(1000.0))
    value = scale()
    value.backward()
    assert value.item() == pytest.approx(100.0) and scale.log_scale.grad.item() == 0.0


@pytest.mark.parametrize(("tau", "max_scale"), [(0.0, 100.0), (-0.1, 100.0), (0.005, 100.0)])
def test_logit_scale_rejects_bad_temperatures(tau, max_scale):
    with pytest.raises(ConfigError, match="tau"):
        LogitScale(init_tau=tau, max_scale=max_scale)


# --- registry ---------------------------------------------------------------------------------------


def test_compute_losses_weighted_sum_and_record():
    images, texts, ids = t(IMAGES_3), t(TEXTS_3), pids(7, 7, 9)
    total, record = compute_losses({"sdm": 1.0, "itc": 0.5}, Views(images, texts, ids, 2.0))
    assert total.item() == pytest.approx(7.72071837061147 + 0.5 * 0.8867440626827663, abs=1e-6)
    assert record == pytest.approx(
        {
            "sdm": 7.72071837061147,
            "sdm_weighted": 7.72071837061147,
            "itc": 0.8867440626827663,
            "itc_weighted": 0.5 * 0.8867440626827663,
            "total": total.item(),
        },
        abs=1e-6,
    )


def test_compute_losses_skips_zero_weights_and_keeps_the_graph():
    images = t(IMAGES_3).requires_grad_()
    ids = pids(7, 7, 9)
    total, record = compute_losses({"sdm": 2, "itc": 0}, Views(images, t(TEXTS_3), ids, 2.0))
    assert set(record) == {"sdm", "sdm_weighted", "total"}
    assert record["sdm_weighted"] == pytest.approx(2 * 7.72071837061147, abs=1e-6)
    total.backward()
    assert images.grad is not None


def test_registry_names():
    assert set(LOSSES) == {
        *("itc", "clip_itc", "n_itc", "sdm", "r_itc", "c_itc", "tal", "hinfonce", "cmpm"),
        *("ss_i", "ss_t", "ss_it", "mvs_i", "mvs_t", "mvs_it", "mlm", "id", "approx_constraint"),
    }


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({}, "no loss given"),
        ({"sdm": 1.0, "xyz": 1.0}, "unknown loss 'xyz'; known losses: approx_constraint, c_itc, clip_itc"),
        ({"sdm": -1.0}, "losses.sdm: weight must be a number"),
        ({"sdm": "1"}, "losses.sdm: weight must be a number"),
        ({"sdm": True}, "losses.sdm: weight must be a number"),
        ({"sdm": 0.0}, "every weight is 0"),
    ],
)
def test_bad_loss_weights_raise_config_error(weights, message):
    with pytest.raises(ConfigError, match=message):
        check_loss_weights(weights)


# --- TBPS-CLIP losses: hand-computed cases ------------------------------------------------------------


def _softmax(row):
    z = sum(math.exp(x) for x in row)
    return [math.exp(x) / z for x in row]


def test_n_itc_soft_label_2x2_hand_computed():
    # i2t logits [[2, 1.2], [0, 1.6]], t2i = transpose; targets a*softmax(row) + (1-a)*one-hot (eq. 1 + soft label)
    alpha = 0.5
    expected = 0.0
    for logits in ([[2, 1.2], [0, 1.6]], [[2, 0], [1.2, 1.6]]):
        for i, row in enumerate(logits):
            p = _softmax(row)
            target = [alpha * pj + (1 - alpha) * (1.0 if j == i else 0.0) for j, pj in enumerate(p)]
            expected += -sum(tj * math.log(pj) for tj, pj in zip(target, p)) / 2 / 2
    got = itc_loss(t(IMAGES_2), t(TEXTS_2), pids(0, 1), pids(0, 1), 2.0, soft_label=alpha)
    assert got.item() == pytest.approx(expected, abs=1e-9)
    assert itc_loss(
        t(IMAGES_2), t(TEXTS_2), pids(0, 1), pids(0, 1), 2.0, soft_label=0.0
    ).item() != pytest.approx(expected, abs=1e-4)


def test_soft_label_targets_carry_no_gradient():
    images = t(IMAGES_2).requires_grad_()
    hard = itc_loss(images, t(TEXTS_2), pids(0, 1), pids(0, 1), 2.0)
    soft = itc_loss(images, t(TEXTS_2), pids(0, 1), pids(0, 1), 2.0, soft_label=0.5)
    (g_hard,) = torch.autograd.grad(hard, images)
    (g_soft,) = torch.autograd.grad(soft, images)
    # d/dlogits of CE(target, softmax) = p - target with target constant: (p - (a p + (1-a) y)) = (1-a)(p - y)
    assert torch.allclose(g_soft, 0.5 * g_hard, atol=1e-12)


def test_clip_itc_ignores_identities():
    ids = pids(7, 7, 9)
    clip = itc_loss(t(IMAGES_3), t(TEXTS_3), ids, ids, 2.0, identity_aware=False)
    assert clip.item() == pytest.approx(
        itc_loss(t(IMAGES_3), t(TEXTS_3), pids(0, 1, 2), pids(0, 1, 2), 2.0).item()
    )


def test_r_itc_2x2_hand_computed():
    # eq. 4: (1/2N) sum_rows sum_j p_ij log(p_ij / (q_ij + eps)), both directions, eps = 1e-2
    eps = 1e-2
    expected = 0.0
    for logits in ([[2, 1.2], [0, 1.6]], [[2, 0], [1.2, 1.6]]):
        for i, row in enumerate(logits):
            p = _softmax(row)
            q = [1.0 if j == i else 0.0 for j in range(2)]
            expected += sum(pj * math.log(pj / (qj + eps)) for pj, qj in zip(p, q)) / 2 / 2
    got = r_itc_loss(t(IMAGES_2), t(TEXTS_2), pids(0, 1), pids(0, 1), 2.0)
    assert got.item() == pytest.approx(expected, abs=1e-9)


def test_c_itc_2x2_hand_computed():
    # I I^T = eye, T T^T = [[1, .6], [.6, 1]] -> in-modal mean square gap 2 * .36 / 4 = .18;
    # I T^T = [[1, .6], [0, .8]] -> (S - S^T) has +-.6 off the diagonal -> cross-modal .18.
    got = c_itc_loss(t(IMAGES_2), t(TEXTS_2))
    assert got.item() == pytest.approx(0.25 * 0.18 + 0.25 * 0.18, abs=1e-12)
    assert c_itc_loss(t(IMAGES_2), t(IMAGES_2)).item() == pytest.approx(0.0, abs=1e-12)


def test_simclr_hand_computed():
    # views a = b = [e1, e2], tau 1: each of the 4 rows sees its positive at cos 1 and two others at cos 0
    views = t([[1.0, 0.0], [0.0, 1.0]])
    assert simclr_loss(views, views.clone(), tau=1.0).item() == pytest.approx(
        math.log(1 + 2 / math.e), abs=1e-9
    )
    # tau_s = 0.1 sharpens: the loss falls as the positive dominates
    assert simclr_loss(views, views.clone(), tau=0.1).item() == pytest.approx(
        math.log(1 + 2 / math.e**10), abs=1e-9
    )


def test_views_drive_mvs_and_ss_losses():
    gen = torch.Generator().manual_seed(0)
    image, image2, text, text2 = (torch.randn(4, 3, generator=gen, dtype=torch.float64) for _ in range(4))
    ids = pids(0, 0, 1, 2)
    ss = {
        name: torch.randn(4, 5, generator=gen, dtype=torch.float64)
        for name in ("image", "image2", "text", "text2")
    }
    views = Views(image, text, ids, 3.0, image2=image2, text2=text2, ss=ss, soft_label=0.2)
    params = LossParams(ss_tau=0.1)

    def value(name):
        return LOSSES[name].fn(views, params).item()

    assert value("mvs_i") == pytest.approx(itc_loss(image2, text, ids, ids, 3.0, 0.2).item())
    assert value("mvs_t") == pytest.approx(itc_loss(image, text2, ids, ids, 3.0, 0.2).item())
    assert value("mvs_it") == pytest.approx(itc_loss(image2, text2, ids, ids, 3.0, 0.2).item())
    assert value("n_itc") == pytest.approx(itc_loss(image, text, ids, ids, 3.0, 0.2).item())
    assert value("ss_i") == pytest.approx(simclr_loss(ss["image"], ss["image2"], 0.1).item())
    assert value("ss_it") == pytest.approx(value("ss_i") + value("ss_t"))
    assert value("r_itc") == pytest.approx(sdm_loss(image, text, ids, ids, 3.0, 1e-2).item() / 2)


def test_required_views_and_heads():
    assert required_views({"n_itc": 1.0, "r_itc": 1.0}) == set()
    assert required_views({"n_itc": 1.0, "mvs_i": 1.0, "ss_t": 0.4}) == {"image2", "text2"}
    assert required_views({"sdm": 1.0, "id": 1.0, "mlm": 1.0}) == {"id", "mlm"}
    assert required_ss_heads({"ss_it": 1.0}) == ["image", "text"]
    assert required_ss_heads({"ss_i": 1.0, "mvs_t": 1.0}) == ["image"]
