"""`tbpr demo` end to end on SynthPedes tiny (pretrained tbpr-lite row compared with a from-scratch row),
its resume, and the next commands it prints."""

import json
import shlex
from pathlib import Path

import pytest

from tbpr import demo
from tbpr.cli import build_parser, demo_cmd, main
from tbpr.demo import chance_warning, next_commands, start_label
from tbpr.train import load_config

FAST = ["model.image_size=[64, 32]", "optim.epochs=1", "data.batch_size=16", "data.num_workers=0"]


@pytest.mark.slow
def test_demo_reports_pretrained_and_scratch_rows_resumes_and_its_next_commands_run(tmp_path, capsys):
    out = tmp_path / "demo"
    sets = [x for s in FAST for x in ("--set", s)]
    args = [
        "demo",
        "--out",
        str(out),
        "--size",
        "tiny",
        "--config",
        "tbpr-lite",
        "--compare",
        "cpu-small",
        *sets,
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "tbpr-lite, pretrained start" in printed and "tbpr-tiny, from scratch" in printed
    assert "random ranking" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"run", "run-compare", "chance"}
    assert 0 < metrics["chance"]["t2i"]["R1"] < 20
    report = (out / "report.md").read_text()
    for row in ("t2i, tbpr-lite, pretrained start", "t2i, tbpr-tiny, from scratch", "t2i, random ranking"):
        assert f"| {row}" in report
    assert report.count("selected on the validation split") == 2
    assert "recipe `tbpr-lite` in" in report and "recipe `cpu-small` in" in report
    below = metrics["run"]["t2i"]["R1"] <= metrics["chance"]["t2i"]["R1"]
    assert ("**At or below chance: text-to-image R1" in report) == below
    assert (out / "retrieval_synthpedes-tiny-seed0_test.png").stat().st_size > 1000
    commands = next_commands(out, out / "synthpedes-tiny-seed0")
    assert all(c in report and c in printed for c in commands)
    logs = [(out / run / "metrics.jsonl").read_text() for run in ("run", "run-compare")]
    assert main(args) == 0  # second run: data and training are reused, evaluation repeated
    assert [(out / run / "metrics.jsonl").read_text() for run in ("run", "run-compare")] == logs
    capsys.readouterr()
    for command in commands[:2]:  # index the test images with the demo's model, then search them
        assert main(shlex.split(command)[1:]) == 0
    assert capsys.readouterr().out.count(".jpg") >= 10  # the top 10 of the indexed test images
    assert (out / "search.png").stat().st_size > 1000


@pytest.mark.slow
def test_demo_without_compare_trains_one_model_and_reports_it_against_chance(tmp_path, capsys):
    sets = [x for s in ["model.arch=tbpr-micro", *FAST] for x in ("--set", s)]
    args = ["demo", "--out", str(tmp_path), "--size", "tiny", "--config", "cpu-small", "--compare", "none"]
    assert main([*args, *sets]) == 0
    table = capsys.readouterr().out.split("\n\nreport:")[0]
    assert "t2i, tbpr-micro, from scratch" in table and "t2i, random ranking" in table
    assert table.count("\n") == 5  # header, rule, the model's two rows, chance's two rows
    assert set(json.loads((tmp_path / "metrics.json").read_text())) == {"run", "chance"}
    assert not (tmp_path / "run-compare").exists()


def test_next_commands_parse_with_the_real_cli():
    out, data = Path("my demo"), Path("my demo/synthpedes-small-seed0")
    index, search, serve = next_commands(out, data)
    parser = build_parser()
    parsed = parser.parse_args(shlex.split(index)[1:])
    assert (parsed.command, parsed.run, parsed.images, parsed.out) == (
        "index",
        Path("my demo/run"),
        Path("my demo/synthpedes-small-seed0/imgs/test"),
        Path("my demo/index"),
    )
    parsed = parser.parse_args(shlex.split(search)[1:])
    assert (parsed.command, str(parsed.index), parsed.query, parsed.k) == (
        "search",
        "my demo/index",
        demo.EXAMPLE_QUERY,
        10,
    )
    parsed = parser.parse_args(shlex.split(serve)[1:])
    assert (parsed.command, str(parsed.index)) == ("serve", "my demo/index")


def test_demo_defaults_pretrained_against_scratch():
    assert (demo_cmd.DEMO_RECIPE, demo_cmd.COMPARE_RECIPE, demo_cmd.COMPARE_EPOCHS) == (
        demo.DEMO_RECIPE,
        demo.COMPARE_RECIPE,
        demo.COMPARE_EPOCHS,
    )
    assert start_label(load_config(demo.DEMO_RECIPE).model) == "pretrained start"
    assert start_label(load_config(demo.COMPARE_RECIPE).model) == "from scratch"
    assert start_label(load_config("cpu-small", ["model.pretrained=openai"]).model) == "pretrained start"
    towers = ["model.text_tower.weights=random", "model.image_tower.weights=random"]
    assert start_label(load_config("tbpr-lite", towers).model) == "from scratch"
    args = build_parser().parse_args(["demo"])
    assert (args.config, args.compare, args.compare_epochs) == ("tbpr-lite", "cpu-small", 10)


def test_a_result_at_or_below_chance_is_flagged():
    chance = {"R1": 15.2, "mAP": 20.0}
    warning = chance_warning({"R1": 12.9, "mAP": 25.0}, chance)
    assert warning.startswith("At or below chance: text-to-image R1 12.9 against 15.2 for random ranking.")
    assert "mAP" not in warning
    assert "R1 15.2 against 15.2, mAP 20.0 against 20.0" in chance_warning({"R1": 15.2, "mAP": 20.0}, chance)
    assert chance_warning({"R1": 15.3, "mAP": 20.1}, chance) is None
