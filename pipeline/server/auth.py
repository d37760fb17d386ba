"""Tenants by API key. Keys are known only by their SHA-256: the settings hold hashes
(`server_key_hashes`) and the quick-start list `BATCHWISE_API_KEYS="acme=KEY1,globex/bob=KEY2"`
is hashed when the server starts. The key decides the tenant (and the user, whose plan applies);
nothing in a request body can choose another."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import ValidationError
from starlette.requests import Request

from pipeline.config.records import ServerKey
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.server.errors import ApiError


@dataclass(frozen=True)
class Principal:
    """Who a request acts for."""

    tenant: str
    user_id: str = ""
    admin: bool = False


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _key_entries(text: str) -> list[tuple[str, ServerKey]]:
    """`tenant[/user]=KEY` pairs, comma-separated, as (KEY, ServerKey)."""
    found: list[tuple[str, ServerKey]] = []
    for index, entry in enumerate(p.strip() for p in text.split(",")):
        if not entry:
            continue
        owner, sep, key = entry.partition("=")
        tenant, _, user = owner.strip().partition("/")
        if not sep or not tenant or not key.strip():
            raise ConfigError(
                f"BATCHWISE_API_KEYS entry {index + 1} is not tenant=KEY or tenant/user=KEY; "
                "fix that entry"
            )
        try:
            found.append((key.strip(), ServerKey(tenant=tenant, user_id=user.strip())))
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise ConfigError(f"BATCHWISE_API_KEYS entry {index + 1}: {reason}") from None
    return found


def read_keys(settings: Settings) -> tuple[KeyRing, tuple[str, ...]]:
    """The server's key ring, and the plain keys of the quick-start list for the log redaction
    to mask (the ring holds only hashes), from one reading of the list."""
    listed = _key_entries(settings.server_api_keys.get_secret_value())
    keys = {**settings.server_key_hashes, **{key_hash(key): spec for key, spec in listed}}
    if not keys:
        raise ConfigError(
            "no API keys for `batchwise serve`: set BATCHWISE_API_KEYS=tenant=KEY "
            "(or server_key_hashes in batchwise.toml)"
        )
    return KeyRing(keys, settings.server_admin_tenants), tuple(key for key, _ in listed)


class KeyRing:
    """Hash -> principal; looks a presented key up by its hash."""

    def __init__(self, keys: dict[str, ServerKey], admin_tenants: Iterable[str]) -> None:
        admins = set(admin_tenants)
        self._keys = {
            digest.lower(): Principal(key.tenant, key.user_id, key.tenant in admins)
            for digest, key in keys.items()
        }
        self.specs = keys

    def plan_assignments(self) -> dict[str, str]:
        """The plans keys carry, as plan assignments of their user (or tenant)."""
        return {
            (f"user:{k.user_id}" if k.user_id else f"tenant:{k.tenant}"): k.plan
            for k in self.specs.values()
            if k.plan
        }

    def authenticate(self, request: Request) -> Principal:
        """The principal of a request's bearer key; 401 in OpenAI's shape if none matches."""
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(
                401,
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
                code="missing_api_key",
            )
        digest = key_hash(key.strip())
        for known, principal in self._keys.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
