"""What the PostgreSQL store does beyond the contract suite: its URL, a transaction refused alone
within a group, migrations applied once by concurrent openers, connection loss (before a commit and
while its acknowledgement is in flight: never applied twice), and LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import tidings.backends.postgres
from tidings.backends import open_store
from tidings.errors import (
    ConfigurationError,
    StoreClosed,
    StoreError,
    StoreUnavailable,
    WrongExpectedVersion,
)
from tidings.records import AppendOp, AuditEntry, CheckpointMove, Held, Transaction
from tidings.store import Store
from tidings.testing.contract import new_message

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from tidings.backends.postgres import PostgresStore
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("PostgreSQL tests need psycopg: pip install -e '.[dev]'", allow_module_level=True)


def with_options(url: str, **options: Any) -> str:
    return make_conninfo(url, **options)


@pytest.fixture
async def store(postgres_url: str, pg_schema: str) -> AsyncIterator[PostgresStore]:
    # Its sessions carry the schema's name, so that a test can find them on the server.
    made = PostgresStore(with_options(postgres_url, application_name=pg_schema), schema=pg_schema)
    await made.open()
    yield made
    await made.close()


async def sql(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall() if cur.description else []


@contextlib.asynccontextmanager
async def append_lock_held(url: str, schema: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """Another session holding the append lock (the head row) until the block ends."""
    async with await psycopg.AsyncConnection.connect(url) as other:
        await other.execute(f'SELECT top FROM "{schema}".head FOR UPDATE')
        yield other


async def waiting_on_a_lock(url: str, application_name: str) -> int:
    """The server session of ``application_name`` that waits on a lock, once there is one (fail
    after 10 s)."""
    deadline = time.monotonic() + 10
    query = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'"
    )
    while not (found := await sql(url, query, application_name)):
        assert time.monotonic() < deadline, f"no session of {application_name} waited on a lock"
        await asyncio.sleep(0.01)  # pace the polling; the condition is what we wait for
    return int(found[0][0])


class Proxy:
    """A TCP proxy in front of the server that cuts a connection at a chosen point of what the
    client sends: how a test loses a connection exactly there, as a network would."""

    def __init__(self, url: str) -> None:
        params = conninfo_to_dict(url)
        self._server = (str(params.get("host", "127.0.0.1")), int(params.get("port", 5432)))
        self._url = url
        self._marker: bytes | None = None
        self._after = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._listening: asyncio.Server | None = None
        #: how many connections were cut
        self.cuts = 0

    async def __aenter__(self) -> Proxy:
        self._listening = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._listening is not None
        self._listening.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def url(self, **options: Any) -> str:
        assert self._listening is not None
        port = self._listening.sockets[0].getsockname()[1]
        return with_options(self._url, host="127.0.0.1", port=port, **options)

    def cut(self, marker: bytes, *, after: bool) -> None:
        """Cut the next connection whose client sends ``marker``: before that reaches the server,
        or after (the server gets it and acts on it, but no reply reaches the client)."""
        self._marker, self._after = marker, after

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        server_r, server_w = await asyncio.open_connection(*self._server)
        cut = False

        async def replies() -> None:
            while data := await server_r.read(65536):
                if not cut:  # once cut, the server's replies are read and dropped
                    client_w.write(data)
                    await client_w.drain()

        replying = asyncio.create_task(replies())
        try:
            while data := await client_r.read(65536):
                if self._marker is not None and self._marker in data:
                    self._marker, cut = None, True
                    self.cuts += 1
                    if self._after:
                        server_w.write(data)
                        await server_w.drain()
                    else:
                        server_w.close()
                    client_w.close()
                    break
                server_w.write(data)
                await server_w.drain()
            await replying  # until the server ends the session (or the proxy stops)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            replying.cancel()
            client_w.close()
            server_w.close()
            self._tasks.discard(task)


def test_store_urls_name_the_schema_and_keep_libpq_options() -> None:
    store = open_store("postgresql://app@db.example:6543/shop?schema=orders&sslmode=disable")
    assert isinstance(store, PostgresStore) and store.schema == "orders"
    assert "schema" not in store.url and "sslmode=disable" in store.url
    default = open_store("postgres://app@db.example/shop")
    assert isinstance(default, PostgresStore) and default.schema == "tidings"
    for bad in ("Orders", "1st", "a-b", 'x"; DROP TABLE y; --', "x" * 64):
        with pytest.raises(ConfigurationError, match="schema name"):
            open_store(f"postgresql://db.example/shop?schema={bad}")


async def test_an_unreachable_server_is_reported_as_unavailable_in_time() -> None:
    store = PostgresStore("postgresql://nobody@127.0.0.1:1/none", retry_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:1/none") as caught:
        await store.open()
    assert time.monotonic() - started < 10
    assert isinstance(caught.value.__cause__, psycopg.Error)
    with pytest.raises(StoreClosed):
        await store.read_all()


async def test_a_transaction_a_statement_refuses_fails_alone_in_its_group(
    store: PostgresStore,
) -> None:
    bad = Transaction(
        appends=[AppendOp("bad", [new_message()])],
        held=[Held("s", 0, "x", 1, "m", "T", "no-such-status")],
    )
    good = Transaction([AppendOp("good", [new_message()])])
    # Both reach commit() in one loop iteration: one group, one database transaction at first.
    results = await asyncio.gather(store.commit(bad), store.commit(good), return_exceptions=True)
    assert isinstance(results[0], StoreError) and "held_status_check" in str(results[0])
    assert not isinstance(results[1], BaseException) and results[1][0].version == 1
    assert await store.stream_version("bad") == 0
    assert [e.global_position for e in await store.read_all()] == [1]


async def test_concurrent_openers_apply_each_migration_once(
    postgres_url: str, pg_schema: str
) -> None:
    stores = [PostgresStore(postgres_url, schema=pg_schema) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        rows = await sql(
            postgres_url, f"SELECT version, count(*) FROM {pg_schema}.migrations GROUP BY version"
        )
        shipped = len(
            list((Path(tidings.backends.postgres.__file__).parent / "migrations").glob("*.sql"))
        )
        assert sorted(rows) == [(n, 1) for n in range(1, shipped + 1)]
        await stores[0].commit(Transaction([AppendOp("s", [new_message()])]))
        assert await stores[3].last_position() == 1
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_the_store_reconnects_after_its_connections_are_killed(
    postgres_url: str, pg_schema: str
) -> None:
    name = f"victim-{uuid.uuid4().hex[:8]}"
    store = PostgresStore(f"{postgres_url}?application_name={name}", schema=pg_schema)
    await store.open()
    try:
        await store.commit(Transaction([AppendOp("s", [new_message()])]))
        killed = await sql(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            name,
        )
        assert killed
        await store.commit(Transaction([AppendOp("s", [new_message()])]))
        assert [e.stream_position for e in await store.read_stream("s")] == [1, 2]
    finally:
        await store.close()


async def commit_losing_the_connection(url: str, schema: str, *, after: bool) -> Store:
    """Commit a worker-like transaction (an append, an audit entry, a fenced checkpoint move)
    through a proxy that cuts the connection as its COMMIT goes out (``after``: once the server
    has it); return a store on the schema."""
    async with Proxy(url) as proxy:
        store = PostgresStore(proxy.url(), schema=schema)
        await store.open()
        try:
            await store.setup_subscription("sub", 1, 0)
            await store.claim("sub", "w1", 1, 30)
            tx = Transaction(
                appends=[AppendOp("s", [new_message()])],
                checkpoints=[CheckpointMove("sub", 0, "w1", 0, 7)],
                audit=[AuditEntry("ada", "test.commit", "s")],
            )
            proxy.cut(b"COMMIT", after=after)
            (done,) = await store.commit(tx)
            assert proxy.cuts == 1
            assert (done.version, done.global_position) == (1, 1)
        finally:
            await store.close()
    found = PostgresStore(url, schema=schema)
    await found.open()
    return found


async def assert_applied_once(store: Store) -> None:
    try:
        assert [e.stream_position for e in await store.read_stream("s")] == [1]
        assert [(e.actor, e.action) for e in await store.audit_entries()] == [
            ("ada", "test.commit")
        ]
        assert (await store.partitions("sub"))[0].position == 7
    finally:
        await store.close()


async def test_a_commit_whose_acknowledgement_is_lost_is_found_committed_not_applied_again(
    postgres_url: str, pg_schema: str
) -> None:
    await assert_applied_once(
        await commit_losing_the_connection(postgres_url, pg_schema, after=True)
    )


async def test_a_commit_lost_before_it_reached_the_server_is_committed_again_once(
    postgres_url: str, pg_schema: str
) -> None:
    await assert_applied_once(
        await commit_losing_the_connection(postgres_url, pg_schema, after=False)
    )


# --- the one-statement append ------------------------------------------------------------------


async def test_a_group_that_only_appends_is_numbered_as_the_planner_would(
    store: PostgresStore,
) -> None:
    # Stored JSON goes through as itself: odd spacing and escapes come back byte for byte.
    odd = b'{ "a" :\t[1, 2] , "b":"\\u00e9\xc3\xa9" }'
    first = [new_message(odd), new_message(), new_message()]
    first[1] = msgspec.structs.replace(first[1], headers=b'{"k": "v"}')
    await store.commit(Transaction([AppendOp("a", first)]))
    groups = await asyncio.gather(
        store.commit(Transaction([AppendOp("a", [new_message()], 3)])),
        store.commit(Transaction([AppendOp("b", [new_message(), new_message()], 0)])),
        store.commit(
            Transaction([AppendOp("a", [new_message()], 4), AppendOp("c", [new_message()])])
        ),
        store.commit(Transaction([AppendOp("a", [new_message()])])),  # any version
        store.commit(Transaction([AppendOp("c", [new_message(), new_message()])])),
    )
    assert [[(d.stream, d.version, d.global_position) for d in g] for g in groups] == [
        [("a", 4, 4)],
        [("b", 2, 6)],
        [("a", 5, 7), ("c", 1, 8)],
        [("a", 6, 9)],
        [("c", 3, 11)],
    ]
    log = await store.read_all()
    assert [(e.global_position, e.stream, e.stream_position) for e in log] == [
        (1, "a", 1), (2, "a", 2), (3, "a", 3), (4, "a", 4), (5, "b", 1), (6, "b", 2),
        (7, "a", 5), (8, "c", 1), (9, "a", 6), (10, "c", 2), (11, "c", 3),
    ]  # fmt: skip
    assert [e.id for e in log[:3]] == [m.id for m in first]
    assert [(bytes(e.data), e.headers) for e in log[:2]] == [(odd, {}), (b'{"n":1}', {"k": "v"})]
    assert len({e.recorded_at for e in log[3:]}) == 1  # one group, one clock reading


async def test_one_group_keeps_the_last_outcome_and_checkpoint_each_transaction_gave(
    store: PostgresStore,
) -> None:
    from tidings.records import Outcome

    await store.setup_subscription("sub", 2, 0)
    await store.claim("sub", "w1", 2, 30)
    a, b = new_message().id, new_message().id
    await asyncio.gather(
        store.commit(
            Transaction(
                checkpoints=[CheckpointMove("sub", 0, "w1", 0, 5)],
                outcomes=[Outcome(a, "DoIt", "failed", error="boom", attempts=1)],
            )
        ),
        store.commit(
            Transaction(
                checkpoints=[CheckpointMove("sub", 0, "w1", 5, 9)],
                outcomes=[
                    Outcome(b, "DoIt", "refused", reason="no", code="nope", attempts=1),
                    Outcome(a, "DoIt", "succeeded", result=b'{"ok":true}', attempts=2),
                ],
            )
        ),
        store.commit(Transaction(checkpoints=[CheckpointMove("sub", 1, "w1", 0, 3)])),
    )
    # (All three reached commit() in one loop iteration: one group, one statement per table.)
    assert [p.position for p in await store.partitions("sub")] == [9, 3]
    found = await store.outcome(a)
    assert found is not None
    assert (found.status, found.result, found.error, found.attempts) == (
        "succeeded",
        b'{"ok":true}',
        None,
        2,
    )
    refused = await store.outcome(b)
    assert refused is not None
    assert (refused.status, refused.reason, refused.code) == ("refused", "no", "nope")


async def test_a_lone_message_goes_in_byte_for_byte_through_the_prepared_statement(
    store: PostgresStore,
) -> None:
    # Binary parameters: a backslash or a \x in the JSON is not read as a bytea escape.
    odd = b'{"path":"C:\\\\x41\\\\","quote":"\\"","e":"\xc3\xa9\xf0\x9f\x8e\xac"}'
    message = msgspec.structs.replace(new_message(odd), headers=b'{"k":"\\\\x00"}')
    (done,) = await store.commit(Transaction([AppendOp("caf\u00e9-1", [message], 0)]))
    assert (done.stream, done.version, done.global_position) == ("caf\u00e9-1", 1, 1)
    (stored,) = await store.read_all()
    assert (stored.id, stored.stream, bytes(stored.data)) == (message.id, "caf\u00e9-1", odd)
    assert stored.headers == {"k": "\\x00"}


async def test_a_writer_killed_while_its_one_statement_append_waits_commits_it_once(
    store: PostgresStore, postgres_url: str, pg_schema: str
) -> None:
    await store.commit(Transaction([AppendOp("s", [new_message()], 0)]))
    # Another session holds the append lock: the store's statement is sent and waits on it.
    async with append_lock_held(postgres_url, pg_schema):
        message = new_message()
        commit = asyncio.create_task(store.commit(Transaction([AppendOp("s", [message], 1)])))
        pid = await waiting_on_a_lock(postgres_url, pg_schema)
        await sql(postgres_url, "SELECT pg_terminate_backend(%s)", pid)
        assert not commit.done()
    (done,) = await asyncio.wait_for(commit, 10)  # the lock is gone with the blocker's session
    assert (done.version, done.global_position) == (2, 2)
    assert [e.id for e in await store.read_stream("s")][1:] == [message.id]


async def test_a_caller_cancelled_while_its_commit_waits_leaves_the_store_working(
    store: PostgresStore, postgres_url: str, pg_schema: str
) -> None:
    await store.commit(Transaction([AppendOp("s", [new_message()], 0)]))
    async with append_lock_held(postgres_url, pg_schema):
        cancelled = new_message()
        stuck = asyncio.create_task(store.commit(Transaction([AppendOp("s", [cancelled], 1)])))
        await waiting_on_a_lock(postgres_url, pg_schema)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
    # The blocker is gone. The cancelled append may have gone in (its statement was on the
    # server); either way once, and the store goes on, gapless.
    later = new_message()
    (done,) = await asyncio.wait_for(store.commit(Transaction([AppendOp("t", [later])])), 10)
    log = await store.read_all()
    assert [e.global_position for e in log] == list(range(1, len(log) + 1))
    assert [e.id for e in log].count(cancelled.id) <= 1 and log[-1].id == later.id
    assert done.global_position == len(log)


async def test_one_statement_and_long_way_commits_take_turns(
    store: PostgresStore,
) -> None:
    await store.setup_subscription("sub", 1, 0)
    await store.claim("sub", "w1", 1, 30)
    await store.commit(Transaction([AppendOp("s", [new_message()], 0)]))  # one statement
    for version in range(1, 4):
        # The long way (a checkpoint moves)...
        mixed = Transaction(
            [AppendOp("s", [new_message()], 2 * version - 1)],
            checkpoints=[CheckpointMove("sub", 0, "w1", version - 1, version)],
        )
        await asyncio.wait_for(store.commit(mixed), 10)
        # ...and the one-statement append after it.
        (done,) = await asyncio.wait_for(
            store.commit(Transaction([AppendOp("s", [new_message()], 2 * version)])), 10
        )
        assert done.version == 2 * version + 1


async def test_groups_of_new_streams_and_of_known_versions_are_numbered_as_the_planner_would(
    store: PostgresStore,
) -> None:
    (new,) = await store.commit(Transaction([AppendOp("x", [new_message(), new_message()], 0)]))
    assert (new.version, new.global_position) == (2, 2)
    known = await asyncio.gather(
        store.commit(Transaction([AppendOp("x", [new_message()], 2)])),
        store.commit(Transaction([AppendOp("y", [new_message()], 0)])),
        store.commit(
            Transaction([AppendOp("x", [new_message()], 3), AppendOp("x", [new_message()], 4)])
        ),
    )
    assert [[(d.stream, d.version, d.global_position) for d in g] for g in known] == [
        [("x", 3, 3)],
        [("y", 1, 4)],
        [("x", 4, 5), ("x", 5, 6)],
    ]
    assert [(e.stream, e.stream_position) for e in await store.read_all()] == [
        ("x", 1), ("x", 2), ("x", 3), ("y", 1), ("x", 4), ("x", 5),
    ]  # fmt: skip


async def test_a_group_at_known_versions_reads_each_stream_by_the_index_not_the_whole_log(
    store: PostgresStore, postgres_url: str, pg_schema: str
) -> None:
    # A log big enough that scanning it is what the planner would avoid, if it could.
    await sql(
        postgres_url,
        f"INSERT INTO {pg_schema}.log (global_position, stream, stream_position, id, kind, type, "
        "version, data, recorded_at) SELECT n, 'old-' || (n / 4), mod(n, 4) + 1, 'old-' || n, "
        "'event', 'T', 1, '{}', 0 FROM generate_series(1, 20000) AS n",
    )
    await sql(postgres_url, f"UPDATE {pg_schema}.head SET top = 20000")
    await sql(postgres_url, f"ANALYZE {pg_schema}.log")
    rows = [
        [f"old-{n}", f"new-{n}", "event", "T", 1, msgspec.Raw(b"{}"), None, None, None, 4, 1]
        for n in range(1, 17)
    ]
    params = {"rows": msgspec.json.encode(rows), "count": len(rows), "channel": "c"}
    query = tidings.backends.postgres._sql.queries(pg_schema)["append"]
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        # The statement a group of appends at known versions commits, explained and undone.
        cur = await conn.execute(b"EXPLAIN (ANALYZE, FORMAT JSON) " + query, params)
        ((plan,),) = await cur.fetchall()
        await conn.rollback()

    def scans(node: dict[str, Any]) -> list[tuple[str, str]]:
        found = [(node["Node Type"], node.get("Relation Name", ""))]
        return found + [scan for child in node.get("Plans", ()) for scan in scans(child)]

    assert ("Seq Scan", "log") not in scans(plan[0]["Plan"])
    # ...and what it wrote is where the planner would have put it.
    (done,) = await store.commit(Transaction([AppendOp("old-1", [new_message()], 4)]))
    assert (done.version, done.global_position) == (5, 20001)


async def test_rows_written_past_the_head_row_are_numbered_after_not_collided_with(
    store: PostgresStore, postgres_url: str, pg_schema: str
) -> None:
    # As a process of a version before the head row (advisory lock, max + 1) would have done.
    await store.commit(Transaction([AppendOp("a", [new_message()])]))
    await sql(
        postgres_url,
        f"INSERT INTO {pg_schema}.log (global_position, stream, stream_position, id, kind, type, "
        "version, data, recorded_at) VALUES (2, 'old', 1, 'old-1', 'event', 'T', 1, '{}', 0)",
    )
    (done,) = await store.commit(Transaction([AppendOp("a", [new_message()], 1)]))
    assert (done.version, done.global_position) == (2, 3)
    (later,) = await store.commit(Transaction([AppendOp("b", [new_message()], 0)]))
    assert later.global_position == 4  # and the one-statement way numbers on from there
    assert [e.global_position for e in await store.read_all()] == [1, 2, 3, 4]


async def test_a_lone_append_at_any_version_overtaken_while_it_waits_is_committed_not_refused(
    store: PostgresStore, postgres_url: str, pg_schema: str
) -> None:
    await store.commit(Transaction([AppendOp("a", [new_message()])]))
    # Another writer holds the append lock; the store's statement reads the stream's version (1)
    # under its snapshot, then waits for the lock...
    async with append_lock_held(postgres_url, pg_schema) as other:
        message = new_message()
        late = asyncio.create_task(store.commit(Transaction([AppendOp("a", [message])])))
        await waiting_on_a_lock(postgres_url, pg_schema)
        # ...while the other appends to the same stream and commits: the store's position 2 is
        # taken by the time it holds the lock.
        await other.execute(f'UPDATE "{pg_schema}".head SET top = top + 1')
        await other.execute(
            f"INSERT INTO {pg_schema}.log (global_position, stream, stream_position, id, kind, "
            "type, version, data, recorded_at) VALUES (2, 'a', 2, 'other-2', 'event', 'T', 1, "
            "'{}', 0)"
        )
        await other.commit()
    (done,) = await asyncio.wait_for(late, 10)
    assert (done.version, done.global_position) == (3, 3)
    assert [e.id for e in await store.read_stream("a")][1:] == ["other-2", message.id]


async def test_a_conflict_in_a_one_statement_group_refuses_only_the_culprit(
    store: PostgresStore,
) -> None:
    await store.commit(Transaction([AppendOp("a", [new_message()])]))
    results = await asyncio.gather(
        store.commit(Transaction([AppendOp("b", [new_message()], 0)])),
        store.commit(Transaction([AppendOp("a", [new_message()], 0)])),  # a is at 1
        store.commit(Transaction([AppendOp("a", [new_message()], 1)])),
        store.commit(Transaction([AppendOp("a", [new_message()], 5)])),  # ahead of a
        store.commit(Transaction([AppendOp("b", [new_message()])])),
        return_exceptions=True,
    )
    for refused, expected, actual in ((results[1], 0, 1), (results[3], 5, 2)):
        assert isinstance(refused, WrongExpectedVersion)
        assert (refused.expected, refused.actual) == (expected, actual)
    assert [[(d.stream, d.version) for d in r] for r in (results[0], results[2], results[4])] == [
        [("b", 1)],
        [("a", 2)],
        [("b", 2)],
    ]
    assert [e.stream for e in await store.read_all()] == ["a", "b", "a", "b"]


async def test_a_lone_append_ahead_of_its_stream_is_refused_not_numbered_with_a_gap(
    store: PostgresStore,
) -> None:
    await store.commit(Transaction([AppendOp("a", [new_message()])]))
    with pytest.raises(WrongExpectedVersion):
        await store.commit(Transaction([AppendOp("a", [new_message()], 3)]))
    with pytest.raises(WrongExpectedVersion):
        await store.commit(Transaction([AppendOp("new", [new_message()], 2)]))
    (done,) = await store.commit(Transaction([AppendOp("a", [new_message()], 1)]))
    assert (done.version, done.global_position) == (2, 2)


async def test_a_lone_append_at_a_stale_version_is_refused_with_where_the_stream_is(
    store: PostgresStore,
) -> None:
    stored = new_message()
    await store.commit(Transaction([AppendOp("a", [new_message(), stored], 0)]))
    for expected in (0, 1, 5):  # new, behind, ahead: each told where the stream is
        with pytest.raises(WrongExpectedVersion) as refused:
            await store.commit(Transaction([AppendOp("a", [new_message()], expected)]))
        assert (refused.value.expected, refused.value.actual) == (expected, 2)
    (done,) = await store.commit(Transaction([AppendOp("a", [new_message()], 2)]))
    assert (done.version, done.global_position) == (3, 3)
    # A message stored already, sent again at a stale version, is recognised, not refused.
    (again,) = await store.commit(Transaction([AppendOp("a", [stored], 0)]))
    assert (again.version, again.global_position) == (3, 2)
    assert len(await store.read_all()) == 3


@pytest.mark.parametrize("after", [True, False], ids=["reply lost", "lost before sent"])
async def test_a_one_statement_append_whose_connection_is_lost_is_applied_once(
    postgres_url: str, pg_schema: str, after: bool
) -> None:
    async with Proxy(postgres_url) as proxy:
        store = PostgresStore(proxy.url(), schema=pg_schema)
        await store.open()
        try:
            message = new_message()
            proxy.cut(b"pg_notify", after=after)  # the append, committed (autocommit) or not
            (done,) = await store.commit(Transaction([AppendOp("s", [message], 0)]))
            assert proxy.cuts == 1
            assert (done.version, done.global_position) == (1, 1)
            assert [e.id for e in await store.read_all()] == [message.id]
        finally:
            await store.close()


async def test_commits_arriving_while_a_group_is_written_go_out_together_after_it(
    store: PostgresStore, postgres_url: str, pg_schema: str
) -> None:
    async with append_lock_held(postgres_url, pg_schema):
        first = asyncio.create_task(store.commit(Transaction([AppendOp("a", [new_message()])])))
        await waiting_on_a_lock(postgres_url, pg_schema)
        later = [
            asyncio.create_task(store.commit(Transaction([AppendOp(s, [new_message()], 0)])))
            for s in ("b", "c")
        ]
        await asyncio.sleep(0.05)  # give them time to (wrongly) go out on their own
        assert not first.done() and not any(t.done() for t in later)
    done = [(d.stream, d.global_position) for t in (first, *later) for d in await t]
    assert done == [("a", 1), ("b", 2), ("c", 3)]
    log = await store.read_all()
    assert log[1].recorded_at == log[2].recorded_at != log[0].recorded_at  # b and c: one group


async def test_close_lets_the_group_being_written_finish(
    store: PostgresStore, postgres_url: str, pg_schema: str
) -> None:
    async with append_lock_held(postgres_url, pg_schema):
        first = asyncio.create_task(store.commit(Transaction([AppendOp("a", [new_message()])])))
        await waiting_on_a_lock(postgres_url, pg_schema)
        later = [
            asyncio.create_task(store.commit(Transaction([AppendOp(s, [new_message()], 0)])))
            for s in ("b", "c")
        ]
        await asyncio.sleep(0)
        closing = asyncio.create_task(store.close())
        await asyncio.sleep(0.05)
        assert not first.done() and not closing.done()
    await asyncio.wait_for(closing, 10)  # close waited for the group in flight
    ((a,),) = [await first]
    assert (a.stream, a.global_position) == ("a", 1)
    # The commits queued behind it were each either committed or refused: never half done.
    outcomes = await asyncio.gather(*later, return_exceptions=True)
    await store.open()
    streams = [e.stream for e in await store.read_all()]
    assert streams[0] == "a"
    for stream, outcome in zip(("b", "c"), outcomes, strict=True):
        if isinstance(outcome, BaseException):
            assert isinstance(outcome, StoreClosed) and stream not in streams
        else:
            assert stream in streams
    assert [e.global_position for e in await store.read_all()] == list(range(1, len(streams) + 1))


async def test_wait_for_change_wakes_on_another_stores_commit(
    postgres_url: str, pg_schema: str, store: PostgresStore
) -> None:
    other = PostgresStore(postgres_url, schema=pg_schema)
    await other.open()
    try:
        await store.wait_for_change(5)  # returns once listening: earlier commits may be missed
        waiting = asyncio.create_task(store.wait_for_change(60))
        await asyncio.sleep(0)
        await other.commit(Transaction([AppendOp("s", [new_message()])]))
        await asyncio.wait_for(waiting, 10)
        # A commit that appends nothing notifies nobody.
        quiet = asyncio.create_task(store.wait_for_change(0.3))
        await other.commit(Transaction(audit=[AuditEntry("ada", "noop", "x")]))
        started = asyncio.get_running_loop().time()
        await quiet
        assert asyncio.get_running_loop().time() - started > 0.1
    finally:
        await other.close()
