"""Input pipeline: image transforms, tokenizer, torch datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fixtures.dataset_files import make_dataset
from tbpr.data.datasets import CaptionPairDataset, ImageDataset, TextDataset
from tbpr.data.readers import read_dataset
from tbpr.data.samplers import RandomBatchSampler
from tbpr.data.tokenizer import Tokenizer
from tbpr.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_image_transform,
    load_image,
)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer()


def half_black_half_white(width: int = 16, height: int = 32) -> Image.Image:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, width // 2 :] = 255
    return Image.fromarray(pixels)


# ---------------------------------------------------------------- transforms


@pytest.mark.parametrize("size", [(384, 128), (224, 224)])
def test_transform_normalizes_with_the_given_statistics(size):
    image = Image.new("RGB", (50, 90), (255, 0, 128))
    out = build_image_transform(size)(image)
    assert out.shape == (3, *size) and out.dtype == torch.float32
    expected = [1.930336, -1.752097, 0.339949]  # (x / 255 - CLIP mean) / CLIP std
    assert out.mean(dim=(1, 2)).tolist() == pytest.approx(expected, abs=1e-5)
    assert out.std(dim=(1, 2)).max() < 1e-5
    imagenet = build_image_transform(size, IMAGENET_MEAN, IMAGENET_STD)(image)
    assert imagenet[0, 0, 0].item() == pytest.approx((1.0 - 0.485) / 0.229, abs=1e-5)


def test_resize_is_bicubic_to_height_width():
    pixels = np.random.default_rng(0).integers(0, 256, (50, 30, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    out = build_image_transform((40, 20), mean=(0, 0, 0), std=(1, 1, 1))(image)
    expected = np.asarray(image.resize((20, 40), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    assert torch.allclose(out, torch.from_numpy(expected).permute(2, 0, 1), atol=1e-6)


def test_training_flip_is_random_and_optional():
    image = half_black_half_white()
    plain = build_image_transform((32, 16))(image)
    flipped = torch.flip(plain, dims=[-1])
    train = build_image_transform((32, 16), train=True)
    outcomes = set()
    for seed in range(20):
        torch.manual_seed(seed)
        out = train(image)
        assert torch.equal(out, plain) or torch.equal(out, flipped)
        outcomes.add(torch.equal(out, flipped))
    assert outcomes == {True, False}
    no_flip = build_image_transform((32, 16), train=True, hflip=False)
    for transform in (no_flip, build_image_transform((32, 16))):
        for seed in range(10):
            torch.manual_seed(seed)
            assert torch.equal(transform(image), plain)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_load_image_converts_to_rgb(tmp_path, mode):
    path = tmp_path / "x.png"
    Image.new(mode, (4, 6)).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (4, 6)


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_pads_short_captions(tokenizer):
    tokens = tokenizer(["a man in red", "hi"])
    assert tokens.shape == (2, 77) and tokens.dtype == torch.long
    assert tokens[0, 0] == tokenizer.sot_id == 49406
    n = int((tokens[0] != 0).sum())
    assert n == 6 and tokens[0, n - 1] == tokenizer.eot_id == 49407 and not tokens[0, n:].any()
    assert tokenizer.decode(tokens[0]) == "a man in red"


def test_tokenizer_truncation_keeps_the_end_token(tokenizer):
    tokens = tokenizer(" ".join(["walking"] * 200))
    assert tokens.shape == (1, 77)
    last = int(torch.nonzero(tokens[0]).max())
    assert last == 76 and tokens[0, 76] == 49407
    assert tokens[0, 0] == 49406 and (tokens[0, 1:76] != 49407).all()


def test_tokenizer_context_length_and_special_ids():
    short = Tokenizer(context_length=8)
    tokens = short(["one two three four five six seven eight nine"])
    assert tokens.shape == (1, 8) and tokens[0, -1] == short.eot_id
    assert short.mask_id is None  # <|mask|> is not in CLIP's vocabulary
    assert short.vocab_size == 49408 and short.pad_id == 0


# ---------------------------------------------------------------- datasets


def test_caption_pair_dataset_one_sample_per_caption(tmp_path, tokenizer):
    train = read_dataset(make_dataset("cuhk", tmp_path)).split("train")
    transform = build_image_transform((32, 16))
    dataset = CaptionPairDataset(train, transform, tokenizer)
    assert len(dataset) == 6
    assert dataset.pids == [1, 1, 0, 1, 1, 2]
    sample = dataset[3]
    assert set(sample) == {"image", "tokens", "pid", "caption_index", "image_index"}
    assert sample["caption_index"] == 3 and sample["image_index"] == 2 and sample["pid"] == 1
    assert torch.equal(sample["tokens"], tokenizer("The man walks in red clothes.")[0])
    assert torch.equal(sample["image"], transform(load_image(train.image_path(train.images[2]))))


def test_caption_pairs_through_a_loader_with_workers(tmp_path, tokenizer):
    train = read_dataset(make_dataset("cuhk", tmp_path)).split("train")
    dataset = CaptionPairDataset(train, build_image_transform((32, 16), train=True), tokenizer)
    sampler = RandomBatchSampler(len(dataset), 4, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=2, persistent_workers=True)
    (batch,) = list(loader)
    assert batch["image"].shape == (4, 3, 32, 16) and batch["tokens"].shape == (4, 77)
    assert batch["caption_index"].tolist() == next(iter(sampler))
    assert batch["pid"].tolist() == [dataset.pids[i] for i in batch["caption_index"].tolist()]


def test_gallery_and_query_datasets(tmp_path, tokenizer):
    test = read_dataset(make_dataset("cuhk", tmp_path)).split("test")
    images = ImageDataset(test, build_image_transform((32, 16)))
    texts = TextDataset(test, tokenizer)
    assert len(images) == 2 and images.pids == [30, 31]
    assert len(texts) == 3 and texts.pids == [30, 31, 31]
    assert images[1]["pid"] == 31 and images[1]["index"] == 1 and images[1]["image"].shape == (3, 32, 16)
    sample = texts[2]
    assert set(sample) == {"tokens", "pid", "index"} and sample["pid"] == 31 and sample["index"] == 2
    assert tokenizer.decode(sample["tokens"]) == "grey hair , walking stick ."
