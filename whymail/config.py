"""WhyMail configuration: one pydantic model for every knob, loaded from YAML.

Loading order (later wins): built-in defaults, the YAML file (with `${VAR:-default}` expanded in
its string values after parsing, so an environment value is never read as YAML), then environment
overrides (`WHYMAIL_DB_DSN`, `REDIS_ADDR`, ... and the generic `WHYMAIL__SECTION__KEY=value`, kept
as a string unless it starts with `[` or `{`). A wrong or missing key raises `ConfigError` with one
line naming it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(Exception):
    """A configuration problem, rendered as one line naming the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SmtpConfig(_Section):
    host: str = Field("127.0.0.1", description="Address the SMTP listeners bind to")
    port: int = Field(2525, ge=0, le=65535, description="Inbound MTA port (25 in production)")
    submission_port: int = Field(2587, ge=0, le=65535, description="Submission port (587 in production)")
    smtps_port: int = Field(2465, ge=0, le=65535, description="Implicit-TLS submission port (465)")
    max_message_size: int = Field(26_214_400, gt=0, description="Largest message accepted, in bytes")
    max_recipients: int = Field(100, gt=0, description="Most RCPT TO per transaction")
    timeout: float = Field(300.0, gt=0, description="Idle timeout of an SMTP session, seconds")
    banner: str = Field("WhyMail ESMTP", description="Text after the hostname in the 220 greeting")


class ImapConfig(_Section):
    host: str = Field("127.0.0.1", description="Address the IMAP listeners bind to")
    port: int = Field(1143, ge=0, le=65535, description="IMAP port with STARTTLS (143 in production)")
    imaps_port: int = Field(1993, ge=0, le=65535, description="Implicit-TLS IMAP port (993)")
    idle_timeout: float = Field(1800.0, gt=0, description="Seconds before an idle session is logged out")
    allow_plaintext_login: bool = Field(
        True, description="Allow LOGIN/AUTHENTICATE before TLS, for clients on loopback only (dev)"
    )


class HttpConfig(_Section):
    host: str = Field("127.0.0.1", description="Address the HTTP API binds to")
    port: int = Field(8080, ge=0, le=65535, description="HTTP API port")
    db_pool: int = Field(
        20, ge=1, le=200, description="Database connections of each HTTP gateway (API reads wait for one)"
    )


class TlsConfig(_Section):
    cert_file: str = Field("", description="PEM certificate; empty: self-signed one in the state dir")
    key_file: str = Field("", description="PEM private key; empty: generated in the state dir")


class ServerConfig(_Section):
    hostname: str = Field("localhost", description="Name used in greetings and Received headers")
    smtp: SmtpConfig = SmtpConfig()
    imap: ImapConfig = ImapConfig()
    http: HttpConfig = HttpConfig()
    tls: TlsConfig = TlsConfig()


class RelayConfig(_Section):
    smarthost: str = Field("", description="host:port of a smarthost; empty: deliver by MX")
    smarthost_fallback: str = Field("", description="host:port of a second smarthost, tried when the first fails")
    username: str = Field("", description="AUTH user for the smarthost")
    password: str = Field("", description="AUTH password for the smarthost")
    starttls: bool = Field(True, description="Require STARTTLS with the smarthost")
    implicit_tls: bool = Field(False, description="Connect to the smarthost with TLS from the start (port 465)")
    verify_tls: bool = Field(True, description="Verify the smarthost's certificate")
    timeout: float = Field(60.0, gt=0, description="Seconds to wait for any reply of a remote server")
    mx_port: int = Field(25, ge=1, le=65535, description="Port of remote MX hosts (25; other values for tests)")
    helo_name: str = Field("", description="Name in EHLO towards remote servers; empty: server.hostname")
    allowed_networks: list[str] = Field(
        default_factory=list, description="Client networks allowed to relay without AUTH (CIDR)"
    )


class StorageConfig(_Section):
    maildir_root: str = Field("", description="Root of the Maildir++ tree; empty: <state_dir>/maildir")
    fsync: bool = Field(True, description="fsync message files and directories before answering 250")


