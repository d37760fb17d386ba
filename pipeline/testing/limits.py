"""The fake provider's request limits: one limit for all requests together or one per model,
counted in fixed windows, with the limit headers the real APIs send."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime


class RequestLimit:
    """Requests per `window_s` window; over the limit a request waits for the next window.

    `rpm` is one limit for all models together (an int), a limit per model (a dict; models not
    in it are unlimited), or None for no limit."""

    def __init__(self, rpm: int | dict[str, int] | None = None, window_s: float = 60.0) -> None:
        self._lock = threading.Lock()
        self.rpm = rpm
        self.window_s = window_s
        self.limited = 0  # requests refused since construction
        self._counts: Counter[tuple[str, float]] = Counter()

    def change(self, rpm: int | dict[str, int] | None, window_s: float) -> None:
        """A new limit, counted afresh."""
        with self._lock:
            self.rpm, self.window_s = rpm, window_s
            self._counts.clear()

    def _cap_bucket(self, model: str, now: float) -> tuple[int | None, tuple[str, float]]:
        cap = self.rpm.get(model) if isinstance(self.rpm, dict) else self.rpm
        window = now - now % self.window_s
        return cap, (model if isinstance(self.rpm, dict) else "*", window)

    def admit(self, model: str, now: float) -> tuple[float, int] | None:
        """Count a request; None when it is within the limit, else (seconds to wait, limit)."""
        with self._lock:
            cap, bucket = self._cap_bucket(model, now)
            if cap is None:
                return None
            if self._counts[bucket] >= cap:
                self.limited += 1
                wait_s = round(bucket[1] + self.window_s - now, 3)
                return max(wait_s, 0.001), cap
            self._counts[bucket] += 1
            return None

    def headers(self, path: str, model: str, now: float) -> dict[str, str]:
        """The rate-limit headers the real APIs send, when a limit applies to `model`."""
        with self._lock:
            cap, bucket = self._cap_bucket(model, now)
            if cap is None:
                return {}
            used = self._counts[bucket]
        window = bucket[1]
        remaining, reset_s = max(cap - used, 0), window + self.window_s - now
        if path == "openai":
            return {
                "x-ratelimit-limit-requests": str(cap),
                "x-ratelimit-remaining-requests": str(remaining),
                "x-ratelimit-reset-requests": f"{reset_s:.3f}s",
            }
        reset_at = datetime.fromtimestamp(window + self.window_s, tz=UTC)
        return {
            "anthropic-ratelimit-requests-limit": str(cap),
            "anthropic-ratelimit-requests-remaining": str(remaining),
            "anthropic-ratelimit-requests-reset": reset_at.isoformat(),
        }
