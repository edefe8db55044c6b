"""Device names checked before any work: a missing GPU is one clear error, not a traceback mid-run."""

from __future__ import annotations

from tbpr.errors import ConfigError


def check_device(name: str) -> str:
    """``name`` (cpu, cuda, cuda:N) if this machine has that device; ConfigError saying what it has."""
    if name == "cpu":  # no torch import for the common case
        return name
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device {name!r} is not a device name: use cpu, cuda or cuda:N") from None
    if device.type != "cuda":
        if device.type == "cpu":
            return name
        raise ConfigError(f"device {name!r}: tbpr runs on cpu or cuda[:N]")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"device {name!r}: this machine has no CUDA GPU that torch can use; use cpu")
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
        )
    return name
