"""Django integration: the App of ``settings.TIDINGS``, opened once per process, behind a
:class:`~tidings.BlockingApp`; refusals as 409; ``manage.py tidings_worker``.

``pip install 'tidings[django]'``, then in settings::

    INSTALLED_APPS = [..., "tidings.integrations.django"]
    MIDDLEWARE = [..., "tidings.integrations.django.RefusedMiddleware"]
    TIDINGS = {"APP": "box_office.messaging:app"}      # STORE, TIMEOUT, WORKER: optional

and in a view ``get_app().invoke(...)``; ``accepted(request, ticket)`` answers a sent command
with 202 and ``Location`` at ``tidings.integrations.django.urls`` (include it for outcomes).
"""

from __future__ import annotations

from tidings.errors import MissingDependency

try:
    import django  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise MissingDependency(
        "the Django integration needs django: pip install 'tidings[django]'"
    ) from exc

from tidings.integrations.django.facade import (
    RefusedMiddleware,
    accepted,
    get_app,
    outcome_view,
    store_url,
)

__all__ = ["RefusedMiddleware", "accepted", "get_app", "outcome_view", "store_url"]
