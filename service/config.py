"""Settings: a TOML file, then ``VENDORSYNC_*`` environment overrides, then ``*_file`` secrets.

Environment variables use ``__`` for nesting, e.g.
``VENDORSYNC_DATABASE__URL`` or ``VENDORSYNC_VENDORS__IMIS__AUTH__PASSWORD``.
Every secret may instead be read from a file named by its ``*_file`` key.
"""

from __future__ import annotations

import os
import re
import tomllib
from contextvars import ContextVar
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from service.errors import ConfigError
from service.secrets import mask_url
from service.validation import (
    DAY_S,
    HEADER_NAME,
    blackout_remaining_s,
    check_no_control,
    non_finite,
    parse_duration_s,
    parse_every_s,
    parse_window,
    validate_database_url,
    validate_http_url,
    validate_schedule,
)

__all__ = [
    "ConfigProblems",
    "Settings",
    "blackout_remaining_s",
    "config_warnings",
    "effective_config",
    "load_settings",
    "mask_url",
    "parse_duration_s",
    "parse_every_s",
    "parse_window",
    "validate_schedule",
]

# The file ``load_settings`` is reading (a context variable: loads may run concurrently).
_TOML_FILE: ContextVar[Path | None] = ContextVar("vendorsync_toml_file", default=None)
VENDOR_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_STREAM_NAME = 200
DEFAULT_CONFIG_PATH = Path("config/vendorsync.toml")
CONFIG_ENV = "VENDORSYNC_CONFIG"
SECRET_FIELDS = ("password", "client_secret", "api_key", "token")

AuthKind = Literal["basic", "apikey", "bearer", "password_grant", "basic_jwt", "none"]
# Earlier configs said "bearer_login" for what is now "password_grant".
AUTH_ALIASES = {"bearer_login": "password_grant"}

# Which auth fields each kind needs (checked only for enabled vendors).
REQUIRED_AUTH: dict[str, tuple[str, ...]] = {
    "basic": ("username", "password"),
    "apikey": ("api_key",),
    "bearer": ("token",),
    "password_grant": ("username", "password"),
    "basic_jwt": ("username", "password"),
    "none": (),
}

# Sane ranges: beyond them a run fails late (overflowing timers) or hangs (1e-300 calls/s).
Seconds = Annotated[float, Field(ge=0.001, le=DAY_S)]
Lifetime = Annotated[float, Field(ge=1, le=366 * DAY_S)]  # tokens may live a year
RatePerS = Annotated[float, Field(ge=0.001, le=1_000_000)]
Count = Annotated[int, Field(ge=1, le=100_000)]
Parallel = Annotated[int, Field(ge=1, le=10_000)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DatabaseSettings(_Model):
    url: str = "sqlite+aiosqlite:///./var/vendorsync.db"
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return validate_database_url(v)


class SyncSettings(_Model):
    batch_size: Count = 500
    lease_ttl_s: Seconds = 60.0
    heartbeat_s: Seconds = 20.0

    @model_validator(mode="after")
    def _heartbeat_inside_ttl(self) -> SyncSettings:
        if self.heartbeat_s >= self.lease_ttl_s:
            raise ValueError("heartbeat_s must be shorter than lease_ttl_s")
        return self


class DaemonSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    shutdown_grace_s: Seconds = 30.0
    # The status page's actions (requeue a dead letter, run a stream now) need this token
    # in the X-Admin-Token header; unset: the page is read-only.
    admin_token: SecretStr | None = None
    admin_token_file: Path | None = None

    @model_validator(mode="after")
    def _read_token_file(self) -> DaemonSettings:
        if self.admin_token is not None and not self.admin_token.get_secret_value():
            self.admin_token = None  # an empty environment variable means "not set"
        if self.admin_token_file is not None and self.admin_token is None:
            try:
                value = self.admin_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"admin_token_file: cannot read: {exc.strerror}") from None
            self.admin_token = SecretStr(value)
        if self.admin_token is not None and len(self.admin_token.get_secret_value()) < 16:
            raise ValueError("admin_token must be at least 16 characters")
        return self


