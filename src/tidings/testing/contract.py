"""The backend contract suite: what every store must do, as tests any backend can run.

Subclass :class:`LogContract` in a test module and give it a ``make_store`` fixture-method that
returns a fresh, unopened store; pytest (with pytest-asyncio in auto mode) collects the inherited
tests::

    class TestMyStore(LogContract):
        async def make_store(self, tmp_path):
            return MyStore(...)
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from tidings.errors import ConfigurationError, LeaseLost, WrongExpectedVersion
from tidings.ids import uuid7
from tidings.messages import InternalStream, NewMessage, encode_headers
from tidings.records import (
    ANY,
    ARRIVED_FROM,
    DEAD,
    NO_STREAM,
    REPLAY,
    RETRYING,
    WAITING,
    Appended,
    AppendOp,
    Attempt,
    AuditEntry,
    CheckpointMove,
    DocumentWrite,
    Held,
    HeldDelete,
    Outcome,
    Scheduled,
    Transaction,
)
from tidings.store import Store


def new_message(
    data: bytes = b'{"n":1}', *, type: str = "Thing", id: str | None = None
) -> NewMessage:
    """A minimal encoded event for store-level tests."""
    message_id = id or uuid7()
    return NewMessage(message_id, "event", type, 1, data, message_id, None, None)


async def append(
    store: Store, stream: str, *messages: NewMessage, expected_version: int = ANY
) -> int:
    """Append in a transaction of its own; returns the stream's new version."""
    (done,) = await store.commit(Transaction([AppendOp(stream, list(messages), expected_version)]))
    return done.version


async def _log(store: Store) -> list[tuple[str, str, int, int]]:
    """The whole log as (id, stream, stream position, global position) rows."""
    return [
        (e.id, e.stream, e.stream_position, e.global_position)
        for e in await store.read_all(limit=10_000)
    ]


