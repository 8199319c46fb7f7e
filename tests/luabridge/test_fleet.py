"""Tests of ``luabridge.fleet``: where the fleet's Redis is configured, and how it is checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import NOTES

from luabridge.config import load_settings
from luabridge.errors import ConfigError
from luabridge.fleet import ENV_VAR, describe_url, fleet_section, redis_client, redis_url_from


def test_redis_url_from_environment_wins() -> None:
    file = {"fleet": {"redis_url": "redis://file:6379/0"}}
    assert redis_url_from(file, {ENV_VAR: "redis://env:6379/1"}) == "redis://env:6379/1"
    assert redis_url_from(file, {}) == "redis://file:6379/0"
    assert redis_url_from({}, {}) is None


@pytest.mark.parametrize(
    ("file", "match"),
    [
        ({"fleet": "redis://x"}, r"\[fleet\] must be a table"),
        ({"fleet": {"redis": "redis://x"}}, "unknown setting.*redis; known: queue, redis_url"),
        ({"fleet": {"redis_url": ""}}, "redis_url must be a non-empty string"),
        ({"fleet": {"redis_url": "http://x:6379"}}, "is not a Redis URL; use redis://"),
    ],
)
def test_redis_url_from_bad_file_refused(file: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        redis_url_from(file, {})


def test_redis_url_from_bad_environment_refused() -> None:
    with pytest.raises(ConfigError, match=f"{ENV_VAR}: 'localhost:6379' is not a Redis URL"):
        redis_url_from({}, {ENV_VAR: "localhost:6379"})


def test_fleet_section_absent_is_empty() -> None:
    assert fleet_section({}) == {}


def test_describe_url_hides_password() -> None:
    assert describe_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert describe_url("redis://user:pw@h/0") == "redis://user:***@h/0"
    assert describe_url("redis://h:1/0") == "redis://h:1/0"


def test_redis_client_shared_per_url() -> None:
    assert redis_client("redis://127.0.0.1:1/0") is redis_client("redis://127.0.0.1:1/0")
    assert redis_client("redis://127.0.0.1:1/0") is not redis_client("redis://127.0.0.1:1/1")


def test_load_settings_gives_every_account_the_redis_url(tmp_path: Path) -> None:
    config = tmp_path / "luabridge.toml"
    config.write_text('[fleet]\nredis_url = "redis://127.0.0.1:6390/2"\n', encoding="utf-8")
    environ = {"NOTES_API_KEY": "k1", "NOTES_API_KEY_WORK": "k2"}
    settings = load_settings(config, environ=environ, integrations=[NOTES])
    assert settings.redis_url == "redis://127.0.0.1:6390/2"
    urls = {acc.redis_url for acc in settings.accounts["notes"].values()}
    assert urls == {"redis://127.0.0.1:6390/2"}
    assert "6390" not in repr(settings.accounts["notes"]["default"])


def test_load_settings_without_redis_keeps_one_process(tmp_path: Path) -> None:
    settings = load_settings("/dev/null", environ={"NOTES_API_KEY": "k"}, integrations=[NOTES])
    assert settings.redis_url is None
    assert settings.accounts["notes"]["default"].redis_url is None


def test_bridge_of_a_fleet_records_in_the_redis_ledger(tmp_path: Path, redis_url: str) -> None:
    """With the fleet's Redis configured the ledger is the shared one; a second bridge (another
    worker) resumes what the first recorded instead of running it anew."""
    from luabridge.bridge import Bridge
    from luabridge.ledger import RedisLedger

    environ = {"NOTES_API_KEY": "k1", "LUABRIDGE_REDIS_URL": redis_url}
    settings = load_settings("/dev/null", environ=environ, integrations=[NOTES])
    script = "return app.integrations.notes.create_note({title = 'once'}).note_id"
    with Bridge.from_settings(settings, isolation="inprocess") as one:
        assert isinstance(one._ledger(), RedisLedger)
        first = one.run(script, allow="write", execution_id="fleet-exec-1")
    with Bridge.from_settings(settings, isolation="inprocess") as two:
        again = two.run(script, allow="write", execution_id="fleet-exec-1")
        notebook = two._client("notes", "default").notes  # type: ignore[attr-defined]
    assert (first.ok, again.ok, again.resumed) == (True, True, True)
    assert notebook == {}
    # The second bridge's notebook is empty: the write was replayed from the ledger.
    assert again.value == first.value
    with RedisLedger(redis_url) as ledger:
        record = ledger.get_execution("fleet-exec-1")
        assert record is not None and record.resumed == 1


def test_bridge_of_a_fleet_with_the_ledger_off_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    from luabridge.bridge import Bridge

    monkeypatch.setenv("LUABRIDGE_LEDGER", "off")
    environ = {"NOTES_API_KEY": "k1", "LUABRIDGE_REDIS_URL": "redis://127.0.0.1:1/0"}
    settings = load_settings("/dev/null", environ=environ, integrations=[NOTES])
    with Bridge.from_settings(settings, isolation="inprocess") as bridge:
        assert bridge._ledger() is None
