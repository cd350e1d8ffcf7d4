"""The Django app config: checks ``settings.TIDINGS`` and gives the App its store at start."""

from __future__ import annotations

from django.apps import AppConfig


class TidingsConfig(AppConfig):  # type: ignore[misc]  # Django ships no types
    """Configures the App at start; it is opened on first use, once per process."""

    name = "tidings.integrations.django"
    label = "tidings"
    verbose_name = "tidings"

    def ready(self) -> None:
        from tidings.integrations.django.facade import configure

        configure()
