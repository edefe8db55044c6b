import math

import pytest
import yaml

from tbpr.config import apply_overrides, from_dict, save_yaml, to_dict
from tbpr.errors import ConfigError
from tbpr.train.config import TrainConfig, load_config
from tbpr.train.reproducible import SeededBatches, SeededDataset, sample_seed
from tbpr.train.schedule import lr_factor, warmup_cosine_factor


def test_shipped_recipes_load_and_round_trip(tmp_path):
    for name in ("cpu-small", "clip-sdm"):
        cfg = load_config(name)
        save_yaml(cfg, tmp_path / f"{name}.yaml")
        again = from_dict(TrainConfig, yaml.safe_load((tmp_path / f"{name}.yaml").read_text()))
        assert again == cfg
    assert load_config("cpu-small").model.image_size == (128, 64)


def test_overrides_are_typed():
    cfg = load_config("cpu-small", ["optim.lr=1e-3", "data.batch_size=8", "losses={itc: 1.0}", "max_steps=3"])
    assert cfg.optim.lr == 1e-3 and cfg.data.batch_size == 8
    assert cfg.losses == {"itc": 1.0} and cfg.max_steps == 3
    with pytest.raises(ConfigError, match="optim.lr: expected"):
        load_config("cpu-small", ["optim.lr=fast"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lrr'\]"):
        load_config("cpu-small", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(ConfigError, match="no recipe named"):
        load_config("nope")


def test_to_dict_is_plain_yaml():
    text = yaml.safe_dump(to_dict(TrainConfig()))
    assert "!!python" not in text


def test_warmup_then_cosine_matches_formula():
    total, warm, start, floor = 100, 10, 0.1, 0.05
    f = [warmup_cosine_factor(s, total, warm, start, floor) for s in range(total + 1)]
    assert f[0] == pytest.approx(0.1)
    assert f[5] == pytest.approx(0.1 + 0.9 * 0.5)
    assert f[10] == pytest.approx(1.0)
    # halfway through the cosine: floor + (1 - floor) * 0.5 * (1 + cos(pi/2))
    assert f[55] == pytest.approx(floor + (1 - floor) * 0.5)
    assert f[100] == pytest.approx(floor)
    assert f[30] == pytest.approx(floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 20 / 90)))
    assert all(a >= b for a, b in zip(f[10:], f[11:]))


def test_step_schedule_warms_up_then_divides_by_ten_every_period():
    # PDG: 10 warm-up epochs from 0.01 of the peak, then x0.1 every 20 epochs (counted from the start)
    optim = load_config("cpu-small", ["optim.schedule=step", "optim.warmup_epochs=10", "optim.step_epochs=20",
                                      "optim.warmup_start_factor=0.01"]).optim  # fmt: skip
    f = lr_factor(optim, steps_per_epoch=2, total_steps=140)
    assert f(0) == pytest.approx(0.01) and f(10) == pytest.approx(0.01 + 0.99 * 0.5)
    assert [f(s) for s in (20, 39, 40, 79, 80, 120, 139)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.001, 0.001]
    )
    with pytest.raises(ConfigError, match="optim.schedule='linear'"):
        load_config("cpu-small", ["optim.schedule=linear"])
    with pytest.raises(ConfigError, match="step_gamma=0"):
        load_config("cpu-small", ["optim.step_gamma=0"])


class _Batches:
    def __init__(self):
        self.epoch, self.start = 0, 0

    def set_epoch(self, e):
        self.epoch = e

    def set_start_batch(self, n):
        self.start = n

    def __len__(self):
        return 3

    def __iter__(self):
        full = [[0, 1], [2, 3], [4, 5]]
        return iter(full[self.start :])


def test_sample_seeds_depend_on_position_not_on_resume():
    full = SeededBatches(_Batches(), seed=7)
    full.set_epoch(2)
    full.set_start_batch(0)
    resumed = SeededBatches(_Batches(), seed=7)
    resumed.set_epoch(2)
    resumed.set_start_batch(1)
    assert list(full)[1:] == list(resumed)
    assert sample_seed(7, 2, 0, 0) != sample_seed(7, 3, 0, 0)


def test_seeded_dataset_reproduces_random_augmentation_and_keeps_global_rng():
    import torch

    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return torch.rand(2)

    ds = SeededDataset(Noisy())
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a, b = ds[(0, 123)], ds[(0, 123)]
    assert torch.equal(a, b) and not torch.equal(a, ds[(0, 124)])
    assert torch.equal(torch.get_rng_state(), before)
