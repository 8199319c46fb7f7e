"""Accounts from the environment and ``luabridge.toml``, per-run grants, and keeping keys secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import NOTES, NOTES_KEYS

from luabridge import AccountSettings, Bridge, ConfigError
from luabridge.accounts import load_accounts, read_config_file

KEYS = list(NOTES_KEYS.values())
WRITE = {"write"}


def accounts_from(environ: dict[str, str], config: dict[str, Any] | None = None) -> Any:
    return load_accounts(
        env_prefix="NOTES",
        integration="notes",
        default_base_url="https://notes.invalid",
        environ=environ,
        config=config,
    )


def bridge_from(tmp_path: Path, toml: str, environ: dict[str, str] | None = None) -> Bridge:
    path = tmp_path / "luabridge.toml"
    path.write_text(toml)
    return Bridge.from_config(
        path, environ=environ or {}, integrations=[NOTES], isolation="inprocess"
    )


def assert_no_key(text: str) -> None:
    for key in KEYS:
        assert key not in text


# -- environment ---------------------------------------------------------------------------------


def test_env_api_key_is_default_account() -> None:
    accounts, default = accounts_from({"NOTES_API_KEY": "k-default-1234"})
    assert default == "default"
    settings = accounts["default"]
    assert (settings.name, settings.api_key, settings.base_url) == (
        "default",
        "k-default-1234",
        "https://notes.invalid",
    )
    assert settings.source == settings.key_source == "NOTES_API_KEY"


def test_env_suffixed_key_is_named_account_lower_cased() -> None:
    accounts, default = accounts_from({"NOTES_API_KEY_WORK": "k-work-1234"})
    assert list(accounts) == ["work"] and default is None
    assert accounts["work"].api_key == "k-work-1234"


def test_env_bad_account_names_and_other_vars_ignored() -> None:
    accounts, _ = accounts_from(
        {"NOTES_API_KEY_BAD-NAME": "x1234", "NOTES_API_KEY_9X": "x1234", "OTHER_API_KEY": "y1234"}
    )
    assert accounts == {}


def test_env_base_url_applies_to_every_account() -> None:
    accounts, _ = accounts_from(
        {
            "NOTES_API_KEY": "k-default-1234",
            "NOTES_API_KEY_WORK": "k-work-1234",
            "NOTES_BASE_URL": "http://127.0.0.1:9/api",
        }
    )
    assert {a.base_url for a in accounts.values()} == {"http://127.0.0.1:9/api"}


def test_env_accounts_reach_the_script() -> None:
    env = {"NOTES_API_KEY": "k-default-1234", "NOTES_API_KEY_TEAM_B": "k-team-1234"}
    with Bridge.from_config(environ=env, integrations=[NOTES], isolation="inprocess") as b:
        result = b.run(
            "return app.integrations.notes.team_b.create_note({title = 't'})", allow=WRITE
        )
        assert result.ok and result.value["account"] == "team_b"
        assert b._client("notes", "team_b").api_key == "k-team-1234"  # type: ignore[attr-defined]


# -- luabridge.toml ------------------------------------------------------------------------------


def test_config_api_key_env_preferred(tmp_path: Path) -> None:
    toml = '[notes.accounts.work]\napi_key_env = "MY_WORK_KEY"\napi_key = "file-key-1234"\n'
    with bridge_from(tmp_path, toml, {"MY_WORK_KEY": "env-key-1234"}) as b:
        work = b.accounts["notes"]["work"]
        assert (work.api_key, work.key_source) == ("env-key-1234", "MY_WORK_KEY")


def test_config_api_key_in_file(tmp_path: Path) -> None:
    with bridge_from(tmp_path, '[notes.accounts.work]\napi_key = "file-key-1234"\n') as b:
        work = b.accounts["notes"]["work"]
        assert work.api_key == "file-key-1234"
        assert work.key_source.endswith("luabridge.toml (api_key)")
        result = b.run("return app.integrations.notes.work.echo_key().key_echo")
        assert result.value == "your key is [REDACTED]"


def test_config_api_key_env_unset_means_no_key(tmp_path: Path) -> None:
    with bridge_from(tmp_path, '[notes.accounts.work]\napi_key_env = "UNSET_VAR"\n') as b:
        assert b.accounts["notes"]["work"].has_key is False
        value = b.run("return app.integrations.notes.work.list_notes()").value
        assert value["success"] is False and value["code"] == "notes.config_error"
        assert "set UNSET_VAR" in value["error"]
        (row,) = b.account_info()
        assert (row["account"], row["has_key"], row["key_source"]) == ("work", False, "UNSET_VAR")


def test_config_base_url_and_rate_limit(tmp_path: Path) -> None:
    toml = (
        '[notes.accounts.work]\napi_key = "file-key-1234"\nbase_url = "http://127.0.0.1:1/x"\n'
        "rate_limit = 2.5\ntimeout = 3\n"
        '[notes.accounts.other]\napi_key = "other-key-1234"\nrate_limit = 0\n'
    )
    with bridge_from(tmp_path, toml, {"NOTES_BASE_URL": "http://env.invalid"}) as b:
        work, other = b.accounts["notes"]["work"], b.accounts["notes"]["other"]
        assert (work.base_url, work.rate_limit, work.timeout) == ("http://127.0.0.1:1/x", 2.5, 3.0)
        assert (other.base_url, other.rate_limit) == ("http://env.invalid", 0.0)


def test_config_overrides_env_account_of_same_name(tmp_path: Path) -> None:
    toml = '[notes.accounts.default]\nbase_url = "http://file.invalid"\n'
    with bridge_from(tmp_path, toml, {"NOTES_API_KEY": "env-key-1234"}) as b:
        default = b.accounts["notes"]["default"]
        assert (default.api_key, default.base_url) == ("env-key-1234", "http://file.invalid")


def test_config_default_marking(tmp_path: Path) -> None:
    toml = (
        '[notes.accounts.work]\napi_key = "work-key-1234"\ndefault = true\n'
        '[notes.accounts.home]\napi_key = "home-key-1234"\n'
    )
    with bridge_from(tmp_path, toml) as b:
        src = """
        local a = app.integrations.notes.create_note({title = 'x'})
        local b = app.integrations.notes.default.create_note({title = 'y'})
        local rows = {}
        for _, row in ipairs(app.accounts('notes')) do rows[row.name] = row.default end
        return {a.account, b.account, rows}
        """
        result = b.run(src, allow=WRITE)
        assert result.ok, result.error
        assert result.value == ["work", "work", {"home": False, "work": True}]


def test_config_default_marking_and_env_default_clash(tmp_path: Path) -> None:
    """A file that marks another account default while NOTES_API_KEY defines 'default' is an
    error naming both, never a silent choice."""
    toml = '[notes.accounts.work]\napi_key = "work-key-1234"\ndefault = true\n'
    with pytest.raises(ConfigError) as caught:
        bridge_from(tmp_path, toml, environ={"NOTES_API_KEY": "env-key-1234"})
    message = str(caught.value)
    assert "'work' is marked as the default notes account" in message
    assert "NOTES_API_KEY also defines the account 'default'" in message
    assert "unset NOTES_API_KEY or drop default = true from [notes.accounts.work]" in message
    assert "env-key-1234" not in message


def test_config_read_from_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "luabridge.toml").write_text('[notes.accounts.cwd]\napi_key = "cwd-key-1234"\n')
    monkeypatch.chdir(tmp_path)
    with Bridge.from_config(environ={}, integrations=[NOTES], isolation="inprocess") as b:
        assert list(b.accounts["notes"]) == ["cwd"]


def test_config_limits_section(tmp_path: Path) -> None:
    with bridge_from(tmp_path, "[limits]\ncalls = 2\ntimeout = 1.5\n") as b:
        assert (b.limits.calls, b.limits.timeout) == (2, 1.5)


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("[notes\n", "is not valid TOML"),
        ("[notes.accounts.work]\napi_kee = 'x'\n", "unknown setting(s) api_kee"),
        ("[notes.accounts.Work]\napi_key = 'x'\n", "account name 'Work' is not valid"),
        ("[notes.accounts]\nwork = 5\n", "[notes.accounts.work] must be a table"),
        ("notes = 5\n", "[notes] must be a table"),
        ("[notes]\naccounts = 5\n", "[notes.accounts] must be a table"),
        ("[notes.accounts.work]\nrate_limit = -1\n", "rate_limit must be a number >= 0 (got -1)"),
        ("[notes.accounts.work]\nrate_limit = 'fast'\n", "rate_limit must be a number"),
        ("[notes.accounts.work]\ntimeout = 0\n", "timeout must be a number > 0"),
        (
            "[notes.accounts.a]\ndefault = true\n[notes.accounts.b]\ndefault = true\n",
            "both 'a' and 'b' are marked default",
        ),
        ("[notes.accounts.work]\ndefault = 'yes'\n", "default must be true or false"),
        ("[notes.accounts.work]\napi_key_env = 5\n", "api_key_env must be a non-empty string"),
        ("[notes.accounts.work]\nbase_url = ''\n", "base_url must be a non-empty string"),
        ("limits = 5\n", "[limits] must be a table"),
        ("[limits]\ntimeuot = 1\n", "[limits]: unknown limit(s) timeuot"),
        ("[limits]\ncalls = 0\n", "[limits]: limits.calls must be a whole number from 1 to"),
    ],
)
def test_config_bad_file_names_file_and_reason(tmp_path: Path, toml: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        bridge_from(tmp_path, toml)
    message = str(info.value)
    assert str(tmp_path / "luabridge.toml") in message
    assert fragment in message


def test_config_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        read_config_file(missing)
    assert str(missing) in str(info.value)


# -- per-run grants ------------------------------------------------------------------------------


def test_grant_hides_default(bridge: Bridge) -> None:
    for src in (
        "local x\nlocal r = app.integrations.notes.list_notes()",
        "local x\nlocal r = app.integrations.notes.default.list_notes()",
    ):
        result = bridge.run(src, accounts={"notes": ["work"]})
        assert result.error is not None and result.error.line == 2
        assert "this run has no default account; use a named one: app.integrations.notes.work" in (
            result.error.message
        )
        assert result.calls == []


def test_grant_named_account_works(bridge: Bridge) -> None:
    result = bridge.run(
        "return app.integrations.notes.work.list_notes().success", accounts={"notes": "work"}
    )
    assert result.ok and result.value is True


def test_grant_ungranted_account_lists_granted(bridge: Bridge) -> None:
    result = bridge.run(
        "local r = app.integrations.notes.work.list_notes()", accounts={"notes": ["default"]}
    )
    assert result.error is not None
    assert "unknown action or account 'work'" in result.error.message
    assert "accounts in this run: default;" in result.error.message
    assert ("notes", "work") not in bridge._clients


def test_grant_none_means_no_account(bridge: Bridge) -> None:
    result = bridge.run("local r = app.integrations.notes.list_notes()", accounts={"notes": []})
    assert result.error is not None
    assert "no account is available to this run" in result.error.message
    assert "NOTES_API_KEY" in result.error.message


def test_grant_visible_in_introspection(bridge: Bridge) -> None:
    src = "local a = app.accounts('notes') return {#a, a[1].name, a[1].default, app.help()}"
    result = bridge.run(src, accounts={"notes": ["work"]})
    assert result.ok, result.error
    count, name, is_default, overview = result.value
    assert (count, name, is_default) == (1, "work", False)
    assert "accounts in this run: work" in overview


def test_grant_unconfigured_account_is_config_error(bridge: Bridge) -> None:
    with pytest.raises(ConfigError) as info:
        bridge.run("return 1", accounts={"notes": ["wrok"]})
    assert str(info.value) == (
        "accounts: notes account 'wrok' is not configured (did you mean 'work'?); "
        "configured: default, work; to configure it, set NOTES_API_KEY_WROK"
    )


def test_grant_unknown_integration_is_config_error(bridge: Bridge) -> None:
    with pytest.raises(ConfigError, match="unknown integration 'nots' \\(did you mean 'notes'\\?"):
        bridge.run("return 1", accounts={"nots": ["default"]})


# -- secrets -------------------------------------------------------------------------------------

SNOOP = r"""
local seen = {}
local function add(v) seen[#seen + 1] = tostring(v) end
local function walk(v, depth)
  if depth > 8 then return end
  if type(v) == "table" then
    add(v)
    for k, x in pairs(v) do add(k); walk(x, depth + 1) end
  else
    add(v)
  end
end
local n = app.integrations.notes
for _, t in ipairs({app, app.integrations, n, n.default, n.work, app.json}) do walk(t, 0) end
for _, f in ipairs({n.list_notes, n.work.echo_key, app.help, app.schema, app.accounts,
                    app.json.encode, app.null}) do add(f) end
add(app.help()); add(app.help("notes")); add(app.help("notes.leak_key"))
walk(app.schema("notes.echo_key"), 0); walk(app.accounts("notes"), 0)
for _, acc in ipairs({n.default, n.work}) do
  walk(acc.echo_key(), 0); walk(acc.leak_key(), 0); walk(acc.list_notes(), 0)
  walk(acc.get_note({note_id = "missing"}), 0)
end
for _, bad in ipairs({"nope", "work.nope", "default.nope"}) do
  local ok, e = pcall(function() return n[bad] end); add(e)
end
local ok, e = pcall(n.create_note, {title = "x"}); add(e)
ok, e = pcall(n.list_notes, {limit = "x"}); add(e)
local blob = table.concat(seen, "\n")
return {leaked = string.find(blob, "notes-key-", 1, true) ~= nil,
        redacted = string.find(blob, "[REDACTED]", 1, true) ~= nil, size = #blob}
"""


def test_secret_never_inside_lua(bridge: Bridge) -> None:
    """Nothing a script can reach, walked and stringified, holds a key (echoes come redacted)."""
    result = bridge.run(SNOOP)
    assert result.ok, result.error
    assert result.value["leaked"] is False
    assert result.value["size"] > 1000
    assert result.value["redacted"] is True  # the echo/leak actions, redacted before Lua


def test_secret_redacted_from_printed_results(bridge: Bridge) -> None:
    src = """
    local r = app.integrations.notes.work.echo_key()
    local f = app.integrations.notes.leak_key()
    print(r.key_echo, f.error)
    return {r, f}
    """
    result = bridge.run(src)
    assert result.ok, result.error
    assert result.output == "your key is [REDACTED]\tbad request with key [REDACTED]\n"
    assert result.value[0]["key_echo"] == "your key is [REDACTED]"
    assert result.value[1]["error"] == "bad request with key [REDACTED]"


def test_secret_redacted_from_error_messages(bridge: Bridge) -> None:
    result = bridge.run("local f = app.integrations.notes.work.leak_key()\nerror(f.error)")
    assert result.error is not None
    assert result.error.message == "script.lua:2: bad request with key [REDACTED]"


def test_secret_redacted_from_call_records(bridge: Bridge) -> None:
    result = bridge.run("app.integrations.notes.leak_key() app.integrations.notes.work.echo_key()")
    text = json.dumps([c.to_dict() for c in result.calls]) + repr(result.calls)
    assert_no_key(text)
    assert result.calls[0].error == "bad request with key [REDACTED]"


def test_secret_given_as_input_redacted_everywhere(bridge: Bridge) -> None:
    """Even when the host hands a key to the script, nothing that leaves the bridge shows it."""
    src = """
    local i = ...
    print(i.k)
    app.integrations.notes.create_note({title = i.k, meta = {[i.k] = i.k}})
    error({})
    """
    result = bridge.run(src, input={"k": KEYS[0]}, allow=WRITE)
    assert result.output == "[REDACTED]\n"
    assert result.calls[0].params == {"title": "[REDACTED]", "meta": {"[REDACTED]": "[REDACTED]"}}
    returned = bridge.run("local i = ... error('key=' .. i.k)", input={"k": KEYS[1]})
    assert returned.error is not None and returned.error.message == "script.lua:1: key=[REDACTED]"
    value = bridge.run("local i = ... return {i.k, {[i.k] = 1}}", input={"k": KEYS[1]}).value
    assert value == ["[REDACTED]", {"[REDACTED]": 1}]


def test_secret_not_in_reprs(bridge: Bridge) -> None:
    result = bridge.run("return app.integrations.notes.work.echo_key()")
    settings = bridge.accounts["notes"]["work"]
    texts = [
        repr(bridge),
        str(bridge),
        repr(settings),
        str(settings),
        repr(result),
        repr(result.calls),
        json.dumps(result.to_dict()),
        repr(bridge._redactor),
        json.dumps(bridge.account_info()),
        bridge.docs("notes"),
        bridge.docs("notes", format="json"),
        bridge.docs("notes", format="luals"),
    ]
    for text in texts:
        assert_no_key(text)
    assert settings.api_key == NOTES_KEYS["work"]


def test_secret_account_settings_repr_hides_key() -> None:
    settings = AccountSettings(name="x", api_key="very-secret-key", base_url="http://h")
    assert "very-secret-key" not in repr(settings)
    assert settings.has_key is True
