"""Text generation backends for chat-style prompts: an OpenAI-compatible server or a local transformers model.

Both take conversations (lists of ``{"role", "content"}`` messages) and one seed per conversation, and
return one reply text (or ``Failure``) per conversation, in order:

- ``ChatBackend``: requests to any OpenAI-compatible server (vLLM, Ollama, llama.cpp, ``transformers serve``,
  hosted APIs), ``concurrency`` at a time, each with its own seed.
- ``TransformersBackend``: a causal LM run in-process with batched generation (left padding). The model is
  a hub name, a local folder, or a ``.gguf`` file (transformers dequantizes it on load). Sampling is seeded
  per generation batch with the seed of the batch's first conversation (each reply carries it, and the
  batch size is in ``settings``; the job records both), so a rerun with the same batch size reproduces its outputs.

Replies are ``Reply`` strings: ``truncated`` says that generation stopped at ``max_tokens``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tbpr.errors import ConfigError
from tbpr.generate.chat import ChatClient, ChatSettings, Failure, Messages, Reply
from tbpr.generate.jobs import RecordedBackend

log = logging.getLogger(__name__)


class TextBackend(RecordedBackend, Protocol):
    def generate(self, conversations: Sequence[Messages], seeds: Sequence[int]) -> list[Reply | Failure]: ...


class ChatBackend:
    """Generation through an OpenAI-compatible chat server (the client's settings, a seed per request)."""

    backend = "openai"

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    @property
    def model(self) -> str:
        return self.client.served_model

    @property
    def settings(self) -> dict[str, Any]:
        return self.client.settings.request_fields()

    def generate(self, conversations: Sequence[Messages], seeds: Sequence[int]) -> list[Reply | Failure]:
        return self.client.complete_many(conversations, [{"seed": seed} for seed in seeds])


class LocalGenerator:
    """What in-process generation shares: settings, lazy loading, seeded batched ``generate`` and replies
    that know whether they were cut off. Subclasses load their model (``_load``) and turn a batch of
    requests into model inputs (``_inputs``)."""

    backend = "transformers"

    def __init__(
        self, model: str, device: str = "cpu", batch_size: int = 16, settings: ChatSettings | None = None
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
        """Tokenizer (or processor) and model, loaded on first use; a bad name is a ``ConfigError``."""
        if self._loaded is None:
            processor, model = self._load()
            tokenizer = _tokenizer(processor)
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._loaded = processor, model.to(self.device).eval()
            log.info("loaded %s on %s", self.name, self.device)
        return self._loaded

    def _load(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def _inputs(self, processor: Any, requests: Sequence[Any]) -> Any:
        raise NotImplementedError

    def generate(self, requests: Sequence[Any], seeds: Sequence[int]) -> list[Reply | Failure]:
        import torch

        processor, model = self.load()
        tokenizer = _tokenizer(processor)
        sample = self.chat.temperature > 0
        options: dict[str, Any] = {"max_new_tokens": self.chat.max_tokens, "do_sample": sample}
        if sample:
            options["temperature"] = self.chat.temperature
            options["top_p"] = self.chat.top_p if self.chat.top_p is not None else 1.0
        stop = torch.tensor(_stop_ids(tokenizer, model), device=self.device)
        out: list[Reply | Failure] = []
        for start in range(0, len(requests), self.batch_size):
            inputs = self._inputs(processor, requests[start : start + self.batch_size]).to(self.device)
            torch.manual_seed(seeds[start])
            with torch.inference_mode():
                generated = model.generate(**inputs, **options, pad_token_id=tokenizer.pad_token_id)
            new = generated[:, inputs["input_ids"].shape[1] :]
            ended = torch.isin(new, stop).any(dim=1).tolist()
            full = new.shape[1] >= self.chat.max_tokens
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            out.extend(Reply(t, full and not e, seeds[start]) for t, e in zip(texts, ended))
        return out


class TransformersBackend(LocalGenerator):
    """A local causal LM (hub name, folder or ``.gguf`` file), generating ``batch_size`` prompts at once."""

    def _load(self) -> tuple[Any, Any]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(self.name)
        root, extra = (path.parent, {"gguf_file": path.name}) if path.suffix == ".gguf" else (self.name, {})
        try:
            tokenizer = AutoTokenizer.from_pretrained(root, **extra)
            return tokenizer, AutoModelForCausalLM.from_pretrained(root, dtype=torch.float32, **extra)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"cannot load the language model {self.name!r}: {err}; give a local folder, a .gguf "
                "file, or a hub name that is downloadable (or already in the Hugging Face cache)"
            ) from None

    def render(self, conversation: Messages) -> str:
        """The prompt text: the tokenizer's chat template, or (without one) the messages one per line."""
        tokenizer, _ = self.load()
        if tokenizer.chat_template:
            return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(message["content"] for message in conversation) + "\n"

    def _inputs(self, tokenizer: Any, conversations: Sequence[Messages]) -> Any:
        prompts = [self.render(c) for c in conversations]
        return tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)


def _tokenizer(processor: Any) -> Any:
    """The tokenizer of a processor (a tokenizer is its own)."""
    return getattr(processor, "tokenizer", processor)


def _stop_ids(tokenizer, model) -> list[int]:
    """Token ids that end a reply: the tokenizer's end of sequence and the generation config's."""
    configured = model.generation_config.eos_token_id
    configured = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [tokenizer.eos_token_id, *configured] if i is not None})
