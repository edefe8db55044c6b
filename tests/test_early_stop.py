"""Early stopping on the validation metric: the real training loop with scripted validation scores."""

import json

import pytest
import torch

from micro import MICRO as TINY_MODEL
from tbpr.errors import ConfigError
from tbpr.train import engine, load_config
from tbpr.train.engine import Trainer

MICRO = [
    *TINY_MODEL,
    "data.train_fraction=0.5",
    "optim.epochs=9",
    "optim.warmup_epochs=0",
    "eval_every=1",
    "log_every=1",
    "select_metric=mAP",
]


def config(tmp_path, data, *extra):
    return load_config("cpu-small", [*MICRO, f"data.path={data}", f"output_dir={tmp_path / 'run'}", *extra])


@pytest.fixture
def scripted_scores(monkeypatch):
    """Make validation report the given mAP values in turn (the encoding still runs for real)."""

    def script(values):
        values, calls = iter(values), []

        def score(_encoded):
            value = next(values)  # StopIteration: validated more often than the test expects
            calls.append(value)
            return {"t2i": {"R1": 50.0, "R5": 60.0, "R10": 70.0, "mAP": value, "mINP": 1.0}}

        monkeypatch.setattr(engine, "score", score)
        return calls

    return script


def records(run, kind):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def checkpoint(run, name):
    return torch.load(run / f"checkpoints/{name}.pt", weights_only=False)


def test_training_stops_after_patience_validations_without_improvement(tmp_path, synth_tiny, scripted_scores):
    calls = scripted_scores([10.0, 12.0, 11.0, 12.0, 99.0])  # epoch 4 only ties the best: no improvement
    trainer = Trainer(config(tmp_path, synth_tiny, "early_stop_patience=2"))
    run = trainer.train()
    assert calls == [10.0, 12.0, 11.0, 12.0]
    assert [r["epoch"] for r in records(run, "val")] == [1, 2, 3, 4]
    (stop,) = records(run, "early_stop")
    assert stop == {
        "kind": "early_stop",
        "step": 4 * trainer.steps_per_epoch,
        "epoch": 4,
        "patience": 2,
        "metric": "mAP",
        "best_value": 12.0,
        "best_epoch": 2,
    }
    assert max(r["epoch"] for r in records(run, "train")) == 3  # no training after the stop
    assert checkpoint(run, "best")["selected"]["epoch"] == 2
    last = checkpoint(run, "last")
    assert (last["epoch"], last["global_step"], last["stale"]) == (4, 4 * trainer.steps_per_epoch, 2)


def test_the_count_survives_a_resume_and_a_stopped_run_stays_stopped(tmp_path, synth_tiny, scripted_scores):
    calls = scripted_scores([10.0, 12.0, 11.0])
    first = Trainer(config(tmp_path, synth_tiny, "early_stop_patience=3"))
    steps = first.steps_per_epoch
    first.cfg.max_steps = 3 * steps  # interrupted after the third validation
    run = first.train()
    assert calls == [10.0, 12.0, 11.0] and checkpoint(run, "last")["stale"] == 1

    calls = scripted_scores([11.5, 11.0, 99.0])  # two more without improvement make three: stop
    Trainer(config(tmp_path, synth_tiny, "early_stop_patience=3")).train()
    assert calls == [11.5, 11.0]
    assert [r["epoch"] for r in records(run, "val")] == [1, 2, 3, 4, 5]
    assert [r["epoch"] for r in records(run, "early_stop")] == [5]
    assert checkpoint(run, "last")["global_step"] == 5 * steps

    calls = scripted_scores([])  # resuming the stopped run neither trains nor validates
    Trainer(config(tmp_path, synth_tiny, "early_stop_patience=3")).train()
    assert calls == [] and checkpoint(run, "last")["global_step"] == 5 * steps
    assert len(records(run, "early_stop")) == 1


def test_without_patience_every_epoch_is_trained(tmp_path, synth_tiny, scripted_scores):
    calls = scripted_scores([10.0, 9.0, 8.0])
    run = Trainer(config(tmp_path, synth_tiny, "optim.epochs=3")).train()
    assert calls == [10.0, 9.0, 8.0] and records(run, "early_stop") == []


@pytest.mark.parametrize("patience", [0, -2])
def test_patience_must_be_positive(tmp_path, patience):
    with pytest.raises(
        ConfigError, match=rf"early_stop_patience={patience}: give a number of validations >= 1"
    ):
        config(tmp_path, "data", f"early_stop_patience={patience}")
