"""Where tower weights come from: ``pkg:`` paths inside installed packages, and checked weight files."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn

from tbpr.errors import ConfigError

log = logging.getLogger(__name__)
PKG = "pkg:"
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def resolve_source(source: str, field: str) -> str:
    """``pkg:<module>/<path>`` -> the path inside the installed package; anything else unchanged."""
    if not source.startswith(PKG):
        return source
    module, _, rest = source[len(PKG) :].partition("/")
    spec = importlib.util.find_spec(module) if module else None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"{field}={source!r}: the Python package {module!r} is not installed "
            f"(pip install {module.replace('_', '-')}, as constraints.txt pins it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / rest
    if not path.exists():
        raise ConfigError(f"{field}={source!r}: {path} does not exist in the installed package")
    return str(path)


def read_weight_file(path: str, field: str) -> dict[str, torch.Tensor]:
    """The tensors of a .pt/.pth/.bin/.safetensors file (a ``state_dict``/``model`` entry is unwrapped)."""
    file = Path(path)
    if file.suffix not in _WEIGHT_SUFFIXES or not file.is_file():
        raise ConfigError(
            f"{field}={path!r}: expected an existing weight file ({', '.join(_WEIGHT_SUFFIXES)})"
        )
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    state = torch.load(file, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"{field}={path!r}: the file holds no tensor dictionary")
    return state


def _counted(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def map_by_position(
    source: dict[str, torch.Tensor], target: nn.Module, field: str
) -> dict[str, torch.Tensor]:
    """``source``'s tensors renamed to ``target``'s state-dict names.

    Names that all agree are kept; otherwise the i-th tensor of the file becomes the i-th of the model
    (BatchNorm's ``num_batches_tracked`` counters aside), which requires equal counts and equal shapes
    pair by pair: any mismatch is a ConfigError naming the first pair that differs.
    """
    own = target.state_dict()
    theirs, ours = _counted(source), _counted(own)
    if {k for k, _ in theirs} == {k for k, _ in ours}:
        theirs = [(k, source[k]) for k, _ in ours]
    elif len(theirs) != len(ours):
        raise ConfigError(
            f"{field}: the file has {len(theirs)} tensors, the model {len(ours)}: not the same architecture"
        )
    pairs = []
    for (name, tensor), (own_name, own_tensor) in zip(theirs, ours):
        if tensor.shape != own_tensor.shape:
            raise ConfigError(
                f"{field}: tensor {name} {tuple(tensor.shape)} does not fit {own_name} "
                f"{tuple(own_tensor.shape)}: not the same architecture, or not in the same order"
            )
        pairs.append((own_name, tensor))
    mapped = {name: tensor for name, tensor in pairs}
    # counters are not weights: keep the model's own
    mapped.update({k: v for k, v in own.items() if k.endswith("num_batches_tracked")})
    return mapped


def load_weight_file(model: nn.Module, path: str, field: str) -> None:
    """Load a weight file into ``model`` strictly, through ``map_by_position``."""
    model.load_state_dict(map_by_position(read_weight_file(path, field), model, field), strict=True)
    log.info("loaded %s into %s", path, type(model).__name__)
