"""The operator's web console and its JSON API (``tidings serve``); Starlette, Jinja2 and htmx.

Needs the ``web`` extra: ``pip install 'tidings[web]'``.
"""

from __future__ import annotations

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("the web console needs the web extra: pip install 'tidings[web]'") from exc

from tidings.web.server import TOKEN_ENV, create_console

__all__ = ["TOKEN_ENV", "create_console"]
