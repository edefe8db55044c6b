"""Fine-tuning a tiny random Stable Diffusion on SynthPedes pairs: resume, LoRA export, settings checks."""

import logging
import os
import signal
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from tbpr.cli import main
from tbpr.errors import ConfigError
from tbpr.generate.images.diffusion.finetune import (
    CHECKPOINT_FILE,
    FinetuneConfig,
    batch_indices,
    finetune,
)
from tbpr.generate.images.diffusion.loading import load_pipeline
from tbpr.generate.images.diffusion.sampling import text_to_image
from tbpr.generate.images.diffusion.tiny import save_tiny_pipeline


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "sd")


def config(model, data, **kw) -> FinetuneConfig:
    base = dict(steps=4, batch_size=2, lr=1e-3, height=32, width=16, checkpoint_every=1)
    return FinetuneConfig(model=str(model), data=str(data), **{**base, **kw})


def checkpoint(out):
    return torch.load(out / CHECKPOINT_FILE, weights_only=True)


def assert_same_weights(a, b):
    assert a["step"] == b["step"] and a["trainable"].keys() == b["trainable"].keys()
    for name in a["trainable"]:
        torch.testing.assert_close(a["trainable"][name], b["trainable"][name], rtol=0, atol=0)


def test_batch_indices_cover_each_pass_once():
    seen = [i for step in range(5) for i in batch_indices(seed=3, step=step, batch_size=2, n=5)]
    assert sorted(seen) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4] and sorted(seen[:5]) == [0, 1, 2, 3, 4]
    assert batch_indices(3, 1, 2, 5) == seen[2:4]  # a step's pairs do not depend on the steps before


@pytest.mark.slow
def test_continuing_a_run_gives_the_uninterrupted_weights(tmp_path, tiny_model, synth_tiny):
    whole = finetune(config(tiny_model, synth_tiny, steps=2), tmp_path / "whole")
    assert whole == tmp_path / "whole" / "model" and (whole / "model_index.json").is_file()
    finetune(config(tiny_model, synth_tiny, steps=1), tmp_path / "split")
    assert checkpoint(tmp_path / "split")["step"] == 1
    finetune(config(tiny_model, synth_tiny, steps=2), tmp_path / "split")
    assert_same_weights(checkpoint(tmp_path / "whole"), checkpoint(tmp_path / "split"))


def test_lora_weights_load_onto_the_base_model(tmp_path, tiny_model, synth_tiny):
    lora = finetune(config(tiny_model, synth_tiny, steps=2, lr=1e-2, lora_rank=2), tmp_path / "lora")
    assert lora == tmp_path / "lora" / "lora" and any(lora.glob("*.safetensors"))
    names = checkpoint(tmp_path / "lora")["trainable"]
    assert names and all("lora" in n for n in names)
    size = dict(height=64, width=64, steps=2)
    base = text_to_image(load_pipeline(tiny_model), ["a man in red"], [0], **size).latents
    tuned = text_to_image(load_pipeline(tiny_model, lora=lora), ["a man in red"], [0], **size).latents
    assert (base - tuned).abs().max() > 1e-4


def test_rerun_with_other_settings_is_refused(tmp_path, tiny_model, synth_tiny):
    cfg = config(tiny_model, synth_tiny, steps=1)
    finetune(cfg, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"other settings \(lr: saved 0.001, now 0.01\)"):
        finetune(replace(cfg, lr=1e-2), tmp_path / "run")
    with pytest.raises(ConfigError, match="do not fit this model and LoRA setting"):
        (tmp_path / "run" / "finetune.json").unlink()
        finetune(replace(cfg, lora_rank=2), tmp_path / "run")


@pytest.mark.slow
def test_killed_cli_run_resumes_to_the_uninterrupted_weights(tmp_path, tiny_model, synth_tiny):
    """SIGKILL ``tbpr generate finetune`` after its second checkpoint, rerun it, compare."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "tbpr", "generate", "finetune", str(synth_tiny), "--model", str(tiny_model)]
    cmd += ["--out", str(out), "--steps", "8", "--batch-size", "2", "--lr", "1e-3", "--height", "32"]
    cmd += ["--width", "16", "--checkpoint-every", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the step 3 line comes after step 2's checkpoint is written
        if "step 3/8" in line:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped = checkpoint(out)["step"]
    assert 2 <= stopped < 8, f"the run was not interrupted mid-way (stopped at step {stopped})"
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    # the uninterrupted run in the same conditions (one thread: float sums depend on the thread count)
    whole = [*cmd[: cmd.index("--out") + 1], str(tmp_path / "whole"), *cmd[cmd.index("--out") + 2 :]]
    subprocess.run(whole, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert_same_weights(checkpoint(out), checkpoint(tmp_path / "whole"))


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--model", "/nonexistent/sd"], "model /nonexistent/sd: no diffusers pipeline folder there"),
        (["--model", "x", "--steps", "0"], "--steps must be at least 1, not 0"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, synth_tiny, caplog, extra, message):
    with caplog.at_level(logging.ERROR, logger="tbpr"):
        code = main(["generate", "finetune", str(synth_tiny), "--out", str(tmp_path / "o"), *extra])
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0]