class DbConfig(_Section):
    dsn: str = Field("", description="PostgreSQL DSN; empty: embedded PostgreSQL in the state dir")
    min_pool: int = Field(2, ge=1, description="Smallest connection pool per process")
    max_pool: int = Field(10, ge=1, description="Largest connection pool per process")

    @model_validator(mode="after")
    def _pool_bounds(self) -> DbConfig:
        if self.min_pool > self.max_pool:
            raise ValueError(f"min_pool ({self.min_pool}) must not exceed max_pool ({self.max_pool})")
        return self


class RedisConfig(_Section):
    addr: str = Field("", description="host:port of Redis; empty: in-process fallbacks")
    db: int = Field(0, ge=0, description="Redis database number")
    password: str = Field("", description="Redis password")


class QueueConfig(_Section):
    workers: int = Field(1, ge=0, description="DeliveryQueue actors")
    batch_size: int = Field(100, ge=1, le=1000, description="Queue entries one DeliveryQueue claims at a time")
    poll_interval: float = Field(5.0, gt=0, description="Seconds between queue scans when no wake-up arrives")
    claim_timeout: float = Field(
        900.0, gt=0, description="Seconds after which a claim of a vanished DeliveryQueue is released"
    )
    retry_max_delay: float = Field(14_400.0, gt=0, description="Longest delay between two attempts, seconds")
    delay_warning: float = Field(
        14_400.0, ge=0, description="Seconds before the sender gets a 'delayed' DSN (0: never)"
    )
    connections_per_destination: int = Field(
        4, ge=1, le=64, description="Parallel SMTP connections to one destination domain, per DeliveryQueue"
    )
    round_max_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Message bytes one round may hold in memory (claims stop there)"
    )
    max_retries: int = Field(
        5, ge=0, description="Retries before a message bounces (5 with the defaults: ~5 h; ~30 for RFC 5321's 4-5 days)"
    )
    retry_base: float = Field(
        600.0, gt=0, description="First retry delay, seconds (then doubling up to retry_max_delay)"
    )
    max_lifetime: float = Field(432_000.0, gt=0, description="Seconds before a queued message bounces")
    cleanup_after: float = Field(604_800.0, gt=0, description="Seconds to keep finished queue entries")


class AuthConfig(_Section):
    jwt_secret: str = Field("", description="Secret for API tokens; empty: generated in the state dir")
    access_token_ttl: int = Field(900, gt=0, description="Lifetime of an API access token, seconds")
    refresh_token_ttl: int = Field(2_592_000, gt=0, description="Lifetime of a refresh token, seconds")
    bcrypt_rounds: int = Field(12, ge=4, le=16, description="bcrypt cost factor for new passwords")
    allow_insecure_auth: bool = Field(False, description="Offer AUTH before TLS (dev on loopback only)")
    login_failure_delay: float = Field(1.0, ge=0, le=30, description="Seconds a failed login waits before its answer")
    max_failures_per_ip: int = Field(20, gt=0, description="Failed logins from one IP per window before a lockout")
    max_failures_per_account: int = Field(
        10, gt=0, description="Failed logins for one account per window before a lockout"
    )
    failure_window: int = Field(900, gt=0, description="Window in which failed logins are counted, seconds")
    lockout_seconds: int = Field(900, gt=0, description="How long an IP or account stays locked out, seconds")


class LimitsConfig(_Section):
    max_connections_per_ip: int = Field(50, gt=0, description="Concurrent SMTP sessions from one IP")
    max_connections: int = Field(2000, gt=0, description="Concurrent SMTP sessions in all, per gateway")
    commands_per_minute: int = Field(
        60_000, gt=0, description="SMTP commands one IP may send per minute (bursts of 1/6 of it)"
    )
    connections_per_minute: int = Field(600, gt=0, description="New SMTP connections one IP may open per minute")
    per_user_daily_send: int = Field(1000, gt=0, description="Messages one user may submit per day")
    default_quota: int = Field(1_073_741_824, ge=0, description="Default mailbox quota in bytes (0: none)")
    api_requests_per_minute_ip: int = Field(6000, gt=0, description="API requests one IP may make per minute")
    api_burst_ip: int = Field(1000, gt=0, description="API requests one IP may make in a burst")
    api_requests_per_minute_user: int = Field(3000, gt=0, description="API requests one account may make per minute")
    api_burst_user: int = Field(500, gt=0, description="API requests one account may make in a burst")
    api_logins_per_minute: int = Field(300, gt=0, description="POST /auth/login per IP per minute (burst: a third)")
    max_imap_connections_per_user: int = Field(
        50, gt=0, description="Concurrent logged-in IMAP sessions of one user, per gateway"
    )


