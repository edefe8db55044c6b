"""Training image augmentations over transforms.v2: TBPS-CLIP's (paper Table 2; hyperparameters of appendix
Table 13) and IRRA's (``pad_crop``, ``irra_erasing``).

``ImageAugConfig`` (``data.augment``) names ops from ``OPS``; ``mode: sequence`` applies them all in
order ("Stacking Together"), ``mode: pool`` applies ``k`` of them drawn per image (the "Augmentation
Pool"; the public TBPS-CLIP code draws 2 with replacement). Each op's defaults are the values the paper
kept; ``params: {op: {argument: value}}`` overrides any constructor argument of its v2 transform.

Ops run on the resized PIL image, except RandomErasing, which needs a tensor: it first converts the
image to a float tensor in [0, 1] (erasing to black before normalization, as the public code does),
and any op drawn after it runs on that tensor. ``irra_erasing`` is IRRA's RandomErasing: it runs last,
on the normalized tensor, and writes the normalization mean into it (``value: mean``), as IRRA does.
All randomness comes from torch's RNG.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torchvision.transforms import v2

from tbpr.errors import ConfigError

MODES = ("sequence", "pool")


def to_float() -> list[v2.Transform]:
    """PIL or uint8 image -> float32 image tensor in [0, 1]; an already converted image passes unchanged."""
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]


@dataclass(frozen=True)
class OpSpec:
    """One op: its v2 transform class, the paper's defaults, and which arguments ``params`` may set.

    ``keys`` None allows every constructor argument (``size`` excepted: it is the output size);
    ``on_tensor`` ops run on the float tensor; ``normalized`` ops run after normalization, last.
    """

    cls: type[v2.Transform]
    defaults: dict[str, Any] = field(default_factory=dict)
    keys: frozenset[str] | None = None
    on_tensor: bool = False
    normalized: bool = False

    def allowed(self) -> frozenset[str]:
        if self.keys is not None:
            return self.keys
        return frozenset(inspect.signature(self.cls).parameters) - {"size"}

    def build(self, size: tuple[int, int], params: dict[str, Any], mean: Sequence[float]) -> v2.Transform:
        kwargs = {**self.defaults, **params}
        if kwargs.get("value") == "mean":  # the normalization mean, in normalized units (IRRA)
            kwargs["value"] = [float(m) for m in mean]
        if "policy" in kwargs and isinstance(kwargs["policy"], str):
            kwargs["policy"] = v2.AutoAugmentPolicy(kwargs["policy"])
        if "size" in inspect.signature(self.cls).parameters:
            kwargs["size"] = tuple(size)
        op = self.cls(**kwargs)
        return v2.Compose([*to_float(), op]) if self.on_tensor else op


def _jitter(name: str) -> OpSpec:
    """ColorJitter of one factor (x_cj1 = 0.1 for brightness/contrast/saturation, x_cj2 = 0.1 for hue)."""
    return OpSpec(v2.ColorJitter, {name: 0.1}, keys=frozenset({name}))


OPS: dict[str, OpSpec] = {
    # removal
    "random_resized_crop": OpSpec(v2.RandomResizedCrop, {"scale": (0.9, 1.0), "antialias": True}),
    "random_erasing": OpSpec(v2.RandomErasing, {"p": 0.5, "scale": (0.1, 0.2)}, on_tensor=True),
    "random_grayscale": OpSpec(v2.RandomGrayscale, {"p": 0.1}),
    "gaussian_blur": OpSpec(v2.GaussianBlur, {"kernel_size": 3, "sigma": (0.1, 2.0)}),
    # alteration; color_jitter is ColorJitter-BCS (hue 0), as in the public pool
    "color_jitter": OpSpec(
        v2.ColorJitter, {"brightness": 0.1, "contrast": 0.1, "saturation": 0.1, "hue": 0.0}
    ),
    "brightness": _jitter("brightness"),
    "contrast": _jitter("contrast"),
    "saturation": _jitter("saturation"),
    "hue": _jitter("hue"),
    "hflip": OpSpec(v2.RandomHorizontalFlip, {"p": 0.5}),
    "vflip": OpSpec(v2.RandomVerticalFlip, {"p": 0.5}),
    "rotation": OpSpec(v2.RandomRotation, {"degrees": 15.0}),
    # automatic policies at torchvision's defaults (RandAugment N=2, M=9)
    "autoaugment": OpSpec(v2.AutoAugment),
    "randaugment": OpSpec(v2.RandAugment, {"num_ops": 2, "magnitude": 9}),
    "trivialaugment": OpSpec(v2.TrivialAugmentWide),
    # IRRA's: pad 10 pixels of black on every side, then a random crop back to the input size; random
    # erasing of 2-40% of the area, after normalization, filled with the normalization mean
    "pad_crop": OpSpec(v2.RandomCrop, {"padding": 10}),
    "irra_erasing": OpSpec(
        v2.RandomErasing, {"p": 0.5, "scale": (0.02, 0.4), "value": "mean"}, normalized=True
    ),
}

# TBPS-CLIP's augmentation pool (public code: 2 drawn with replacement per image).
TBPS_POOL = ["color_jitter", "rotation", "random_resized_crop", "random_grayscale", "hflip", "random_erasing"]


@dataclass
class ImageAugConfig:
    """``data.augment``: which image augmentations a training image gets (none by default)."""

    ops: list[str] = field(default_factory=list)
    mode: str = "sequence"  # 'sequence': every op in order | 'pool': k ops drawn per image
    k: int = 2
    replace: bool = True  # pool draws with replacement (the same op may apply twice), as the public code
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.ops) - set(OPS))
        if unknown:
            raise ConfigError(f"data.augment.ops: unknown op(s) {unknown}; known ops: {sorted(OPS)}")
        if self.mode not in MODES:
            raise ConfigError(f"data.augment.mode: {self.mode!r} is unknown; use one of {list(MODES)}")
        if self.mode == "pool":
            if not self.ops:
                raise ConfigError("data.augment.ops is empty but mode is 'pool': list the ops to draw from")
            if self.k < 1 or (not self.replace and self.k > len(self.ops)):
                limit = "at least 1" if self.replace else f"between 1 and len(ops) = {len(self.ops)}"
                raise ConfigError(f"data.augment.k={self.k}: must be {limit}")
        for name, params in self.params.items():
            where = f"data.augment.params.{name}"
            if name not in self.ops:
                raise ConfigError(f"{where}: {name!r} is not in data.augment.ops {self.ops}")
            bad = sorted(set(params) - OPS[name].allowed())
            if bad:
                raise ConfigError(
                    f"{where}: unknown argument(s) {bad}; allowed: {sorted(OPS[name].allowed())}"
                )
        late = [op for op in self.ops if OPS[op].normalized]
        if self.mode == "pool" and late:
            raise ConfigError(
                f"data.augment.ops: {late} run(s) on the normalized image after every other op, which a "
                "pool cannot order: use mode: sequence"
            )
        build_ops(self, (32, 32), (0.0, 0.0, 0.0))  # bad parameter values fail here, at load time


class RandomSubset(v2.Transform):
    """Applies ``k`` of ``transforms`` drawn at random per call, in the order drawn.

    Draws from torch's RNG (reproducible under per-sample seeding); ``replace`` draws with replacement.
    """

    def __init__(self, transforms: Sequence[Callable], k: int = 2, replace: bool = True):
        super().__init__()
        self.transforms = list(transforms)
        self.k = k
        self.replace = replace

    def forward(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        n = len(self.transforms)
        picks = torch.randint(n, (self.k,)) if self.replace else torch.randperm(n)[: self.k]
        for i in picks.tolist():
            sample = self.transforms[i](sample)
        return sample


def build_ops(cfg: ImageAugConfig, size: tuple[int, int], mean: Sequence[float]) -> list[v2.Transform]:
    """One v2 transform per entry of ``cfg.ops`` (``size`` = (H, W), the output size; ``mean`` the
    normalization mean, the fill of ``value: mean``); bad params -> ConfigError."""
    ops = []
    for name in cfg.ops:
        try:
            ops.append(OPS[name].build(size, cfg.params.get(name, {}), mean))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"data.augment.params.{name}: {err}") from err
    return ops


def build_augment(
    cfg: ImageAugConfig, size: tuple[int, int], mean: Sequence[float]
) -> tuple[list[v2.Transform], list[v2.Transform]]:
    """The augmentation steps to insert after resizing, and those to append after normalization."""
    ops = build_ops(cfg, size, mean)
    early = [op for name, op in zip(cfg.ops, ops, strict=True) if not OPS[name].normalized]
    late = [op for name, op in zip(cfg.ops, ops, strict=True) if OPS[name].normalized]
    if cfg.mode == "pool":
        return [RandomSubset(early, cfg.k, cfg.replace)], []
    return early, late
