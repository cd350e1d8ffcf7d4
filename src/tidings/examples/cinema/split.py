"""The cinema as three services over a broker: cinema, payments and notifications, each an App
with its own SQLite file, run by its own ``tidings worker`` process.

- **cinema**: seats, the purchase workflow, the website and the receipts; sends
  ``RequestPayment`` to the payments service, takes ``PaymentReceived``/``PaymentFailed`` from the
  topic ``payments.results`` and publishes ``ReservationConfirmed`` to ``cinema.reservations``.
- **payments**: handles ``RequestPayment`` (slow, declines some, never answers others) and
  publishes the answer to ``payments.results``.
- **notifications**: e-mails the guest of each ``ReservationConfirmed`` (flaky provider; its
  dead letters are kept and retried in its own store).

A worker process finds its settings in the environment (``TIDINGS_DEMO_*``, see
:meth:`Settings.env`), so ``tidings worker tidings.examples.cinema.split:payments_service``
runs the payments service of a demo.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidings import App
from tidings.examples.cinema.app import add_box_office, add_email, add_payments
from tidings.examples.cinema.messages import (
    PaymentFailed,
    PaymentReceived,
    RequestPayment,
    ReservationConfirmed,
)
from tidings.examples.cinema.services import EmailProvider, PaymentService
from tidings.transports import Routes

SERVICES = ("cinema", "payments", "notifications")
#: where the cinema's confirmations go, and where the payment service answers
RESERVATIONS = "cinema.reservations"
PAYMENTS = "payments.results"


@dataclass
class Settings:
    """One run of the demo across services: the broker, a namespace on it of the run's own, and
    the directory of the three SQLite files (and the e-mail provider's outbox)."""

    broker: str
    namespace: str
    directory: Path
    seed: int = 7
    payment_timeout: float = 2.0
    #: given to the broker's class (NATS: ``ack_wait``; Kafka: ``idempotent``)
    broker_options: dict[str, Any] = field(default_factory=dict)

    def db(self, service: str) -> Path:
        return self.directory / f"{service}.db"

    @property
    def outbox(self) -> Path:
        """The e-mails the provider sent, one JSON line each."""
        return self.directory / "notifications.outbox"

    @property
    def repaired(self) -> Path:
        """Exists once the operator repaired the e-mail provider."""
        return self.directory / "provider-repaired"

    def env(self) -> dict[str, str]:
        """The environment a worker process reads these settings from."""
        return {
            "TIDINGS_DEMO_BROKER": self.broker,
            "TIDINGS_DEMO_NAMESPACE": self.namespace,
            "TIDINGS_DEMO_DIR": str(self.directory),
            "TIDINGS_DEMO_SEED": str(self.seed),
            "TIDINGS_DEMO_PAYMENT_TIMEOUT": str(self.payment_timeout),
            "TIDINGS_DEMO_BROKER_OPTIONS": json.dumps(self.broker_options),
        }

    @classmethod
    def from_env(cls) -> Settings:
        try:
            return cls(
                broker=os.environ["TIDINGS_DEMO_BROKER"],
                namespace=os.environ["TIDINGS_DEMO_NAMESPACE"],
                directory=Path(os.environ["TIDINGS_DEMO_DIR"]),
                seed=int(os.environ.get("TIDINGS_DEMO_SEED", "7")),
                payment_timeout=float(os.environ.get("TIDINGS_DEMO_PAYMENT_TIMEOUT", "2.0")),
                broker_options=json.loads(os.environ.get("TIDINGS_DEMO_BROKER_OPTIONS", "{}")),
            )
        except KeyError as exc:
            raise RuntimeError(
                f"the demo's services read their settings from the environment: {exc.args[0]} "
                "is not set (run them with `tidings demo --transport ...`)"
            ) from None


@dataclass
class RepairableEmail(EmailProvider):
    """The flaky provider, repaired for good once the operator's flag file exists (the
    operator works in another process)."""

    flag: Path | None = None

    def send(self, message_id: str, guest: str, text: str, attempt: int) -> None:
        if not self.repaired and self.flag is not None and self.flag.exists():
            self.repaired = True
        super().send(message_id, guest, text, attempt)


def _app(settings: Settings, service: str, routes: Routes) -> App:
    app = App(service, store=f"sqlite:///{settings.db(service)}")
    app.connect(settings.broker, routes, namespace=settings.namespace, **settings.broker_options)
    return app


def build_service(service: str, settings: Settings) -> App:
    """The App of one of the three services (the demo's workers and the demo itself use it)."""
    if service == "cinema":
        app = _app(
            settings,
            "cinema",
            Routes()
            .publish(ReservationConfirmed, topic=RESERVATIONS)
            .send(RequestPayment, to="payments")
            .subscribe(PAYMENTS, PaymentReceived, PaymentFailed),
        )
        add_box_office(app, settings.payment_timeout)
    elif service == "payments":
        app = _app(
            settings, "payments", Routes().publish(PaymentReceived, PaymentFailed, topic=PAYMENTS)
        )
        add_payments(app, PaymentService(seed=settings.seed))
    elif service == "notifications":
        app = _app(
            settings, "notifications", Routes().subscribe(RESERVATIONS, ReservationConfirmed)
        )
        add_email(
            app,
            RepairableEmail(seed=settings.seed, outbox=settings.outbox, flag=settings.repaired),
        )
    else:
        raise ValueError(f"no service {service!r} in the demo: choose one of {SERVICES}")
    return app


def cinema_service() -> App:
    """``tidings worker tidings.examples.cinema.split:cinema_service``"""
    return build_service("cinema", Settings.from_env())


def payments_service() -> App:
    """``tidings worker tidings.examples.cinema.split:payments_service``"""
    return build_service("payments", Settings.from_env())


def notifications_service() -> App:
    """``tidings worker tidings.examples.cinema.split:notifications_service``"""
    return build_service("notifications", Settings.from_env())