class DnsConfig(_Section):
    nameservers: list[str] = Field(
        default_factory=list, description="Resolvers as host or host:port; empty: /etc/resolv.conf"
    )
    timeout: float = Field(5.0, gt=0, description="Seconds a DNS lookup may take in all")


class MailAuthConfig(_Section):
    spf: bool = Field(True, description="Check SPF (RFC 7208) of MAIL FROM and HELO on port 25")
    dkim: bool = Field(True, description="Verify DKIM signatures (RFC 6376) on port 25")
    dmarc: bool = Field(True, description="Evaluate DMARC (RFC 7489) and enforce p=reject / p=quarantine")
    on_temperror: str = Field(
        "accept", description="DNS trouble during the checks: accept (mark temperror) or tempfail (451)"
    )
    authserv_id: str = Field("", description="authserv-id of Authentication-Results; empty: server.hostname")
    trusted_networks: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="Clients (CIDR) whose mail on port 25 skips SPF/DKIM/DMARC (local services)",
    )

    @field_validator("on_temperror")
    @classmethod
    def _temperror_choice(cls, value: str) -> str:
        if value not in {"accept", "tempfail"}:
            raise ValueError("must be accept or tempfail")
        return value


class AntivirusConfig(_Section):
    enabled: bool = Field(False, description="Scan every inbound and submitted message with clamd")
    clamav_socket: str = Field(
        "127.0.0.1:3310", description="clamd address: host:port, or the path of its Unix socket"
    )
    timeout: float = Field(30.0, gt=0, description="Seconds a scan may take")
    on_error: str = Field(
        "tempfail", description="clamd unreachable: tempfail (451 4.7.1) or accept (and mark the message)"
    )

    @field_validator("on_error")
    @classmethod
    def _error_choice(cls, value: str) -> str:
        if value not in {"accept", "tempfail"}:
            raise ValueError("must be accept or tempfail")
        return value


class PluginsConfig(_Section):
    antivirus: AntivirusConfig = AntivirusConfig()


class CorsConfig(_Section):
    allowed_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS")


class RayConfig(_Section):
    address: str = Field("", description="Ray address to attach to ('auto'); empty: start a local Ray")
    shards: int = Field(2, ge=1, le=256, description="Number of MailboxShard actors")
    calls_in_flight: int = Field(
        1, ge=1, le=16, description="Delivery calls a gateway keeps in flight per shard (more: smaller batches)"
    )
    namespace: str = Field("whymail", description="Ray namespace of the actors")


class LoggingConfig(_Section):
    level: str = Field("INFO", description="Log level")
    json_format: bool = Field(True, description="JSON lines (production); false: human-readable")

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return upper


class Config(_Section):
    state_dir: str = Field("", description="Where the server keeps its state; see resolve_state_dir")
    server: ServerConfig = ServerConfig()
    relay: RelayConfig = RelayConfig()
    local_domains: list[str] = Field(default_factory=lambda: ["localhost"], description="Domains served")
    storage: StorageConfig = StorageConfig()
    db: DbConfig = DbConfig()
    redis: RedisConfig = RedisConfig()
    queue: QueueConfig = QueueConfig()
    dns: DnsConfig = DnsConfig()
    mailauth: MailAuthConfig = MailAuthConfig()
    plugins: PluginsConfig = PluginsConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    cors: CorsConfig = CorsConfig()
    ray: RayConfig = RayConfig()
    logging: LoggingConfig = LoggingConfig()

    @field_validator("local_domains")
    @classmethod
    def _lower_domains(cls, value: list[str]) -> list[str]:
        return [d.strip().lower().rstrip(".") for d in value if d.strip()]


