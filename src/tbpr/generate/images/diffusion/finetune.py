"""Fine-tune a Stable Diffusion UNet on a training set's (image, caption) pairs: PDG's eq. 8.

The loss is the plain noise-prediction error ||eps - eps_theta(x_t, t, s)||^2 (the velocity for
v-prediction models) at a uniformly drawn timestep, with the text encoder and the VAE frozen. Either the
whole UNet trains (the result is a full pipeline folder, ``OUT/model``) or LoRA adapters on its attention
projections do (``OUT/lora``, loaded with ``load_pipeline(base, lora=OUT/lora)``).

Resumable: the settings go to ``OUT/finetune.json`` and the trained weights with the optimizer state to
``OUT/checkpoint.pt`` every ``checkpoint_every`` steps (both written atomically). Step ``i``'s pairs, noise
and timesteps are drawn from generators seeded by (seed, i), so a run killed and rerun gives the same
weights as one that never stopped. A rerun with other settings is refused (only ``steps`` and
``checkpoint_every`` may change: more steps continue training).
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from tbpr.atomic import atomic_write, write_json
from tbpr.data.readers import read_dataset
from tbpr.errors import ConfigError, DataError
from tbpr.generate.images.diffusion.loading import load_pipeline
from tbpr.generate.images.diffusion.sampling import encode_prompts, latent_shape

log = logging.getLogger(__name__)

CONFIG_FILE = "finetune.json"
CHECKPOINT_FILE = "checkpoint.pt"
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
CHANGEABLE = {"steps", "checkpoint_every"}  # settings a rerun may change


@dataclass(frozen=True)
class FinetuneConfig:
    model: str  # hub name or pipeline folder
    data: str  # dataset folder; its training split's (image, caption) pairs are used
    steps: int = 1000
    batch_size: int = 1
    lr: float = 1e-5
    lora_rank: int = 0  # 0 trains the whole UNet
    height: int = 512
    width: int = 256
    checkpoint_every: int = 100
    seed: int = 0


def finetune(cfg: FinetuneConfig, out: str | Path, device: str = "cpu") -> Path:
    """Train (or continue training) into ``out``; returns the exported model or LoRA folder."""
    out = Path(out)
    check_config(cfg, out)
    pairs = training_pairs(cfg.data)
    pipe = load_pipeline(cfg.model, device=device, dtype=torch.float32)
    try:
        latent_shape(pipe, cfg.height, cfg.width)
    except ValueError as err:
        raise ConfigError(f"--height/--width: {err}") from None
    trainable = trainable_parameters(pipe.unet, cfg.lora_rank)
    optimizer = torch.optim.AdamW(trainable.values(), lr=cfg.lr)
    step = resume(out / CHECKPOINT_FILE, trainable, optimizer)
    write_json(out / CONFIG_FILE, asdict(cfg), indent=2)
    pipe.unet.train()
    while step < cfg.steps:
        loss = train_step(pipe, pairs, cfg, step, optimizer)
        step += 1
        log.info("step %d/%d loss %.5f", step, cfg.steps, loss)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            payload = {
                "step": step,
                "trainable": {k: v.detach().cpu() for k, v in trainable.items()},
                "optimizer": optimizer.state_dict(),
            }
            atomic_write(out / CHECKPOINT_FILE, lambda fh, p=payload: torch.save(p, fh))
    pipe.unet.eval()
    return export(pipe, cfg, out)


def check_config(cfg: FinetuneConfig, out: Path) -> None:
    """ConfigError if ``out`` holds a run with other settings than ``cfg`` (beyond the changeable ones)."""
    path = out / CONFIG_FILE
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"{path}: unreadable ({err}); delete it with {out} or choose another --out"
        ) from None
    diffs = [
        f"{f.name}: saved {saved.get(f.name)!r}, now {getattr(cfg, f.name)!r}"
        for f in fields(cfg)
        if f.name not in CHANGEABLE and saved.get(f.name) != getattr(cfg, f.name)
    ]
    if diffs:
        raise ConfigError(
            f"{path}: {out} holds a fine-tuning run with other settings ({'; '.join(diffs)}); rerun with "
            "the same settings to continue it, or choose another --out"
        )


def training_pairs(data: str) -> list[tuple[Path, str]]:
    """(image file, caption) of every caption in the training split; DataError listing missing images."""
    manifest = read_dataset(data).split("train")
    pairs = [(manifest.image_path(manifest.image(c.image_id)), c.text) for c in manifest.captions]
    if not pairs:
        raise DataError(f"{data}: the training split has no captioned images to fine-tune on")
    missing = sorted({str(p) for p, _ in pairs if not p.is_file()})
    if missing:
        raise DataError(f"{data}: {len(missing)} training images are missing, e.g. {missing[0]}")
    return pairs


def trainable_parameters(unet, lora_rank: int) -> dict[str, torch.nn.Parameter]:
    """The parameters to train: the whole UNet, or rank-``lora_rank`` LoRA adapters added to it."""
    if lora_rank:
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(
            LoraConfig(
                r=lora_rank, lora_alpha=lora_rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS
            )
        )
    else:
        unet.requires_grad_(True)
    return {name: p for name, p in unet.named_parameters() if p.requires_grad}


def resume(path: Path, trainable: dict, optimizer: torch.optim.Optimizer) -> int:
    """Load the checkpoint at ``path`` into ``trainable`` and ``optimizer``; its step (0 without one)."""
    if not path.is_file():
        return 0
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which, do not train over it
        raise ConfigError(
            f"{path}: not a readable fine-tuning checkpoint ({err}); delete it to start over"
        ) from None
    if set(payload["trainable"]) != set(trainable):
        raise ConfigError(
            f"{path}: its weights do not fit this model and LoRA setting; delete it to start over"
        )
    with torch.no_grad():
        for name, value in payload["trainable"].items():
            trainable[name].copy_(value)
    optimizer.load_state_dict(payload["optimizer"])
    log.info("resuming from step %d (%s)", payload["step"], path)
    return int(payload["step"])


@functools.lru_cache(maxsize=2)
def _permutation(seed: int, epoch: int, n: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(_mix(seed, epoch))).tolist()


def _mix(*values: int) -> int:
    return int(np.random.SeedSequence(list(values)).generate_state(1)[0])


def batch_indices(seed: int, step: int, batch_size: int, n: int) -> list[int]:
    """Pair indices of ``step``: consecutive slots of one seeded permutation per pass over the data."""
    return [_permutation(seed, k // n, n)[k % n] for k in range(step * batch_size, (step + 1) * batch_size)]


def load_image(path: Path, height: int, width: int) -> torch.Tensor:
    """(3, height, width) in [-1, 1]; DataError naming an unreadable file."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((width, height), Image.BICUBIC)
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"{path}: cannot read this training image ({err})") from None
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 127.5 - 1


