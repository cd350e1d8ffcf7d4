"""``manage.py tidings_worker``: deliver the App's subscriptions and sent commands until stopped."""

from __future__ import annotations

import asyncio
from typing import Any

from django.core.management.base import BaseCommand

from tidings.integrations.django.facade import configure


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no types
    help = "Run a tidings worker for settings.TIDINGS['APP'] until SIGTERM or SIGINT."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--lease-ttl", type=float, default=10.0, help="seconds a lease lasts")
        parser.add_argument("--batch-size", type=int, default=500, help="messages read at once")

    def handle(self, *args: Any, **options: Any) -> None:
        app = configure()
        worker = app.worker(lease_ttl=options["lease_ttl"], batch_size=options["batch_size"])

        async def run() -> None:
            try:
                await worker.run(handle_signals=True)
            finally:
                await app.close()

        self.stdout.write(f"tidings worker for {app.name!r} started")
        self.stdout.flush()
        asyncio.run(run())
