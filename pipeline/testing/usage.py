"""The fake provider's prompt token counts, with a simulated provider prompt cache: OpenAI's
cached prompt tokens for a repeated system prompt, Anthropic's cache writes and reads for a
system prompt marked with `cache_control`."""

from __future__ import annotations

import hashlib
import itertools
import threading
from typing import Any

from pipeline.testing.answers import estimate_tokens, text_of


def _openai_prefix(messages: list[Any]) -> str:
    """The leading system and developer messages, which OpenAI caches automatically."""
    leading = itertools.takewhile(
        lambda m: isinstance(m, dict) and m.get("role") in ("system", "developer"), messages
    )
    return "".join(text_of(m.get("content")) for m in leading)


def _anthropic_blocks(req: dict[str, Any]) -> list[Any]:
    system = req.get("system")
    if isinstance(system, str):
        return [{"text": system}]
    return system if isinstance(system, list) else []


class PromptCache:
    """Prefixes seen before, per protocol and model; a prefix of at least `min_tokens` is read
    from the cache the second time it is sent."""

    def __init__(self, min_tokens: int = 1024) -> None:
        self.min_tokens = min_tokens
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str, str]] = set()

    def usage(
        self, path: str, req: dict[str, Any], model: str, messages: list[Any]
    ) -> dict[str, int]:
        """Prompt tokens in all (`total`), read from the cache (`read`), written to it
        (`write`, Anthropic only)."""
        texts = "".join(text_of(m.get("content")) for m in messages if isinstance(m, dict))
        if path == "openai":
            prefix = _openai_prefix(messages)
            total = estimate_tokens(texts)
        else:
            blocks = _anthropic_blocks(req)
            marked = [
                i for i, b in enumerate(blocks) if isinstance(b, dict) and b.get("cache_control")
            ]
            prefix = text_of(blocks[: marked[-1] + 1]) if marked else ""
            total = estimate_tokens(text_of(blocks) + texts)
        prefix_tokens = estimate_tokens(prefix)
        read = write = 0
        if prefix and prefix_tokens >= self.min_tokens:
            key = (path, model, hashlib.sha256(prefix.encode()).hexdigest())
            with self._lock:
                if key in self._seen:
                    read = prefix_tokens
                else:
                    self._seen.add(key)
                    write = prefix_tokens if path == "anthropic" else 0
        return {"total": total, "read": read, "write": write}
