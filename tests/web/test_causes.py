"""Grouping dead letters by cause: normalised messages, exception types, raising frames."""

from __future__ import annotations

from tidings.records import DEAD, Held
from tidings.web.causes import group, normalise, raising_frame, split_error

TB = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/handlers.py", line 12, in handle\n'
    "    send()\n"
    '  File "/srv/app/mail.py", line {line}, in {function}\n'
    "    raise MailboxUnavailable(text)\n"
)


def held(id: int, error: str, function: str = "send", line: int = 40, sub: str = "email") -> Held:
    return Held(
        sub, 0, f"s-{id}", id, f"m-{id}", "T", DEAD, 4, error,
        TB.format(line=line, function=function) + error, id=id, last_failed_at=float(id),
    )  # fmt: skip


def test_numbers_ids_hex_and_quoted_strings_are_normalised() -> None:
    assert (
        normalise("mailbox of guest007 rejects mail (550)")
        == "mailbox of guest<n> rejects mail (<n>)"
    )
    assert normalise("order 01a24585-8d2b-75dc-932c-36d907400d97 lost") == "order <id> lost"
    assert normalise("key deadbeef42 at 0x7f3a2b") == "key <hex> at <hex>"
    assert normalise("no user 'ada' nor \"bob\"") == "no user <str> nor <str>"
    assert normalise("seat A1 taken") == "seat A<n> taken"


def test_the_exception_type_is_split_from_its_message() -> None:
    assert split_error("MailboxUnavailable: mailbox full") == ("MailboxUnavailable", "mailbox full")
    assert split_error("TimeoutError") == ("TimeoutError", "")
    assert split_error("something odd: happened here") == ("Error", "something odd: happened here")


def test_the_raising_frame_leaves_out_line_numbers() -> None:
    assert raising_frame(TB.format(line=40, function="send")) == "mail.py:send"
    assert raising_frame(None) == ""


def test_groups_count_every_member_and_split_by_type_and_frame() -> None:
    rows = [
        held(1, "MailboxUnavailable: mailbox of guest001 rejects mail"),
        held(2, "MailboxUnavailable: mailbox of guest002 rejects mail", line=41),
        held(3, "MailboxUnavailable: mailbox of guest003 rejects mail"),
        held(4, "ConnectionError: mailbox of guest004 rejects mail"),
        held(5, "MailboxUnavailable: mailbox of guest005 rejects mail", function="retry"),
        held(6, "MailboxUnavailable: mailbox of guest006 rejects mail", sub="other"),
    ]
    causes = group(rows)
    assert [(c.subscription, c.exception, c.frame, c.count) for c in causes] == [
        ("email", "MailboxUnavailable", "mail.py:send", 3),
        ("email", "ConnectionError", "mail.py:send", 1),
        ("email", "MailboxUnavailable", "mail.py:retry", 1),
        ("other", "MailboxUnavailable", "mail.py:send", 1),
    ]
    assert causes[0].ids == [1, 2, 3] and causes[0].last_failed_at == 3.0
    # A later failure joins its group: the count follows the rows, and the key is stable.
    again = group([*rows, held(7, "MailboxUnavailable: mailbox of guest077 rejects mail")])
    assert again[0].key == causes[0].key and again[0].count == 4
    # Tails given apart (as the console reads them) group the same way.
    tails = {h.id: h.traceback or "" for h in rows}
    bare = [Held(h.subscription, 0, h.stream, h.global_position, h.message_id, h.type, h.status,
                 h.attempts, h.error, id=h.id) for h in rows]  # fmt: skip
    assert [c.key for c in group(bare, tails)] == [c.key for c in causes]
