"""Settings: a TOML file, then ``VENDORSYNC_*`` environment overrides, then ``*_file`` secrets.

Environment variables use ``__`` for nesting, e.g.
``VENDORSYNC_DATABASE__URL`` or ``VENDORSYNC_VENDORS__IMIS__AUTH__PASSWORD``.
Every secret may instead be read from a file named by its ``*_file`` key.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from service.errors import ConfigError

VENDOR_IDS = ("aimsio", "aqua", "imis", "amilia", "aimms")
DEFAULT_CONFIG_PATH = Path("config/vendorsync.toml")
CONFIG_ENV = "VENDORSYNC_CONFIG"
SECRET_FIELDS = ("password", "client_secret", "api_key")

AuthKind = Literal["basic", "bearer_login", "apikey", "none"]

# Which auth fields each kind needs (checked only for enabled vendors).
REQUIRED_AUTH: dict[str, tuple[str, ...]] = {
    "basic": ("username", "password"),
    "bearer_login": ("username", "password"),
    "apikey": ("api_key",),
    "none": (),
}

_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_CRON_NAMES = {
    3: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    4: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}
_EVERY = re.compile(r"^every\s+(\d+(?:\.\d+)?)\s*(s|m|h)$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_every_s(text: str) -> float | None:
    """``"every 15m"`` → 900.0; anything else → None."""
    m = _EVERY.match(text.strip().lower())
    if not m:
        return None
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def parse_duration_s(text: str) -> float:
    """``"7d"`` → 604800.0 (units s, m, h, d); raise ValueError otherwise."""
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise ValueError(f"not a duration like '90s', '15m', '12h' or '7d': {text!r}")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return seconds


def validate_schedule(text: str) -> str:
    """Accept a 5-field crontab (UTC) or ``every N{s,m,h}``; raise ValueError otherwise."""
    every = parse_every_s(text)
    if every is not None:
        if every <= 0:
            raise ValueError(f"interval must be positive: {text!r}")
        return text
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"not a 5-field cron expression or 'every N[s|m|h]': {text!r}")
    for pos, field in enumerate(fields):
        lo, hi = _CRON_RANGES[pos]
        for part in field.lower().split(","):
            base, _, step = part.partition("/")
            if step and not (step.isdigit() and int(step) > 0):
                raise ValueError(f"bad step in cron field {field!r}: {text!r}")
            if base == "*":
                continue
            for bound in base.split("-", 1):
                names = _CRON_NAMES.get(pos, [])
                if bound in names:
                    continue
                if not bound.isdigit() or not lo <= int(bound) <= hi:
                    raise ValueError(f"cron field {field!r} out of range {lo}-{hi}: {text!r}")
    return text


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Model):
    url: str = "sqlite+aiosqlite:///./var/vendorsync.db"
    echo: bool = False


class SyncSettings(_Model):
    batch_size: PositiveInt = 500
    lease_ttl_s: PositiveFloat = 60.0
    heartbeat_s: PositiveFloat = 20.0

    @model_validator(mode="after")
    def _heartbeat_inside_ttl(self) -> SyncSettings:
        if self.heartbeat_s >= self.lease_ttl_s:
            raise ValueError("heartbeat_s must be shorter than lease_ttl_s")
        return self


class DaemonSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    shutdown_grace_s: PositiveFloat = 30.0


class RetrySettings(_Model):
    max_attempts: PositiveInt = 6
    base_s: PositiveFloat = 0.5
    max_backoff_s: PositiveFloat = 30.0
    max_elapsed_s: PositiveFloat = 120.0


class AuthSettings(_Model):
    kind: AuthKind = "none"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    api_key: SecretStr | None = None
    api_key_file: Path | None = None

    @model_validator(mode="after")
    def _read_secret_files(self) -> AuthSettings:
        for name in SECRET_FIELDS:
            path: Path | None = getattr(self, f"{name}_file")
            if path is None or getattr(self, name) is not None:
                continue
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"{name}_file: cannot read {path}: {exc.strerror}") from None
            setattr(self, name, SecretStr(value))
        return self


class StreamSettings(_Model):
    enabled: bool = True
    schedule: str | None = None  # falls back to the vendor's schedule
    # A periodic full re-read (e.g. "7d") for fields that change without the cursor moving.
    full_every: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        return None if v is None else validate_schedule(v)

    @field_validator("full_every")
    @classmethod
    def _full_every(cls, v: str | None) -> str | None:
        if v is None or v.strip().lower() == "off":
            return None
        parse_duration_s(v)
        return v

    def full_every_s(self) -> float | None:
        return None if self.full_every is None else parse_duration_s(self.full_every)


class VendorSettings(_Model):
    enabled: bool = True
    base_url: str
    max_parallel: PositiveInt = 4
    rate_per_s: PositiveFloat = 10.0
    timeout_s: PositiveFloat = 30.0
    # How long the vendor may keep working on a request we abandoned (our timeout): its
    # parallel slot stays taken until then. None: ``timeout_s`` (the request's own bound).
    vendor_timeout_s: PositiveFloat | None = None
    connect_timeout_s: PositiveFloat = 10.0
    schedule: str = "every 15m"
    auth: AuthSettings = Field(default_factory=AuthSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    streams: dict[str, StreamSettings] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"must be an http(s) URL, got {v!r}")
        return v.rstrip("/")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        return validate_schedule(v)

    def enabled_streams(self) -> list[str]:
        return [name for name, s in self.streams.items() if s.enabled]

    def schedule_of(self, stream: str) -> str:
        own = self.streams.get(stream)
        return (own.schedule if own and own.schedule else None) or self.schedule


class FieldMap(_Model):
    """One push mapping rule: a staged stream of any vendor → a target vendor entity."""

    source_vendor: str
    source_stream: str
    target_vendor: str
    entity: str
    key_field: str  # target field that carries the natural key
    fields: dict[str, str]  # target field → source path (dotted) or "=literal"


class PushSettings(_Model):
    batch_size: PositiveInt = 100
    max_attempts: PositiveInt = 5
    backoff_base_s: PositiveFloat = 30.0
    claim_ttl_s: PositiveFloat = 300.0
    mappings: list[FieldMap] = Field(default_factory=list)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VENDORSYNC_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    push: PushSettings = Field(default_factory=PushSettings)
    vendors: dict[str, VendorSettings] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)

    @field_validator("vendors")
    @classmethod
    def _known_vendors(cls, v: dict[str, VendorSettings]) -> dict[str, VendorSettings]:
        for name in v:
            if name not in VENDOR_IDS:
                raise ValueError(f"unknown vendor {name!r} (known: {', '.join(VENDOR_IDS)})")
        return v

    def vendor(self, name: str) -> VendorSettings:
        try:
            return self.vendors[name]
        except KeyError:
            raise ConfigError(f"vendor {name!r} is not configured", key="vendors") from None


def _format_validation_error(exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    # Messages from validators may start with a sub-key ("password_file: …").
    sub = re.match(r"^(\w+): (.*)$", msg)
    if sub and sub.group(1).endswith("_file"):
        loc, msg = f"{loc}.{sub.group(1)}" if loc else sub.group(1), sub.group(2)
    if err["type"] == "extra_forbidden":
        msg = "unknown setting"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return ConfigError(f"{msg}{more}", key=loc or None)


def _check_credentials(settings: Settings) -> None:
    for name, vendor in settings.vendors.items():
        if not vendor.enabled:
            continue
        for field in REQUIRED_AUTH[vendor.auth.kind]:
            value = getattr(vendor.auth, field)
            if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
                hint = f" (or {field}_file)" if field in SECRET_FIELDS else ""
                raise ConfigError(
                    f"required{hint} for enabled vendor", key=f"vendors.{name}.auth.{field}"
                )


def config_path(path: str | Path | None = None) -> Path:
    if path is not None:
        return Path(path)
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_settings(path: str | Path | None = None) -> Settings:
    """Load and validate the effective settings; any problem raises a one-line ConfigError."""
    file = config_path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {file}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        raise _format_validation_error(exc) from None
    _check_credentials(settings)
    return settings


_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]*@")


def mask_url(text: str) -> str:
    """Replace the password of any URL inside ``text`` with ``***``."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def effective_config(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret masked (safe to print or log)."""
    data = settings.model_dump(mode="json")
    data["database"]["url"] = mask_url(settings.database.url)
    for vendor in data.get("vendors", {}).values():
        auth = vendor.get("auth", {})
        for name in SECRET_FIELDS:
            if auth.get(name) is not None:
                auth[name] = "***"
    return data