def train_step(pipe, pairs, cfg: FinetuneConfig, step: int, optimizer) -> float:
    """One optimizer step of the noise-prediction loss on step ``step``'s pairs."""
    chosen = [pairs[i] for i in batch_indices(cfg.seed, step, cfg.batch_size, len(pairs))]
    device = pipe.unet.device
    gen = torch.Generator("cpu").manual_seed(_mix(cfg.seed, step, 1))
    pixels = torch.stack([load_image(p, cfg.height, cfg.width) for p, _ in chosen]).to(device)
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.sample(gen) * pipe.vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=gen).to(device)
    t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (len(chosen),), generator=gen).to(device)
    if pipe.scheduler.config.prediction_type == "v_prediction":
        target = pipe.scheduler.get_velocity(latents, noise, t)
    else:
        target = noise
    cuda = device.type == "cuda"
    with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
        pred = pipe.unet(
            pipe.scheduler.add_noise(latents, noise, t), t, encode_prompts(pipe, [c for _, c in chosen])
        ).sample
    loss = F.mse_loss(pred.float(), target.float())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def export(pipe, cfg: FinetuneConfig, out: Path) -> Path:
    """Write the trained model (``out/model``, a full pipeline) or LoRA weights (``out/lora``), replacing
    an earlier export only once the new one is complete."""
    final = out / ("lora" if cfg.lora_rank else "model")
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{final.name}."))
    try:
        if cfg.lora_rank:
            from diffusers.utils import convert_state_dict_to_diffusers
            from peft.utils import get_peft_model_state_dict

            layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
            type(pipe).save_lora_weights(str(tmp), unet_lora_layers=layers, safe_serialization=True)
        else:
            pipe.save_pretrained(str(tmp), safe_serialization=True)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("fine-tuned %s written to %s", "LoRA weights" if cfg.lora_rank else "model", final)
    return final
