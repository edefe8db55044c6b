"""Engine behaviour on SynthPedes tiny: resume equivalence, DDP equivalence, end-to-end train + eval."""

import json
import logging
import math
import os
import subprocess
import sys

import pytest
import torch

from tbpr.cli import main
from tbpr.errors import ConfigError, DataError
from tbpr.models import load_model
from tbpr.train import load_config, train

MICRO = [
    "model.arch=tbpr-micro",
    "model.image_size=[64, 32]",
    "data.batch_size=8",
    "data.num_instances=2",
    "data.num_workers=0",
    "optim.epochs=2",
    "optim.warmup_epochs=0.5",
    "optim.lr=1e-3",
    "log_every=1",
    "eval_every=1",
]


def train_losses(run_dir) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def config(tmp_path, name, data, *extra):
    return load_config("cpu-small", [*MICRO, f"data.path={data}", f"output_dir={tmp_path / name}", *extra])


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, synth_tiny):
    full = train(config(tmp_path, "full", synth_tiny))
    interrupted = config(tmp_path, "resumed", synth_tiny, "max_steps=7", "checkpoint_every=3")
    train(interrupted)
    state = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=False)
    assert state["global_step"] == 7 and state["epoch"] == 0 and state["batch_in_epoch"] == 7
    # a record written after the last checkpoint (a crash between the two) must not survive the resume
    with (tmp_path / "resumed/metrics.jsonl").open("a") as fh:
        fh.write(json.dumps({"kind": "train", "step": 8, "loss": -1.0}) + "\n")
    # resume with two DataLoader workers: per-sample seeds make augmentation independent of workers
    resumed = train(config(tmp_path, "resumed", synth_tiny, "data.num_workers=2"))
    steps = [json.loads(x)["step"] for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(8) == 1
    a, b = train_losses(full), train_losses(resumed)
    assert len(a) > 7 and a.keys() == b.keys()
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5, abs=1e-6), step
    wa = load_model(full / "checkpoints/last.pt").state_dict()
    wb = load_model(resumed / "checkpoints/last.pt").state_dict()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


def test_no_resume_starts_over(tmp_path, synth_tiny):
    train(config(tmp_path, "run", synth_tiny, "max_steps=2"))
    train(config(tmp_path, "run", synth_tiny, "max_steps=3"), resume=False)
    assert sorted(train_losses(tmp_path / "run")) == [1, 2, 3]


def test_resume_drops_a_torn_last_metrics_line(tmp_path, synth_tiny):
    train(config(tmp_path, "run", synth_tiny, "max_steps=2", "eval_every=0"))
    with (tmp_path / "run/metrics.jsonl").open("a") as fh:
        fh.write('{"kind": "train", "step": 3, "lo')  # a kill during the write leaves half a line
    train(config(tmp_path, "run", synth_tiny, "max_steps=4", "eval_every=0"))
    assert sorted(train_losses(tmp_path / "run")) == [1, 2, 3, 4]


def test_resume_with_another_config_is_refused_with_the_fields_that_differ(tmp_path, synth_tiny, caplog):
    run = tmp_path / "run"
    sets = [
        x for a in [*MICRO, f"data.path={synth_tiny}", "max_steps=1", "eval_every=0"] for x in ("--set", a)
    ]
    assert main(["train", *sets, "--out", str(run)]) == 0
    other = [*sets, "--set", "model.image_size=[64, 48]", "--set", "optim.lr=2e-3"]
    caplog.clear()
    assert main(["train", *other, "--out", str(run)]) == 2  # was an 80-line state_dict size mismatch
    (message,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "model.image_size: [64, 32] -> [64, 48]" in message and "optim.lr: 0.001 -> 0.002" in message
    assert "2 field(s) differ" in message and "--no-resume" in message and "another --out" in message
    assert "Traceback" not in caplog.text
    # fields that change only when a run stops, saves or how it is fed may differ
    assert (
        main(["train", *sets, "--set", "max_steps=2", "--set", "data.num_workers=1", "--out", str(run)]) == 0
    )
    assert main(["train", *other, "--out", str(run), "--no-resume"]) == 0
    assert torch.load(run / "checkpoints/last.pt", weights_only=False)["config"]["model"]["image_size"] == [
        64,
        48,
    ]


def test_best_checkpoint_is_selected_on_validation_split(tmp_path, synth_tiny):
    run = train(config(tmp_path, "run", synth_tiny))
    val = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in val if r["kind"] == "val"]
    assert [r["epoch"] for r in val] == [1, 2]
    best = torch.load(run / "checkpoints/best.pt", weights_only=False)["selected"]
    assert best["metric"] == "R1" and best["value"] == max(r["R1"] for r in val)
    assert best["val"]["R1"] == best["value"]
    saved = (run / "config.yaml").read_text()
    assert "tbpr-micro" in saved


