"""Outages of the store as one worker meets them: a line when one starts and when it ends, a count."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("tidings.worker")

#: The pauses of a task that found the store down double from the first to the last: a store
#: that is back is tried again within the last.
FIRST_PAUSE = 0.05
LAST_PAUSE = 1.0


class Outages:
    """What the worker ``worker_id``'s tasks (its runners, heartbeat and scheduler) found of the
    store: an outage starts with the first task that finds it unavailable, and ends with the
    first heartbeat begun after that start that succeeds (a heartbeat writes: a full disk still
    lets reads through). A failure of an operation begun before the last outage ended belongs to
    that outage, so one outage is one pair of log lines however many tasks notice it.
    """

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        #: how many outages began
        self.count = 0
        #: how long (seconds) the ended outages lasted in all
        self.seconds = 0.0
        #: when (``time.monotonic()``) the current outage began, or None while the store is up
        self.since: float | None = None
        self._ended = float("-inf")

    @property
    def down(self) -> bool:
        """Whether the store is unavailable, as far as this worker knows."""
        return self.since is not None

    def failed(self, started: float, error: BaseException) -> None:
        """An operation begun at ``started`` (``time.monotonic()``) failed: the store is down."""
        if self.since is not None or started < self._ended:
            return
        self.since = time.monotonic()
        self.count += 1
        log.warning(
            "worker %s: the store is unavailable (%s: %s); its subscriptions pause and try "
            "again every %.1fs at most; no message's attempts are spent meanwhile",
            self.worker_id,
            type(error).__name__,
            error,
            LAST_PAUSE,
        )

    def succeeded(self, started: float) -> None:
        """A write begun at ``started`` succeeded: an outage begun before it is over."""
        since = self.since
        if since is None or started < since:
            return
        now = time.monotonic()
        self.seconds += now - since
        self.since, self._ended = None, now
        log.info(
            "worker %s: the store is available again after %.1fs; its subscriptions resume",
            self.worker_id,
            now - since,
        )


def pause(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (from 1)."""
    return min(FIRST_PAUSE * 2.0 ** max(failures - 1, 0), LAST_PAUSE)
