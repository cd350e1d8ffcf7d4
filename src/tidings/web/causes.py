"""Dead letters grouped by cause: the exception type plus a fingerprint of its normalised message
and the frame that raised it.

Numbers, ids, hex strings and quoted strings are normalised, so "mailbox of guest007 rejects mail"
and "mailbox of guest012 rejects mail" are one cause; a different exception type, or the same
message raised from another function, is another. Groups are computed from the rows as they are
when asked, so their counts are always those of the store (a later failure joins its group, or
makes a new one; nothing is hidden behind the first failure of a group).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping

import msgspec

from tidings.records import Held

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_UUID = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
_HEX = re.compile(
    r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{6,}\b"
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_FRAME = re.compile(r'File "([^"]+)", line \d+, in (\S+)')


class Cause(msgspec.Struct, frozen=True):
    """One cause of dead letters: ``key`` names it in URLs."""

    key: str
    subscription: str
    exception: str
    message: str
    frame: str
    count: int
    example: str
    first_failed_at: float | None
    last_failed_at: float | None
    ids: list[int]


def normalise(text: str) -> str:
    """``text`` with quoted strings, uuids, hex and numbers replaced by placeholders."""
    text = _QUOTED.sub("<str>", text)
    text = _UUID.sub("<id>", text)
    text = _HEX.sub("<hex>", text)
    return _NUMBER.sub("<n>", text)


def split_error(error: str) -> tuple[str, str]:
    """``("Type", "message")`` of a held row's error (``Type: message``)."""
    head, sep, rest = error.partition(": ")
    if sep and re.fullmatch(r"[A-Za-z_][\w.]*", head):
        return head, rest
    return (error, "") if re.fullmatch(r"[A-Za-z_][\w.]*", error) else ("Error", error)


def raising_frame(traceback: str | None) -> str:
    """The last frame of a traceback as ``file:function`` (line numbers left out)."""
    frames = _FRAME.findall(traceback or "")
    if not frames:
        return ""
    path, function = frames[-1]
    return f"{path.rsplit('/', 1)[-1]}:{function}"


def cause_key(subscription: str, exception: str, message: str, frame: str) -> str:
    text = "\0".join((subscription, exception, message, frame))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=65536)
def _cause_of(
    subscription: str, error: str, traceback: str
) -> tuple[str, tuple[str, str, str, str]]:
    """A failure's cause key and parts (cached: many dead letters repeat one error)."""
    exception, message = split_error(error)
    frame = raising_frame(traceback)
    normal = normalise(message)
    return cause_key(subscription, exception, normal, frame), (
        subscription,
        exception,
        normal,
        frame,
    )


def group(rows: Iterable[Held], tails: Mapping[int, str] | None = None) -> list[Cause]:
    """Dead letters by cause, the largest group first (then by subscription and exception);
    ``tails`` are their tracebacks' last lines by id (else each row's own traceback)."""
    found: dict[str, list[Held]] = {}
    named: dict[str, tuple[str, str, str, str]] = {}
    for held in rows:
        tail = tails.get(held.id, "") if tails is not None else held.traceback or ""
        key, parts = _cause_of(held.subscription, held.error or "", tail)
        found.setdefault(key, []).append(held)
        named[key] = parts
    causes = []
    for key, members in found.items():
        subscription, exception, message, frame = named[key]
        firsts = [h.first_failed_at for h in members if h.first_failed_at is not None]
        lasts = [h.last_failed_at for h in members if h.last_failed_at is not None]
        causes.append(
            Cause(
                key,
                subscription,
                exception,
                message,
                frame,
                len(members),
                members[0].error or "",
                min(firsts) if firsts else None,
                max(lasts) if lasts else None,
                [h.id for h in members],
            )
        )
    return sorted(causes, key=lambda c: (-c.count, c.subscription, c.exception, c.key))