def _ddp_env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


@pytest.mark.slow
@pytest.mark.parametrize(
    ("recipe", "extra"),
    [
        ("cpu-small", []),
        # second views, SimCLR heads, a frozen layer, soft labels and text augmentation on the workers;
        # dropout off, since its noise is drawn per process
        ("tbps-clip-small", ["model.text_attn_dropout=0.0"]),
        # NAM: masks drawn per caption, the full captions' layer-l pass, all-gathered table updates
        ("mllm4text-small", ["masking.mode=nam"]),
        # PDG's approximate text: per-sample draws, each process encodes its replaced rows' originals
        (
            "clip-baseline-small",
            ["data.text_augment.approximate.ops=[sdel, cdel]", "losses.approx_constraint=0.5"],
        ),
    ],
)
def test_two_process_ddp_matches_one_process_on_the_global_batch(tmp_path, synth_tiny, recipe, extra):
    args = [*MICRO, f"data.path={synth_tiny}", "max_steps=4", "eval_every=0", *extra]
    sets = [x for a in args for x in ("--set", a)]
    single = tmp_path / "single"
    assert main(["train", "--config", recipe, *sets, "--out", str(single)]) == 0
    ddp = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "tbpr",
        "train",
        "--config",
        recipe,
        *sets,
        "--out",
        str(ddp),
    ]
    proc = subprocess.run(cmd, env=_ddp_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = train_losses(single), train_losses(ddp)
    assert sorted(a) == [1, 2, 3, 4]
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-4), step
    wa = load_model(single / "checkpoints/last.pt").state_dict()
    wb = load_model(ddp / "checkpoints/last.pt").state_dict()
    for k in wa:
        a, b = wa[k], wb[k]
        if k.endswith("in_proj_bias"):
            # The key bias cannot change attention (softmax is shift-invariant): its true gradient is 0 and
            # Adam turns float noise there into lr-sized steps, so compare the query and value biases only.
            a, b = a.view(3, -1)[[0, 2]], b.view(3, -1)[[0, 2]]
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5, msg=k)
    # the NAM table (empty without NAM): every process recorded every process's captions
    ma = torch.load(single / "checkpoints/last.pt", weights_only=False)["masking"]
    mb = torch.load(ddp / "checkpoints/last.pt", weights_only=False)["masking"]
    assert ma.keys() == mb.keys()
    if ma:
        assert (ma["next"].float() - 0.15).abs().max() > 0.05  # r' were written
    for k in ma:
        torch.testing.assert_close(ma[k].float(), mb[k].float(), rtol=0, atol=2e-3, msg=k)


@pytest.mark.slow
def test_cli_train_then_eval_end_to_end(tmp_path, synth_tiny, capsys):
    run = tmp_path / "run"
    sets = [x for a in [*MICRO, "optim.epochs=3"] for x in ("--set", a)]
    assert main(["train", "--config", "cpu-small", *sets, "--data", str(synth_tiny), "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--visualize", "3", "--num-workers", "0"]) == 0
    table = capsys.readouterr().out
    assert "R1" in table and "mAP" in table and "mINP" in table
    results = json.loads((run / "eval_test.json").read_text())
    ((name, res),) = results.items()
    for direction in ("t2i", "i2t"):
        m = res[direction]
        assert 0 <= m["R1"] <= m["R5"] <= m["R10"] <= 100
        assert 0 < m["mAP"] <= 100 and m["skipped_queries"] == []
    figure = run / f"retrieval_{name}_test.png"
    assert figure.exists() and figure.stat().st_size > 1000


