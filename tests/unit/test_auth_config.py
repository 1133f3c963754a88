"""Auth kinds from config: the fields each kind needs, aliases, connector defaults."""

from __future__ import annotations

from typing import Any

import pytest

from service.config import Settings, load_settings
from service.connectors import REGISTRY, Connector
from service.engine.runtime import check_streams, login_spec
from service.errors import ConfigError


def vendor(auth: dict[str, Any], name: str = "imis") -> Settings:
    return Settings(vendors={name: {"base_url": "http://127.0.0.1:9", "auth": auth}})


def load(tmp_path: Any, auth: str) -> Settings:
    path = tmp_path / "c.toml"
    path.write_text(f'[vendors.imis]\nbase_url = "http://127.0.0.1:9"\nauth = {auth}\n')
    return load_settings(path)


@pytest.mark.parametrize(
    ("auth", "key"),
    [
        ('{ kind = "password_grant", username = "u" }', "vendors.imis.auth.password"),
        ('{ kind = "basic_jwt", password = "p" }', "vendors.imis.auth.username"),
        ('{ kind = "bearer" }', "vendors.imis.auth.token"),
        ('{ kind = "apikey" }', "vendors.imis.auth.api_key"),
        (
            '{ kind = "password_grant", username = "u", password = "p", client_id = "c" }',
            "vendors.imis.auth.client_secret",
        ),
    ],
)
def test_each_kind_names_the_field_it_lacks(tmp_path: Any, auth: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, auth)
    assert key in str(info.value)


def test_the_old_kind_name_still_works(tmp_path: Any) -> None:
    settings = load(tmp_path, '{ kind = "bearer_login", username = "u", password = "p" }')
    assert settings.vendors["imis"].auth.kind == "password_grant"


class WithLoginPath(Connector):
    vendor = "imis"
    auth_defaults = {"token_path": "/token"}  # noqa: RUF012


def test_login_path_from_the_connector_or_config(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = vendor({"kind": "password_grant", "username": "u", "password": "p"})
    monkeypatch.setitem(REGISTRY, "imis", Connector)
    with pytest.raises(ConfigError, match=r"vendors\.imis\.auth\.token_path: required"):
        check_streams(settings)
    monkeypatch.setitem(REGISTRY, "imis", WithLoginPath)
    check_streams(settings)
    spec = login_spec(settings.vendors["imis"].auth, WithLoginPath.auth_defaults)
    assert (spec.token_path, spec.token_field, spec.token_method) == (
        "/token",
        "access_token",
        "POST",
    )
    own = (
        vendor({"kind": "basic_jwt", "username": "u", "password": "p", "token_path": "/auth"})
        .vendors["imis"]
        .auth
    )
    spec = login_spec(own, WithLoginPath.auth_defaults)
    assert (spec.token_path, spec.token_field, spec.token_method) == ("/auth", "Token", "GET")
    secret = vendor({"kind": "basic_jwt", "username": "u", "password": "s3cr3t-pw"})
    assert "s3cr3t-pw" not in repr(login_spec(secret.vendors["imis"].auth, {}))


def test_apikey_header_defaults_to_apikey() -> None:
    auth = vendor({"kind": "apikey", "api_key": "k"}, name="aimms").vendors["aimms"].auth
    assert login_spec(auth, {}).header == "apikey"
    auth = vendor({"kind": "apikey", "api_key": "k", "header": "X-Key"}, name="aimms")
    assert login_spec(auth.vendors["aimms"].auth, {}).header == "X-Key"


def test_a_vendor_without_a_connector_is_named_by_check_streams() -> None:
    settings = Settings(vendors={"nosuch": {"base_url": "http://127.0.0.1:9"}})
    with pytest.raises(ConfigError, match=r"vendors\.nosuch\.enabled: no connector for vendor"):
        check_streams(settings)
    check_streams(Settings(vendors={"nosuch": {"base_url": "http://x.test", "enabled": False}}))