class StoreContract(abc.ABC):
    """What every contract suite needs: a fresh, opened store per test, closed after it."""

    @abc.abstractmethod
    async def make_store(self, tmp_path: Path) -> Store:
        """A fresh, unopened store (``tmp_path`` is pytest's per-test directory)."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        made = await self.make_store(tmp_path)
        await made.open()
        try:
            yield made
        finally:
            await made.close()


class LogContract(StoreContract):
    """The log: appends, optimistic concurrency, idempotency, gapless positions, reading."""

    async def test_an_empty_store_has_nothing(self, store: Store) -> None:
        assert await store.last_position() == 0
        assert await store.stream_version("nothing") == 0
        assert await store.read_stream("nothing") == []
        assert await store.read_all() == []

    async def test_append_then_read_back_exactly(self, store: Store) -> None:
        first = NewMessage(
            uuid7(),
            "event",
            "Thing",
            3,
            b'{"a":"\xc3\xa9"}',
            "corr",
            "cause",
            encode_headers({"h": "v"}),
        )
        second = new_message(b'{"b":2}')
        assert await append(store, "s-1", first, second) == 2
        envs = await store.read_stream("s-1")
        assert [e.stream_position for e in envs] == [1, 2]
        assert [e.global_position for e in envs] == [1, 2]
        got = envs[0]
        assert (got.id, got.kind, got.type, got.version, got.stream) == (
            first.id,
            "event",
            "Thing",
            3,
            "s-1",
        )
        assert bytes(got.data) == b'{"a":"\xc3\xa9"}'
        assert (got.correlation_id, got.causation_id) == ("corr", "cause")
        assert got.headers == {"h": "v"}
        assert got.recorded_at > 0

    async def test_stream_positions_are_gapless_per_stream_and_global_order_is_total(
        self, store: Store
    ) -> None:
        for i in range(30):
            await append(store, f"s-{i % 3}", new_message())
        everything = await store.read_all(limit=100)
        assert [e.global_position for e in everything] == list(range(1, 31))
        for s in range(3):
            assert [e.stream_position for e in await store.read_stream(f"s-{s}")] == list(
                range(1, 11)
            )
        assert await store.stream_version("s-1") == 10
        assert await store.last_position() == 30

    async def test_expected_version_is_enforced(self, store: Store) -> None:
        assert await append(store, "acct", new_message(), expected_version=NO_STREAM) == 1
        with pytest.raises(WrongExpectedVersion) as caught:
            await append(store, "acct", new_message(), expected_version=NO_STREAM)
        assert (caught.value.stream, caught.value.expected, caught.value.actual) == ("acct", 0, 1)
        assert await append(store, "acct", new_message(), expected_version=1) == 2
        with pytest.raises(WrongExpectedVersion):
            await append(store, "acct", new_message(), expected_version=1)
        assert await store.stream_version("acct") == 2

    async def test_a_failed_transaction_commits_nothing(self, store: Store) -> None:
        await append(store, "b", new_message())
        tx = Transaction(
            [
                AppendOp("a", [new_message()], ANY),
                AppendOp("b", [new_message()], NO_STREAM),  # b exists: the whole transaction fails
            ]
        )
        with pytest.raises(WrongExpectedVersion):
            await store.commit(tx)
        assert await store.stream_version("a") == 0
        assert await store.stream_version("b") == 1
        assert await store.last_position() == 1

    async def test_appends_in_one_transaction_see_each_other(self, store: Store) -> None:
        tx = Transaction(
            [
                AppendOp("x", [new_message()], NO_STREAM),
                AppendOp("x", [new_message(), new_message()], 1),
                AppendOp("y", [new_message()], NO_STREAM),
            ]
        )
        results = await store.commit(tx)
        assert [(r.stream, r.version) for r in results] == [("x", 1), ("x", 3), ("y", 1)]
        assert [e.stream_position for e in await store.read_stream("x")] == [1, 2, 3]

    async def test_re_appending_the_same_ids_is_idempotent(self, store: Store) -> None:
        messages = [new_message(), new_message()]
        await append(store, "idem", *messages, expected_version=NO_STREAM)
        # A retry after a lost acknowledgement: same ids, same (now stale) expected version.
        assert await append(store, "idem", *messages, expected_version=NO_STREAM) == 2
        assert await append(store, "idem", *messages) == 2
        assert len(await store.read_stream("idem")) == 2
        assert await store.last_position() == 2

    async def test_a_known_id_is_not_stored_twice_within_a_new_append(self, store: Store) -> None:
        old = new_message()
        await append(store, "mix", old)
        await append(store, "mix", old, new_message())
        envs = await store.read_stream("mix")
        assert len(envs) == 2
        assert len({e.id for e in envs}) == 2

    async def test_ids_in_any_order_are_each_stored_once(self, store: Store) -> None:
        # Ids made by uuid7 come in increasing order; ones chosen by callers come in any order.
        # Each is found again, whichever order it came in and wherever it lies.
        ids = ["order-5", "order-2", "order-9", "order-1", uuid7(), "order-7"]
        for n, message_id in enumerate(ids, 1):
            assert await append(store, "ids", new_message(id=message_id)) == n
        for message_id in [*reversed(ids), ids[2], ids[4]]:
            assert await append(store, "ids", new_message(id=message_id)) == len(ids)
        assert [e.id for e in await store.read_stream("ids")] == ids
        later = uuid7()
        assert await append(store, "ids", new_message(id=later), new_message(id="order-3")) == 8
        assert await append(store, "ids", new_message(id="order-3"), new_message(id=later)) == 8

    async def test_the_same_id_twice_in_one_append_is_recorded_once(self, store: Store) -> None:
        m, other = new_message(), new_message()
        assert await append(store, "twice", m, other, m, expected_version=NO_STREAM) == 2
        assert await _log(store) == [(m.id, "twice", 1, 1), (other.id, "twice", 2, 2)]

    async def test_a_framework_stream_name_is_stored_as_its_text(self, store: Store) -> None:
        # The framework names its own streams with InternalStream, a str subclass: one message
        # and several, alone and beside another transaction, each way a store writes appends.
        inbox = InternalStream("$inbox-test")
        assert await append(store, inbox, new_message()) == 1
        assert await append(store, inbox, new_message(), new_message()) == 3
        done = await asyncio.gather(
            append(store, InternalStream("$wf-a"), new_message(), new_message()),
            append(store, "plain", new_message()),
        )
        assert list(done) == [2, 1]
        streams = [stream for _, stream, _, _ in await _log(store)]
        assert streams == ["$inbox-test"] * 3 + ["$wf-a", "$wf-a", "plain"]
        assert all(type(stream) is str for stream in streams)

    async def test_the_same_id_in_two_appends_of_one_transaction_is_recorded_once(
        self, store: Store
    ) -> None:
        m = new_message()
        done = await store.commit(
            Transaction([AppendOp("a", [m], NO_STREAM), AppendOp("b", [m], NO_STREAM)])
        )
        assert done == [Appended("a", 1, 1), Appended("b", 0, 1)]
        assert await _log(store) == [(m.id, "a", 1, 1)]

    async def test_an_id_stored_in_one_stream_is_not_recorded_again_in_another(
        self, store: Store
    ) -> None:
        m, new = new_message(), new_message()
        await append(store, "first", m)
        # Every id stored already: nothing is recorded, and the other stream stays as it is.
        done = await store.commit(Transaction([AppendOp("second", [m], NO_STREAM)]))
        assert done == [Appended("second", 0, 1)]
        # Some stored already: only the new ones are recorded.
        assert await append(store, "second", m, new, expected_version=NO_STREAM) == 1
        assert await _log(store) == [(m.id, "first", 1, 1), (new.id, "second", 1, 2)]

    async def test_the_same_id_in_two_concurrent_commits_is_recorded_once(
        self, store: Store
    ) -> None:
        m = new_message()
        results = await asyncio.gather(
            store.commit(Transaction([AppendOp("a", [m], NO_STREAM)])),
            store.commit(Transaction([AppendOp("b", [m], NO_STREAM)])),
        )
        ((_, winner, _, _),) = log = await _log(store)
        assert log == [(m.id, winner, 1, 1)]
        loser = "b" if winner == "a" else "a"
        by_stream = {done.stream: done for (done,) in results}
        assert by_stream == {winner: Appended(winner, 1, 1), loser: Appended(loser, 0, 1)}

    async def test_stored_ids_succeed_at_any_expected_version_and_new_ones_do_not(
        self, store: Store
    ) -> None:
        m1, m2, m3 = new_message(), new_message(), new_message()
        await append(store, "acct", m1, m2)
        await append(store, "acct", m3)
        # Every id stored already (a retry): succeeds at a wrong expected version, records nothing.
        for expected in (NO_STREAM, 1, 7, ANY):
            done = await store.commit(Transaction([AppendOp("acct", [m2, m1], expected)]))
            assert done == [Appended("acct", 3, 1)]
        # Some stored, some new: the expected version is checked, and only the new are recorded.
        new = new_message()
        with pytest.raises(WrongExpectedVersion):
            await append(store, "acct", m1, new, expected_version=2)
        assert await append(store, "acct", m1, new, new, expected_version=3) == 4
        assert await _log(store) == [
            (m1.id, "acct", 1, 1),
            (m2.id, "acct", 2, 2),
            (m3.id, "acct", 3, 3),
            (new.id, "acct", 4, 4),
        ]

    async def test_read_stream_forwards_backwards_from_and_limit(self, store: Store) -> None:
        await append(store, "r", *[new_message(f'{{"n":{i}}}'.encode()) for i in range(1, 11)])
        assert [
            e.stream_position for e in await store.read_stream("r", from_position=4, limit=3)
        ] == [4, 5, 6]
        assert [
            e.stream_position for e in await store.read_stream("r", backwards=True, limit=3)
        ] == [10, 9, 8]
        assert [
            e.stream_position for e in await store.read_stream("r", backwards=True, from_position=2)
        ] == [2, 1]
        assert await store.read_stream("r", from_position=11) == []

    async def test_read_all_after_a_position_filtered_by_type(self, store: Store) -> None:
        for i in range(10):
            await append(store, "t", new_message(type="Even" if i % 2 == 0 else "Odd"))
        odd = await store.read_all(types=["Odd"])
        assert [e.global_position for e in odd] == [2, 4, 6, 8, 10]
        assert [e.global_position for e in await store.read_all(after=7, limit=2)] == [8, 9]
        assert await store.read_all(types=[]) == []
        assert [
            e.global_position for e in await store.read_all(after=3, types=["Even", "Odd"], limit=3)
        ] == [4, 5, 6]

    async def test_arrivals_count_what_came_through_a_broker(self, store: Store) -> None:
        def marked(type: str, headers: dict[str, str] | None, kind: str = "event") -> NewMessage:
            plain = new_message(type=type)
            encoded = None if headers is None else encode_headers(headers)
            return msgspec.structs.replace(plain, kind=kind, headers=encoded)

        assert await store.arrivals() == []
        await append(store, "a", marked("Seen", {ARRIVED_FROM: "x"}), marked("Seen", None))
        # The key's text inside another header's value is not the header.
        await append(store, "b", marked("Other", {"note": f'"{ARRIVED_FROM}":'}))
        await append(store, "b", marked("Seen", {"traceparent": "00-a-b-01", ARRIVED_FROM: "y"}))
        await append(store, "c", marked("Do", {ARRIVED_FROM: "x"}, kind="command"))
        arrived = await store.arrivals()
        assert [(a.kind, a.type, a.count, a.last_position) for a in arrived] == [
            ("event", "Seen", 2, 4),
            ("command", "Do", 1, 5),
        ]
        (fourth,) = await store.read_all(after=3, limit=1)
        assert arrived[0].last_recorded_at >= fourth.recorded_at

    async def test_streams_are_listed_with_their_versions(self, store: Store) -> None:
        await append(store, "order-2", new_message(), new_message())
        await append(store, "order-1", new_message())
        await append(store, "user-1", new_message())
        assert await store.streams(prefix="order-") == [("order-1", 1), ("order-2", 2)]
        assert len(await store.streams()) == 3

    async def test_concurrent_commits_keep_every_message_and_positions_gapless(
        self, store: Store
    ) -> None:
        async def writer(n: int) -> None:
            for _ in range(20):
                await append(store, f"w-{n % 4}", new_message())

        await asyncio.gather(*(writer(n) for n in range(16)))
        assert await store.last_position() == 320
        everything = await store.read_all(limit=1000)
        assert [e.global_position for e in everything] == list(range(1, 321))
        for s in range(4):
            assert [e.stream_position for e in await store.read_stream(f"w-{s}")] == list(
                range(1, 81)
            )

    async def test_concurrent_conflicting_appends_let_exactly_one_win(self, store: Store) -> None:
        results = await asyncio.gather(
            *(append(store, "race", new_message(), expected_version=NO_STREAM) for _ in range(10)),
            return_exceptions=True,
        )
        assert sum(1 for r in results if r == 1) == 1
        assert all(isinstance(r, WrongExpectedVersion) for r in results if r != 1)
        assert await store.stream_version("race") == 1

    async def test_a_large_batch_is_appended_whole(self, store: Store) -> None:
        await append(store, "big", *[new_message() for _ in range(2500)])
        assert await store.stream_version("big") == 2500
        assert [e.stream_position for e in await store.read_stream("big")] == list(range(1, 2501))


class DeliveryContract(StoreContract):
    """Subscriptions, held messages, outcomes, the schedule, documents and the audit trail."""

    async def test_partitions_are_created_once_and_start_where_asked(self, store: Store) -> None:
        await store.setup_subscription("email", 4, 0)
        await store.setup_subscription("email", 4, 99)  # exists: unchanged
        await store.setup_subscription("late", 2, 7)
        parts = await store.partitions("email")
        assert [(p.partition, p.position, p.owner) for p in parts] == [
            (n, 0, None) for n in range(4)
        ]
        assert {p.position for p in await store.partitions("late")} == {7}
        with pytest.raises(ConfigurationError, match="4 partitions"):
            await store.setup_subscription("email", 8, 0)

    async def test_leases_are_shared_and_taken_over_when_they_expire(self, store: Store) -> None:
        await store.setup_subscription("s", 4, 0)
        assert await store.heartbeat("w1", 10) == 1
        assert sorted(await store.claim("s", "w1", 4, 10)) == [0, 1, 2, 3]
        assert await store.heartbeat("w2", 10) == 2
        assert await store.claim("s", "w2", 2, 10) == {}  # all leased, none expired
        assert sorted(await store.claim("s", "w1", 2, 10)) == [0, 1]  # w1 gives up its surplus
        assert sorted(await store.claim("s", "w2", 2, 10)) == [2, 3]
        # w1 stops renewing: with a lease of ~0 s, its partitions are free for w2 at once.
        await store.claim("s", "w1", 2, -1)
        assert sorted(await store.claim("s", "w2", 4, 10)) == [0, 1, 2, 3]
        await store.release("w2")
        assert all(p.owner is None for p in await store.partitions("s"))

    async def test_a_checkpoint_move_is_fenced_by_owner_and_position(self, store: Store) -> None:
        await store.setup_subscription("s", 1, 0)
        await store.claim("s", "w1", 1, 10)
        await store.commit(Transaction(checkpoints=[CheckpointMove("s", 0, "w1", 0, 5)]))
        assert (await store.partitions("s"))[0].position == 5
        stale = Transaction(
            appends=[AppendOp("side-effect", [new_message()], ANY)],
            checkpoints=[CheckpointMove("s", 0, "w1", 0, 9)],  # expects 0, it is at 5
        )
        with pytest.raises(LeaseLost):
            await store.commit(stale)
        with pytest.raises(LeaseLost):
            await store.commit(Transaction(checkpoints=[CheckpointMove("s", 0, "w2", 5, 9)]))
        assert (await store.partitions("s"))[0].position == 5
        assert await store.stream_version("side-effect") == 0  # nothing of a fenced commit applies

    async def test_held_messages_block_their_stream_until_released(self, store: Store) -> None:
        head = Held(
            "s",
            1,
            "order-1",
            10,
            "m10",
            "T",
            RETRYING,
            2,
            "boom",
            "tb",
            [Attempt(1.0, "boom")],
            due_in=3600,
        )
        behind = Held("s", 1, "order-1", 12, "m12", "T", WAITING)
        other = Held("s", 2, "order-2", 11, "m11", "T", DEAD, 5, "bad")
        await store.commit(Transaction(held=[head, behind, other]))
        assert await store.held_streams("s", [1, 2]) == {"order-1", "order-2"}
        assert await store.held_streams("s", [2]) == {"order-2"}
        assert (
            await store.due_streams("s", [1, 2]) == []
        )  # retrying, not due; dead waits for an operator
        rows = await store.held(subscription="s")
        assert [(h.global_position, h.status) for h in rows] == [
            (10, RETRYING),
            (11, DEAD),
            (12, WAITING),
        ]
        assert rows[0].history == [Attempt(1.0, "boom")] and rows[0].due_at is not None
        ids = {h.global_position: h.id for h in rows}
        assert len(set(ids.values())) == 3 and (await store.held(id=ids[11]))[0].stream == "order-2"
        # Due now: the head becomes due; upserting keeps the id and the first failure time.
        await store.commit(
            Transaction(
                held=[msgspec.structs.replace(head, due_in=0.0, attempts=3, first_failed_at=5.0)]
            )
        )
        again = (await store.held(subscription="s", stream="order-1"))[0]
        assert again.id == ids[10] and again.attempts == 3
        assert await store.due_streams("s", [1, 2]) == ["order-1"]
        # Removing the head does not make the waiting one due by itself; marking it does.
        await store.commit(Transaction(unheld=[HeldDelete("s", 10)]))
        assert await store.due_streams("s", [1]) == []
        await store.commit(Transaction(held=[msgspec.structs.replace(behind, status=REPLAY)]))
        assert await store.due_streams("s", [1]) == ["order-1"]
        await store.commit(Transaction(unheld=[HeldDelete("s", 12)]))
        assert await store.held_streams("s", [1]) == set()

    async def test_outcomes_are_recorded_and_replaced(self, store: Store) -> None:
        assert await store.outcome("c1") is None
        await store.commit(
            Transaction(outcomes=[Outcome("c1", "Do", "failed", error="e", attempts=1)])
        )
        await store.commit(
            Transaction(outcomes=[Outcome("c1", "Do", "succeeded", b'{"ok":true}', attempts=2)])
        )
        got = await store.outcome("c1")
        assert got is not None and got.status == "succeeded" and got.value() == {"ok": True}
        assert got.attempts == 2 and got.updated_at > 0

    async def test_scheduled_messages_are_released_when_due_once(self, store: Store) -> None:
        now_msg, later_msg = new_message(), new_message()
        await store.commit(
            Transaction(
                scheduled=[
                    Scheduled("due", now_msg, delay=0.0),
                    Scheduled("later", later_msg, delay=3600.0),
                ]
            )
        )
        assert await store.next_due() == 0.0
        assert await store.release_due() == 1
        assert await store.release_due() == 0
        assert [e.id for e in await store.read_stream("due")] == [now_msg.id]
        assert await store.stream_version("later") == 0
        remaining = await store.next_due()
        assert remaining is not None and 3500 < remaining <= 3600

    async def test_documents_are_written_with_the_transaction(self, store: Store) -> None:
        await store.commit(
            Transaction(
                documents=[
                    DocumentWrite("seats", "A1", b'{"guest":"ada"}'),
                    DocumentWrite("seats", "A2", b"1"),
                ]
            )
        )
        await store.commit(Transaction(documents=[DocumentWrite("seats", "A2", None)]))
        assert await store.get_document("seats", "A1") == b'{"guest":"ada"}'
        assert await store.get_document("seats", "A2") is None
        assert await store.documents("seats") == [("A1", b'{"guest":"ada"}')]

    async def test_the_audit_trail_keeps_who_did_what(self, store: Store) -> None:
        await store.commit(
            Transaction(audit=[AuditEntry("ada", "dlq.retry", "email#3", "because")])
        )
        await store.commit(Transaction(audit=[AuditEntry("bob", "dlq.skip", "email#4")]))
        entries = await store.audit_entries()
        assert [(e.actor, e.action, e.target) for e in entries] == [
            ("bob", "dlq.skip", "email#4"),
            ("ada", "dlq.retry", "email#3"),
        ]
        assert entries[0].at > 0 and entries[0].id > entries[1].id
