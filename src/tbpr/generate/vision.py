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
from tbpr.generate.chat import ChatClient, ChatSettings, Failure, Messages, Reply

log = logging.getLogger(__name__)

Request = tuple[Path, str]  # (image file, instruction)
MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


class ImageBackend(Protocol):
    backend: str  # recorded in the store: "openai", "transformers"

    @property
    def model(self) -> str: ...

    @property
    def settings(self) -> dict[str, Any]: ...

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


class VisionChatBackend:
    """Captioning through an OpenAI-compatible server that accepts image content parts."""

    backend = "openai"

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    @property
    def model(self) -> str:
        return self.client.served_model

    @property
    def settings(self) -> dict[str, Any]:
        return self.client.settings.request_fields()

    def generate(self, requests: Sequence[Request], seeds: Sequence[int]) -> list[Reply | Failure]:
        conversations = [vision_messages(path, text) for path, text in requests]
        return self.client.complete_many(conversations, [{"seed": seed} for seed in seeds])


class TransformersVisionBackend:
    """A local image-text-to-text model (hub name or folder), ``batch_size`` images at once."""

    backend = "transformers"

    def __init__(
        self, model: str, device: str = "cpu", batch_size: int = 8, settings: ChatSettings | None = None
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"the generation batch size must be at least 1, got {batch_size}")
        self.name = model
        self.device = device
        self.batch_size = batch_size
        self.chat = settings or ChatSettings()
        self._loaded: tuple[Any, Any] | None = None

    @property
    def model(self) -> str:
        return self.name

    @property
    def settings(self) -> dict[str, Any]:
        return {**self.chat.request_fields(), "generation_batch": self.batch_size}

    def load(self) -> tuple[Any, Any]:
        """Processor and model (loaded on first use; a bad name is a ``ConfigError``)."""
        if self._loaded is None:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor

            try:
                processor = AutoProcessor.from_pretrained(self.name)
                model = AutoModelForImageTextToText.from_pretrained(self.name, dtype=torch.float32)
            except (OSError, ValueError, KeyError) as err:
                raise ConfigError(
                    f"cannot load the vision-language model {self.name!r}: {err}; give a local folder or a "
                    "hub name of an image-text-to-text model (downloadable or in the Hugging Face cache)"
                ) from None
            tokenizer = getattr(processor, "tokenizer", processor)
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._loaded = processor, model.to(self.device).eval()
            log.info("loaded %s on %s", self.name, self.device)
        return self._loaded

    def generate(self, requests: Sequence[Request], seeds: Sequence[int]) -> list[Reply | Failure]:
        import torch
        from PIL import Image

        processor, model = self.load()
        tokenizer = getattr(processor, "tokenizer", processor)
        sample = self.chat.temperature > 0
        options: dict[str, Any] = {"max_new_tokens": self.chat.max_tokens, "do_sample": sample}
        if sample:
            options["temperature"] = self.chat.temperature
            options["top_p"] = self.chat.top_p if self.chat.top_p is not None else 1.0
        stop = torch.tensor(_stop_ids(tokenizer, model))
        out: list[Reply | Failure] = []
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start : start + self.batch_size]
            images, prompts = [], []
            for path, text in batch:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
                turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
                prompts.append(processor.apply_chat_template(turn, add_generation_prompt=True))
            inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True).to(self.device)
            torch.manual_seed(seeds[start])
            with torch.inference_mode():
                generated = model.generate(**inputs, **options, pad_token_id=tokenizer.pad_token_id)
            new = generated[:, inputs["input_ids"].shape[1] :]
            ended = torch.isin(new, stop.to(new.device)).any(dim=1).tolist()
            full = new.shape[1] >= self.chat.max_tokens
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            out.extend(Reply(t, full and not e, seeds[start]) for t, e in zip(texts, ended))
        return out


def _stop_ids(tokenizer, model) -> list[int]:
    configured = model.generation_config.eos_token_id
    configured = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [tokenizer.eos_token_id, *configured] if i is not None})
