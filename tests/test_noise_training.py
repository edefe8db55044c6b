"""Clean-sample division in training on SynthPedes tiny with pair noise, resume, and `tbpr analyze noise`."""

import json

import numpy as np
import pytest

from micro import MICRO_LOGGED
from tbpr.analysis.noise import detection_scores, moved_captions, noise_detection_table
from tbpr.cli import main
from tbpr.data import read_dataset
from tbpr.train import load_config, train
from tbpr.train.noise import division_path, load_division, save_division

MICRO = [
    *MICRO_LOGGED,
    "optim.epochs=2",
    "optim.lr=1e-3",
    "noise.division=gmm",
    "noise.warmup_epochs=1",
    "noise.losses=[sdm, tal]",  # two vectors: their consensus
]


@pytest.fixture(scope="module")
def pair_noisy(tmp_path_factory):
    from tbpr.data.synthpedes import generate

    out = tmp_path_factory.mktemp("synthpedes") / "tiny-pair-noise"
    generate(out, size="tiny", seed=0, pair_noise=0.3)
    return out


def run(data, out, *extra):
    return train(load_config("cpu-small", [*MICRO, f"data.path={data}", f"output_dir={out}", *extra]))


def train_losses(run_dir) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


@pytest.mark.slow
def test_two_epochs_with_division_write_and_score_it(tmp_path, pair_noisy, capsys):
    out = run(pair_noisy, tmp_path / "run")
    files = sorted(p.name for p in (out / "noise").glob("*.npz"))
    assert files == ["epoch-002.npz"]  # epoch 1 is the warm-up: every pair
    record = load_division(division_path(out, 2))
    train_ids = [c.id for c in read_dataset(pair_noisy).split("train").captions]
    assert record["caption_ids"].tolist() == train_ids
    assert 0 < record["clean"].sum() < len(train_ids)
    assert {"loss_sdm", "prob_sdm", "loss_tal", "prob_tal"} <= set(record)
    assert all(np.isfinite(v) for v in train_losses(out).values())

    assert main(["analyze", "noise", str(out), "--data", str(pair_noisy)]) == 0
    table = capsys.readouterr().out
    assert "| epoch | pairs | noisy | flagged noisy | precision | recall | F1 |" in table
    scores = json.loads((out / "noise" / "scores.json").read_text())
    assert [r["epoch"] for r in scores] == [2]
    assert scores[0]["pairs"] == len(train_ids) and scores[0]["noisy"] == 58  # 30% of the 98 images' captions


@pytest.mark.slow
def test_resume_reads_the_epochs_division_instead_of_recomputing_it(tmp_path, pair_noisy):
    out = tmp_path / "run"
    run(pair_noisy, out, "max_steps=14", "checkpoint_every=2")  # 12 steps per epoch: stops inside epoch 2
    path = division_path(out, 2)
    record = load_division(path)
    # doctor the division: every pair noisy. A resumed run that reads it trains on nothing (loss 0); one that
    # recomputed it would overwrite the file and train on the pairs it calls clean
    record["clean"] = np.zeros_like(record["clean"])
    save_division(path, 2, record.pop("caption_ids"), {k: v for k, v in record.items() if k != "epoch"})
    before = path.read_bytes()
    run(pair_noisy, out)
    assert path.read_bytes() == before
    losses = train_losses(out)
    assert max(losses) == 24 and all(losses[s] == 0 for s in range(15, 25))
    assert all(losses[s] > 0 for s in range(1, 13))


def test_a_fresh_run_drops_the_old_runs_divisions(tmp_path, pair_noisy):
    out = tmp_path / "run"
    save_division(division_path(out, 7), 7, np.arange(3), {"clean": np.ones(3, bool)})
    run(pair_noisy, out, "max_steps=1")
    assert not division_path(out, 7).exists()


def test_detection_scores_hand_computed():
    flagged = np.array([1, 1, 0, 0, 1], dtype=bool)
    noisy = np.array([1, 0, 1, 0, 1], dtype=bool)
    # hits 2 (rows 0, 4): precision 2/3, recall 2/3, F1 2/3
    assert detection_scores(flagged, noisy) == pytest.approx(
        {"precision": 200 / 3, "recall": 200 / 3, "f1": 200 / 3}
    )
    assert detection_scores(np.zeros(5, bool), noisy) == {"precision": None, "recall": 0.0, "f1": None}
    assert detection_scores(flagged, ~flagged)["f1"] == 0.0


def test_analyze_noise_scores_a_hand_made_division(tmp_path, pair_noisy):
    truth = moved_captions(pair_noisy)
    ids = np.array([c.id for c in read_dataset(pair_noisy).split("train").captions])
    noisy_ids = [i for i in ids if truth[i]]
    clean_ids = [i for i in ids if not truth[i]]
    assert len(noisy_ids) == 58
    # flag 40 truly moved pairs and 10 untouched ones: precision 40/50 = 80, recall 40/58 = 68.97,
    # F1 = 2 * 80 * 68.97 / (80 + 68.97) = 74.07
    flagged = set(noisy_ids[:40]) | set(clean_ids[:10])
    save_division(division_path(tmp_path, 3), 3, ids, {"clean": np.array([i not in flagged for i in ids])})
    (row,) = noise_detection_table(tmp_path, pair_noisy)
    assert (row["epoch"], row["pairs"], row["noisy"], row["flagged"]) == (3, len(ids), 58, 50)
    assert row["precision"] == pytest.approx(80.0)
    assert row["recall"] == pytest.approx(6896.55 / 100, abs=1e-3)
    assert row["f1"] == pytest.approx(74.074, abs=1e-3)


def test_analyze_noise_without_divisions_is_a_clear_error(tmp_path, pair_noisy, caplog):
    assert main(["analyze", "noise", str(tmp_path), "--data", str(pair_noisy)]) != 0
    assert f"{tmp_path}/noise has no epoch-NNN.npz: train with noise.division=gmm" in caplog.text


@pytest.mark.slow
def test_division_composes_with_noise_aware_masking(tmp_path, pair_noisy):
    overrides = [*MICRO[:8], "masking.dump=true", "noise.division=gmm", "noise.warmup_epochs=1"]
    cfg = load_config("mllm4text-small", [*overrides, f"data.path={pair_noisy}", f"output_dir={tmp_path}"])
    assert cfg.masking.mode == "nam"
    out = train(cfg)
    assert sorted(p.name for p in (out / "nam").glob("epoch_*.pt")) == ["epoch_001.pt", "epoch_002.pt"]
    assert division_path(out, 2).is_file()
    assert all(np.isfinite(v) for v in train_losses(out).values())
