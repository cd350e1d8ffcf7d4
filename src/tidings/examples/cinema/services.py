"""The cinema's neighbours: a slow and fallible payment service, and a flaky e-mail provider.

Both are deterministic given a seed, so that the demo and its tests can be repeated exactly.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path


def _draw(seed: int, *parts: str) -> random.Random:
    return random.Random(zlib.crc32("|".join((str(seed), *parts)).encode()))


@dataclass
class PaymentService:
    """Answers a payment request after a delay, declines some, and never answers others."""

    seed: int = 0
    decline_rate: float = 0.1
    silence_rate: float = 0.1
    max_delay: float = 0.8

    def answer(self, reservation_id: str) -> tuple[str, float]:
        """``("paid" | "declined" | "silent", delay in seconds)`` for a reservation."""
        rng = _draw(self.seed, "payment", reservation_id)
        roll = rng.random()
        delay = rng.uniform(0.05, self.max_delay)
        if roll < self.silence_rate:
            return "silent", 0.0
        if roll < self.silence_rate + self.decline_rate:
            return "declined", delay
        return "paid", delay


class MailboxUnavailable(Exception):
    """The provider could not deliver the message (try again later)."""


@dataclass
class EmailProvider:
    """Sends e-mails; fails now and then, and always for some mailboxes until repaired."""

    seed: int = 0
    transient_rate: float = 0.2
    broken_rate: float = 0.08
    repaired: bool = False
    #: where sent mail is kept (a real provider remembers what it sent); in memory when None
    outbox: Path | None = None
    sent: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outbox is not None and self.outbox.exists():
            for line in self.outbox.read_text().splitlines():
                if line.strip():
                    mail = json.loads(line)
                    self.sent[mail["id"]] = mail["text"]

    def broken(self, guest: str) -> bool:
        return _draw(self.seed, "mailbox", guest).random() < self.broken_rate

    def send(self, message_id: str, guest: str, text: str, attempt: int) -> None:
        """Deliver once per ``message_id`` (a retry of a delivered message is a no-op)."""
        if message_id in self.sent:
            return
        if not self.repaired and self.broken(guest):
            raise MailboxUnavailable(f"mailbox of {guest} rejects mail (550 mailbox unavailable)")
        if _draw(self.seed, "transient", guest, text, str(attempt)).random() < self.transient_rate:
            raise MailboxUnavailable(f"provider timed out sending to {guest} (try {attempt})")
        self.sent[message_id] = f"to {guest}: {text}"
        if self.outbox is not None:
            with self.outbox.open("a") as out:
                out.write(json.dumps({"id": message_id, "text": self.sent[message_id]}) + "\n")
