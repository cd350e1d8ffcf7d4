"""The PostgreSQL store (``pip install 'tidings[postgres]'``): psycopg 3 with its connection pool.

``App(store="postgresql://user@host/db?schema=shop")``, or :class:`PostgresStore` directly. The
driver is imported here and nowhere else in tidings.
"""

from __future__ import annotations

from tidings.errors import MissingDependency

try:
    import psycopg  # noqa: F401
    import psycopg_pool  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise MissingDependency(
        "the PostgreSQL store needs psycopg 3 and psycopg_pool: pip install 'tidings[postgres]'"
    ) from exc

from tidings.backends.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
