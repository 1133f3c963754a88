"""Secrets never printed: one URL mask for config output, database errors and logs."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from service.config import effective_config, load_settings, mask_url
from service.secrets import redact_text

# Anything but whitespace may appear in a password (``@``, ``/``, ``?``, ``:``, quotes …).
_PART = st.text(alphabet=st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs")))
# Characters that end the user-info in naive parsers appear often, not by chance only.
SECRET = st.builds(
    lambda a, sep, b: a + sep + b,
    _PART,
    st.sampled_from(["", "@", "/", "?", "#", ":", "@@", "://", "a@b/c"]),
    _PART,
).filter(lambda s: len(s) >= 4)
USER = st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=12)
HOST = st.sampled_from(["h", "db.example.com", "127.0.0.1:5432", "[::1]:5432", "vendor.test"])
SCHEME = st.sampled_from(
    ["postgresql+asyncpg", "postgresql", "http", "https", "sqlite+aiosqlite", "redis", "x-y.z"]
)
PATH = st.sampled_from(["", "/", "/db", "/api/v1/users", "/d?sslmode=require"])
PARAM = st.sampled_from(
    ["password", "PASSWORD", "pwd", "token", "secret", "api_key", "apikey", "sslpassword"]
)
PARAM_VALUE = st.text(
    alphabet=st.characters(
        blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs"), blacklist_characters="&;#"
    ),
    min_size=4,
)


@given(scheme=SCHEME, user=USER, secret=SECRET, host=HOST, path=PATH)
def test_url_password_never_shown(
    scheme: str, user: str, secret: str, host: str, path: str
) -> None:
    expected = f"{scheme}://{user}:***@{host}{path}"
    assume(secret not in expected)
    text = f"failed to connect to {scheme}://{user}:{secret}@{host}{path} (retrying)"
    masked = mask_url(text)
    assert secret not in masked
    if "@" not in path:
        assert masked == f"failed to connect to {expected} (retrying)"


@given(scheme=SCHEME, host=HOST, name=PARAM, secret=PARAM_VALUE)
def test_secret_query_parameter_never_shown(scheme: str, host: str, name: str, secret: str) -> None:
    expected = f"{scheme}://{host}/db?sslmode=require&{name}=***&x=1"
    assume(secret not in expected)
    masked = mask_url(f"{scheme}://{host}/db?sslmode=require&{name}={secret}&x=1")
    assert secret not in masked
    if "@" not in secret:  # an "@" may look like the end of a password: then more is hidden
        assert masked == expected


@given(user=USER, secret=SECRET, other=SECRET)
def test_several_urls_in_one_text(user: str, secret: str, other: str) -> None:
    text = f"a=postgresql://{user}:{secret}@h/d b=http://{user}:{other}@v.test/x"
    masked = mask_url(text)
    for s in (secret, other):
        assume(s not in f"a=postgresql://{user}:***@h/d b=http://{user}:***@v.test/x")
        assert s not in masked


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql+asyncpg://u:pw@h:5432/db", "postgresql+asyncpg://u:***@h:5432/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://h/db?password=s3cret&sslmode=require",
            "postgresql://h/db?password=***&sslmode=require",
        ),
        ("http://user:secret@vendor.test/api", "http://user:***@vendor.test/api"),
        ("https://vendor.test/x?api_key=k&page=2", "https://vendor.test/x?api_key=***&page=2"),
        ("http://vendor.test/users/a@b.com", "http://vendor.test/users/a@b.com"),  # no password
        ("sqlite+aiosqlite:///./var/x.db", "sqlite+aiosqlite:///./var/x.db"),
        ("no url here: password is nice", "no url here: password is nice"),
    ],
)
def test_mask_examples(text: str, expected: str) -> None:
    assert mask_url(text) == expected


def test_logs_redact_urls_and_key_values() -> None:
    line = redact_text("connect postgresql://u:p@ss@h/d?pwd=zz failed; password=hunter2 token=abc")
    for secret in ("p@ss", "ss@h", "zz", "hunter2", "abc"):
        assert secret not in line


def test_check_config_output_masks_url_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[database]\nurl = "postgresql+asyncpg://app@db.test/vs?password=dbsecret"\n'
        "[vendors.aimsio]\n"
        'base_url = "http://api:basesecret@127.0.0.1:1/aimsio"\n'
        'auth = { kind = "basic", username = "u", password = "authsecret" }\n'
        'options = { access_token = "optsecret" }\n'
    )
    flat = repr(effective_config(load_settings(cfg)))
    for secret in ("dbsecret", "basesecret", "authsecret", "optsecret"):
        assert secret not in flat
    assert "http://api:***@127.0.0.1:1/aimsio" in flat


def test_database_error_text_is_masked_and_has_no_link() -> None:
    from sqlalchemy import exc as sa_exc

    from service.db.engine import _describe

    exc = sa_exc.InvalidRequestError("cannot use postgresql://u:p@ss@h/d now", code="rvf5")
    assert "sqlalche.me" in str(exc)
    text = _describe(exc)
    assert "p@ss" not in text
    assert "sqlalche.me" not in text
    assert text.startswith("InvalidRequestError: cannot use postgresql://u:***@h/d")
