"""Checkpoints are read without unpickling code: planted payloads do not run, bad files give one line."""

import logging
import os
import shutil

import pytest
import torch

from tbpr.cli import main
from tbpr.models.checkpoint import TRUST_ENV, load_checkpoint


class Payload:
    """Unpickling this object runs a shell command that writes ``marker`` (the attack of the finding)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"echo pwned > '{self.marker}'",)


@pytest.fixture
def run_copy(tmp_path, tiny_run, monkeypatch):
    monkeypatch.setenv(TRUST_ENV, "0")  # restored after the test, also when main() sets it
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
def test_a_pickled_payload_does_not_run_without_the_trust_flag(
    run_copy, synth_tiny, tmp_path, caplog, command
):
    marker = tmp_path / "pwned"
    plant(run_copy / "checkpoints" / ("last.pt" if command == "resume" else "best.pt"), marker)
    with caplog.at_level(logging.ERROR, logger="tbpr"):
        assert main(commands(run_copy, synth_tiny, tmp_path)[command]) == 2
    assert not marker.exists()
    assert "--trust-checkpoint" in caplog.text and "pickled" in caplog.text


def test_the_trust_flag_loads_an_old_style_checkpoint(run_copy, synth_tiny, tmp_path):
    marker = tmp_path / "pwned"
    plant(run_copy / "checkpoints" / "best.pt", marker)
    with pytest.raises(Exception, match="--trust-checkpoint"):
        load_checkpoint(run_copy / "checkpoints" / "best.pt")
    assert main(["--trust-checkpoint", *commands(run_copy, synth_tiny, tmp_path)["eval"]]) == 0
    assert marker.exists()  # the user said they trust it: it loads (and its code ran)


@pytest.mark.parametrize("command,name", [("eval", "best"), ("resume", "last")])
def test_a_truncated_checkpoint_is_a_one_line_error(run_copy, synth_tiny, tmp_path, caplog, command, name):
    path = run_copy / "checkpoints" / f"{name}.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.ERROR, logger="tbpr"):
        assert main(commands(run_copy, synth_tiny, tmp_path)[command]) == 2
    assert f"{path} is truncated or corrupt" in caplog.text
