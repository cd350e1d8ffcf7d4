"""Message ids: UUIDv7 text, time-ordered and unique within a process (RFC 9562, method 2)."""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Iterator

__all__ = ["uuid7"]

#: A millisecond's ids: the millisecond, the text of their first 24 characters, and their counter.
_Millisecond = tuple[int, str, Iterator[int]]

_uuid_lock = threading.Lock()
_uuid_state: _Millisecond = (-1, "", itertools.count())
#: The text of ids up to their last two digits: for which millisecond, for which counter // 256.
_uuid_head: tuple[_Millisecond | None, int, str] = (None, -1, "")
_uuid_time_ns = time.time_ns
_UUID_COUNTER_MAX = 0xFFFF_FFFF_FFFF  # the counter is the last 48 bits (12 hex digits)
_UUID_HEX2 = [f"{b:02x}" for b in range(256)]
# Not a secret, only a spread: a Mersenne Twister seeded from the OS, re-seeded in a forked child
# so that parent and child never draw the same bits.
_uuid_random = random.Random(os.urandom(32))


def _uuid_after_fork_in_child() -> None:
    """A forked child would count on from the parent's counter, as the parent does: it draws its
    own instead, in the millisecond after the last one seen, so that its ids still come after
    every id made before the fork. The lock is new too (a thread of the parent may have held it)."""
    global _uuid_lock, _uuid_state
    _uuid_lock = threading.Lock()
    _uuid_random.seed(os.urandom(32))
    if _uuid_state[0] >= 0:
        _uuid_state = _uuid_millisecond(_uuid_state[0] + 1)


os.register_at_fork(after_in_child=_uuid_after_fork_in_child)


def uuid7() -> str:
    """A new UUIDv7 as text: time-ordered (millisecond clock, then a counter), unique.

    This is RFC 9562's method 2 ("monotonic random"): in each millisecond the 74 bits after the
    timestamp start at random, and the ids of that millisecond count up by one from there. The
    counting happens in the last 48 bits, which start below 2**47 (the rollover guard); should a
    millisecond ever use them up, the next ids borrow the following millisecond, as RFC 9562
    allows. A clock that steps back does not make ids go back: they stay in the last millisecond
    seen. Ids made by one thread are strictly increasing, and no two ids of a process are equal.

    A millisecond's state is one tuple, replaced under a lock when the clock passes it; its counter
    is an ``itertools.count``, whose ``next`` is atomic. The text up to the counter's last two
    digits is made once per 256 ids.
    """
    global _uuid_head
    ms = _uuid_time_ns() // 1_000_000
    state = _uuid_state
    if ms > state[0]:
        state = _uuid_advance(ms)
    n = next(state[2])
    head = _uuid_head
    if head[0] is not state or head[1] != n >> 8:
        if n > _UUID_COUNTER_MAX:  # this millisecond's counter is used up: borrow the next one
            _uuid_advance(state[0] + 1)
            return uuid7()
        head = _uuid_head = (state, n >> 8, state[1] + f"{n >> 8:010x}")
    return head[2] + _UUID_HEX2[n & 0xFF]


def _uuid_advance(ms: int) -> _Millisecond:
    """The state of millisecond ``ms``, or of a later one that another thread made meanwhile."""
    global _uuid_state
    with _uuid_lock:
        if ms > _uuid_state[0]:
            _uuid_state = _uuid_millisecond(ms)
        return _uuid_state


def _uuid_millisecond(ms: int) -> _Millisecond:
    return ms, _uuid_ms_prefix(ms), itertools.count(_uuid_random.getrandbits(47))


def _uuid_ms_prefix(ms: int) -> str:
    """The first 24 characters of a millisecond's ids: the timestamp, the version nibble, 12
    random bits (``rand_a``), the variant and the top 14 of ``rand_b``'s 62 bits, also random."""
    h = f"{ms:012x}"
    r = _uuid_random.getrandbits(26)
    return f"{h[:8]}-{h[8:]}-7{r >> 14:03x}-{0x8000 | (r & 0x3FFF):04x}-"
