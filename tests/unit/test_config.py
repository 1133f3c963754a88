from __future__ import annotations

from pathlib import Path

import pytest

from service.config import (
    effective_config,
    load_settings,
    mask_url,
    parse_every_s,
    validate_schedule,
)
from service.errors import ConfigError

DEFAULT = Path("config/vendorsync.toml")

MINIMAL = """
[database]
url = "sqlite+aiosqlite:///./var/x.db"
[vendors.aimsio]
base_url = "http://127.0.0.1:1/aimsio"
auth = { kind = "basic", username = "u", password = "p" }
[vendors.aimsio.streams]
User = {}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_default_config_loads() -> None:
    settings = load_settings(DEFAULT)
    aimsio = settings.vendors["aimsio"]
    assert aimsio.max_parallel == 10
    assert aimsio.rate_per_s == 10
    assert "User" in aimsio.enabled_streams()
    assert settings.database.url.startswith("sqlite+aiosqlite:///./var/")


def test_env_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VENDORSYNC_VENDORS__AIMSIO__MAX_PARALLEL", "3")
    monkeypatch.setenv("VENDORSYNC_DATABASE__URL", "postgresql+asyncpg://a:b@h/d")
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.vendors["aimsio"].max_parallel == 3
    assert settings.vendors["aimsio"].auth.username == "u"  # deep merge keeps the rest
    assert settings.database.url == "postgresql+asyncpg://a:b@h/d"


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    text = MINIMAL.replace('password = "p"', f'password_file = "{secret}"')
    settings = load_settings(write(tmp_path, text))
    pw = settings.vendors["aimsio"].auth.password
    assert pw is not None
    assert pw.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_effective_config_masks_every_secret(tmp_path: Path) -> None:
    text = MINIMAL.replace("x.db", "x.db").replace(
        'url = "sqlite+aiosqlite:///./var/x.db"', 'url = "postgresql+asyncpg://user:dbpw@h/d"'
    )
    data = effective_config(load_settings(write(tmp_path, text)))
    flat = repr(data)
    assert "dbpw" not in flat
    assert data["vendors"]["aimsio"]["auth"]["password"] == "***"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (
            ("[vendors.aimsio]", '[vendors."No-Such"]\nbase_url="http://x"\n[vendors.aimsio]'),
            "vendors",
        ),
        (
            (
                'base_url = "http://127.0.0.1:1/aimsio"',
                'base_url = "http://127.0.0.1:1/aimsio"\nmax_parallel = -1',
            ),
            "vendors.aimsio.max_parallel",
        ),
        (
            (
                'base_url = "http://127.0.0.1:1/aimsio"',
                'base_url = "http://127.0.0.1:1/aimsio"\nschedule = "61 * * * *"',
            ),
            "vendors.aimsio.schedule",
        ),
        (('password = "p"', 'password = ""'), "vendors.aimsio.auth.password"),
        ((', password = "p"', ""), "vendors.aimsio.auth.password"),
        (
            ('base_url = "http://127.0.0.1:1/aimsio"', 'base_url = "ftp://x"'),
            "vendors.aimsio.base_url",
        ),
        (("[database]", "[database]\nbogus = 1"), "database.bogus"),
        (
            ('password = "p"', 'password_file = "/nonexistent/pw"'),
            "vendors.aimsio.auth.password_file",
        ),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, change: tuple[str, str], key: str) -> None:
    text = MINIMAL.replace(*change)
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert info.value.key == key, str(info.value)
    assert "\n" not in str(info.value)


def test_disabled_vendor_needs_no_credentials(tmp_path: Path) -> None:
    text = MINIMAL.replace(', password = "p"', "").replace(
        'base_url = "http://127.0.0.1:1/aimsio"',
        'base_url = "http://127.0.0.1:1/aimsio"\nenabled = false',
    )
    assert not load_settings(write(tmp_path, text)).vendors["aimsio"].enabled


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(write(tmp_path, "[database\n"))


@pytest.mark.parametrize(
    "text", ["*/15 * * * *", "0 6,18 * * mon-fri", "every 15m", "every 30s", "5 4 1 jan *"]
)
def test_valid_schedules(text: str) -> None:
    assert validate_schedule(text) == text


@pytest.mark.parametrize(
    "text", ["", "* * * *", "every", "every -1m", "60 * * * *", "* 24 * * *", "*/0 * * * *"]
)
def test_invalid_schedules(text: str) -> None:
    with pytest.raises(ValueError, match=r"cron|interval|positive"):
        validate_schedule(text)


def test_every_and_mask() -> None:
    assert parse_every_s("every 2h") == 7200
    assert mask_url("postgresql+asyncpg://u:pw@h:5432/db") == "postgresql+asyncpg://u:***@h:5432/db"


def test_streams_must_be_ones_the_connector_serves(tmp_path: Path) -> None:
    from service.engine.runtime import check_streams

    check_streams(load_settings(DEFAULT))
    settings = load_settings(write(tmp_path, MINIMAL.replace("User = {}", "Userz = {}")))
    with pytest.raises(ConfigError) as info:
        check_streams(settings)
    assert info.value.key == "vendors.aimsio.streams.Userz"
    assert "known: User, Employee" in str(info.value)


@pytest.mark.parametrize(
    "text", ["every 99999999999999h", "every 8809h", "every 0.5s", "every " + "9" * 400 + "h"]
)
def test_intervals_are_bounded(text: str) -> None:
    with pytest.raises(ValueError, match="between 1s and 366d"):
        validate_schedule(text)


def test_full_every_is_bounded() -> None:
    from service.config import parse_duration_s

    assert parse_duration_s("366d") == 366 * 86400
    with pytest.raises(ValueError, match="between 1s and 366d"):
        parse_duration_s("9999999d")


def test_every_problem_is_kept_and_nan_in_options_is_one_of_them(tmp_path: Path) -> None:
    from service.config import ConfigProblems

    text = MINIMAL.replace(
        'base_url = "http://127.0.0.1:1/aimsio"',
        'base_url = "http://127.0.0.1:1/ai msio"\nmax_parallel = 0\noptions = { a = nan }',
    )
    with pytest.raises(ConfigProblems) as info:
        load_settings(write(tmp_path, text))
    keys = [p.key for p in info.value.problems]
    assert sorted(keys) == [
        "vendors.aimsio.base_url",
        "vendors.aimsio.max_parallel",
        "vendors.aimsio.options.a",
    ]
    assert str(info.value).endswith("(and 2 more)")


def test_timeout_below_vendor_timeout_warns(tmp_path: Path) -> None:
    from service.config import config_warnings

    text = MINIMAL.replace(
        'base_url = "http://127.0.0.1:1/aimsio"',
        'base_url = "http://127.0.0.1:1/aimsio"\ntimeout_s = 5\nvendor_timeout_s = 30',
    )
    [warning] = config_warnings(load_settings(write(tmp_path, text)))
    assert warning.startswith("vendors.aimsio.timeout_s: 5s is below vendor_timeout_s 30s")
    assert config_warnings(load_settings(DEFAULT)) == []


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:///./var/x.db",
        "sqlite:///:memory:",
        "sqlite+aiosqlite://",
        "postgresql+asyncpg://u:p%40ss@h:5432/db?options=-csearch_path%3Dx",
        "postgresql://[::1]:5432/db",
        "postgresql:///db",
    ],
)
def test_database_urls_the_engine_accepts_are_accepted(url: str) -> None:
    from service.db import create_engine
    from service.validation import validate_database_url

    assert validate_database_url(url) == url
    create_engine(url)  # and the engine factory agrees