class RetrySettings(_Model):
    max_attempts: Count = 6
    base_s: Seconds = 0.5
    max_backoff_s: Seconds = 30.0
    max_elapsed_s: Seconds = 120.0


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
    token: SecretStr | None = None  # kind "bearer": a static token
    token_file: Path | None = None
    # Login details; a connector supplies its vendor's defaults (e.g. iMIS: /token).
    header: str | None = None  # apikey / bearer header name
    token_path: str | None = None
    token_method: Literal["GET", "POST"] | None = None
    token_field: str | None = None
    scope: str | None = None
    token_ttl_s: Lifetime | None = None  # when the login answer does not say
    refresh_margin_s: Seconds = 60.0
    # When the credential stops working (AIMMS PRO keys live at most a year): check-config,
    # status and the daemon (daily) warn from EXPIRY_WARN_DAYS before it.
    expires: date | None = None

    @field_validator("kind", mode="before")
    @classmethod
    def _alias(cls, v: Any) -> Any:
        return AUTH_ALIASES.get(v, v) if isinstance(v, str) else v

    @field_validator("username", "client_id", "token_path", "token_field", "scope")
    @classmethod
    def _printable(cls, v: str | None) -> str | None:
        return None if v is None else check_no_control(v)

    @field_validator(*SECRET_FIELDS)
    @classmethod
    def _printable_secret(cls, v: SecretStr | None) -> SecretStr | None:
        # Secrets go into headers: a CR/LF would add a header of the secret's choosing.
        if v is not None:
            check_no_control(v.get_secret_value(), "the secret")
        return v

    @field_validator("header")
    @classmethod
    def _header(cls, v: str | None) -> str | None:
        if v is not None and not HEADER_NAME.match(v):
            raise ValueError("must be an HTTP header name (letters, digits, '-', no spaces)")
        return v

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
            check_no_control(value, f"{name}_file: the secret")
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
            return None if v is None else "off"
        parse_duration_s(v)
        return v

    def full_every_s(self) -> float | None:
        """The interval, or None when unset or ``"off"`` (see ``full_every``)."""
        if self.full_every is None or self.full_every == "off":
            return None
        return parse_duration_s(self.full_every)


