"""Checkpoints are read without unpickling code: planted payloads do not run, older checkpoints with numpy
RNG state still load, bad files give one line."""

import logging
import os
import shutil

import numpy as np
import pytest
import torch

from tbpr.cli import main
from tbpr.models.checkpoint import load_checkpoint
from tbpr.train.reproducible import set_rng_state


class Payload:
    """Unpickling this object runs a shell command that writes ``marker`` (the attack of the finding)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"echo pwned > '{self.marker}'",)


@pytest.fixture
def run_copy(tmp_path, tiny_run):
    return shutil.copytree(tiny_run, tmp_path / "run")


def plant(path, marker):
    payload = torch.load(path, weights_only=True)
    payload["extra"] = Payload(marker)
    torch.save(payload, path)


def commands(run, synth_tiny, tmp_path):
    return {
        "eval": ["eval", str(run), "--data", str(synth_tiny), "--num-workers", "0"],
        "index": ["index", "build", "--run", str(run), "--images", str(synth_tiny / "imgs"),
                  "--out", str(tmp_path / "idx"), "--num-workers", "0"],
        "init-from": ["train", "--config", str(run / "config.yaml"), "--out", str(tmp_path / "ft"),
                      "--init-from", str(run)],
        "resume": ["train", "--config", str(run / "config.yaml"), "--out", str(run)],
    }  # fmt: skip


@pytest.mark.parametrize("name", ["best", "last", "init"])
def test_training_writes_checkpoints_that_load_weights_only(tiny_run, name):
    payload = torch.load(tiny_run / "checkpoints" / f"{name}.pt", weights_only=True)
    assert isinstance(payload["config"], dict) and isinstance(payload["model_config"]["image_size"], list)


@pytest.mark.parametrize("command", ["eval", "index", "init-from", "resume"])
def test_a_pickled_payload_does_not_run(run_copy, synth_tiny, tmp_path, caplog, command):
    marker = tmp_path / "pwned"
    plant(run_copy / "checkpoints" / ("last.pt" if command == "resume" else "best.pt"), marker)
    with caplog.at_level(logging.ERROR, logger="tbpr"):
        assert main(commands(run_copy, synth_tiny, tmp_path)[command]) == 2
    assert not marker.exists()
    assert "pickled Python objects (posix.system)" in caplog.text and "does not load it" in caplog.text


def test_there_is_no_way_to_unpickle_a_checkpoint_in_full(run_copy, synth_tiny, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    plant(run_copy / "checkpoints" / "best.pt", marker)
    monkeypatch.setenv("TBPR_TRUST_CHECKPOINT", "1")  # the switch of earlier versions does nothing now
    with pytest.raises(SystemExit):
        main(["--trust-checkpoint", *commands(run_copy, synth_tiny, tmp_path)["eval"]])
    assert main(commands(run_copy, synth_tiny, tmp_path)["eval"]) == 2
    assert not marker.exists()


def test_an_older_checkpoint_with_numpy_rng_state_loads(run_copy, synth_tiny, tmp_path):
    """Older tbpr versions saved the numpy RNG state as numpy's tuple (an array inside): it loads as data."""
    last, best = (run_copy / "checkpoints" / f"{name}.pt" for name in ("last", "best"))
    payload = torch.load(last, weights_only=True)
    np.random.seed(7)
    payload["rng"]["numpy"] = np.random.get_state()
    expected = np.random.rand(3)
    torch.save(payload, last)
    torch.save({**torch.load(best, weights_only=True), "scores": np.float64(0.5), "ids": np.arange(3)}, best)

    set_rng_state(load_checkpoint(last)["rng"])
    np.testing.assert_array_equal(np.random.rand(3), expected)
    assert main(commands(run_copy, synth_tiny, tmp_path)["eval"]) == 0


@pytest.mark.parametrize("command,name", [("eval", "best"), ("resume", "last")])
def test_a_truncated_checkpoint_is_a_one_line_error(run_copy, synth_tiny, tmp_path, caplog, command, name):
    path = run_copy / "checkpoints" / f"{name}.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.ERROR, logger="tbpr"):
        assert main(commands(run_copy, synth_tiny, tmp_path)[command]) == 2
    assert f"{path} is truncated or corrupt" in caplog.text
