"""Secrets out of error text: what a server echoes back must not reach a store, a log or the terminal."""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"

_RULES = (
    # an Authorization / X-API-Key / Proxy-Authorization header, as text, JSON, a repr or a query parameter
    (
        re.compile(
            r"""(["']?(?:proxy-)?(?:authorization|x-api-key|api[-_]key)["']?\s*[:=]\s*["']?)[^"'\r\n,}&]*""",
            re.IGNORECASE,
        ),
        rf"\g<1>{REDACTED}",
    ),
    (re.compile(r"\b((?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), rf"\g<1>{REDACTED}"),
    (re.compile(r"://[^/\s@]+@"), f"://{REDACTED}@"),  # user:password@ in a URL
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), REDACTED),  # OpenAI-style keys
)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every value of ``secrets`` and every credential-looking token replaced by [redacted]."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text