class VendorSettings(_Model):
    """One connection: an account of a vendor (its table name is the connection's name)."""

    enabled: bool = True
    # Which connector drives this account; None: the table's own name (``[vendors.aimsio]``).
    connector: str | None = None
    # Connections in one limit group share one limiter and one lease (what the vendor counts
    # its limits by). None: the connector's default (Amilia: one per IP), else its own.
    limit_group: str | None = None
    base_url: str
    max_parallel: Parallel = 4
    rate_per_s: RatePerS = 10.0
    timeout_s: Seconds = 30.0
    # How long the vendor may keep working on a request we abandoned (our timeout): its
    # parallel slot stays taken until then. None: ``timeout_s`` (the request's own bound).
    vendor_timeout_s: Seconds | None = None
    connect_timeout_s: Seconds = 10.0
    # HTTPS certificate checks. Off only by this explicit per-connection switch (logged as
    # a warning by every command that talks to the vendor); ``ca_file`` trusts a private CA
    # (a PEM bundle) instead of the system's.
    tls_verify: bool = True
    ca_file: Path | None = None
    schedule: str = "every 15m"
    auth: AuthSettings = Field(default_factory=AuthSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    streams: dict[str, StreamSettings] = Field(default_factory=dict)
    # Daily UTC windows ("05:58-06:10") when the vendor is unavailable (iMIS restores its
    # database twice a day): no run starts inside one, and a call failing inside one waits
    # for its end instead of spending retries. None: the connector's own windows.
    blackouts: list[str] | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return validate_http_url(v)

    @field_validator("connector", "limit_group")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        if v is not None and not VENDOR_NAME.match(v):
            raise ValueError(
                f"{v!r} must be lower-case letters, digits and '_' (starting with a letter)"
            )
        return v

    @field_validator("streams")
    @classmethod
    def _distinct_streams(cls, v: dict[str, StreamSettings]) -> dict[str, StreamSettings]:
        # Stream names resolve case-insensitively, so "User" and "user" would be one stream.
        seen: dict[str, str] = {}
        for name in v:
            # Names reach logs, labels and SQL values (always bound, never spliced).
            if not name.strip() or len(name) > MAX_STREAM_NAME:
                raise ValueError(f"stream names must be 1 to {MAX_STREAM_NAME} characters")
            check_no_control(name, f"stream name {name.encode('unicode_escape').decode()!r}")
            other = seen.setdefault(name.lower(), name)
            if other != name:
                raise ValueError(f"streams {other!r} and {name!r} differ only in case")
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        return validate_schedule(v)

    @field_validator("blackouts")
    @classmethod
    def _blackouts(cls, v: list[str] | None) -> list[str] | None:
        for window in v or []:
            parse_window(window)
        return v

    @model_validator(mode="after")
    def _tls(self) -> VendorSettings:
        if self.ca_file is None:
            return self
        if not self.tls_verify:
            raise ValueError("ca_file: has no effect with tls_verify = false; drop one of them")
        if not self.ca_file.is_file():
            raise ValueError(f"ca_file: not a readable file: {self.ca_file}")
        return self

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
    batch_size: Count = 100
    max_attempts: Count = 5
    backoff_base_s: Seconds = 30.0
    claim_ttl_s: Seconds = 300.0
    mappings: list[FieldMap] = Field(default_factory=list)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VENDORSYNC_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
        allow_inf_nan=False,
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
        # Explicit arguments, then the environment, then the TOML file ``load_settings``
        # names (read by pydantic-settings' own TOML source).
        toml_file = _TOML_FILE.get()
        if toml_file is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file))

    @field_validator("vendors")
    @classmethod
    def _vendor_names(cls, v: dict[str, VendorSettings]) -> dict[str, VendorSettings]:
        # Which connectors exist is the registry's business (checked with the streams);
        # here only that the name is usable as an id in keys, labels and SQL names.
        for name in v:
            if not VENDOR_NAME.match(name):
                raise ValueError(
                    f"vendor name {name!r} must be lower-case letters, digits and '_' "
                    "(starting with a letter, at most 64)"
                )
            if v[name].connector is None:
                v[name].connector = name  # existing configs: the table names the connector
        return v

    def connector_of(self, name: str) -> str:
        """The connector (registry key) that drives connection ``name``."""
        vs = self.vendors.get(name)
        return (vs.connector if vs else None) or name

    def vendor(self, name: str) -> VendorSettings:
        try:
            return self.vendors[name]
        except KeyError:
            raise ConfigError(f"vendor {name!r} is not configured", key="vendors") from None


class ConfigProblems(ConfigError):
    """Several invalid settings at once: ``problems`` holds one ConfigError per key.

    Reads as the first problem plus ``(and N more)``; ``key`` is the first one's.
    """

    def __init__(self, problems: list[ConfigError]) -> None:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{str(first).removeprefix(f'{first.key}: ')}{more}", key=first.key)
        self.problems = problems


def _problem(err: Any) -> ConfigError:
    loc = ".".join(str(p) for p in err["loc"])
    msg = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
    # Messages from validators may start with a sub-key ("password_file: …").
    sub = re.match(r"^(\w+): (.*)$", msg)
    if sub and sub.group(1).endswith("_file"):
        loc, msg = f"{loc}.{sub.group(1)}" if loc else sub.group(1), sub.group(2)
    if err["type"] == "extra_forbidden":
        msg = "unknown setting"
    return ConfigError(msg, key=loc or None)


def _missing_credentials(settings: Settings) -> list[ConfigError]:
    problems = []
    for name, vendor in settings.vendors.items():
        if not vendor.enabled:
            continue
        for field in REQUIRED_AUTH[vendor.auth.kind]:
            value = getattr(vendor.auth, field)
            if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
                hint = f" (or {field}_file)" if field in SECRET_FIELDS else ""
                problems.append(
                    ConfigError(
                        f"required{hint} for enabled vendor", key=f"vendors.{name}.auth.{field}"
                    )
                )
        auth = vendor.auth
        if auth.kind == "password_grant" and (auth.client_id is None) != (
            auth.client_secret is None
        ):
            missing = "client_secret" if auth.client_id is not None else "client_id"
            problems.append(
                ConfigError(
                    "required with the other half of the client id/secret pair",
                    key=f"vendors.{name}.auth.{missing}",
                )
            )
    return problems


