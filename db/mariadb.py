"""The store port on MariaDB 10.11 (asyncmy), and what differs from PostgreSQL.

- Order locks: MariaDB has no transaction-scoped named lock, so a batch upserts one row per
  order in ``order_locks``, keys sorted (two batches never deadlock); InnoDB holds those row
  locks until the transaction ends.
- The inbox: ``INSERT IGNORE ... RETURNING`` returns only the rows inserted. ``IGNORE``
  would also turn a too-long value into a truncated one (two ids alike in their first 255
  characters would then be one): longer ids are refused before the statement.
- No LISTEN/NOTIFY: a commit that appended to the outbox wakes the relays of this process
  (``_wakeups``); the relay also polls, which is how a relay in another process hears.
- The relay's leadership is ``GET_LOCK`` on its own connection. A named lock is a session
  lock that a killed or culled connection drops silently, so the relay checks before each
  drain that the server still names its connection as the holder (``IS_USED_LOCK``); and
  its claims lock their rows (``FOR UPDATE SKIP LOCKED``) until they are marked, so two
  relays that both believe they lead for a moment never publish the same rows at once.
- Sessions run READ COMMITTED (InnoDB's default REPEATABLE READ takes gap locks), strict,
  in UTC; ``DATETIME(6)`` values are naive UTC on the wire and aware in Python.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

import asyncmy
from asyncmy.cursors import DictCursor

from contracts import OutgoingMessage
from db.engine import ACQUIRE_TIMEOUT, MARIADB
from db.postgres import wait_any
from db.store import RELAY_LOCK_KEY, Backlog, Claimed, Emitted, RelaySession, Store

# Error numbers (``error.args[0]``) that mean "try again": a deadlock chose this transaction,
# or a row lock was not granted in time.
TRANSIENT_ERRNOS = frozenset({1205, 1213})
# The server cannot be reached or let the connection go: refused (2002, 2003), gone or lost
# (2006, 2013), too many connections (1040), shutting down (1053), connection killed (1927),
# idle connection killed (4031).
UNREACHABLE_ERRNOS = frozenset({1040, 1053, 1927, 2002, 2003, 2006, 2013, 4031})

# Every session: strict (a bad value is an error, not a warning), READ COMMITTED, UTC.
_SESSION = (
    "SET sql_mode = 'STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION',"
    " tx_isolation = 'READ-COMMITTED', time_zone = '+00:00'"
)

# The longest id the inbox, the outbox and the order locks keep (VARCHAR(255)).
MAX_ID_LENGTH = 255


def errno_of(error: BaseException) -> int | None:
    """MariaDB's error number of ``error`` or of the error it was raised from."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, asyncmy.errors.MySQLError) and current.args:
            number = current.args[0]
            if isinstance(number, int):
                return number
        current = current.__cause__
    return None


def judged(error: BaseException) -> bool:
    """Whether ``error`` is (or was raised from) asyncmy's, so the two below judge it."""
    return isinstance(error, asyncmy.errors.MySQLError) or errno_of(error) is not None


def out_of_reach(error: BaseException) -> bool:
    """The server could not be reached or let the connection go (asyncmy says
    InterfaceError for a connection it already knows is closed)."""
    return isinstance(error, asyncmy.errors.InterfaceError) or errno_of(error) in UNREACHABLE_ERRNOS


def worth_retrying(error: BaseException) -> bool:
    """Out of reach, a deadlock victim, or a lock wait that timed out."""
    return out_of_reach(error) or errno_of(error) in TRANSIENT_ERRNOS


@dataclass(frozen=True)
class Location:
    """Where a MariaDB database is and who connects, from a ``mysql://`` URL."""

    host: str
    port: int
    user: str
    password: str
    database: str
    unix_socket: str | None = None

    @classmethod
    def of(cls, url: str) -> Location:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            database=unquote(parts.path.lstrip("/")),
            unix_socket=query.get("unix_socket", [None])[0],
        )

    def connect_arguments(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database or None,
            "unix_socket": self.unix_socket,
            "autocommit": True,
            "init_command": _SESSION,
        }

    @property
    def relay_lock(self) -> str:
        """Named locks are the server's, not a database's: the database names this one."""
        return f"{self.database}.{RELAY_LOCK_KEY}"