def test_eval_of_missing_run_is_a_clear_error(tmp_path, caplog):
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in caplog.text


def test_gradient_accumulation_counts_optimizer_steps(tmp_path, synth_tiny):
    plain = train(config(tmp_path, "plain", synth_tiny, "optim.epochs=1", "eval_every=0"))
    accum = train(
        config(tmp_path, "accum", synth_tiny, "optim.epochs=1", "eval_every=0", "optim.accum_steps=2")
    )
    steps = torch.load(plain / "checkpoints/last.pt", weights_only=False)["global_step"]
    state = torch.load(accum / "checkpoints/last.pt", weights_only=False)
    assert state["global_step"] == steps // 2 and state["epoch"] == 1
    assert all(math.isfinite(v) for v in train_losses(accum).values())


def test_training_refuses_data_that_fails_the_check(tmp_path, synth_tiny):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(synth_tiny, broken)
    victim = next((broken / "imgs").rglob("*.jpg"))
    victim.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="skip"):
        train(config(tmp_path, "run", broken, "max_steps=1"))
    run = train(config(tmp_path, "run", broken, "max_steps=1", "data.skip_bad=true"))
    assert (run / "checkpoints/last.pt").exists()


def test_sampler_settings_that_do_not_fit_are_config_errors(tmp_path, synth_tiny):
    with pytest.raises(ConfigError, match="num_instances"):
        train(config(tmp_path, "run", synth_tiny, "data.batch_size=9", "data.num_instances=2"))
    with pytest.raises(ConfigError, match="data.sampler"):
        train(config(tmp_path, "run", synth_tiny, "data.sampler=balanced"))


def test_a_run_shorter_than_eval_every_warns_and_validates_at_its_end(tmp_path, synth_tiny, caplog):
    with caplog.at_level(logging.WARNING, logger="tbpr"):
        run = train(config(tmp_path, "short", synth_tiny, "optim.epochs=2", "eval_every=5"))
    assert "eval_every=5 is more than the 2 epochs of the run" in caplog.text
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "val"] == [2]
    best = torch.load(run / "checkpoints/best.pt", weights_only=False)["selected"]
    assert (best["metric"], best["epoch"]) == ("R1", 2)


def test_a_run_stopped_by_max_steps_validates_the_model_it_ends_with(tmp_path, synth_tiny):
    run = train(config(tmp_path, "steps", synth_tiny, "max_steps=3"))
    val = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in val if r["kind"] == "val"] == [(0, 3)]
    run = train(config(tmp_path, "steps", synth_tiny, "max_steps=3"))  # finished: nothing more to validate
    assert (run / "metrics.jsonl").read_text().count('"kind": "val"') == 1


def test_cli_train_ends_with_a_summary_of_the_selected_checkpoint(tmp_path, synth_tiny, capsys):
    run = tmp_path / "run"
    sets = [x for a in [*MICRO, "optim.epochs=1"] for x in ("--set", a)]
    assert main(["train", "--config", "cpu-small", *sets, "--data", str(synth_tiny), "--out", str(run)]) == 0
    val = torch.load(run / "checkpoints/best.pt", weights_only=False)["selected"]["val"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3] == f"run folder: {run}"
    metrics = "  ".join(f"{k} {val[k]:.2f}" for k in ("R1", "R5", "R10", "mAP", "mINP"))
    assert lines[-2] == f"best: epoch 1 (highest val R1); val {metrics}"
    assert lines[-1] == (
        f"checkpoints: {run}/checkpoints/best.pt (best on validation), {run}/checkpoints/last.pt (resumable)"
    )
    no_val = [
        "train",
        *sets,
        "--set",
        "eval_every=0",
        "--data",
        str(synth_tiny),
        "--out",
        str(tmp_path / "n"),
    ]
    assert main(no_val) == 0
    assert "best.pt is the final model (epoch 1): no validation ran" in capsys.readouterr().out
