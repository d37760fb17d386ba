"""API keys out of every text batchwise shows or stores: errors, results, the ledger, logs.

A key is found in the forms a provider or a library may echo it in: as written, URL-encoded,
JSON-escaped, and in part (a key cut short or split across an error body: any run of at least
`MIN_FRAGMENT` characters taken from it). Anything shaped like a key of a known provider is
removed too, configured or not.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus

import orjson

if TYPE_CHECKING:
    from pipeline.config.settings import Settings

MASK = "[redacted]"
MIN_FRAGMENT = 8
_KEYLIKE = re.compile(
    r"(sk-[A-Za-z0-9_*\-]{6,}|AIza[0-9A-Za-z_\-]{10,})"
    r"|(?<=Bearer )[A-Za-z0-9._~+/\-]{8,}=*",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=256)  # the same few keys, for every log line and error text
def _forms(secret: str) -> tuple[str, ...]:
    """The secret as written, URL-encoded and JSON-escaped; longest first."""
    escaped = orjson.dumps(secret).decode()[1:-1]
    forms = {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        escaped,
        escaped.replace("/", "\\/"),
    }
    return tuple(sorted(forms, key=len, reverse=True))


@functools.lru_cache(maxsize=256)
def _grams(secret: str) -> frozenset[str]:
    """Every run of `MIN_FRAGMENT` characters of every form of the secret."""
    n = MIN_FRAGMENT
    return frozenset(f[i : i + n] for f in _forms(secret) for i in range(len(f) - n + 1))


def _mask_fragments(text: str, grams: frozenset[str]) -> str:
    """Mask every run of `MIN_FRAGMENT` or more characters that also occurs in a form."""
    if not grams or len(text) < MIN_FRAGMENT:
        return text
    marked = bytearray(len(text))
    for i in range(len(text) - MIN_FRAGMENT + 1):
        if text[i : i + MIN_FRAGMENT] in grams:
            marked[i : i + MIN_FRAGMENT] = b"\x01" * MIN_FRAGMENT
    if not any(marked):
        return text
    out: list[str] = []
    for i, ch in enumerate(text):
        if not marked[i]:
            out.append(ch)
        elif i == 0 or not marked[i - 1]:
            out.append(MASK)
    return "".join(out)


def secret_values(settings: Settings) -> tuple[str, ...]:
    """Every API key the settings hold."""
    keys = [p.api_key.get_secret_value() for p in settings.providers]
    keys.append(settings.cache_embedding_api_key.get_secret_value())
    return tuple(k for k in keys if k)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every configured secret (in any form above) and anything key-shaped masked."""
    for secret in secrets:
        if not secret:
            continue
        for form in _forms(secret):
            text = text.replace(form, MASK)
        if len(secret) >= MIN_FRAGMENT:
            text = _mask_fragments(text, _grams(secret))
    return _KEYLIKE.sub(MASK, text)


class RedactingFilter(logging.Filter):
    """A handler filter that masks secrets in a record's message and traceback."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


def redact_logs(secrets: Iterable[str]) -> None:
    """Mask `secrets` in everything the configured log handlers write: the root logger's and
    any other logger's own (arq's CLI gives `arq` one). Call it after logging is configured."""
    found = tuple(secrets)
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for handler in {h for logger in loggers for h in logger.handlers}:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(RedactingFilter(found))
