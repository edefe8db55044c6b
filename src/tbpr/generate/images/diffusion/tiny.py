"""Tiny randomly initialised Stable Diffusion and InstructPix2Pix pipelines, built from configs offline.

A few MB, 2 DDIM steps at 64x64 in about a second on CPU: for tests and benchmarks, where random weights
make image quality meaningless but shapes, determinism and exact properties hold. The CLIP BPE tokenizer is
built from the vocabulary open_clip ships (its ids match CLIP's). ``save_tiny_pipeline`` writes one to a
folder that ``load_pipeline`` (and so every ``tbpr generate`` command) loads like a real model.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

KINDS = ("text2image", "instruct")
IMAGE_SIZE = 64  # the tiny models' native resolution (any multiple of 4 works)
_BPE_MERGES = 49152 - 256 - 2  # CLIP's merge count (open_clip reads the same slice)


def clip_tokenizer() -> CLIPTokenizer:
    """CLIP's BPE tokenizer (49408 ids, 77 positions) from open_clip's ``bpe_simple_vocab_16e6.txt.gz``."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = (
        gzip.decompress(Path(default_bpe()).read_bytes()).decode("utf-8").split("\n")[1 : _BPE_MERGES + 1]
    )
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        return CLIPTokenizer(
            str(Path(tmp) / "vocab.json"),
            str(Path(tmp) / "merges.txt"),
            pad_token="<|endoftext|>",
            model_max_length=77,
        )


def ddim_scheduler() -> DDIMScheduler:
    """DDIM with Stable Diffusion's beta schedule."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_pipeline(kind: str = "text2image", seed: int = 0):
    """A randomly initialised pipeline of ``kind`` (text2image or instruct); same seed, same weights."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=IMAGE_SIZE // 2,
            in_channels=8 if kind == "instruct" else 4,  # InstructPix2Pix also reads the source latent
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
            sample_size=IMAGE_SIZE,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                bos_token_id=49406,
                eos_token_id=49407,
                pad_token_id=49407,
            )
        )
    cls = StableDiffusionInstructPix2PixPipeline if kind == "instruct" else StableDiffusionPipeline
    pipe = cls(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=ddim_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False)
    return pipe


def save_tiny_pipeline(folder: str | Path, kind: str = "text2image", seed: int = 0) -> Path:
    """Write a tiny pipeline to ``folder`` in diffusers' layout (``model_index.json`` and components)."""
    tiny_pipeline(kind, seed).save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)
