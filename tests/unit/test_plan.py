"""The one planner: a transaction refused in a group leaves nothing of itself behind, so the
transactions after it are planned as if it had never been there."""

from __future__ import annotations

from tidings.backends._plan import Head, plan_group
from tidings.errors import LeaseLost, WrongExpectedVersion
from tidings.records import AppendOp, CheckpointMove, Transaction
from tidings.testing.contract import new_message


def test_a_refused_append_leaves_no_row_version_or_id_for_the_next_transaction() -> None:
    a1, b1, c1 = new_message(), new_message(), new_message()
    head = Head(10, 1.0, {"b": 3}, {}, {})
    first = Transaction([AppendOp("a", [a1])])
    # b1 is planned, then the append to "c" (new: version 0) refuses the whole transaction.
    refused = Transaction([AppendOp("b", [b1]), AppendOp("c", [c1], 5)])
    again = Transaction([AppendOp("b", [b1], 3), AppendOp("c", [c1], 0)])

    plan = plan_group([first, refused, again], head)

    errors = [error for _, error in plan.results]
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], WrongExpectedVersion)
    assert [row[:4] for row in plan.rows] == [
        (11, "a", 1, a1.id),
        (12, "b", 4, b1.id),
        (13, "c", 1, c1.id),
    ]
    assert plan.top == 13
    assert plan.results[2][0] is not None
    assert [(a.stream, a.version, a.global_position) for a in plan.results[2][0]] == [
        ("b", 4, 12),
        ("c", 1, 13),
    ]
    assert head.known == {a1.id: 11, b1.id: 12, c1.id: 13}
    assert {s: v for s, v in head.versions.items() if v} == {"a": 1, "b": 4, "c": 1}


def test_a_lost_lease_refuses_the_appends_planned_before_it() -> None:
    message = new_message()
    head = Head(0, 1.0, {}, {}, {("sub", 0): ("other-worker", 7)})
    move = CheckpointMove("sub", 0, "this-worker", 7, 8)
    refused = Transaction([AppendOp("s", [message])], checkpoints=[move])

    plan = plan_group([refused, Transaction([AppendOp("s", [message])])], head)

    assert isinstance(plan.results[0][1], LeaseLost)
    assert [row[:4] for row in plan.rows] == [(1, "s", 1, message.id)]
    assert plan.checkpoints == {} and plan.applied == []
    assert head.partitions == {("sub", 0): ("other-worker", 7)}
