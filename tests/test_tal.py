"""RDE's Triplet Alignment Loss, per-sample loss forms and the clean-row weights of the registry."""

import pytest
import torch

from tbpr.errors import ConfigError
from tbpr.losses import LOSSES, LossParams, Views, check_per_sample, compute_losses, tal_loss, tal_per_sample

# Rows are texts, columns images; pids [0, 1, 1]; margin 0.1, tau 1 (so every exp is small enough by hand).
SCORES = [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.6, 0.8]]
PIDS = torch.tensor([0, 1, 1])
# Text rows (S):
#   t0: positive {0}: pulled 1; negatives {1, 2}: log(e^0 + e^0) = 0.693147 -> [0.1 - 1 + 0.693147]_+ = 0
#   t1: positives {1, 2} at 0.8, 0: a = softmax(0.8, 0) = (0.689974, 0.310026), pulled 0.551979;
#       negative {0}: log e^0.6 = 0.6 -> 0.1 - 0.551979 + 0.6 = 0.148021
#   t2: positives {1, 2} at 0.6, 0.8: a = (0.450166, 0.549834), pulled 0.709967; negative 0 -> [<0]_+ = 0
# Image rows (S^T):
#   i0 = [1, 0.6, 0]: positive {0}: 1; negatives log(e^0.6 + e^0) = 1.037488 -> 0.1 - 1 + 1.037488 = 0.137488
#   i1 = [0, 0.8, 0.6]: pulled 0.709967, negative 0 -> 0;  i2 = [0, 0, 0.8]: pulled 0.551979 -> 0
# Per sample (text row + image row): [0.137488, 0.148021, 0]; TAL sums them: 0.285509.
EXPECTED = [0.137488, 0.148021, 0.0]


def test_tal_3x3_hand_computed():
    per = tal_per_sample(torch.tensor(SCORES), PIDS, PIDS, tau=1.0, margin=0.1)
    assert per.tolist() == pytest.approx(EXPECTED, abs=1e-5)


def test_tal_positive_weights_are_detached():
    # d(t1's loss)/dS_11 = -a_11 = -0.689974 with a detached (a gradient through a would add to it)
    scores = torch.tensor(SCORES, requires_grad=True)
    tal_per_sample(scores, PIDS, PIDS, tau=1.0, margin=0.1)[1].backward()
    assert scores.grad[1, 1].item() == pytest.approx(-0.689974, abs=1e-5)
    assert scores.grad[1, 2].item() == pytest.approx(-0.310026, abs=1e-5)


def test_tal_loss_sums_over_samples_with_rde_defaults():
    images = torch.eye(3)
    texts = torch.tensor(SCORES) * 5  # normalized inside: the cosines are SCORES
    assert tal_loss(images, texts, PIDS, tau=1.0, margin=0.1).item() == pytest.approx(0.285509, abs=1e-5)
    params = LossParams()
    assert (params.tal_tau, params.tal_margin) == (0.015, 0.1)
    views = Views(image=images, text=texts, pids=PIDS, logit_scale=1.0)
    total, _ = compute_losses({"tal": 1.0}, views, LossParams(tal_tau=1.0))
    assert total.item() == pytest.approx(0.285509, abs=1e-5)


def test_tal_row_without_negatives_costs_zero_and_has_finite_gradient():
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.7]], requires_grad=True)
    pids = torch.tensor([3, 3])
    per = tal_per_sample(scores, pids, pids)
    per.sum().backward()
    assert per.tolist() == [0.0, 0.0]
    assert torch.isfinite(scores.grad).all()


@pytest.mark.parametrize("name", ["itc", "clip_itc", "n_itc", "sdm", "r_itc", "tal"])
def test_per_sample_form_reduces_to_the_loss(name):
    torch.manual_seed(0)
    views = Views(
        image=torch.randn(6, 8),
        text=torch.randn(6, 8),
        pids=torch.tensor([0, 0, 1, 2, 2, 3]),
        logit_scale=10.0,
    )
    views.soft_label = 0.3
    spec, params = LOSSES[name], LossParams()
    per = spec.per_sample(views, params)
    reduced = per.sum() if spec.summed else per.mean()
    assert reduced.item() == pytest.approx(spec.fn(views, params).item(), rel=1e-5)


def test_weights_drop_noisy_rows_from_the_loss():
    torch.manual_seed(1)
    image, text = torch.randn(4, 8), torch.randn(4, 8)
    pids = torch.arange(4)
    weights = torch.tensor([1.0, 0.0, 1.0, 1.0])
    views = Views(image=image, text=text, pids=pids, logit_scale=10.0, weights=weights)
    per_sdm = LOSSES["sdm"].per_sample(views, LossParams())
    per_tal = LOSSES["tal"].per_sample(views, LossParams())
    total, record = compute_losses({"sdm": 1.0, "tal": 2.0}, views)
    assert record["sdm"] == pytest.approx(per_sdm[[0, 2, 3]].mean().item(), rel=1e-5)
    assert record["tal"] == pytest.approx(per_tal[[0, 2, 3]].sum().item(), rel=1e-5)
    assert total.item() == pytest.approx(record["sdm"] + 2 * record["tal"], rel=1e-5)


def test_sdm_soft_label_smooths_its_targets():
    torch.manual_seed(2)
    views = Views(image=torch.randn(4, 8), text=torch.randn(4, 8), pids=torch.arange(4), logit_scale=10.0)
    hard = LOSSES["sdm"].fn(views, LossParams()).item()
    views.soft_label = 1.0  # targets = the model's own (detached) distribution: KL 0
    assert LOSSES["sdm"].fn(views, LossParams()).item() == pytest.approx(0.0, abs=1e-6)
    assert hard > 0.01


def test_losses_without_a_per_sample_form_are_refused():
    check_per_sample(["sdm", "tal", "n_itc"])
    with pytest.raises(ConfigError, match=r"losses \['ss_i'\] have no per-sample form"):
        check_per_sample(["sdm", "ss_i"])
