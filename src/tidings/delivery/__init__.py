"""Delivery: the worker that runs subscriptions and sent-command handlers over the log."""

from tidings.delivery.alerts import Alert
from tidings.delivery.policy import RetryPolicy

__all__ = ["Alert", "RetryPolicy"]
