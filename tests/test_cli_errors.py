"""User mistakes on the command line are one-line errors (exit 2), never tracebacks or silent successes."""

import logging

import pytest
import torch

from tbpr.cli import main

MISSING_GPUS = [f"cuda:{torch.cuda.device_count()}"] + ([] if torch.cuda.is_available() else ["cuda"])


@pytest.mark.parametrize("device", MISSING_GPUS)
def test_eval_on_a_missing_gpu_is_a_usage_error(tiny_run, synth_tiny, capsys, device):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", str(tiny_run), "--data", str(synth_tiny), "--device", device])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --device: device '{device}'" in err and "CUDA GPU" in err and "Traceback" not in err


def test_a_device_that_is_not_a_name_is_a_usage_error(tiny_index, capsys):
    with pytest.raises(SystemExit):
        main(["search", str(tiny_index), "a man", "--device", "gpu0"])
    assert "is not a device name" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override,message",
    [
        (f"device={MISSING_GPUS[-1]}", "CUDA GPU"),
        ("data.num_instances=0", "data.num_instances=0: must be at least 1"),
        ("data.batch_size=0", "data.batch_size=0: must be at least 1"),
        ("optim.epochs=-1", "optim.epochs=-1: must be at least 1"),
        ("optim.epochs=0", "optim.epochs=0: must be at least 1"),
    ],
)
def test_train_refuses_impossible_settings(synth_tiny, tmp_path, caplog, override, message):
    out = tmp_path / "run"
    with caplog.at_level(logging.ERROR, logger="tbpr"):
        assert main(["train", "--data", str(synth_tiny), "--out", str(out), "--set", override]) == 2
    assert message in caplog.text
    assert not (out / "checkpoints" / "best.pt").exists()
