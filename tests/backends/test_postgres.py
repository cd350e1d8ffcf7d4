"""What the PostgreSQL store does beyond the contract suite: its URL, a transaction refused alone
within a group, migrations applied once by concurrent openers, connection loss (before a commit and
while its acknowledgement is in flight: never applied twice), and LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
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
from tidings.store import (
    AppendOp,
    AuditEntry,
    CheckpointMove,
    Held,
    Store,
    Transaction,
)
from tidings.testing.contract import new_message

try:
    import psycopg

    from tidings.backends.postgres import PostgresStore
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("PostgreSQL tests need psycopg: pip install -e '.[dev]'", allow_module_level=True)


@pytest.fixture
async def store(postgres_url: str, pg_schema: str) -> AsyncIterator[PostgresStore]:
    made = PostgresStore(postgres_url, schema=pg_schema)
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


async def waiting_on_a_lock(url: str, pid: int) -> None:
    """Return once the server session ``pid`` waits on a lock (fail after 10 s)."""
    deadline = time.monotonic() + 10
    while not await sql(
        url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", pid
    ):
        assert time.monotonic() < deadline, f"session {pid} never waited on a lock"
        await asyncio.sleep(0.01)  # pace the polling; the condition is what we wait for


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


Lose = Callable[[Any, Callable[[Any], Awaitable[None]]], Awaitable[None]]


async def commit_losing_the_connection(store: PostgresStore, lose: Lose) -> Store:
    """Commit a worker-like transaction (an append, an audit entry, a fenced checkpoint move)
    while ``lose`` breaks the connection around the first COMMIT; return the store."""
    await store.setup_subscription("sub", 1, 0)
    await store.claim("sub", "w1", 1, 30)
    real = store._send_commit
    calls = 0

    async def once(conn: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await lose(conn, real)
        else:
            await real(conn)

    store._send_commit = once  # type: ignore[method-assign]
    message = new_message()
    tx = Transaction(
        appends=[AppendOp("s", [message])],
        checkpoints=[CheckpointMove("sub", 0, "w1", 0, 7)],
        audit=[AuditEntry("ada", "test.commit", "s")],
    )
    (done,) = await store.commit(tx)
    assert (done.version, done.global_position) == (1, 1)
    return store


async def assert_applied_once(store: Store) -> None:
    assert [e.stream_position for e in await store.read_stream("s")] == [1]
    assert [(e.actor, e.action) for e in await store.audit_entries()] == [("ada", "test.commit")]
    assert (await store.partitions("sub"))[0].position == 7


async def test_a_commit_whose_acknowledgement_is_lost_is_found_committed_not_applied_again(
    store: PostgresStore,
) -> None:
    async def commit_then_lose_the_reply(conn: Any, real: Callable[[Any], Awaitable[None]]) -> None:
        await real(conn)
        async with conn.pipeline() as pipe:  # the COMMIT reaches the server and is applied...
            await pipe.sync()
        await conn.close()  # ...but its reply never reaches us

    await assert_applied_once(await commit_losing_the_connection(store, commit_then_lose_the_reply))


async def test_a_commit_lost_before_it_reached_the_server_is_committed_again_once(
    store: PostgresStore,
) -> None:
    async def lose_before(conn: Any, real: Callable[[Any], Awaitable[None]]) -> None:
        await conn.close()

    await assert_applied_once(await commit_losing_the_connection(store, lose_before))


# --- the one-round-trip append ------------------------------------------------------------------


def only_the_short_way(store: PostgresStore) -> list[int]:
    """Make the long way fail; return the list its calls are counted in."""
    calls: list[int] = []

    async def long_way(conn: Any, txs: list[Transaction]) -> Any:
        calls.append(len(txs))
        raise AssertionError("the group should have been committed in one statement")

    store._apply_group = long_way  # type: ignore[method-assign]
    return calls


async def test_a_group_that_only_appends_is_numbered_as_the_planner_would(
    store: PostgresStore,
) -> None:
    only_the_short_way(store)
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
    from tidings.store import Outcome

    await store.setup_subscription("sub", 2, 0)
    await store.claim("sub", "w1", 2, 30)
    groups: list[int] = []
    real = store._apply_group

    async def counted(conn: Any, txs: list[Transaction]) -> Any:
        groups.append(len(txs))
        return await real(conn, txs)

    store._apply_group = counted  # type: ignore[method-assign]
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
    assert groups == [3]  # one group, so one statement had to keep the last of each
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
    only_the_short_way(store)
    # Binary parameters: a backslash or a \x in the JSON is not read as a bytea escape.
    odd = b'{"path":"C:\\\\x41\\\\","quote":"\\"","e":"\xc3\xa9\xf0\x9f\x8e\xac"}'
    message = msgspec.structs.replace(new_message(odd), headers=b'{"k":"\\\\x00"}')
    (done,) = await store.commit(Transaction([AppendOp("caf\u00e9-1", [message], 0)]))
    assert (done.stream, done.version, done.global_position) == ("caf\u00e9-1", 1, 1)
    (stored,) = await store.read_all()
    assert (stored.id, stored.stream, bytes(stored.data)) == (message.id, "caf\u00e9-1", odd)
    assert stored.headers == {"k": "\\x00"}


async def test_a_session_reset_under_the_store_prepares_its_statement_again(
    store: PostgresStore,
) -> None:
    calls = only_the_short_way(store)
    await store.commit(Transaction([AppendOp("a", [new_message()], 0)]))
    writer = store._writer
    assert writer is not None
    await writer.execute("DISCARD ALL")  # what a pooler or an admin may do: prepared ones gone
    (done,) = await store.commit(Transaction([AppendOp("a", [new_message()], 1)]))
    assert (done.version, done.global_position) == (2, 2) and store._writer is writer
    assert calls == []


async def test_a_writer_killed_while_its_one_statement_append_waits_commits_it_once(
    store: PostgresStore, postgres_url: str, pg_schema: str
) -> None:
    await store.commit(Transaction([AppendOp("s", [new_message()], 0)]))
    writer = store._writer
    assert writer is not None
    pid = writer.info.backend_pid
    # Another session holds the append lock: the store's statement is sent and waits on it.
    async with append_lock_held(postgres_url, pg_schema):
        message = new_message()
        commit = asyncio.create_task(store.commit(Transaction([AppendOp("s", [message], 1)])))
        await waiting_on_a_lock(postgres_url, pid)
        await sql(postgres_url, "SELECT pg_terminate_backend(%s)", pid)
        assert not commit.done()
    (done,) = await asyncio.wait_for(commit, 10)  # the lock is gone with the blocker's session
    assert (done.version, done.global_position) == (2, 2) and store._writer is not writer
    assert [e.id for e in await store.read_stream("s")][1:] == [message.id]


@pytest.mark.parametrize("path", ["own task", "flusher"])
async def test_a_caller_cancelled_while_its_statement_waits_leaves_the_store_working(
    store: PostgresStore, postgres_url: str, pg_schema: str, path: str
) -> None:
    await store.commit(Transaction([AppendOp("s", [new_message()], 0)]))
    writer = store._writer
    assert writer is not None
    pid = writer.info.backend_pid
    real = store._send_append
    sent = asyncio.Event()
    paths: list[str] = []

    async def noted(conn: Any, query: str, params: Any) -> Any:
        paths.append("own task" if store._inline is not None else "flusher")
        sent.set()
        return await real(conn, query, params)

    store._send_append = noted  # type: ignore[method-assign]
    async with append_lock_held(postgres_url, pg_schema):
        cancelled = new_message()
        stuck = asyncio.create_task(store.commit(Transaction([AppendOp("s", [cancelled], 1)])))
        if path == "own task":
            async with asyncio.timeout(5):  # a timer: nothing in the ready queue, it commits
                await sent.wait()
        else:
            await asyncio.wait_for(sent.wait(), 5)  # its task is ready: handed to the flusher
        assert paths == [path]
        await waiting_on_a_lock(postgres_url, pid)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        if path == "own task":
            assert store._writer is None  # left mid-statement: given back, never used again
    # The blocker is gone. The cancelled append may have gone in (its statement was on the
    # server, or in the flusher's group); either way once, and the store goes on, gapless.
    later = new_message()
    (done,) = await asyncio.wait_for(store.commit(Transaction([AppendOp("t", [later])])), 10)
    log = await store.read_all()
    assert [e.global_position for e in log] == list(range(1, len(log) + 1))
    assert [e.id for e in log].count(cancelled.id) <= 1 and log[-1].id == later.id
    assert done.global_position == len(log)


async def test_one_statement_and_long_way_commits_take_turns_on_one_writer(
    store: PostgresStore,
) -> None:
    await store.setup_subscription("sub", 1, 0)
    await store.claim("sub", "w1", 1, 30)
    await store.commit(Transaction([AppendOp("s", [new_message()], 0)]))  # one statement
    writer = store._writer
    for version in range(1, 4):
        # The long way (a checkpoint moves) waits on the writer's socket through psycopg...
        mixed = Transaction(
            [AppendOp("s", [new_message()], 2 * version - 1)],
            checkpoints=[CheckpointMove("sub", 0, "w1", version - 1, version)],
        )
        await asyncio.wait_for(store.commit(mixed), 10)
        # ...and the one-statement append after it must still hear its reply.
        (done,) = await asyncio.wait_for(
            store.commit(Transaction([AppendOp("s", [new_message()], 2 * version)])), 10
        )
        assert done.version == 2 * version + 1
    assert store._writer is writer


async def test_the_writer_leaves_no_reader_registered_once_its_connection_is_gone(
    store: PostgresStore, postgres_url: str
) -> None:
    from tidings.backends.postgres import _lean

    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]

    async def committed_through_a_registered_writer(version: int) -> tuple[Any, int]:
        (done,) = await store.commit(Transaction([AppendOp("a", [new_message()], version)]))
        assert done.version == version + 1
        writer = store._writer
        assert writer is not None
        fd = writer.pgconn.socket
        assert _lean._sessions[writer].fd == fd and fd in selector.get_map()
        return writer, fd

    writer, fd = await committed_through_a_registered_writer(0)
    # The server ends the idle session: its socket turns readable with nobody waiting, and the
    # callback unregisters itself instead of being called at every turn of the loop.
    await sql(postgres_url, "SELECT pg_terminate_backend(%s)", writer.info.backend_pid)
    deadline = time.monotonic() + 10
    while _lean._sessions[writer].fd is not None:
        assert time.monotonic() < deadline, "the reader stayed registered on a closed session"
        await asyncio.sleep(0.01)  # pace the polling; the condition is what we wait for
    assert fd not in selector.get_map()
    # The next commit finds the connection lost and takes the long way on a new one...
    await store.commit(Transaction([AppendOp("a", [new_message()], 1)]))
    writer, fd = await committed_through_a_registered_writer(2)  # ...then the short way again
    await store.close()
    assert fd not in selector.get_map()


def test_a_prepared_statement_placeholder_must_say_its_type() -> None:
    from tidings.backends.postgres._lean import Statement

    made = Statement("t", b"SELECT %(a)s::text, %(b)s::bigint, %(a)s")
    assert (made.text, made.names) == (b"SELECT $1::text, $2::bigint, $1", ["a", "b"])
    assert made.values({"a": "\u00e9", "b": 7}) == [b"\xc3\xa9", (7).to_bytes(8, "big")]
    with pytest.raises(ValueError, match="placeholder b needs a cast"):
        Statement("t", b"SELECT %(b)s + 1")


async def test_groups_of_new_streams_and_of_known_versions_are_numbered_in_one_statement(
    store: PostgresStore,
) -> None:
    only_the_short_way(store)
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
    writer = store._writer
    assert writer is not None
    pid = writer.info.backend_pid
    # Another writer holds the append lock; the store's statement reads the stream's version (1)
    # under its snapshot, then waits for the lock...
    async with append_lock_held(postgres_url, pg_schema) as other:
        message = new_message()
        late = asyncio.create_task(store.commit(Transaction([AppendOp("a", [message])])))
        await waiting_on_a_lock(postgres_url, pid)
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


async def test_a_lone_append_at_a_stale_version_is_refused_without_the_long_way(
    store: PostgresStore,
) -> None:
    calls = only_the_short_way(store)
    stored = new_message()
    await store.commit(Transaction([AppendOp("a", [new_message(), stored], 0)]))
    for expected in (0, 1, 5):  # new, behind, ahead: each told where the stream is
        with pytest.raises(WrongExpectedVersion) as refused:
            await store.commit(Transaction([AppendOp("a", [new_message()], expected)]))
        assert (refused.value.expected, refused.value.actual) == (expected, 2)
    assert calls == []  # the failed statement wrote nothing; one read told the version
    (done,) = await store.commit(Transaction([AppendOp("a", [new_message()], 2)]))
    assert (done.version, done.global_position) == (3, 3)
    # A message stored already, sent again at a stale version, is the long way's to recognise.
    del store._apply_group
    (again,) = await store.commit(Transaction([AppendOp("a", [stored], 0)]))
    assert (again.version, again.global_position) == (3, 2)
    assert len(await store.read_all()) == 3


async def test_a_one_statement_append_whose_reply_is_lost_is_not_applied_twice(
    store: PostgresStore,
) -> None:
    real = store._send_append
    calls = 0

    async def lose_the_reply(conn: Any, query: str, params: Any) -> Any:
        nonlocal calls
        calls += 1
        cur = await real(conn, query, params)  # committed (autocommit)...
        if calls == 1:
            await conn.close()  # ...but as far as we know, the connection died first
            raise psycopg.OperationalError("connection lost")
        return cur

    store._send_append = lose_the_reply  # type: ignore[method-assign]
    message = new_message()
    (done,) = await store.commit(Transaction([AppendOp("s", [message], 0)]))
    assert (done.version, done.global_position) == (1, 1)
    assert [e.id for e in await store.read_all()] == [message.id]


async def test_a_one_statement_append_lost_before_it_was_sent_is_applied_once(
    store: PostgresStore,
) -> None:
    real = store._send_append

    async def lose_first(conn: Any, query: str, params: Any) -> Any:
        store._send_append = real  # type: ignore[method-assign]
        await conn.close()
        return await real(conn, query, params)

    store._send_append = lose_first  # type: ignore[method-assign]
    (done,) = await store.commit(Transaction([AppendOp("s", [new_message()], 0)]))
    assert (done.version, done.global_position) == (1, 1)
    assert len(await store.read_all()) == 1


async def test_commits_arriving_while_a_caller_commits_its_own_go_out_together_after_it(
    store: PostgresStore,
) -> None:
    real = store._send_append
    sent = asyncio.Event()
    go = asyncio.Event()

    async def held(conn: Any, query: str, params: Any) -> Any:
        if not sent.is_set():
            sent.set()
            await go.wait()
        return await real(conn, query, params)

    store._send_append = held  # type: ignore[method-assign]
    first = asyncio.create_task(store.commit(Transaction([AppendOp("a", [new_message()], 0)])))
    await asyncio.wait_for(sent.wait(), 5)
    later = [
        asyncio.create_task(store.commit(Transaction([AppendOp(s, [new_message()], 0)])))
        for s in ("b", "c")
    ]
    closing = asyncio.create_task(store.close())
    await asyncio.sleep(0)
    assert not first.done() and not closing.done()
    go.set()
    await asyncio.wait_for(closing, 10)  # close waited for every commit
    done = [(d.stream, d.global_position) for t in (first, *later) for d in t.result()]
    assert done == [("a", 1), ("b", 2), ("c", 3)]
    await store.open()
    log = await store.read_all()
    assert [e.stream for e in log] == ["a", "b", "c"]
    assert log[1].recorded_at == log[2].recorded_at != log[0].recorded_at  # b and c: one group


@pytest.mark.parametrize("path", ["own task", "flusher"])
async def test_a_caller_cancelled_while_it_commits_leaves_the_store_working(
    store: PostgresStore, path: str
) -> None:
    real = store._send_append
    sent, gate = asyncio.Event(), asyncio.Event()
    paths: list[str] = []

    async def held(conn: Any, query: str, params: Any) -> Any:
        if not sent.is_set():
            sent.set()
            paths.append("own task" if store._inline is not None else "flusher")
            await gate.wait()  # cancelled here if the caller commits its own group
        return await real(conn, query, params)

    store._send_append = held  # type: ignore[method-assign]
    stuck = asyncio.create_task(store.commit(Transaction([AppendOp("a", [new_message()])])))
    if path == "own task":
        async with asyncio.timeout(5):  # a timer: nothing in the ready queue, the caller commits
            await sent.wait()
    else:
        await asyncio.wait_for(sent.wait(), 5)  # its task is ready: the commit is handed over
    assert paths == [path]
    stuck.cancel()
    gate.set()  # a group the flusher commits goes on without the cancelled caller
    with pytest.raises(asyncio.CancelledError):
        await stuck
    (done,) = await asyncio.wait_for(
        store.commit(Transaction([AppendOp("a", [new_message()])])), 10
    )
    (after,) = await asyncio.wait_for(
        store.commit(Transaction([AppendOp("b", [new_message()])])), 10
    )
    # The cancelled commit went in whole or not at all; either way the log stays gapless.
    log = await store.read_all()
    assert [e.global_position for e in log] == list(range(1, len(log) + 1))
    assert len(log) in (2, 3) and after.global_position == len(log)
    assert done.version == len(log) - 1


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
