"""A small client for OpenAI-compatible chat-completions servers.

Works with the OpenAI API, vLLM, Ollama, llama.cpp's server and ``transformers serve``. Requests run
concurrently in a thread pool; connection errors, timeouts, HTTP 429 and 5xx are retried with exponential
backoff. A reply that cannot be used (an error status after the retries, malformed JSON, no choices)
comes back as a ``Failure`` with the reason, for the caller to record. A refused API key (401/403) is a
``ConfigError``, and the first use sends one test request, so a wrong key or URL gives one clear error
before any batch starts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from tbpr.errors import ConfigError
from tbpr.redact import redact

log = logging.getLogger(__name__)

Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class Failure:
    """A request that gave no usable output, and why."""

    reason: str


class Reply(str):
    """A reply text that knows whether generation stopped at the token limit (``truncated``) and, when
    the backend seeds whole batches, the batch's seed (``seed``; None: the request's own seed made it)."""

    truncated: bool
    seed: int | None

    def __new__(cls, text: str, truncated: bool = False, seed: int | None = None) -> Reply:
        reply = super().__new__(cls, text)
        reply.truncated, reply.seed = truncated, seed
        return reply


@dataclass
class ChatSettings:
    """Generation settings sent with every request (``None`` leaves a field to the server)."""

    temperature: float = 0.0
    top_p: float | None = None
    max_tokens: int = 256
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.max_tokens < 1 or not (self.top_p is None or 0 < self.top_p <= 1):
            raise ConfigError(
                f"generation settings temperature={self.temperature}, top_p={self.top_p}, "
                f"max_tokens={self.max_tokens}: need temperature >= 0, 0 < top_p <= 1, max_tokens >= 1"
            )

    def request_fields(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if value is not None}


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


class ChatClient:
    """Chat completions at ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``).

    The API key is ``api_key`` or else the environment variable ``api_key_env``; with neither, requests
    carry no ``Authorization`` header (local servers need none). ``model`` is sent with each request
    when given (servers that serve one model accept its omission).
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        settings: ChatSettings | None = None,
        concurrency: int = 4,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 1.0,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.settings = settings or ChatSettings()
        self.max_retries = max_retries
        self.backoff = backoff
        key = api_key if api_key is not None else os.environ.get(api_key_env)
        self._secrets = (key,)  # never in an error text, even when the server echoes the request
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=timeout,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="chat")
        self._served_model: str | None = None
        self._check_lock = threading.Lock()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()

    @property
    def served_model(self) -> str:
        """The model name the server reports (sends the one test request on first use)."""
        self.check()
        return self._served_model

    def check(self) -> None:
        """Send one small request; raise ``ConfigError`` if the server is unreachable or refuses it."""
        with self._check_lock:
            if self._served_model is not None:
                return
            messages = [{"role": "user", "content": "Say OK."}]
            reply = self._request(messages, {**self.settings.request_fields(), "max_tokens": 1})
            if isinstance(reply, Failure):
                raise ConfigError(
                    f"the chat server at {self.base_url} did not answer a test request: {reply.reason}; "
                    "check the base URL (--base-url; it ends in /v1 for most servers) and that the server is running"
                )
            self._served_model = self.model or reply[1] or "unknown"

    def complete(self, messages: Messages, overrides: dict[str, Any] | None = None) -> Reply | Failure:
        """The reply of one conversation, or why there is none; ``overrides`` replace settings
        fields for this request (e.g. its ``seed``)."""
        self.check()
        reply = self._request(messages, {**self.settings.request_fields(), **(overrides or {})})
        return reply if isinstance(reply, Failure) else reply[0]

    def complete_many(
        self, conversations: Sequence[Messages], overrides: Sequence[dict[str, Any] | None] | None = None
    ) -> list[Reply | Failure]:
        """``complete`` over many conversations, ``concurrency`` at a time, in input order."""
        self.check()
        return list(self._pool.map(self.complete, conversations, overrides or [None] * len(conversations)))

    def _request(self, messages: Messages, fields: dict[str, Any]) -> tuple[Reply, str | None] | Failure:
        body = {**({"model": self.model} if self.model else {}), "messages": messages, **fields}
        response = self._post_with_retries(body)
        if isinstance(response, Failure):
            return response
        if response.status_code != 200:
            return Failure(f"HTTP {response.status_code}: {self._said(response.text)}")
        try:
            payload = response.json()
        except ValueError:
            return Failure(f"malformed JSON reply: {self._said(response.text)!r}")
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not choices:
            return Failure("the reply has no choices")
        try:
            text = choices[0]["message"]["content"]
        except (KeyError, TypeError, IndexError):
            return Failure(f"the reply's first choice has no message content: {self._said(str(choices[0]))}")
        if not isinstance(text, str):
            return Failure(f"the reply's message content is {type(text).__name__}, not text")
        served = payload.get("model")
        truncated = choices[0].get("finish_reason") == "length"
        return Reply(text, truncated), served if isinstance(served, str) else None

    def _said(self, text: str, limit: int = 300) -> str:
        """What the server said, for an error text: secrets redacted, then cut to ``limit`` characters."""
        return redact(text, self._secrets)[:limit]

    def _post_with_retries(self, body: dict[str, Any]) -> httpx.Response | Failure:
        url = f"{self.base_url}/chat/completions"
        for attempt in range(self.max_retries + 1):
            delay = self.backoff * 2**attempt
            try:
                response = self._http.post(url, json=body)
            except httpx.TransportError as err:  # refused or dropped connections, timeouts
                problem = f"{type(err).__name__}: {self._said(str(err))}" if str(err) else type(err).__name__
            else:
                if response.status_code in (401, 403):
                    raise ConfigError(
                        f"the chat server at {self.base_url} refused the API key (HTTP "
                        f"{response.status_code}: {self._said(response.text, 200)}); put a valid key in the "
                        f"environment variable {self.api_key_env}"
                    )
                if response.status_code != 429 and response.status_code < 500:
                    return response
                problem = f"HTTP {response.status_code}: {self._said(response.text, 200)}"
                delay = _retry_after(response) or delay
            if attempt < self.max_retries:
                log.debug("%s (try %d); retrying in %.1f s", problem, attempt + 1, delay)
                time.sleep(delay)
        return Failure(f"{problem} (gave up after {self.max_retries + 1} tries)")
