"""The PostgreSQL store's connections: the URL with its defaults, the migrations, the pool, and
running a step on a pooled connection, retried while the server cannot be reached."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from tidings.backends.postgres import _sql
from tidings.backends.postgres._retry import MAX_PAUSE, Retry
from tidings.errors import ConfigurationError, StoreClosed, StoreError, StoreUnavailable

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]

#: First key of the migration lock (the second is the schema's hash).
_MIGRATE_LOCK = 7_461_002
#: Connection defaults, unless the URL says otherwise: a dead server or network is noticed within
#: about a minute instead of the operating system's two hours; no JIT compilation, which costs
#: a short statement hundreds of milliseconds whenever the planner's estimates run high.
_CONNECTION_DEFAULTS = {
    "application_name": "tidings",
    "options": "-c jit=off",
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}
#: How long the pool keeps trying to replace a lost connection by itself (psycopg_pool's backoff
#: doubles from 1 s, so its default of 5 minutes means tries 32 s apart and more). Past this,
#: the next request for a connection tries again at once: ``Retry`` paces those requests, so a
#: server that comes back is used again within about a second.
_POOL_RECONNECT = MAX_PAUSE


def _signed32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


class Database:
    """One schema of one PostgreSQL server, reached through a pool of ``min_connections`` to
    ``max_connections`` connections; ``retry_timeout`` (an attribute, which may be changed) is
    how long an operation keeps retrying while the server is unreachable."""

    def __init__(
        self,
        url: str,
        schema: str,
        *,
        min_connections: int,
        max_connections: int,
        retry_timeout: float,
    ) -> None:
        self.schema = _sql.validate_schema(schema)
        if not 1 <= min_connections <= max_connections:
            raise ConfigurationError("PostgresStore: 1 <= min_connections <= max_connections")
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(f"not a PostgreSQL connection URL: {exc}") from exc
        for option, value in _CONNECTION_DEFAULTS.items():
            params.setdefault(option, value)
        params["client_encoding"] = "UTF8"  # stored JSON is UTF-8, and goes in as it is
        self.conninfo = make_conninfo("", **params)
        self.where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
        self._min = min_connections
        self._max = max_connections
        self.retry_timeout = float(retry_timeout)
        #: the named statements of ``queries.sql``, bound to the schema
        self.q = _sql.queries(schema)
        self._migrate_lock = (_MIGRATE_LOCK, _signed32(zlib.crc32(schema.encode())))
        self.pool: AsyncConnectionPool[Conn] | None = None

    async def open(self) -> AsyncConnectionPool[Conn]:
        """Apply the migrations, then open the pool."""
        await self._connect_and_migrate()
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.conninfo,
            min_size=self._min,
            max_size=self._max,
            kwargs={"autocommit": True},
            open=False,
            timeout=self.retry_timeout,
            reconnect_timeout=_POOL_RECONNECT,
            name=f"tidings-{self.schema}",
        )
        try:
            await pool.open(wait=True, timeout=self.retry_timeout)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, psycopg.Error):
                raise StoreUnavailable(
                    f"cannot connect to PostgreSQL at {self.where}: {exc}"
                ) from exc
            raise
        self.pool = pool
        return pool

    async def close(self) -> None:
        """Close the pool."""
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.close()

    async def _connect_and_migrate(self) -> None:
        """Connect once, before the pool (which would retry quietly for ``retry_timeout``): a
        server that cannot be reached fails the opening within the connect timeout, in one
        line naming it."""
        try:
            conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        except psycopg.Error as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {self.where}: {reason}"
            ) from exc
        try:
            await self._migrate(conn)
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL refused to apply migrations: {exc}") from exc
        finally:
            await conn.close()

    async def _migrate(self, conn: Conn) -> None:
        q = self.q
        async with conn.transaction():
            # Under a lock of the schema's own, so that processes opening it at once apply each
            # migration once (CREATE SCHEMA IF NOT EXISTS alone is not safe against a race).
            await conn.execute(q["migrate_lock"], self._migrate_lock)
            await conn.execute(q["create_schema"])
            await conn.execute(q["create_migrations"])
            cur = await conn.execute(q["applied_migrations"])
            applied = {row[0] for row in await cur.fetchall()}
            for version, name, script in _sql.migrations(self.schema):
                if version not in applied:
                    await conn.execute(script, prepare=False)
                    await conn.execute(q["record_migration"], (version, name))

    def retrying(self, what: str) -> Retry:
        """The pacing of one operation's tries while the server cannot be reached."""
        return Retry(self.where, what, self.retry_timeout, self._probe)

    async def _probe(self, within: float) -> BaseException | None:
        """Why the server does not accept a connection within ``within`` seconds, or None."""
        try:
            async with asyncio.timeout(within):
                conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
            await conn.close()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            return exc
        return None

    async def run(self, what: str, step: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``step`` on a pooled connection; retry it on another while the server cannot be
        reached (every caller's step is safe to run again), translate driver errors."""
        retry = self.retrying(what)
        while True:
            pool = self.pool
            if pool is None:
                raise StoreClosed()
            try:
                async with pool.connection(timeout=retry.connection_wait()) as conn:
                    return await step(conn)
            except psycopg.OperationalError as exc:
                if self.pool is None:
                    raise StoreClosed() from exc
                await retry.pause(exc)
            except psycopg.Error as exc:
                raise StoreError(f"PostgreSQL refused to {what}: {exc}") from exc

    @staticmethod
    def array(values: Iterable[Any]) -> list[Any]:
        """``values`` as a list parameter (an array)."""
        return list(values)

    async def scan(
        self, name: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """The rows of a named query that reads the whole log: the server does the work, and the
        event loop waits for it as for any other read."""
        return await self.rows(name, params)

    async def rows(
        self, name: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """The rows of the named query."""
        query = self.q[name]

        async def fetch(conn: Conn) -> list[tuple[Any, ...]]:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

        return await self.run(f"read ({name})", fetch)
