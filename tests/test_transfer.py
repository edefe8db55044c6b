"""Transfer protocols: direct transfer over several datasets, fine-tuning from a run, the transfer matrix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tbpr.cli import main
from tbpr.errors import ConfigError
from tbpr.evaluation.transfer import format_grouped_table, parse_named

MICRO = ["--set", "model.arch=tbpr-micro", "--set", "model.image_size=[64, 32]"]
SMALL = ["--set", "data.batch_size=16", "--set", "data.num_workers=0", "--set", "eval_every=0"]


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """Two small SynthPedes target benchmarks with different seeds (and folder names)."""
    from tbpr.data.synthpedes import generate

    root = tmp_path_factory.mktemp("targets")
    out = {}
    for name, seed in (("synth_a", 1), ("synth_b", 2)):
        generate(root / name, size="tiny", seed=seed)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_run, targets):
    """A run fine-tuned for one step on ``synth_a`` from ``tiny_run``, through ``tbpr train --init-from``."""
    out = tmp_path_factory.mktemp("ft") / "ft_a"
    args = [
        "train",
        "--config",
        "cpu-small",
        *MICRO,
        *SMALL,
        "--set",
        "max_steps=1",
        "--set",
        "optim.epochs=1",
    ]
    assert (
        main([*args, "--data", str(targets["synth_a"]), "--out", str(out), "--init-from", str(tiny_run)]) == 0
    )
    return out


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_eval_direct_transfer_over_two_datasets(tiny_run, targets, tmp_path, capsys):
    report = tmp_path / "eval.json"
    data = [a for name in ("synth_a", "synth_b") for a in ("--data", str(targets[name]))]
    assert main(["eval", str(tiny_run), *data, "--num-workers", "0", "--json", str(report)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["run"] + [
        f"{d} {m}" for d in ("synth_a", "synth_b") for m in ("R1", "R5", "R10", "mAP")
    ]
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        f"{tiny_run.name} t2i",
        f"{tiny_run.name} i2t",
    ]
    results = json.loads(report.read_text())
    assert set(results) == {"synth_a", "synth_b"}
    for res in results.values():
        assert 0 <= res["t2i"]["R1"] <= res["t2i"]["R10"] <= 100 and res["t2i"]["mAP"] > 0
    row = lines[2].split("|")[2:-1]
    assert float(row[0]) == pytest.approx(results["synth_a"]["t2i"]["R1"], abs=0.01)
    assert float(row[7]) == pytest.approx(results["synth_b"]["t2i"]["mAP"], abs=0.01)


def test_finetune_starts_from_the_source_weights(tiny_run, finetuned):
    source = _weights(tiny_run / "checkpoints" / "best.pt")
    start = _weights(finetuned / "checkpoints" / "init.pt")
    assert source.keys() == start.keys()
    assert all(torch.equal(source[k], start[k]) for k in source)
    after = _weights(finetuned / "checkpoints" / "last.pt")
    assert any(not torch.equal(source[k], after[k]) for k in source)  # and then it trained
    last = torch.load(finetuned / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 1 and last["epoch"] == 0  # optimizer, schedule and epoch start fresh
    assert yaml.safe_load((finetuned / "config.yaml").read_text())["init_from"] == str(tiny_run)


def test_init_from_mismatch_names_field_and_keys(tiny_run, tmp_path):
    from tbpr.models import DualEncoder, ModelConfig
    from tbpr.train.init_from import load_init_weights

    other = DualEncoder(ModelConfig(arch="tbpr-micro", pretrained=None, image_size=(32, 32)))
    with pytest.raises(ConfigError, match=r"init_from=.*shape checkpoint vs model.*positional_embedding"):
        load_init_weights(other, tiny_run)
    with pytest.raises(ConfigError, match="init_from=.*no checkpoint"):
        load_init_weights(other, tmp_path / "missing")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ConfigError, match="not a tbpr checkpoint"):
        load_init_weights(other, tmp_path / "foreign.pt")


def test_transfer_matrix_cli_and_resume(tiny_run, finetuned, targets, tmp_path, monkeypatch, capsys):
    out = tmp_path / "matrix"
    args = ["transfer", "--run", f"scratch={tiny_run}", "--run", f"ft={finetuned}"]
    args += ["--data", f"A={targets['synth_a']}", "--data", f"B={targets['synth_b']}"]
    args += ["--out", str(out), "--num-workers", "0"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert (out / "transfer.md").read_text().endswith(table)
    lines = table.strip().splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "run", "init", "source", "A R1", "A mAP", "B R1", "B mAP"
    ]  # fmt: skip
    ft_row = [c.strip() for c in lines[3].strip("|").split("|")]
    assert ft_row[:3] == ["ft", tiny_run.name, "synth_a"]
    matrix = json.loads((out / "transfer.json").read_text())
    assert float(ft_row[5]) == pytest.approx(matrix["ft"]["cells"]["B"]["t2i"]["R1"], abs=0.01)
    assert len(list((out / "cells").glob("*.json"))) == 4

    def fail(*args, **kwargs):
        raise AssertionError("a cached cell was evaluated again")

    monkeypatch.setattr("tbpr.evaluation.run_eval.evaluate_run", fail)
    assert main(args) == 0  # resumed entirely from the cell cache
    assert capsys.readouterr().out == table


def test_grouped_table_and_names():
    table = format_grouped_table(
        {"m": {"A": {"R1": 50.0}}, "n": {"B": {"R1": 1.234, "mAP": 2.0}}}, ("R1", "mAP")
    )
    lines = table.splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells[0] == ["method", "A R1", "A mAP", "B R1", "B mAP"]
    assert cells[2] == ["m", "50.00", "-", "-", "-"] and cells[3] == ["n", "-", "-", "1.23", "2.00"]
    assert parse_named(["x=/a", "/b/c", "/r/checkpoints/last.pt"], "--run") == {
        "x": Path("/a"),
        "c": Path("/b/c"),
        "r": Path("/r/checkpoints/last.pt"),
    }
    with pytest.raises(ConfigError, match="twice"):
        parse_named(["/a/x", "/b/x"], "--data")
    assert main(["transfer", "--run", "r", "--data", "d", "--out", "o", "--metrics", "R2"]) == 2


def test_init_from_keeps_new_simclr_heads(tiny_run):
    from tbpr.models import DualEncoder, ModelConfig
    from tbpr.train.init_from import load_init_weights

    model = DualEncoder(
        ModelConfig(arch="tbpr-micro", pretrained=None, image_size=(64, 32), ss_heads=["image"])
    )
    heads = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("ss_heads.")}
    load_init_weights(model, tiny_run / "checkpoints" / "best.pt")  # a file works as well as a folder
    own, source = model.state_dict(), _weights(tiny_run / "checkpoints" / "best.pt")
    assert heads and all(torch.equal(own[k], v) for k, v in heads.items())  # fresh heads kept
    assert all(torch.equal(own[k], v) for k, v in source.items())
