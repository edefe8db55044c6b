"""Retrieval metrics against hand-computed cases and the field's implementation; metric tables."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from tbpr.evaluation import format_metrics_table, retrieval_metrics, retrieval_metrics_both
from tbpr.evaluation.reference import reference_retrieval_metrics

METRICS = ("R1", "R5", "R10", "mAP", "mINP")

# Hand-computed case, 3 text queries x 5 gallery images.
# gallery pids [1, 1, 2, 2, 3], query pids [1, 2, 3].
# q0 (pid 1): order g0 .9, g2 .8, g4 .3, g1 .2, g3 .1 -> positive ranks 1, 4: AP = (1/1 + 2/4)/2 = .75, INP = 2/4
# q1 (pid 2): order g4 .7, g3 .6, g0 .5, g1 .4, g2 .3 -> ranks 2, 5: AP = (1/2 + 2/5)/2 = .45, INP = 2/5
# q2 (pid 3): order g3, g2, g1, g0, g4 .05          -> rank 5: AP = 1/5, INP = 1/5
# R1 = 1/3, R2 = 2/3, R5 = 3/3; mAP = (.75 + .45 + .2)/3; mINP = (.5 + .4 + .2)/3.
HAND_SIM = [
    [0.9, 0.2, 0.8, 0.1, 0.3],
    [0.5, 0.4, 0.3, 0.6, 0.7],
    [0.1, 0.2, 0.3, 0.4, 0.05],
]
HAND_Q = [1, 2, 3]
HAND_G = [1, 1, 2, 2, 3]


def metric_values(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("skipped_queries", "num_queries")}


def test_worked_example_from_the_field():
    out = retrieval_metrics(np.array([[0.1, 0.9, 0.5, 0.7, 0.3]]), [1], [1, 2, 1, 3, 1], ks=(1, 2, 3))
    assert out["R1"] == 0.0 and out["R2"] == 0.0 and out["R3"] == 100.0
    assert out["mAP"] == pytest.approx(100 * (1 / 3 + 2 / 4 + 3 / 5) / 3)
    assert round(out["mAP"], 2) == 47.78
    assert out["mINP"] == pytest.approx(60.0)
    assert out["skipped_queries"] == [] and out["num_queries"] == 1


def test_default_keys_are_the_papers_columns():
    out = retrieval_metrics(np.array([[0.1, 0.9, 0.5, 0.7, 0.3]]), [1], [1, 2, 1, 3, 1])
    assert list(out) == [*METRICS, "skipped_queries", "num_queries"]
    assert all(isinstance(out[k], float) for k in METRICS)
    assert out["R5"] == 100.0 and out["R10"] == 100.0


def test_hand_computed_multi_query_case():
    out = retrieval_metrics(torch.tensor(HAND_SIM), HAND_Q, HAND_G, ks=(1, 2, 5))
    assert out["R1"] == pytest.approx(100 / 3)
    assert out["R2"] == pytest.approx(200 / 3)
    assert out["R5"] == pytest.approx(100.0)
    assert out["mAP"] == pytest.approx(100 * (0.75 + 0.45 + 0.2) / 3)
    assert out["mINP"] == pytest.approx(100 * (0.5 + 0.4 + 0.2) / 3)


def test_image_to_text_is_the_transpose_hand_computed():
    # Image queries over texts with pids [1, 2, 3]; one positive text each:
    # g0 [.9 .5 .1] -> rank 1; g1 [.2 .4 .2] -> t1, then t0 before t2 (tie, earlier first): rank 2;
    # g2 [.8 .3 .3] -> t1 ties t2 and comes first: rank 2; g3 [.1 .6 .4] -> rank 1; g4 [.3 .7 .05] -> rank 3.
    # R1 = 2/5, R2 = 4/5; AP = INP = 1/rank: (1 + .5 + .5 + 1 + 1/3)/5.
    both = retrieval_metrics_both(torch.tensor(HAND_SIM), HAND_Q, HAND_G, ks=(1, 2, 5))
    i2t = both["i2t"]
    assert i2t["R1"] == pytest.approx(40.0) and i2t["R2"] == pytest.approx(80.0) and i2t["R5"] == 100.0
    assert i2t["mAP"] == pytest.approx(100 * (3 + 1 / 3) / 5)
    assert i2t["mINP"] == pytest.approx(i2t["mAP"])
    assert both["t2i"] == retrieval_metrics(torch.tensor(HAND_SIM), HAND_Q, HAND_G, ks=(1, 2, 5))
    assert i2t == retrieval_metrics(torch.tensor(HAND_SIM).T, HAND_G, HAND_Q, ks=(1, 2, 5))


@pytest.mark.parametrize(
    ("gallery_pids", "ranks"),
    [
        ([2, 1, 2, 1, 1], [2, 4, 5]),  # all scores equal: gallery order decides
        ([1, 2, 1, 1, 2], [1, 3, 4]),
    ],
)
def test_ties_rank_the_earlier_gallery_index_first(gallery_pids, ranks):
    out = retrieval_metrics(torch.full((1, 5), 0.5), [1], gallery_pids)
    assert out["R1"] == (100.0 if ranks[0] == 1 else 0.0)
    assert out["mAP"] == pytest.approx(100 * sum(k / r for k, r in enumerate(ranks, 1)) / len(ranks))
    assert out["mINP"] == pytest.approx(100 * len(ranks) / ranks[-1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_negative_zero_ties_with_zero(dtype):
    # -0.0 == 0.0, so the positive at index 0 wins the tie; [0.0, -0.0] with the positive second loses it.
    assert retrieval_metrics(torch.tensor([[-0.0, 0.0]], dtype=dtype), [1], [1, 2])["R1"] == 100.0
    assert retrieval_metrics(torch.tensor([[0.0, -0.0]], dtype=dtype), [1], [2, 1])["R1"] == 0.0


def test_negative_scores_are_ordered():
    # order g3 .3, g1 -.1, g0 -.5, g2 -2 -> positives (pid 1) at ranks 3, 4.
    out = retrieval_metrics(torch.tensor([[-0.5, -0.1, -2.0, 0.3]]), [1], [1, 2, 1, 3])
    assert out["mAP"] == pytest.approx(100 * (1 / 3 + 2 / 4) / 2)
    assert out["mINP"] == pytest.approx(50.0)


def test_inputs_are_not_modified():
    sim = torch.tensor([[-0.5, 0.2, -0.0], [0.1, -0.3, 0.4]])
    before = sim.clone()
    retrieval_metrics(sim, [1, 2], [1, 2, 1])
    assert torch.equal(sim.view(torch.int32), before.view(torch.int32))


def random_case(rng: np.random.Generator, num_queries: int, gallery_size: int, num_ids: int, decimals: int):
    """Scores rounded to ``decimals`` (many ties); some query ids may be absent from the gallery."""
    sim = np.round(rng.standard_normal((num_queries, gallery_size)), decimals).astype(np.float32)
    return sim, rng.integers(0, num_ids, num_queries), rng.integers(0, num_ids, gallery_size)


def assert_same_metrics(ours: dict, ref: dict, abs_tol: float = 1e-4) -> None:
    assert ours["skipped_queries"] == ref["skipped_queries"]
    assert ours["num_queries"] == ref["num_queries"]
    for key, value in metric_values(ref).items():
        assert ours[key] == pytest.approx(value, abs=abs_tol), key


@pytest.mark.parametrize(
    ("num_queries", "gallery_size", "num_ids", "decimals"),
    [
        (1, 1, 1, 1),
        (3, 7, 2, 1),
        (50, 20, 5, 0),  # many positives per query, heavy ties
        (200, 300, 60, 1),
        (120, 500, 400, 2),  # few positives, some queries without any
        (7, 1000, 3, 3),
    ],
)
def test_random_cases_match_the_field_implementation(num_queries, gallery_size, num_ids, decimals):
    rng = np.random.default_rng(num_queries * 1000 + gallery_size)
    sim, q, g = random_case(rng, num_queries, gallery_size, num_ids, decimals)
    ks = (1, 2, 5, 10)
    assert_same_metrics(retrieval_metrics(sim, q, g, ks=ks), reference_retrieval_metrics(sim, q, g, ks=ks))
    assert_same_metrics(
        retrieval_metrics(sim.T, g, q, ks=ks), reference_retrieval_metrics(sim.T, g, q, ks=ks)
    )


def test_float64_scores_rank_exactly():
    # 1 + 1e-12 and 1 are distinct in float64 but equal in float32: ranking must keep them apart.
    rng = np.random.default_rng(3)
    sim = np.round(rng.standard_normal((40, 60)), 1) + rng.integers(0, 2, (40, 60)) * 1e-12
    q, g = rng.integers(0, 6, 40), rng.integers(0, 6, 60)
    assert_same_metrics(retrieval_metrics(sim, q, g), reference_retrieval_metrics(sim, q, g))
    assert retrieval_metrics(np.array([[1.0, 1.0 + 1e-12]]), [1], [1, 2])["R1"] == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_scores_keep_their_ties(dtype):
    rng = np.random.default_rng(4)
    sim, q, g = random_case(rng, 30, 40, 5, 1)
    low = torch.from_numpy(sim).to(dtype)
    assert retrieval_metrics(low, q, g) == retrieval_metrics(low.float(), q, g)


def test_queries_without_positives_are_skipped_and_reported(caplog):
    rng = np.random.default_rng(5)
    sim, q, g = random_case(rng, 30, 40, 4, 1)
    g = g + 1  # gallery pids 1..4: queries with pid 0 have no positive
    q[[2, 9]] = 0
    q[[0, 1, 3, 4, 5, 6, 7, 8]] = 1
    expected_skipped = np.flatnonzero(q == 0).tolist()
    with caplog.at_level(logging.WARNING, logger="tbpr.evaluation.metrics"):
        out = retrieval_metrics(sim, q, g)
    assert out["skipped_queries"] == expected_skipped and expected_skipped
    assert f"{len(expected_skipped)} of 30 queries" in caplog.text
    keep = q != 0
    kept = retrieval_metrics(sim[keep], q[keep], g)
    assert metric_values(out) == metric_values(kept)
    assert all(np.isfinite(v) for v in metric_values(out).values())


def test_all_queries_skipped_gives_zeros_and_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="tbpr.evaluation.metrics"):
        out = retrieval_metrics(np.ones((3, 4), dtype=np.float32), [7, 8, 9], [1, 2, 3, 4])
    assert metric_values(out) == dict.fromkeys(METRICS, 0.0)
    assert out["skipped_queries"] == [0, 1, 2]
    assert "3 of 3 queries" in caplog.text
    assert reference_retrieval_metrics(np.ones((3, 4), dtype=np.float32), [7, 8, 9], [1, 2, 3, 4]) == out


def test_empty_gallery_skips_every_query():
    out = retrieval_metrics(np.zeros((2, 0), dtype=np.float32), [1, 2], np.zeros(0, dtype=int))
    assert out["skipped_queries"] == [0, 1] and out["mAP"] == 0.0


def test_numpy_and_torch_inputs_give_the_same_dict():
    rng = np.random.default_rng(6)
    sim, q, g = random_case(rng, 25, 30, 6, 1)
    expected = retrieval_metrics(sim, q, g)
    assert retrieval_metrics(torch.from_numpy(sim), torch.from_numpy(q), torch.from_numpy(g)) == expected
    assert retrieval_metrics(sim, q.tolist(), g.tolist()) == expected
    assert retrieval_metrics(sim, q.astype(np.int32), g.astype(np.int16)) == expected


@pytest.mark.parametrize("chunk_size", [1, 7, 10_000])
def test_chunk_size_never_changes_the_result(chunk_size):
    rng = np.random.default_rng(7)
    sim, q, g = random_case(rng, 60, 80, 8, 1)
    assert retrieval_metrics(sim, q, g, chunk_size=chunk_size) == retrieval_metrics(sim, q, g)


@pytest.mark.parametrize(
    ("sim", "q", "g", "message"),
    [
        (np.zeros(3), [1], [1, 2, 3], "2-D"),
        (np.zeros((2, 3)), [1], [1, 2, 3], "query_pids has 1 entries"),
        (np.zeros((2, 3)), [1, 2], [1, 2], "gallery_pids has 2 entries"),
        (np.zeros((2, 3)), [1.0, 2.0], [1, 2, 3], "integer person ids"),
        (np.array([[0.1, np.nan, 0.3]]), [1], [1, 2, 3], "row 0 contains NaN"),
        (np.zeros((0, 3)), np.zeros(0, dtype=int), [1, 2, 3], "no query rows"),
        (np.zeros((2, 3), dtype=bool), [1, 2], [1, 2, 3], "real scores"),
    ],
)
def test_bad_inputs_raise_value_errors(sim, q, g, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(sim, q, g)


def test_nan_error_names_the_row_whatever_the_chunking():
    sim = np.zeros((6, 4), dtype=np.float32)
    sim[4, 2] = np.nan
    with pytest.raises(ValueError, match="row 4 contains NaN"):
        retrieval_metrics(sim, [1, 2, 1, 1, 2, 1], [1, 2, 2, 1], chunk_size=2)


def test_infinite_scores_rank_like_any_other():
    sim = torch.tensor([[float("-inf"), 1.0, float("inf"), 0.0]])  # order g2, g1, g3, g0
    out = retrieval_metrics(sim, [1], [1, 2, 2, 1], ks=(1, 3))
    assert out["R3"] == 100.0 and out["mAP"] == pytest.approx(100 * (1 / 3 + 2 / 4) / 2)


def test_bad_chunk_size_and_ks_raise():
    with pytest.raises(ValueError, match="chunk_size"):
        retrieval_metrics(np.zeros((1, 2)), [1], [1, 2], chunk_size=0)
    with pytest.raises(ValueError, match="ks"):
        retrieval_metrics(np.zeros((1, 2)), [1], [1, 2], ks=(0, 1))


def test_metrics_table_lists_each_row_with_two_decimals():
    results = {
        "t2i": {
            "R1": 73.4,
            "R5": 89.321,
            "R10": 93.0,
            "mAP": 66.128,
            "mINP": 50.005,
            "skipped_queries": [],
            "num_queries": 6156,
        },
        "i2t": {
            "R1": 5.0,
            "R5": 10.0,
            "R10": 20.0,
            "mAP": 1.0,
            "mINP": 0.5,
            "skipped_queries": [3, 8],
            "num_queries": 3074,
        },
    }
    lines = format_metrics_table(results).splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == [
        "task",
        "R1",
        "R5",
        "R10",
        "mAP",
        "mINP",
        "skipped",
    ]
    assert set(lines[1]) <= {"|", "-", ":"}
    assert [cell.strip() for cell in lines[2].strip("|").split("|")] == [
        "t2i",
        "73.40",
        "89.32",
        "93.00",
        "66.13",
        "50.01",
        "0/6156",
    ]
    assert [cell.strip() for cell in lines[3].strip("|").split("|")] == [
        "i2t",
        "5.00",
        "10.00",
        "20.00",
        "1.00",
        "0.50",
        "2/3074",
    ]
    assert len({len(line) for line in lines}) == 1  # columns aligned


def test_metrics_table_of_real_results_and_custom_ks():
    sim = torch.tensor(HAND_SIM)
    table = format_metrics_table(
        {"cuhk": retrieval_metrics(sim, HAND_Q, HAND_G, ks=(1, 2))}, name_header="dataset"
    )
    header, _, row = table.splitlines()
    assert header.split("|")[1].strip() == "dataset" and "R2" in header and "R5" not in header
    assert row.split("|")[2].strip() == "33.33"
    with pytest.raises(ValueError, match="no results"):
        format_metrics_table({})
