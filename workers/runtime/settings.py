"""Settings of the fleet, read from the environment with the prefix ``FLEET_``.

``Settings`` holds what the runtime needs (servers, namespace, retries, relay); a service's
own knobs are a ``ServiceSettings`` section in its package (``workers/<service>/settings.py``),
read from the same environment, so ``FLEET_BLOCKED_COUNTRIES`` reaches shipping alone.

The defaults point at RabbitMQ and PostgreSQL on localhost, so a developer with both
running needs no configuration at all. A service's database may be on MariaDB instead
(``FLEET_ENGINES='{"payment": "mariadb"}'``): its URL is then derived from
``mariadb_admin_url``, and its breaker still appends to the operations database on PostgreSQL.

Each database role has a secret of its own (``workers.runtime.role_secrets``): the settings
say where it is (``db_urls``, ``db_secrets``, ``secrets_file``), and ``secret_for`` reads a
role's own, from the environment or its entry of the secrets file, only when asked.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from db.engine import ENGINES, MARIADB, POSTGRESQL, engine_of
from workers.runtime import role_secrets
from workers.runtime.durations import parse_duration

_NAMESPACE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # Other nodes of the same broker cluster, tried in turn when amqp_url cannot be reached
    # or is lost (workers.runtime.connections): FLEET_AMQP_URLS="amqp://b/,amqp://c/".
    amqp_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A superuser connection used only by `fleet db init` to create roles and databases.
    pg_admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    # Each service's database engine, by service: {"payment": "mariadb"}; a service not
    # named here is on PostgreSQL (unless its db_urls entry says otherwise).
    engines: dict[str, str] = Field(default_factory=dict)
    # An admin connection to MariaDB, used only by `fleet db init` and teardown for the
    # services on MariaDB (their databases and users).
    mariadb_admin_url: str = "mysql://root@127.0.0.1:3306/"
    # Database URLs by role key (a service, "order_view_reader", "ops"); a role missing here
    # gets one derived from pg_admin_url, with its own secret.
    db_urls: dict[str, str] = Field(default_factory=dict, repr=False)
    # Secrets the operator gives, by the same keys: {"payment": "...", "ops": "..."}. A role
    # given none here nor in its db_urls entry has the one `fleet db init` generated and
    # keeps in secrets_file (workers.runtime.role_secrets).
    db_secrets: dict[str, str] = Field(default_factory=dict, repr=False)
    # Where `fleet db init` keeps the secrets it generates (JSON, mode 0600); unset:
    # $XDG_CONFIG_HOME/fleet/<namespace>.secrets.json, else ~/.config/fleet/....
    secrets_file: Path | None = None
    # No longer read (every role has a secret of its own), and refused when set: whoever set
    # it would believe every role has that password.
    db_password: str | None = Field(default=None, repr=False)
    namespace: str = "fleet"

    # Delayed retries: one TTL queue per delay, in milliseconds; attempt n waits delays[n-1]
    # (the last delay repeats). After max_attempts the message goes to the dead-letter queue.
    retry_delays_ms: list[int] = Field(default_factory=lambda: [1_000, 5_000, 30_000])
    max_attempts: int = 5
    # Deliveries of one message (crashes before ack included) before the broker dead-letters it.
    delivery_limit: int = 10
    prefetch: int = 20
    # Deliveries of one queue that share a transaction: up to batch_size, or what arrived
    # within batch_wait_ms of the first. 1: a transaction per delivery.
    batch_size: int = Field(default=10, ge=1)
    batch_wait_ms: float = Field(default=2.0, ge=0)
    # Batches of one queue processed at once (batches of one order still go one after the
    # other, and settle in delivery order): their round trips to the database overlap.
    batches_in_flight: int = Field(default=2, ge=1)
    # The circuit breaker (workers.runtime.breaker): after breaker_failures deliveries in a
    # row failed because the database or broker could not be reached (and a probe agrees),
    # the worker stops consuming the service's queues and probes every
    # breaker_probe_seconds; once the probe passes, it takes one delivery at a time until
    # breaker_resume_successes have been handled, then goes at full speed. Off: such
    # failures take the retry and dead-letter paths as any other transient one.
    breaker_enabled: bool = True
    breaker_failures: int = Field(default=5, ge=1)
    # At most a third of a trip marker's lifetime (control.TRIP_MARKER_LIFETIME_SECONDS).
    breaker_probe_seconds: float = Field(default=5.0, gt=0, le=20)
    breaker_resume_successes: int = Field(default=5, ge=1)
    # How a worker consumes its handler queues: straight through aio-pika, or through
    # FastStream subscribers (workers.runtime.faststream_subscription); the same batches
    # and acks either way.
    consumer: Literal["aio-pika", "faststream"] = "aio-pika"
    # A worker's database connections: this many pooled, as many again in bursts. Handlers
    # beyond that wait for one (back-pressure), so a fleet stays under max_connections.
    db_pool_size: int = 4
    # The event loop of workers and relays: uvloop costs less CPU per message (see README,
    # Performance); asyncio where uvloop is not installed (Windows) or to compare.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Metrics: `fleet up` gives its workers ports from metrics_port upwards; gauges read from
    # the database and the broker are refreshed every metrics_interval seconds.
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    metrics_interval: float = Field(default=5.0, gt=0)

    # Archived dead letters older than this are deleted (``fleet dlq archive``): 14d, 12h...
    archive_retention: timedelta = timedelta(days=14)
    # The web console's actions need this token (``name:secret``, or a bare secret whose
    # name is "console"); unset, the console is read-only.
    console_token: str | None = None

    relay_batch_size: int = 500
    relay_poll_interval: float = 5.0
    relay_lock_retry: float = 1.0
    outbox_retention_seconds: float = 3_600.0
    inbox_retention_seconds: float = 7 * 24 * 3_600.0
    housekeeping_interval: float = 60.0

    # Fault injection for tests only: the relay sleeps this long between publishing a batch
    # and marking it published, so a test can kill it in that window.
    relay_fault_pause_after_publish: float = 0.0

    @field_validator("namespace")
    @classmethod
    def _valid_namespace(cls, value: str) -> str:
        if not _NAMESPACE.match(value):
            raise ValueError("namespace must match [a-z][a-z0-9_]{0,30}")
        return value

    @field_validator("engines")
    @classmethod
    def _known_engines(cls, value: dict[str, str]) -> dict[str, str]:
        # Its keys are checked against the catalog where databases are made
        # (workers.operations.namespace): the catalog is not the settings' to import.
        for service, engine in value.items():
            if engine not in ENGINES:
                raise ValueError(
                    f"unknown engine {engine!r} for {service}: must be one of {', '.join(ENGINES)}"
                )
        return value

    @field_validator("db_password")
    @classmethod
    def _no_shared_password(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                "FLEET_DB_PASSWORD is no longer read: every role has a secret of its own,"
                " given in FLEET_DB_SECRETS or FLEET_DB_URLS or generated by 'fleet db init'"
                " (README, Secrets); unset it"
            )
        return value

    @field_validator("archive_retention", mode="before")
    @classmethod
    def _readable_duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("retry_delays_ms")
    @classmethod
    def _valid_delays(cls, value: list[int]) -> list[int]:
        if not value or any(delay <= 0 for delay in value):
            raise ValueError("retry_delays_ms needs at least one positive delay")
        return value

    @field_validator("amqp_urls", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """Commas as people write them, or a JSON list as the tests' processes get it."""
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [url.strip() for url in value.split(",") if url.strip()]
        return value

    @property
    def broker_urls(self) -> list[str]:
        """Every address of the broker, amqp_url first: what connections try in turn."""
        return list(dict.fromkeys([self.amqp_url, *self.amqp_urls]))

    def engine(self, service: str) -> str:
        """The engine of ``service``'s database: its ``db_urls`` entry's scheme says it if
        there is one, else ``engines`` (PostgreSQL unless named there)."""
        if service in self.db_urls:
            return engine_of(self.db_urls[service])
        return self.engines.get(service, POSTGRESQL)

    def database_name(self, service: str) -> str:
        """The database and the role of a service carry the same namespaced name."""
        return f"{self.namespace}_{service}"

    @property
    def secrets_path(self) -> Path:
        """The file where ``fleet db init`` keeps the secrets it generates for the
        namespace's roles."""
        if self.secrets_file is not None:
            return self.secrets_file.expanduser()
        return role_secrets.default_path(self.namespace)

    def given_secret(self, key: str) -> str | None:
        """The secret the operator gave the role ``<namespace>_<key>``: the password of its
        ``db_urls`` entry, else its ``db_secrets`` entry; None if neither has one."""
        url = self.db_urls.get(key)
        password = urlsplit(url).password if url else None
        if password:
            return unquote(password)
        return self.db_secrets.get(key)

    def secret_for(self, key: str) -> str:
        """The password of the role ``<namespace>_<key>`` (a service, ``<service>_reader``,
        ``ops``): the one given, else the one kept in ``secrets_path``, read now and that
        entry alone. Raises ``role_secrets.SecretsError`` when it has none or the file is
        not private."""
        given = self.given_secret(key)
        if given is not None:
            return given
        return role_secrets.read(self.secrets_path, self.database_name(key))

    def database_url(self, service: str) -> str:
        """How ``service`` connects to its database, as its own role with its own secret:
        its ``db_urls`` entry as it stands (with its ``db_secrets`` entry put in if the URL
        has no password), else derived from ``pg_admin_url`` (``mariadb_admin_url`` for a
        service on MariaDB). No other role's secret is read."""
        if service in self.db_urls:
            return self._with_given_secret(service, self.db_urls[service])
        return self._url_as(service, self._location(service))

    def reader_url(self, service: str) -> str:
        """How a read-only role of a service's database connects (the HTTP API reads the view
        so): ``FLEET_DB_URLS["<service>_reader"]``, else the service's own server and
        database as the role ``<namespace>_<service>_reader`` with that role's own secret
        (the service's secret is not read)."""
        reader = f"{service}_reader"
        if reader in self.db_urls:
            return self._with_given_secret(reader, self.db_urls[reader])
        return self._url_as(reader, self._location(service))

    def _location(self, service: str) -> SplitResult:
        """Where ``service``'s database is (server, database, options), from its URL or the
        admin's; the user and password in it are not to be used."""
        if service in self.db_urls:
            return urlsplit(self.db_urls[service])
        on_mariadb = self.engine(service) == MARIADB
        admin = urlsplit(self.mariadb_admin_url if on_mariadb else self.pg_admin_url)
        host = admin.hostname or "127.0.0.1"
        port = f":{admin.port}" if admin.port else ""
        name = self.database_name(service)
        return SplitResult(admin.scheme, f"{host}{port}", f"/{name}", admin.query, "")

    def audit_url(self, service: str) -> str:
        """How ``service``'s worker appends to the audit log of the operations database
        (what its breaker did): as the service's own role with its own secret, which may
        append there and do nothing else. The operations database is on PostgreSQL whatever
        the service's engine: a service on MariaDB has a PostgreSQL role of the same name and
        secret for this alone (a MariaDB URL's options mean nothing to PostgreSQL)."""
        own = urlsplit(self.database_url(service))
        ops = self._location("ops")
        userinfo = own.netloc.rpartition("@")[0]
        where = ops.netloc.rpartition("@")[2]
        query = own.query if self.engine(service) == POSTGRESQL else ops.query
        return urlunsplit((ops.scheme, f"{userinfo}@{where}", ops.path, query, ""))

    def _url_as(self, key: str, location: SplitResult) -> str:
        """``location`` as the role ``<namespace>_<key>`` with its secret."""
        where = location.netloc.rpartition("@")[2]
        secret = quote(self.secret_for(key), safe="")
        netloc = f"{self.database_name(key)}:{secret}@{where}"
        return urlunsplit((location.scheme, netloc, location.path, location.query, ""))

    def _with_given_secret(self, key: str, url: str) -> str:
        """A URL of ``db_urls`` as it stands, unless it has no password and ``db_secrets``
        has one for the role: the URL then says where, the secret how."""
        parts = urlsplit(url)
        secret = self.db_secrets.get(key)
        if parts.password or secret is None:  # as given_secret reads it: "" is no password
            return url
        login, _, where = parts.netloc.rpartition("@")
        user = login.partition(":")[0] or self.database_name(key)
        netloc = f"{user}:{quote(secret, safe='')}@{where}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def retry_delay_ms(self, attempt: int) -> int:
        """The delay before retry number ``attempt`` (1-based)."""
        return self.retry_delays_ms[min(attempt, len(self.retry_delays_ms)) - 1]


class ServiceSettings(BaseSettings):
    """A service's own section of the settings: same prefix, same environment.

    A service declares its section (``Service("order", settings=OrderSettings)``); the
    worker reads it from the environment, or is given one (tests), and passes it to the
    handlers and background tasks that ask for it.
    """

    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore")


@cache
def get_settings() -> Settings:
    """The settings of this process's environment (entry points read them once)."""
    return Settings()