def config_path(path: str | Path | None = None) -> Path:
    if path is not None:
        return Path(path)
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {file}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{file}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}): is it a TOML file?"
        ) from None
    if not text.strip():
        raise ConfigError(f"{file}: config file is empty")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {' '.join(str(exc).split())}") from None
    if not raw:
        raise ConfigError(f"{file}: config file is empty (only comments)")
    return raw


def load_settings(path: str | Path | None = None) -> Settings:
    """Load and validate the effective settings.

    Any problem raises a one-line ``ConfigError``; several raise ``ConfigProblems``, which
    lists each of them.
    """
    file = config_path(path)
    raw = _read_toml(file)  # first: one clear line for a missing, binary or broken file
    problems: list[ConfigError] = []
    token = _TOML_FILE.set(file)
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = [_problem(e) for e in exc.errors()]
    else:
        problems = _missing_credentials(settings)
    finally:
        _TOML_FILE.reset(token)
    # NaN and infinities also inside free-form ``options``, which the models do not type.
    reported = {p.key for p in problems}
    for where in non_finite(raw):
        key = ".".join(where)
        if key not in reported:
            problems.append(ConfigError("not a finite number", key=key))
    if problems:
        raise ConfigProblems(problems)
    return settings


def config_warnings(settings: Settings) -> list[str]:
    """Valid but wasteful settings, one line each (``check-config`` prints them)."""
    warnings = []
    for name, vendor in settings.vendors.items():
        if (
            vendor.enabled
            and vendor.vendor_timeout_s
            and vendor.timeout_s < vendor.vendor_timeout_s
        ):
            warnings.append(
                f"vendors.{name}.timeout_s: {vendor.timeout_s:g}s is below vendor_timeout_s "
                f"{vendor.vendor_timeout_s:g}s: an abandoned request keeps its parallel slot "
                "until the vendor ends it, so a shorter timeout only wastes slots"
            )
    return warnings + tls_warnings(settings) + expiry_warnings(settings, datetime.now(UTC).date())


def tls_warnings(settings: Settings) -> list[str]:
    """One line per enabled connection whose HTTPS certificates are not checked."""
    return [
        f"vendors.{name}.tls_verify: false: TLS certificates of {name} are NOT verified "
        "(anyone on the path can read its credentials); use ca_file for a private CA"
        for name, vendor in settings.vendors.items()
        if vendor.enabled and not vendor.tls_verify
    ]


EXPIRY_WARN_DAYS = 30


def expiry_warnings(settings: Settings, today: date) -> list[str]:
    """One line per enabled vendor whose credential expires within 30 days or has expired."""
    out = []
    for name, vendor in settings.vendors.items():
        expires = vendor.auth.expires
        if not vendor.enabled or expires is None:
            continue
        left = (expires - today).days
        key = f"vendors.{name}.auth.expires"
        if left < 0:
            out.append(f"{key}: the credential expired on {expires.isoformat()}; replace it")
        elif left <= EXPIRY_WARN_DAYS:
            out.append(
                f"{key}: the credential expires on {expires.isoformat()} (in {left} days); "
                "create a new one and update the config"
            )
    return out


_SECRET_KEY = re.compile(r"(?i)pass|pwd|secret|token|api_?key|credential")


def effective_config(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret masked (safe to print or log)."""
    data = settings.model_dump(mode="json")
    data["database"]["url"] = mask_url(settings.database.url)
    for vendor in data.get("vendors", {}).values():
        vendor["base_url"] = mask_url(vendor["base_url"])
        auth = vendor.get("auth", {})
        for name in SECRET_FIELDS:
            if auth.get(name) is not None:
                auth[name] = "***"
        for holder in (vendor, *vendor.get("streams", {}).values()):
            options = holder.get("options", {})
            for key in options:
                if _SECRET_KEY.search(key) and options[key] is not None:
                    options[key] = "***"
    return data
