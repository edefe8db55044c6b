"""Image captioning backends: an OpenAI-compatible vision chat server, or a local transformers
image-text-to-text model.

Both take requests ``(image_path, instruction)`` and one seed per request, and return one ``Reply`` (or
``Failure``) per request, in order:

- ``VisionChatBackend``: one user message per request, the image as a base64 data URL
  (``{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,..."}}``) followed by the
  instruction; sent through ``ChatClient`` (concurrent, retried). vLLM serving Qwen2-VL is the real use.
- ``TransformersVisionBackend``: ``AutoProcessor`` + ``AutoModelForImageTextToText`` in-process, batched
  with left padding; sampling is seeded per batch with the seed of its first request (as the text backend).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tbpr.errors import ConfigError
from tbpr.generate.chat import Failure, Messages, Reply
from tbpr.generate.jobs import RecordedBackend
from tbpr.generate.llm import ChatBackend, LocalGenerator

log = logging.getLogger(__name__)

Request = tuple[Path, str]  # (image file, instruction)
MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


class ImageBackend(RecordedBackend, Protocol):
    def generate(self, requests: Sequence[Request], seeds: Sequence[int]) -> list[Reply | Failure]: ...


def data_url(path: Path) -> str:
    """The file as a ``data:`` URL (its MIME type from the suffix)."""
    mime = MIME.get(path.suffix.lower(), "image/jpeg")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def vision_messages(path: Path, text: str) -> Messages:
    """One user turn: the image, then the instruction (OpenAI content parts)."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(path)}},
                {"type": "text", "text": text},
            ],
        }
    ]


class VisionChatBackend(ChatBackend):
    """Captioning through an OpenAI-compatible server that accepts image content parts."""

    def generate(self, requests: Sequence[Request], seeds: Sequence[int]) -> list[Reply | Failure]:
        return super().generate([vision_messages(path, text) for path, text in requests], seeds)


class TransformersVisionBackend(LocalGenerator):
    """A local image-text-to-text model (hub name or folder), ``batch_size`` images at once."""

    def _load(self) -> tuple[Any, Any]:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(self.name)
            return processor, AutoModelForImageTextToText.from_pretrained(self.name, dtype=torch.float32)
        except (OSError, ValueError, KeyError) as err:
            raise ConfigError(
                f"cannot load the vision-language model {self.name!r}: {err}; give a local folder or a "
                "hub name of an image-text-to-text model (downloadable or in the Hugging Face cache)"
            ) from None

    def _inputs(self, processor: Any, requests: Sequence[Request]) -> Any:
        from PIL import Image

        images, prompts = [], []
        for path, text in requests:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
            turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
            prompts.append(processor.apply_chat_template(turn, add_generation_prompt=True))
        return processor(images=images, text=prompts, return_tensors="pt", padding=True)
