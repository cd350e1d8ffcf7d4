"""The backend contract for what operators read and do: type counts, backlogs, held counts,
outcomes listed, resetting and deleting subscriptions, and attempts kept with their tracebacks.

A backend's test module subclasses :class:`OperationsContract` beside the suites of
:mod:`tidings.testing.contract`, with the same ``make_store`` method.
"""

from __future__ import annotations

import pytest

from tidings.errors import SubscriptionInUse, SubscriptionNotFound
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
