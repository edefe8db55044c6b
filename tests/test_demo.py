"""`tbpr demo` end to end on SynthPedes tiny with a micro model, and its resume on a second run."""

import json

import pytest

from tbpr.cli import main
from tbpr.demo import chance_warning

FAST = [
    "model.arch=tbpr-micro",
    "model.image_size=[64, 32]",
    "optim.epochs=2",
    "data.batch_size=16",
    "data.num_workers=0",
]


@pytest.mark.slow
def test_demo_writes_report_metrics_and_figure_and_resumes(tmp_path, capsys):
    args = ["demo", "--out", str(tmp_path), "--size", "tiny", *[x for s in FAST for x in ("--set", s)]]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "text-to-image" in printed and "random ranking" in printed
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"synthpedes-tiny-seed0", "chance"}
    assert 0 < metrics["chance"]["t2i"]["R1"] < 20
    report = (tmp_path / "report.md").read_text()
    assert "selected on the validation split" in report and "| text-to-image" in report
    below = metrics["synthpedes-tiny-seed0"]["t2i"]["R1"] <= metrics["chance"]["t2i"]["R1"]
    assert ("**At or below chance: text-to-image R1" in report) == below
    figure = tmp_path / "retrieval_synthpedes-tiny-seed0_test.png"
    assert figure.stat().st_size > 1000
    log = (tmp_path / "run/metrics.jsonl").read_text()
    assert main(args) == 0  # second run: data and training are reused, evaluation repeated
    assert (tmp_path / "run/metrics.jsonl").read_text() == log


def test_a_result_at_or_below_chance_is_flagged():
    chance = {"R1": 15.2, "mAP": 20.0}
    warning = chance_warning({"R1": 12.9, "mAP": 25.0}, chance)
    assert warning.startswith("At or below chance: text-to-image R1 12.9 against 15.2 for random ranking.")
    assert "mAP" not in warning
    assert "R1 15.2 against 15.2, mAP 20.0 against 20.0" in chance_warning({"R1": 15.2, "mAP": 20.0}, chance)
    assert chance_warning({"R1": 15.3, "mAP": 20.1}, chance) is None
