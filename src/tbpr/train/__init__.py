"""Training: typed configs, the engine (single process or DDP), schedules and resume."""

from tbpr.train.config import DataConfig, OptimConfig, TrainConfig, load_config
from tbpr.train.engine import Trainer, train

__all__ = ["DataConfig", "OptimConfig", "TrainConfig", "Trainer", "load_config", "train"]
