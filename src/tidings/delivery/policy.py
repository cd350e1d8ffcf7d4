"""How a handler's failures are retried, and when a message is parked."""

from __future__ import annotations

import random
from dataclasses import dataclass

from tidings.errors import ConfigurationError


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for one handler.

    A message is tried up to ``max_attempts`` times. The first ``1 + immediate`` attempts run one
    after another; each later one waits ``backoff * 2**n`` seconds (at most ``backoff_max``, with
    ``±jitter`` spread so that a burst of failures does not retry in lockstep), measured on the
    store's clock. An exception of a type in ``never_retry`` parks the message at once. After the
    last attempt the message is parked as a dead letter.

    ``sequenced`` (the default) makes later messages of the same stream wait behind a failing one,
    so per-stream order is never broken; ``sequenced=False`` parks it and moves on.
    """

    max_attempts: int = 5
    immediate: int = 2
    backoff: float = 1.0
    backoff_max: float = 300.0
    jitter: float = 0.2
    never_retry: tuple[type[BaseException], ...] = ()
    sequenced: bool = True

    def __post_init__(self) -> None:
        if (
            self.max_attempts < 1
            or self.immediate < 0
            or self.backoff < 0
            or not 0 <= self.jitter < 1
        ):
            raise ConfigurationError(
                "RetryPolicy: max_attempts >= 1, immediate >= 0, backoff >= 0, 0 <= jitter < 1"
            )

    def retries_now(self, attempt: int) -> bool:
        """Whether the attempt after ``attempt`` (1-based) runs at once."""
        return attempt < min(1 + self.immediate, self.max_attempts)

    def gives_up(self, attempt: int, error: BaseException | None) -> bool:
        """Whether ``attempt`` failing with ``error`` was the last."""
        if error is not None and self.never_retry and isinstance(error, self.never_retry):
            return True
        return attempt >= self.max_attempts

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed ``attempt`` before the next (delayed) one."""
        n = max(0, attempt - (1 + self.immediate))
        base = min(self.backoff * 2.0**n, self.backoff_max)
        spread = float((rng or random).uniform(-self.jitter, self.jitter))
        return max(0.0, base * (1 + spread))
