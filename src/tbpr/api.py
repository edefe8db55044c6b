"""The library API for practitioners: load a trained run in one call, encode texts and images.

    import tbpr
    retriever = tbpr.load("runs/synth")                  # checkpoints/best.pt, on cuda if available
    texts = retriever.encode_text(["a man in a blue jacket"])   # [1, D], L2-normalized
    images = retriever.encode_images(["a.jpg", "b.png"])         # [2, D] (paths or PIL images)
    scores = texts @ images.T                                    # cosine similarity

Embeddings come out of the model the run was trained as, with the run's own tokenizer and evaluation
preprocessing, so they are the ones ``tbpr eval`` scores and ``tbpr index`` stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from tbpr.data.transforms import load_image
from tbpr.errors import ConfigError, DataError
from tbpr.evaluation.run_eval import LoadedRun, load_run

ImageInput = str | Path | Image.Image


class Retriever:
    """A trained dual encoder with its tokenizer and image preprocessing, in eval mode on ``device``."""

    def __init__(self, run: LoadedRun, device: str | torch.device):
        self.run = run
        self.device = torch.device(device)
        self.model = run.model.to(self.device).eval()
        self.config = run.config
        self.checkpoint = run.checkpoint
        self._tokenizer = run.tokenizer()
        self._transform = run.image_transform()

    @torch.no_grad()
    def encode_text(self, texts: str | Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalized embeddings [N, D] (float32, on the CPU) of ``texts``, encoded ``batch_size`` at a time."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        _check_batch_size(batch_size)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ConfigError(f"text {i} is a {type(text).__name__}, not a string")
        return self._batched(texts, batch_size, lambda chunk: self.model.encode_text(self._tokenizer(chunk)))

    @torch.no_grad()
    def encode_images(self, images: ImageInput | Sequence[ImageInput], batch_size: int = 64) -> torch.Tensor:
        """L2-normalized embeddings [N, D] (float32, on the CPU) of image files or PIL images.

        Files are decoded one batch at a time; an unreadable one is a ``DataError`` naming it.
        """
        images = [images] if isinstance(images, str | Path | Image.Image) else list(images)
        _check_batch_size(batch_size)

        def encode(chunk: list) -> torch.Tensor:
            pixels = torch.stack([self._transform(_rgb(image)) for image in chunk])
            return self.model.encode_image(pixels.to(self.device))

        return self._batched(images, batch_size, encode)

    def _batched(self, items: list, batch_size: int, encode) -> torch.Tensor:
        if not items:
            raise ConfigError("nothing to encode: the list is empty")
        chunks = [encode(items[i : i + batch_size]).float().cpu() for i in range(0, len(items), batch_size)]
        return torch.cat(chunks)


def load(run: str | Path, checkpoint: str = "best", device: str | torch.device | None = None) -> Retriever:
    """A ``Retriever`` over a run folder's ``best`` (or ``last``) checkpoint, or a checkpoint file.

    ``device`` defaults to cuda when available, else cpu.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Retriever(load_run(Path(run), checkpoint, device), device)


def _rgb(image: ImageInput) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if not isinstance(image, str | Path):
        raise ConfigError(f"cannot encode a {type(image).__name__}: give an image path or a PIL image")
    try:
        return load_image(image)
    except OSError as exc:  # missing, unreadable or not an image (PIL.UnidentifiedImageError)
        raise DataError(f"cannot read image {image}: {exc}") from exc


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer (got {batch_size!r})")
