"""Stable Diffusion-family generation on diffusers, implemented in tbpr (no community pipelines).

- ``loading``: a pipeline by hub name or local folder (DDIM scheduler, fp16 on GPU), one error if missing.
- ``tiny``: tiny randomly initialised pipelines built from configs, for tests and benchmarks.
- ``sampling``: batched text-to-image with one seeded generator per image; the shared DDIM loop.
- ``inversion``: DDIM inversion and null-text inversion.
- ``p2p``: prompt-to-prompt (word swap, refinement) on the UNet's attention processors.
- ``instruct``: instruction editing with InstructPix2Pix.
- ``finetune``: resumable full or LoRA fine-tuning with the noise-prediction loss.
- ``backend``: ``DiffusersBackend``, the ``diffusers`` image-job backend.

Modules import torch and diffusers at the top; import them only where the work is done.
"""
