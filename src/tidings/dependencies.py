"""Dependencies: the collaborators an App hands its handlers, found by the type a parameter names.

A handler takes ``(message, ctx)``, then any collaborators it needs as parameters annotated with
their types (``notifications: Notifications``). The App is given one object per type
(``App(..., dependencies={Notifications: EmailNotifications()})``) and passes each by keyword when
the handler is called, so a test swaps one with ``app.dependencies.override(...)``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from tidings.errors import ConfigurationError

#: a handler's dependency parameters: (parameter name, the type it names)
Wanted = tuple[tuple[str, Any], ...]


class Dependencies:
    """The objects an App gives its handlers, one per type (any hashable annotation: a class, a
    ``Protocol``, a ``NewType``)."""

    def __init__(self, provided: Mapping[Any, object] | None = None) -> None:
        self._provided: dict[Any, object] = {}
        for key, obj in (provided or {}).items():
            self.provide(key, obj)

    def provide(self, key: Any, obj: object) -> None:
        """Give handlers ``obj`` for parameters annotated with ``key`` (replacing any before)."""
        try:
            hash(key)
        except TypeError:
            raise ConfigurationError(
                f"dependencies: {key!r} cannot name a dependency (it is not hashable); name it by "
                "the class or Protocol its handlers' parameters are annotated with"
            ) from None
        if isinstance(key, type) and not _is_instance(obj, key):
            raise ConfigurationError(
                f"dependencies: {obj!r} is not a {key.__qualname__}, which the handlers asking "
                f"for {key.__qualname__} would be given; provide an instance of it"
            )
        self._provided[key] = obj

    @contextmanager
    def override(self, key: Any, obj: object) -> Iterator[object]:
        """Give handlers ``obj`` for ``key`` within the ``with`` block (a test's fake), then what
        was provided before."""
        missing = object()
        before = self._provided.get(key, missing)
        self.provide(key, obj)
        try:
            yield obj
        finally:
            if before is missing:
                del self._provided[key]
            else:
                self._provided[key] = before

    def __contains__(self, key: object) -> bool:
        return key in self._provided

    def given(self, wanted: Wanted, handler: str) -> dict[str, Any]:
        """The keyword arguments that give ``handler`` what it wants (raises
        ``ConfigurationError`` naming the first thing nothing was provided for)."""
        try:
            return {name: self._provided[key] for name, key in wanted}
        except KeyError:
            name, key = next((n, k) for n, k in wanted if k not in self._provided)
            raise ConfigurationError(
                f"{handler} needs a {type_name(key)} ({name}), and none was provided: give the "
                f"App one with App(..., dependencies={{{type_name(key)}: ...}}) or "
                f"app.dependencies.provide({type_name(key)}, ...)"
            ) from None

    def missing(self, wanted: Wanted) -> list[Any]:
        """The types among ``wanted`` that nothing was provided for."""
        return [key for _, key in wanted if key not in self._provided]


class Injected:
    """A handler called as ``(message, ctx)`` that is given its dependencies by keyword."""

    __slots__ = ("dependencies", "fn", "name", "wanted")

    def __init__(self, fn: Callable[..., Any], wanted: Wanted, dependencies: Dependencies) -> None:
        self.fn = fn
        self.wanted = wanted
        self.dependencies = dependencies
        self.name = callable_name(fn)

    def __call__(self, message: Any, ctx: Any) -> Any:
        return self.fn(message, ctx, **self.dependencies.given(self.wanted, self.name))


def underlying(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The function whose annotations describe ``fn``: a partial's function, a callable object's
    ``__call__``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if isinstance(fn, Injected):
        return underlying(fn.fn)
    if inspect.isroutine(fn) or isinstance(fn, type):
        return fn
    return type(fn).__call__


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns an awaitable (a coroutine function, a partial of one, an
    object whose ``__call__`` is one)."""
    return inspect.iscoroutinefunction(underlying(fn))


def callable_name(fn: Callable[..., Any]) -> str:
    """A handler's name for messages: its qualified name, also through a partial or an object."""
    if isinstance(fn, Injected):
        return callable_name(fn.fn)
    if isinstance(fn, functools.partial):
        return f"partial({callable_name(fn.func)})"
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) else type(fn).__qualname__


def _is_instance(obj: object, cls: type) -> bool:
    try:
        return isinstance(obj, cls)
    except TypeError:  # a Protocol that is not runtime_checkable: nothing to check it by
        return True


def type_name(key: Any) -> str:
    """How a dependency's type is named in messages."""
    return key.__qualname__ if isinstance(key, type) else repr(key)
