"""Image decoding and the tensor pipeline (torchvision.transforms.v2)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torchvision.transforms import v2

from tbpr.data.image_augment import ImageAugConfig, build_augment, to_float

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_image(path: str | Path) -> Image.Image:
    """Decode an image file as RGB."""
    with Image.open(path) as im:
        return im.convert("RGB")


def build_image_transform(
    size: tuple[int, int] = (384, 128),
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN,
    std: tuple[float, float, float] = OPENAI_CLIP_STD,
    train: bool = False,
    hflip: bool = True,
    augment: ImageAugConfig | None = None,
) -> v2.Compose:
    """PIL image -> normalized float tensor [3, H, W] resized (bicubic) to ``size`` = (H, W).

    In training, ``hflip`` adds a random horizontal flip (p=0.5) and ``augment`` its ops after it
    (see ``tbpr.data.image_augment``; ``irra_erasing`` runs after normalization); evaluation is
    deterministic and ignores both.
    """
    steps = [v2.Resize(tuple(size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True)]
    if train and hflip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    early, late = build_augment(augment, size, mean) if train and augment is not None else ([], [])
    steps += [*early, *to_float(), v2.Normalize(list(mean), list(std)), *late]
    return v2.Compose(steps)
