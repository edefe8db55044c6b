"""Image augmentation catalogue (TBPS-CLIP Table 2 / appendix Table 13, IRRA's pad/crop and erasing) and the
k-of-N pool."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from tbpr.config import from_dict
from tbpr.data.image_augment import OPS, TBPS_POOL, ImageAugConfig, RandomSubset, build_ops, to_float
from tbpr.data.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, build_image_transform
from tbpr.errors import ConfigError
from tbpr.train.reproducible import SeededDataset

SIZE = (64, 32)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    """A colourful, asymmetric RGB image (random noise), larger than SIZE."""
    pixels = np.random.default_rng(0).integers(0, 256, (96, 40, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def train_transform(ops, size=SIZE, **kwargs) -> v2.Compose:
    return build_image_transform(size, train=True, hflip=False, augment=ImageAugConfig(list(ops), **kwargs))


def seeded(transform, image, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return transform(image)


@pytest.mark.parametrize("op", sorted(OPS))
def test_each_op_is_seeded_shaped_and_not_a_no_op(op, image):
    transform = train_transform([op])
    plain = build_image_transform(SIZE, train=False)(image)
    first = seeded(transform, image, 0)
    assert first.shape == (3, *SIZE) and first.dtype == torch.float32
    assert torch.equal(first, seeded(transform, image, 0))
    assert any(not torch.equal(seeded(transform, image, s), plain) for s in range(30)), op


def test_defaults_are_the_papers_values():
    built = {name: build_ops(ImageAugConfig([name]), SIZE, OPENAI_CLIP_MEAN)[0] for name in OPS}
    assert built["random_resized_crop"].scale == (0.9, 1.0) and built["random_resized_crop"].size == SIZE
    erasing = built["random_erasing"].transforms[-1]
    assert (erasing.p, tuple(erasing.scale), tuple(erasing.ratio)) == (0.5, (0.1, 0.2), (0.3, 3.3))
    assert built["random_grayscale"].p == 0.1
    assert built["gaussian_blur"].kernel_size == (3, 3) and built["gaussian_blur"].sigma == [0.1, 2.0]
    jitter = built["color_jitter"]
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == (
        (0.9, 1.1),
        (0.9, 1.1),
        (0.9, 1.1),
        None,
    )
    assert built["hue"].hue == (-0.1, 0.1) and built["hue"].brightness is None
    assert built["brightness"].brightness == (0.9, 1.1) and built["brightness"].hue is None
    assert built["rotation"].degrees == [-15.0, 15.0]
    assert (built["randaugment"].num_ops, built["randaugment"].magnitude) == (2, 9)
    assert built["hflip"].p == 0.5 and built["vflip"].p == 0.5
    assert built["pad_crop"].padding == [10, 10, 10, 10] and built["pad_crop"].size == SIZE
    irra = built["irra_erasing"]
    assert (irra.p, tuple(irra.scale), tuple(irra.ratio)) == (0.5, (0.02, 0.4), (0.3, 3.3))
    assert irra.value == list(OPENAI_CLIP_MEAN)


def test_tbps_pool_matches_public_code():
    cfg = ImageAugConfig(TBPS_POOL, mode="pool")
    assert (cfg.k, cfg.replace) == (2, True)
    (pool,) = [t for t in train_transform(TBPS_POOL, mode="pool").transforms if isinstance(t, RandomSubset)]
    assert len(pool.transforms) == 6


class Counting:
    """Wraps a transform and counts its calls."""

    def __init__(self, transform):
        self.transform = transform
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return self.transform(x)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pool_applies_exactly_k_ops_per_image(k, image):
    transform = train_transform(TBPS_POOL, mode="pool", k=k)
    (pool,) = [t for t in transform.transforms if isinstance(t, RandomSubset)]
    pool.transforms = [Counting(t) for t in pool.transforms]
    for seed in range(20):
        before = sum(c.calls for c in pool.transforms)
        out = seeded(transform, image, seed)
        assert sum(c.calls for c in pool.transforms) - before == k
        assert out.shape == (3, *SIZE) and out.dtype == torch.float32


@pytest.mark.parametrize("replace", [True, False])
def test_pool_draws_with_or_without_replacement(replace):
    drawn: list[int] = []
    pool = RandomSubset([lambda x, i=i: drawn.append(i) or x for i in range(6)], k=2, replace=replace)
    repeats = 0
    for seed in range(200):
        drawn.clear()
        torch.manual_seed(seed)
        pool(torch.zeros(1))
        repeats += drawn[0] == drawn[1]
    # with replacement, about 1 draw in 6 repeats an op (the public code's np.random.choice(ops, 2))
    assert (repeats > 10) if replace else (repeats == 0)


def test_pool_is_reproducible_under_per_sample_seeding(image):
    class Images(Dataset):
        def __init__(self, transform):
            self.transform = transform

        def __len__(self):
            return 1

        def __getitem__(self, index):
            return self.transform(image)

    data = SeededDataset(Images(train_transform(TBPS_POOL, mode="pool")))
    torch.manual_seed(123)
    first = data[(0, 7)]
    assert torch.equal(first, data[(0, 7)])
    assert any(not torch.equal(first, data[(0, s)]) for s in range(8, 20))


def test_params_override_rotation_degrees(image):
    size = (32, 32)  # square: a 90 degree rotation is an exact transpose
    plain = build_image_transform(size, train=False)(image)
    rotated = seeded(
        train_transform(["rotation"], size, params={"rotation": {"degrees": [90, 90]}}), image, 0
    )
    assert torch.equal(rotated, torch.rot90(plain, 1, dims=(1, 2)))


def test_params_override_reaches_the_transform():
    cfg = ImageAugConfig(
        ["gaussian_blur", "random_resized_crop", "autoaugment"],
        params={
            "gaussian_blur": {"kernel_size": 7},
            "random_resized_crop": {"scale": [0.3, 1.0]},
            "autoaugment": {"policy": "cifar10"},
        },
    )
    blur, crop, auto = build_ops(cfg, SIZE, OPENAI_CLIP_MEAN)
    assert blur.kernel_size == (7, 7) and crop.scale == [0.3, 1.0]
    assert auto.policy == v2.AutoAugmentPolicy.CIFAR10


def test_sequence_applies_every_op_in_order(image):
    plain = build_image_transform(SIZE, train=False)(image)
    params = {"hflip": {"p": 1.0}, "vflip": {"p": 1.0}}
    both = seeded(train_transform(["hflip", "vflip"], params=params), image, 0)
    assert torch.equal(both, plain.flip(1, 2))


def test_random_erasing_runs_on_the_float_tensor_before_normalize(image):
    erased = seeded(train_transform(["random_erasing"], params={"random_erasing": {"p": 1.0}}), image, 0)
    black = v2.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)(torch.zeros(3, 1, 1)).view(3, 1, 1)
    share = (erased == black).all(dim=0).float().mean().item()
    assert 0.1 <= share <= 0.2  # erasing scale [0.1, 0.2] of the image, filled black as in the public code


def test_pad_crop_is_a_window_of_the_image_padded_by_10(image):
    plain = build_image_transform(SIZE, train=False)  # resize, to float, normalize
    resized = v2.Resize(SIZE, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)(image)
    padded = torch.nn.functional.pad(
        v2.Compose(to_float())(resized), (10, 10, 10, 10)
    )  # black, as IRRA's Pad
    normalize = v2.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    offsets = set()
    for seed in range(12):
        out = seeded(train_transform(["pad_crop"]), image, seed)
        assert out.shape == (3, *SIZE)
        found = [
            (dy, dx)
            for dy in range(21)
            for dx in range(21)
            if torch.allclose(out, normalize(padded[:, dy : dy + SIZE[0], dx : dx + SIZE[1]]), atol=1e-6)
        ]
        assert found, seed
        offsets.add(found[0])
    assert len(offsets) > 6 and not torch.equal(out, plain(image))


def test_irra_erasing_fills_the_mean_after_normalization_over_2_to_40_percent(image):
    transform = train_transform(["irra_erasing"], params={"irra_erasing": {"p": 1.0}})
    assert isinstance(transform.transforms[-1], v2.RandomErasing)  # after Normalize, as IRRA
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)
    shares = []
    for seed in range(40):
        out = seeded(transform, image, seed)
        assert out.shape == (3, *SIZE)
        shares.append((out == mean).all(dim=0).float().mean().item())  # IRRA: value=mean, normalized units
    assert min(shares) >= 0.02 * 0.8 and max(shares) <= 0.4 * 1.1  # area rounding at 64x32
    assert max(shares) > 0.2 and min(shares) < 0.1  # the range is used, not one size
    skipped = train_transform(["irra_erasing"], params={"irra_erasing": {"p": 0.0}})
    assert torch.equal(seeded(skipped, image, 0), build_image_transform(SIZE, train=False)(image))


def test_eval_transform_is_unchanged(image):
    reference = v2.Compose(
        [
            v2.Resize(SIZE, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD)),
        ]
    )
    pool = ImageAugConfig(TBPS_POOL, mode="pool")
    evaluation = build_image_transform(SIZE, train=False, augment=pool)
    assert torch.equal(evaluation(image), reference(image))
    assert torch.equal(build_image_transform(SIZE, train=True, hflip=False)(image), reference(image))
    assert torch.equal(train_transform([])(image), reference(image))


def test_reads_from_a_config_mapping():
    cfg = from_dict(
        ImageAugConfig,
        {"ops": ["rotation", "hflip"], "mode": "pool", "k": 1, "params": {"rotation": {"degrees": 7.5}}},
        "data.augment",
    )
    assert build_ops(cfg, SIZE, OPENAI_CLIP_MEAN)[0].degrees == [-7.5, 7.5]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ops": ["rotation", "solarize"]}, "data.augment.ops: unknown op(s) ['solarize']; known ops: ["),
        ({"ops": ["rotation"], "mode": "stack"}, "data.augment.mode: 'stack'"),
        ({"ops": [], "mode": "pool"}, "data.augment.ops is empty"),
        ({"ops": ["rotation"], "mode": "pool", "k": 0}, "data.augment.k=0"),
        ({"ops": ["rotation"], "mode": "pool", "k": 2, "replace": False}, "between 1 and len(ops) = 1"),
        (
            {"ops": ["hflip"], "params": {"rotation": {"degrees": 5}}},
            "data.augment.params.rotation: 'rotation'",
        ),
        ({"ops": ["rotation"], "params": {"rotation": {"angle": 5}}}, "unknown argument(s) ['angle']"),
        ({"ops": ["brightness"], "params": {"brightness": {"hue": 0.1}}}, "allowed: ['brightness']"),
        ({"ops": ["rotation"], "params": {"rotation": {"degrees": -5}}}, "data.augment.params.rotation: "),
        ({"ops": ["random_erasing"], "params": {"random_erasing": {"p": 2}}}, "params.random_erasing"),
        ({"ops": ["autoaugment"], "params": {"autoaugment": {"policy": "x"}}}, "params.autoaugment"),
        ({"ops": ["hflip", "irra_erasing"], "mode": "pool"}, "['irra_erasing'] run(s) on the normalized"),
    ],
)
def test_config_errors_name_the_field(kwargs, message):
    with pytest.raises(ConfigError) as err:
        ImageAugConfig(**kwargs)
    assert message in str(err.value)
