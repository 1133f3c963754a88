"""Config values that could inject query parameters or headers are refused (fast tier; the
CLI side, with real processes and the sandbox, is tests/reliability/test_hostile_config.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.config import ConfigError, ConfigProblems, Settings, config_warnings, load_settings
from service.engine.runtime import check_streams

CRLF = "x\r\nX-Injected: 1"


def settings(vendor: str = "aimsio", **over: Any) -> dict[str, Any]:
    auth = {"kind": "basic", "username": "u", "password": "p"}
    base: dict[str, Any] = {"base_url": "https://127.0.0.1:1/v", "auth": auth, **over}
    return {"vendors": {vendor: base}}


def toml(v: Any) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml(x)}" for k, x in v.items()) + " }"
    return "true" if v is True else "false" if v is False else json.dumps(v)


def refused(data: dict[str, Any], tmp_path: Any) -> str:
    path = tmp_path / "c.toml"
    lines = []
    for name, table in data["vendors"].items():
        lines.append(f"[vendors.{name}]")
        lines += [f"{json.dumps(k)} = {toml(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("over", "key"),
    [
        ({"base_url": "https://h/v?limit=1"}, "vendors.aimsio.base_url"),
        ({"base_url": "https://h/v#x"}, "vendors.aimsio.base_url"),
        ({"auth": {"kind": "basic", "username": CRLF, "password": "p"}}, "auth.username"),
        ({"auth": {"kind": "basic", "username": "u", "password": CRLF}}, "auth.password"),
        ({"auth": {"kind": "apikey", "api_key": "k", "header": "a b"}}, "auth.header"),
        ({"auth": {"kind": "apikey", "api_key": "k", "token_path": CRLF}}, "auth.token_path"),
        ({"streams": {"User\n": {}}}, "vendors.aimsio.streams"),
        ({"streams": {"": {}}}, "vendors.aimsio.streams"),
        ({"ca_file": "/nonexistent.pem"}, "vendors.aimsio.ca_file"),
        ({"ca_file": "/etc/hostname", "tls_verify": False}, "vendors.aimsio.ca_file"),
    ],
)
def test_refused_naming_the_key_never_the_secret(
    over: dict[str, Any], key: str, tmp_path: Any
) -> None:
    message = refused(settings(**over), tmp_path)
    assert key in message
    assert "X-Injected" not in message or "password" not in key


def test_a_secret_file_with_a_newline_inside_is_refused(tmp_path: Any) -> None:
    (tmp_path / "key").write_text("k\r\nX-Injected: 1\n")
    data = settings("aimms", auth={"kind": "apikey", "api_key_file": str(tmp_path / "key")})
    message = refused(data, tmp_path)
    assert "vendors.aimms.auth.api_key_file" in message
    assert "X-Injected" not in message


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"org": "8008?perPage=1"}, "vendors.amilia.options.org"),
        ({"org": "8008/../v2"}, "vendors.amilia.options.org"),
        ({"origin": CRLF}, "vendors.amilia.options.origin"),
    ],
)
def test_amilia_options_are_checked_by_check_streams(options: dict[str, Any], key: str) -> None:
    s = Settings.model_validate(
        settings(
            "amilia", options=options, auth={"kind": "basic_jwt", "username": "u", "password": "p"}
        )
    )
    with pytest.raises(ConfigProblems) as info:
        check_streams(s)
    assert key in str(info.value)


def test_tls_off_is_a_warning_and_on_by_default() -> None:
    assert Settings.model_validate(settings()).vendors["aimsio"].tls_verify is True
    off = Settings.model_validate(settings(tls_verify=False))
    assert [w for w in config_warnings(off) if "tls_verify" in w] == [
        "vendors.aimsio.tls_verify: false: TLS certificates of aimsio are NOT verified "
        "(anyone on the path can read its credentials); use ca_file for a private CA"
    ]
