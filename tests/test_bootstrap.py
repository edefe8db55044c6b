"""Per-query scores (saved, loaded) and the paired bootstrap over test queries, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tbpr.errors import DataError
from tbpr.evaluation.bootstrap import paired_bootstrap, query_scores, save_per_query, split_per_query
from tbpr.evaluation.metrics import retrieval_metrics_both


def test_identical_runs_give_the_interval_zero_zero():
    scores = np.array([100.0, 0.0, 100.0, 50.0, 0.0])
    assert paired_bootstrap(scores, scores.copy()) == (0.0, 0.0)


def test_a_constant_difference_is_the_whole_interval():
    assert paired_bootstrap(np.full(40, 100.0), np.zeros(40)) == (100.0, 100.0)


def test_right_on_strictly_more_queries_excludes_zero():
    # both right on queries 0-49; the first run also on 50-59: the mean difference is 10 points, and a
    # resample's mean is 100 * Binomial(100, 0.1) / 100, whose 2.5% and 97.5% points are 5 and 16
    better = np.where(np.arange(100) < 60, 100.0, 0.0)
    worse = np.where(np.arange(100) < 50, 100.0, 0.0)
    low, high = paired_bootstrap(better, worse)
    assert 4.0 <= low <= 6.0 and 15.0 <= high <= 17.0
    low, high = paired_bootstrap(worse, better)
    assert high < 0
    # one more right query out of 100 is not enough to exclude 0
    assert paired_bootstrap(np.where(np.arange(100) < 51, 100.0, 0.0), worse)[0] == 0.0


def test_the_resampling_is_seeded():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 2, 300) * 100.0, rng.integers(0, 2, 300) * 100.0
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)
    assert paired_bootstrap(a, b, seed=1) != paired_bootstrap(a, b, seed=0)


def test_the_width_matches_the_normal_approximation():
    # independent Bernoulli(0.3) hits at 8,000 queries: sd of a difference = sqrt(2 * 0.21) * 100
    rng = np.random.default_rng(0)
    a, b = (100.0 * (rng.random(8000) < 0.3) for _ in range(2))
    low, high = paired_bootstrap(a, b)
    expected = 2 * 1.96 * np.std(a - b) / np.sqrt(8000)
    assert abs((high - low) - expected) < 0.1 * expected


def test_bad_score_vectors_are_refused():
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="non-empty"):
        paired_bootstrap(np.zeros(0), np.zeros(0))


def test_per_query_scores_round_trip_and_match_the_metrics(tmp_path):
    # 3 text queries (pids 1, 2, 9) over 3 images (pids 1, 2, 1); pid 9 has no positive
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.8, 0.05, 0.1], [0.3, 0.2, 0.1]])
    results = {"data": retrieval_metrics_both(sim, [1, 2, 9], [1, 2, 1], per_query=True)}
    per_query = results["data"]["t2i"]["per_query"]
    assert per_query["rank"][:2].tolist() == [1, 3] and per_query["valid"].tolist() == [True, True, False]
    assert per_query["ap"][:2].tolist() == [
        1.0,
        1 / 3,
    ]  # query 0: positives at ranks 1 and 2; query 1: rank 3
    plain, arrays = split_per_query(results)
    assert "per_query" not in plain["data"]["t2i"] and "per_query" in results["data"]["t2i"]
    path = save_per_query(tmp_path / "per_query.npz", arrays)
    r1 = query_scores(path, "data", "t2i", "R1")
    assert r1.tolist() == [100.0, 0.0] and r1.mean() == plain["data"]["t2i"]["R1"]
    assert query_scores(path, "data", "t2i", "mAP").mean() == pytest.approx(plain["data"]["t2i"]["mAP"])
    assert query_scores(path, "data", "i2t", "R5").tolist() == [100.0, 100.0, 100.0]
    assert query_scores(path, "other", "t2i", "R1") is None
    assert query_scores(tmp_path / "missing.npz", "data", "t2i", "R1") is None
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(DataError, match="bad.npz: not a per-query score file"):
        query_scores(tmp_path / "bad.npz", "data", "t2i", "R1")
