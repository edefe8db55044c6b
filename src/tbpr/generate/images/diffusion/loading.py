"""Load a Stable Diffusion-family pipeline by hub name or local folder, ready for tbpr's samplers.

The model is found (or one ``ModelNotFound`` line says why not) before any work starts. Every pipeline gets
the DDIM scheduler built from its own scheduler config, no safety checker, fp16 weights on a GPU and fp32 on
the CPU, and frozen eval-mode components.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from diffusers import DDIMScheduler, StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline

from tbpr.errors import ConfigError

log = logging.getLogger(__name__)

PIPELINES = {"text2image": StableDiffusionPipeline, "instruct": StableDiffusionInstructPix2PixPipeline}


class ModelNotFound(ConfigError):
    """The model name is neither a pipeline folder nor a model the hub (or its cache) has."""


def dtype_for(device: str) -> torch.dtype:
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def load_pipeline(
    model: str | Path,
    kind: str = "text2image",
    device: str = "cpu",
    lora: str | Path | None = None,
    dtype: torch.dtype | None = None,
):
    """The ``kind`` pipeline (text2image: StableDiffusionPipeline or compatible; instruct: InstructPix2Pix)
    of ``model``, a local folder with ``model_index.json`` or a hub name, on ``device``; ``lora`` adds
    LoRA weights saved by ``tbpr generate finetune --lora-rank``; ``dtype`` overrides fp16/fp32 (training
    keeps fp32 weights)."""
    if kind not in PIPELINES:
        raise ConfigError(f"pipeline kind must be one of {sorted(PIPELINES)}, not {kind!r}")
    source = str(model)
    folder = Path(source).expanduser()
    if folder.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1:
        if not (folder / "model_index.json").is_file():
            raise ModelNotFound(
                f"model {source}: no diffusers pipeline folder there (model_index.json missing); "
                "pass a folder written by save_pretrained or a hub name such as runwayml/stable-diffusion-v1-5"
            )
        source = str(folder)
    try:
        pipe = PIPELINES[kind].from_pretrained(
            source, dtype=dtype or dtype_for(device), safety_checker=None, requires_safety_checker=False
        )
    except (OSError, ValueError) as err:  # hub errors are OSError subclasses; offline ones too
        text = str(err).strip()
        reason = text.splitlines()[0].split(" (")[0] if text else type(err).__name__
        raise ModelNotFound(
            f"model {source!r} cannot be loaded as a {kind} pipeline: {reason} (check the name, the network "
            "or HF_HOME's cache, or pass a local pipeline folder)"
        ) from None
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    if lora is not None:
        pipe.load_lora_weights(str(lora))
        pipe.fuse_lora()
    pipe.to(device)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    log.info("loaded %s pipeline %s on %s (%s)", kind, source, device, pipe.unet.dtype)
    return pipe


def weights_hash(*pipes) -> str:
    """sha256 (16 hex digits) of the weights the pipelines compute with (UNet, VAE, text encoder, in name
    order; fused LoRA weights included): the provenance of every image they make."""
    digest = hashlib.sha256()
    for pipe in pipes:
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            for name, tensor in sorted(module.state_dict().items()):
                digest.update(name.encode())
                digest.update(
                    tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                )
    return digest.hexdigest()[:16]