# Named environment overrides, as the original WhyMail documented them.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "WHYMAIL_DB_DSN": ("db", "dsn"),
    "DATABASE_URL": ("db", "dsn"),
    "REDIS_ADDR": ("redis", "addr"),
    "WHYMAIL_REDIS_ADDR": ("redis", "addr"),
    "WHYMAIL_HOSTNAME": ("server", "hostname"),
    "WHYMAIL_MAILDIR_ROOT": ("storage", "maildir_root"),
    "WHYMAIL_JWT_SECRET": ("auth", "jwt_secret"),
    "WHYMAIL_RAY_ADDRESS": ("ray", "address"),
    "WHYMAIL_SHARDS": ("ray", "shards"),
}

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Replace `${VAR}` and `${VAR:-default}` with the environment's value (or the default)."""

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ConfigError(f"${{{name}}}: environment variable is not set and has no default")
            return default
        return value

    return _VAR.sub(replace, text)


def _expand_tree(node: Any, env: dict[str, str], path: tuple[str, ...] = ()) -> Any:
    """`expand_vars` on every string value of a parsed YAML tree (keys and other scalars untouched)."""
    if isinstance(node, str):
        try:
            return expand_vars(node, env)
        except ConfigError as exc:
            raise ConfigError(f"{'.'.join(path) or '(top level)'}: {exc}") from None
    if isinstance(node, dict):
        return {key: _expand_tree(value, env, (*path, str(key))) for key, value in node.items()}
    if isinstance(node, list):
        return [_expand_tree(item, env, (*path, str(index))) for index, item in enumerate(node)]
    return node


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _override_value(name: str, value: str) -> Any:
    """A generic override's value: a plain string (pydantic's lax mode turns "25" into an int and
    "true" into a bool where the field wants one), or a YAML list/map when it starts with `[`/`{`."""
    if not value.lstrip().startswith(("[", "{")):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"{name}: invalid YAML list or mapping") from None


def _env_overrides(env: dict[str, str]) -> list[tuple[tuple[str, ...], Any]]:
    found: list[tuple[tuple[str, ...], Any]] = []
    for name, path in ENV_OVERRIDES.items():
        if env.get(name):
            found.append((path, env[name]))
    for name, value in sorted(env.items()):
        if name.startswith("WHYMAIL__"):
            path = tuple(part.lower() for part in name[len("WHYMAIL__") :].split("__") if part)
            if path:
                found.append((path, _override_value(name, value)))
    return found


def _describe(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        problem = "unknown key"
    elif first["type"] == "missing":
        problem = "required key is missing"
    else:
        problem = first["msg"]
        if "input" in first and not isinstance(first["input"], dict | list):
            problem += f" (got {first['input']!r})"
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {key}: {problem}{suffix}"


def load_config(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Load and validate the configuration; raise ConfigError with one clear line on any problem."""
    env = dict(os.environ) if env is None else env
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{source}: file not found") from None
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{source}: invalid YAML{where}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections")
        try:
            data = _expand_tree(loaded, env)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    for key_path, value in _env_overrides(env):
        _set_path(data, key_path, value)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


DEFAULT_STATE_DIR = "~/.local/share/whymail"


def resolve_state_dir(cli_value: str | None, config: Config | None = None, env: dict[str, str] | None = None) -> Path:
    """The state directory: `--state-dir`, else `WHYMAIL_STATE_DIR`, else config, else the default."""
    env = dict(os.environ) if env is None else env
    for candidate in (cli_value, env.get("WHYMAIL_STATE_DIR"), config.state_dir if config else ""):
        if candidate:
            return Path(candidate).expanduser().resolve()
    return Path(DEFAULT_STATE_DIR).expanduser().resolve()


def example_yaml() -> str:
    """`config.example.yaml`: every knob with its default and its description as a comment."""
    lines = [
        "# WhyMail configuration: every key with its default. ${VAR:-default} is expanded from the",
        "# environment; WHYMAIL_DB_DSN, REDIS_ADDR, ... and WHYMAIL__SECTION__KEY override keys.",
    ]

    def emit(model: type[BaseModel], instance: BaseModel, indent: int) -> None:
        pad = "  " * indent
        for name, info in model.model_fields.items():
            value = getattr(instance, name)
            if isinstance(value, BaseModel):
                lines.append(f"{pad}{name}:")
                emit(type(value), value, indent + 1)
                continue
            rendered = yaml.safe_dump({name: value}, default_flow_style=True, width=1000).strip()
            rendered = rendered.removeprefix("{").removesuffix("}")
            comment = f"  # {info.description}" if info.description else ""
            lines.append(f"{pad}{rendered}{comment}")

    emit(Config, Config(), 0)
    return "\n".join(lines) + "\n"