class _QuietCursor(DictCursor):
    """Rows as dicts, and no SHOW WARNINGS round trip after a statement with warnings:
    ``INSERT IGNORE``'s duplicates are expected, and strict mode makes real faults errors."""

    async def _show_warnings(self, conn: Any) -> None:
        return None


class MariaConnection:
    """An asyncmy connection with the few calls the fleet's statements need (``%s``
    parameters, rows as dicts)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.appended = False  # this transaction wrote to the outbox: wake the relay

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        async with self.raw.cursor(_QuietCursor) as cursor:
            await cursor.execute(sql, tuple(args))
            return list(await cursor.fetchall())

    async def fetchrow(self, sql: str, args: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = await self.fetch(sql, args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, args: Sequence[Any] = ()) -> Any:
        row = await self.fetchrow(sql, args)
        return None if row is None else next(iter(row.values()))

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        async with self.raw.cursor(_QuietCursor) as cursor:
            count: int = await cursor.execute(sql, tuple(args))
            return count

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """One multi-row statement for an ``INSERT ... VALUES (%s, ...)``."""
        async with self.raw.cursor(_QuietCursor) as cursor:
            count: int = await cursor.executemany(sql, [tuple(row) for row in rows])
            return count


def utc(value: datetime | None) -> datetime | None:
    """A Python datetime as a DATETIME(6) column keeps it: naive, in UTC."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def aware(value: datetime) -> datetime:
    """A DATETIME(6) read back (naive, UTC) as an aware datetime."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def placeholders(count: int, width: int = 1) -> str:
    """``(%s), (%s)`` for ``count`` rows of ``width`` values; ``%s, %s`` when width is 0."""
    if width == 0:
        return ", ".join(["%s"] * count)
    row = "(" + ", ".join(["%s"] * width) + ")"
    return ", ".join([row] * count)


def check_ids(kind: str, ids: Iterable[str]) -> None:
    for value in ids:
        if len(value) > MAX_ID_LENGTH:
            raise ValueError(
                f"{kind} {value[:40]}... is {len(value)} characters long; MariaDB keeps at"
                f" most {MAX_ID_LENGTH}"
            )


# A commit that appended to the outbox wakes the relay of its database in this process.
_wakeups: dict[tuple[str, int, str], asyncio.Event] = {}


def wakeup(location: Location) -> asyncio.Event:
    return _wakeups.setdefault((location.host, location.port, location.database), asyncio.Event())


_APPEND = (
    "INSERT INTO outbox (message_id, exchange, routing_key, type, version, correlation_id,"
    " causation_id, producer, occurred_at, headers, body)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_BACKLOG = (
    "SELECT count(*) AS n_rows,"
    " TIMESTAMPDIFF(MICROSECOND, min(occurred_at), NOW(6)) / 1e6 AS oldest"
    " FROM outbox WHERE published_at IS NULL"
)
_EMITTED_FOR = (
    "SELECT occurred_at, producer, type, published_at IS NOT NULL AS published"
    " FROM outbox WHERE correlation_id = %s ORDER BY id"
)


class MariaStore(Store):
    engine: ClassVar[str] = MARIADB

    def __init__(self, location: Location, pool: Any) -> None:
        self.location = location
        self.pool = pool
        self._wakeup = wakeup(location)

    @classmethod
    async def open(cls, url: str, *, size: int, connect_now: bool = True) -> MariaStore:
        location = Location.of(url)
        pool = await asyncmy.create_pool(
            minsize=size if connect_now else 0,
            maxsize=2 * size,
            pool_recycle=-1,
            **location.connect_arguments(),
        )
        return cls(location, pool)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[MariaConnection]:
        raw = await asyncio.wait_for(self.pool.acquire(), timeout=ACQUIRE_TIMEOUT)
        try:
            yield MariaConnection(raw)
        finally:
            self.pool.release(raw)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MariaConnection]:
        async with self.connection() as conn:
            await conn.raw.begin()
            try:
                yield conn
            except BaseException:
                # A connection that cannot roll back is closed by the pool on release
                # (it still has a transaction open).
                try:
                    await conn.raw.rollback()
                except Exception:
                    conn.raw.close()
                raise
            await conn.raw.commit()
        if conn.appended:
            self._wakeup.set()

    async def record_locked(
        self,
        conn: MariaConnection,
        consumer: str,
        messages: dict[str, str],
        keys: Collection[str],
    ) -> set[str]:
        check_ids("message id", messages)
        if keys:
            await self._lock(conn, sorted(set(keys)))
        if not messages:
            return set()
        rows = await conn.fetch(
            f"INSERT IGNORE INTO inbox (consumer, message_id, type)"
            f" VALUES {placeholders(len(messages), 3)} RETURNING message_id",
            [value for item in messages.items() for value in (consumer, *item)],
        )
        return {row["message_id"] for row in rows}

    async def lock_order(self, conn: MariaConnection, key: str) -> None:
        await self._lock(conn, [key])

    async def _lock(self, conn: MariaConnection, keys: list[str]) -> None:
        check_ids("order key", keys)
        await conn.execute(
            f"INSERT INTO order_locks (order_key) VALUES {placeholders(len(keys))}"
            " ON DUPLICATE KEY UPDATE locked_at = NOW(6)",
            keys,
        )

    async def append(self, conn: MariaConnection, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        check_ids("message id", (m.message_id or "" for m in messages))
        await conn.executemany(
            _APPEND,
            [
                (
                    m.message_id,
                    m.exchange,
                    m.routing_key,
                    m.type,
                    m.version,
                    m.correlation_id,
                    m.causation_id,
                    m.app_id,
                    utc(m.timestamp),
                    json.dumps(dict(m.headers)),
                    m.body,
                )
                for m in messages
            ],
        )
        conn.appended = True

    async def backlog(self, conn: MariaConnection) -> Backlog:
        row = await conn.fetchrow(_BACKLOG)
        assert row is not None
        oldest = row["oldest"]
        return Backlog(int(row["n_rows"]), None if oldest is None else max(0.0, float(oldest)))

    async def inbox_rows(self, conn: MariaConnection) -> int:
        return int(await conn.fetchval("SELECT count(*) FROM inbox"))

    async def inbox_holds(
        self, conn: MariaConnection, consumer: str, message_ids: Sequence[str]
    ) -> set[str]:
        if not message_ids:
            return set()
        rows = await conn.fetch(
            "SELECT message_id FROM inbox WHERE consumer = %s"
            f" AND message_id IN ({placeholders(len(message_ids), 0)})",
            [consumer, *message_ids],
        )
        return {row["message_id"] for row in rows}

    async def relay_active(self, conn: MariaConnection) -> bool:
        holder = await conn.fetchval("SELECT IS_USED_LOCK(%s)", [self.location.relay_lock])
        return holder is not None

    async def emitted_for(self, conn: MariaConnection, correlation_id: str) -> list[Emitted]:
        rows = await conn.fetch(_EMITTED_FOR, [correlation_id])
        return [
            Emitted(aware(row["occurred_at"]), row["producer"], row["type"], bool(row["published"]))
            for row in rows
        ]

    async def close(self) -> None:
        self.pool.close()
        await self.pool.wait_closed()


_CLAIM = (
    "SELECT id, message_id, exchange, routing_key, type, correlation_id, producer,"
    " occurred_at, headers, body FROM outbox WHERE published_at IS NULL"
    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
)
# Housekeeping deletes in slices: one long DELETE would hold its locks across the table.
_HOUSEKEEPING_SLICE = 5_000


class MariaRelaySession(RelaySession):
    pipelined: ClassVar[bool] = False

    def __init__(self, location: Location, conn: MariaConnection) -> None:
        self.location = location
        self.conn = conn
        self._woken = wakeup(location)
        self._in_transaction = False

    @classmethod
    async def connect(cls, url: str) -> MariaRelaySession:
        return await cls.open(Location.of(url))

    @classmethod
    async def open(cls, location: Location) -> MariaRelaySession:
        raw = await asyncmy.connect(**location.connect_arguments())
        return cls(location, MariaConnection(raw))

    async def try_lead(self) -> bool:
        return bool(await self.conn.fetchval("SELECT GET_LOCK(%s, 0)", [self.location.relay_lock]))

    async def still_leading(self) -> bool:
        # A round trip on the lock's own connection: a killed connection fails it, and a
        # connection that is not the holder any more (a lock lost) answers 0.
        holder = await self.conn.fetchval(
            "SELECT IS_USED_LOCK(%s) = CONNECTION_ID()", [self.location.relay_lock]
        )
        return bool(holder)

    async def claim(self, limit: int, in_flight: Sequence[int]) -> list[Claimed]:
        await self.conn.raw.begin()
        self._in_transaction = True
        rows = await self.conn.fetch(_CLAIM, [limit])
        if not rows:
            await self._end(commit=True)
        return [Claimed(row["id"], _outgoing(row)) for row in rows]

    async def mark_published(self, ids: Sequence[int]) -> None:
        await self.conn.execute(
            f"UPDATE outbox SET published_at = NOW(6) WHERE id IN ({placeholders(len(ids), 0)})",
            list(ids),
        )
        await self._end(commit=True)

    async def release(self) -> None:
        if self._in_transaction:
            await self._end(commit=False)

    async def _end(self, *, commit: bool) -> None:
        self._in_transaction = False
        await (self.conn.raw.commit() if commit else self.conn.raw.rollback())

    async def housekeeping(self, outbox_seconds: float, inbox_seconds: float) -> None:
        for table, column, seconds in (
            ("outbox", "published_at", outbox_seconds),
            ("inbox", "received_at", inbox_seconds),
            # A lock row is needed only while a transaction holds it.
            ("order_locks", "locked_at", outbox_seconds),
        ):
            statement = (
                f"DELETE FROM {table} WHERE {column} < NOW(6) - INTERVAL %s SECOND"
                f" LIMIT {_HOUSEKEEPING_SLICE}"
            )
            while await self.conn.execute(statement, [seconds]) == _HOUSEKEEPING_SLICE:
                pass

    async def wait_for_work(self, stop: asyncio.Event, seconds: float) -> None:
        await wait_any(stop, self._woken, seconds)
        self._woken.clear()

    async def close(self) -> None:
        self.conn.raw.close()


def _outgoing(row: dict[str, Any]) -> OutgoingMessage:
    return OutgoingMessage(
        exchange=row["exchange"],
        routing_key=row["routing_key"],
        body=bytes(row["body"]),
        message_id=row["message_id"],
        type=row["type"],
        correlation_id=row["correlation_id"],
        timestamp=aware(row["occurred_at"]),
        app_id=row["producer"],
        headers=json.loads(row["headers"]) if isinstance(row["headers"], str | bytes) else {},
    )


async def kill_sessions(admin_url: str, user: str) -> int:
    """``KILL CONNECTION`` every session of ``user`` (as the admin), as a server restart
    looks to its clients; how many."""
    conn = await asyncmy.connect(**Location.of(admin_url).connect_arguments())
    try:
        admin = MariaConnection(conn)
        rows = await admin.fetch(
            "SELECT id FROM information_schema.PROCESSLIST"
            " WHERE user = %s AND id <> CONNECTION_ID()",
            [user],
        )
        killed = 0
        for row in rows:
            try:
                await admin.execute("KILL CONNECTION %s", [row["id"]])
                killed += 1
            except asyncmy.errors.OperationalError as error:
                if errno_of(error) != 1094:  # unknown thread: it ended meanwhile
                    raise
        return killed
    finally:
        conn.close()


async def probe(url: str, timeout: float) -> None:
    arguments = {**Location.of(url).connect_arguments(), "connect_timeout": timeout}
    conn = await asyncio.wait_for(asyncmy.connect(**arguments), timeout=timeout)
    try:
        await asyncio.wait_for(MariaConnection(conn).fetchval("SELECT 1"), timeout=timeout)
    finally:
        conn.close()
