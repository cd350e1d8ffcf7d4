"""The backend contract for what operators read and do: type counts, backlogs, held counts,
streams by prefix, outcomes, messages by id or correlation, held messages summarised, the
store's clock, resetting and deleting subscriptions, and attempts kept with their tracebacks.

A backend's test module subclasses :class:`OperationsContract` beside the suites of
:mod:`tidings.testing.contract`, with the same ``make_store`` method.
"""

from __future__ import annotations

import time

import msgspec
import pytest

from tidings.errors import SubscriptionInUse, SubscriptionNotFound
from tidings.messages import NewMessage
from tidings.records import DEAD, WAITING, Attempt, AuditEntry, Held, Outcome, Transaction
from tidings.store import Store
from tidings.testing.contract import StoreContract, append, new_message


def _held(position: int, status: str = DEAD, stream: str = "s-1") -> Held:
    return Held("email", 0, stream, position, f"m{position}", "T", status, 1, "boom")


class OperationsContract(StoreContract):
    """What the operator's commands (``tidings subscriptions``, ``tidings dlq``) rely on."""

    async def test_type_counts_count_each_kind_and_type_from_its_first_position(
        self, store: Store
    ) -> None:
        assert await store.type_counts() == []
        await append(store, "a", new_message(type="A"), new_message(type="B"))
        await append(store, "b", new_message(type="A"))
        counts = await store.type_counts()
        assert [(c.kind, c.type, c.count, c.first_position) for c in counts] == [
            ("event", "A", 2, 1),
            ("event", "B", 1, 2),
        ]
        assert all(c.first_recorded_at > 0 for c in counts)

    async def test_a_prefix_lists_exactly_its_streams(self, store: Store) -> None:
        names = ["a", "a-", "a-1", "a-\U0010ffff", "a.", "a\ud7ff", "a\ue000", "b", "é-1", "é.1"]
        for name in names:
            await append(store, name, new_message())
        for prefix in ("a-", "a", "é-", "a\ud7ff", "a-\U0010ffff", "z", ""):
            expected = [(n, 1) for n in sorted(names) if n.startswith(prefix)]
            assert sorted(await store.streams(prefix=prefix)) == expected, prefix

    async def test_backlog_counts_per_stream_and_span_above_the_lowest_bound(
        self, store: Store
    ) -> None:
        # positions: 1 x/A, 2 y/A, 3 x/B, 4 x/A, 5 y/A
        await append(store, "x", new_message(type="A"))
        await append(store, "y", new_message(type="A"))
        await append(store, "x", new_message(type="B"))
        await append(store, "x", new_message(type="A"))
        await append(store, "y", new_message(type="A"))
        rows = await store.backlog(["A"], [1, 3])
        assert sorted((b.stream, b.after, b.count) for b in rows) == [
            ("x", 3, 1),
            ("y", 1, 1),
            ("y", 3, 1),
        ]
        assert all(b.oldest_at > 0 for b in rows)
        assert await store.backlog(["A"], [5]) == []
        assert await store.backlog([], [0]) == []

    async def test_held_counts_by_subscription_and_status(self, store: Store) -> None:
        await store.commit(Transaction(held=[_held(1), _held(2, WAITING), _held(3, WAITING)]))
        assert await store.held_counts() == [("email", DEAD, 1), ("email", WAITING, 2)]

    async def test_outcomes_are_listed_newest_first_by_status_and_counted(
        self, store: Store
    ) -> None:
        statuses = ["succeeded", "failed", "succeeded", "dead", "succeeded"]
        for n, status in enumerate(statuses):
            await store.commit(Transaction(outcomes=[Outcome(f"c{n}", "Do", status, attempts=1)]))
        listed = await store.outcomes()
        assert sorted(o.message_id for o in listed) == [f"c{n}" for n in range(5)]
        assert [o.updated_at for o in listed] == sorted(
            (o.updated_at for o in listed), reverse=True
        )
        newest = sorted(listed, key=lambda o: o.updated_at, reverse=True)[:2]
        assert {o.updated_at for o in await store.outcomes(limit=2)} == {
            o.updated_at for o in newest
        }
        succeeded = await store.outcomes(status="succeeded")
        assert sorted(o.message_id for o in succeeded) == ["c0", "c2", "c4"]
        assert [o.updated_at for o in succeeded] == sorted(
            (o.updated_at for o in succeeded), reverse=True
        )
        assert await store.outcomes(status="refused") == []
        assert await store.outcome_counts() == [("dead", 1), ("failed", 1), ("succeeded", 3)]

    async def test_find_by_ids_correlation_or_causation_in_global_order(self, store: Store) -> None:
        first, second, third = new_message(), new_message(), new_message()
        caused = NewMessage("m-4", "event", "Thing", 1, b"{}", first.id, first.id, None)
        await append(store, "a", first, second)
        await append(store, "b", third, caused)
        found = await store.find(ids=[third.id, first.id, "missing"])
        assert [e.id for e in found] == [first.id, third.id]
        assert [e.id for e in await store.find(ids=[third.id, first.id], limit=1)] == [first.id]
        assert [e.id for e in await store.find(correlation_id=first.id)] == [first.id, "m-4"]
        assert [e.id for e in await store.find(causation_id=first.id)] == ["m-4"]
        assert await store.find() == []

    async def test_held_summaries_leave_out_tracebacks_and_tails_keep_their_end(
        self, store: Store
    ) -> None:
        long = "frame\n" * 500 + "ValueError: boom"
        rows = [
            msgspec.structs.replace(_held(1), traceback=long),
            _held(2, WAITING),
            msgspec.structs.replace(_held(3), subscription="audit"),
        ]
        await store.commit(Transaction(held=rows))
        dead = await store.held_summaries(status=DEAD)
        assert [(h.subscription, h.global_position) for h in dead] == [("audit", 3), ("email", 1)]
        assert all(h.traceback is None and h.history == [] for h in dead)
        email = await store.held_summaries(subscription="email")
        assert [(h.global_position, h.status) for h in email] == [(1, DEAD), (2, WAITING)]
        tails = await store.held_tails([h.id for h in email])
        assert tails[email[0].id] == long[-(len("boom") + 600) :]
        assert tails[email[1].id] == ""

    async def test_now_is_the_store_clock_in_epoch_seconds(self, store: Store) -> None:
        before = time.time()
        assert before - 5 < await store.now() < time.time() + 5

    async def test_each_attempt_keeps_its_traceback(self, store: Store) -> None:
        row = _held(1)
        row.history = [Attempt(1.0, "boom", "Traceback: one"), Attempt(2.0, "boom")]
        await store.commit(Transaction(held=[row]))
        (found,) = await store.held(subscription="email")
        assert found.history == [Attempt(1.0, "boom", "Traceback: one"), Attempt(2.0, "boom")]

    async def test_reset_moves_every_checkpoint_drops_held_above_and_is_audited(
        self, store: Store
    ) -> None:
        await store.setup_subscription("email", 2, 9)
        await store.commit(Transaction(held=[_held(3), _held(7)]))
        await store.reset_subscription("email", 5, AuditEntry("ada", "subscription.reset", "email"))
        assert [p.position for p in await store.partitions("email")] == [5, 5]
        assert [h.global_position for h in await store.held(subscription="email")] == [3]
        (entry,) = await store.audit_entries()
        assert (entry.actor, entry.action, entry.target) == ("ada", "subscription.reset", "email")

    async def test_delete_forgets_partitions_and_held_messages(self, store: Store) -> None:
        await store.setup_subscription("email", 2, 0)
        await store.setup_subscription("other", 1, 0)
        await store.commit(Transaction(held=[_held(3)]))
        await store.delete_subscription("email", AuditEntry("ada", "subscription.delete", "email"))
        assert await store.partitions("email") == []
        assert await store.held(subscription="email") == []
        assert len(await store.partitions("other")) == 1
        assert [e.action for e in await store.audit_entries()] == ["subscription.delete"]

    async def test_a_leased_subscription_is_refused_unless_forced_and_nothing_is_written(
        self, store: Store
    ) -> None:
        await store.setup_subscription("email", 1, 0)
        await store.claim("email", "w1", 1, 60)
        audit = AuditEntry("ada", "subscription.delete", "email")
        with pytest.raises(SubscriptionInUse, match="w1"):
            await store.delete_subscription("email", audit)
        with pytest.raises(SubscriptionInUse, match="w1"):
            await store.reset_subscription("email", 3, audit)
        assert len(await store.partitions("email")) == 1
        assert await store.audit_entries() == []
        await store.delete_subscription("email", audit, force=True)
        assert await store.partitions("email") == []

    async def test_an_unknown_subscription_is_named_and_nothing_is_written(
        self, store: Store
    ) -> None:
        audit = AuditEntry("ada", "subscription.reset", "nope")
        with pytest.raises(SubscriptionNotFound, match="nope"):
            await store.reset_subscription("nope", 0, audit)
        with pytest.raises(SubscriptionNotFound, match="nope"):
            await store.delete_subscription("nope", audit)
        assert await store.audit_entries() == []
