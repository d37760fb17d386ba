"""API keys: the quick-start list is hashed, bad entries and a key-less server are refused."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.config.loading import load_settings
from pipeline.config.records import ServerKey
from pipeline.errors import ConfigError
from pipeline.server.auth import key_hash, read_keys


def _read(keys: str) -> tuple[Any, tuple[str, ...]]:
    return read_keys(load_settings(env={"BATCHWISE_API_KEYS": keys}))


def test_the_quick_start_list_becomes_hashes() -> None:
    ring, _ = _read(" acme=K1 , globex/bob=K2,")
    keys = ring.specs
    assert keys == {
        key_hash("K1"): ServerKey(tenant="acme"),
        key_hash("K2"): ServerKey(tenant="globex", user_id="bob"),
    }
    assert "K1" not in repr(keys) and "K2" not in repr(keys)


@pytest.mark.parametrize("text", ["acme", "=K1", "acme=", "a:b=K1"])
def test_a_bad_entry_is_a_one_line_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _read(f"ok=K0,{text}")
    assert str(caught.value).startswith("BATCHWISE_API_KEYS entry 2")
    assert "\n" not in str(caught.value) and "K0" not in str(caught.value)


def test_a_server_needs_a_key_and_knows_the_plain_ones_to_mask() -> None:
    with pytest.raises(ConfigError, match="no API keys"):
        read_keys(load_settings(env={}))
    ring, plain = _read("acme=K1,globex/bob=K2")
    assert plain == ("K1", "K2")
    assert "K1" not in repr(vars(ring))
