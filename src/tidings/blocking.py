"""``BlockingApp``: an App run on one background event-loop thread, used by blocking calls.

An App belongs to the event loop that opened it (``tidings.lifecycle``), so a threaded web
server cannot call it from its request threads. ``BlockingApp`` owns one loop on one daemon
thread, opens the App there, and hands every call to it with ``asyncio.run_coroutine_threadsafe``:
any number of threads may call at once, each waits for its own result (or its own exception,
``Refused`` included) at most a timeout. Each blocking method is derived from the async one by
:func:`blocking` — one mechanism, not a second API to keep in step.
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import inspect
import os
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from tidings.app import App
from tidings.delivery.deadletters import DeadLetters
from tidings.delivery.worker import Worker
from tidings.errors import StoreClosed
from tidings.ticket import Ticket

P = ParamSpec("P")
A = TypeVar("A")  # the async object a facade stands for
T = TypeVar("T")  # what its coroutine returns
R = TypeVar("R")  # what the blocking call returns

__all__ = ["BlockingApp", "BlockingDeadLetters", "BlockingTicket", "LoopThread", "blocking"]


class LoopThread:
    """One event loop running on its own daemon thread; coroutines are run on it from any
    thread, each caller waiting for its own result."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self._thread = threading.Thread(target=self._forever, name=name, daemon=True)
        self._thread.start()

    def _forever(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def running(self) -> bool:
        """Whether the loop is still there to run coroutines."""
        return self._thread.is_alive() and not self.loop.is_closed()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None, what: str) -> T:
        """Run ``coro`` on the loop and wait up to ``timeout`` seconds for it; its exception is
        raised here. After the timeout it is cancelled and ``TimeoutError`` raised."""
        problem = self._unusable()
        if problem is not None:
            coro.close()
            raise StoreClosed(f"{what}: {problem}")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            if future.done():
                raise  # the coroutine's own TimeoutError
            future.cancel()
            raise TimeoutError(
                f"{what} did not finish within {timeout}s and was cancelled; what it wrote may "
                "have been committed all the same (send or publish again with the same id= to "
                "be sure it happened once). Give it longer with .within(seconds)"
            ) from None
        except BaseException:
            future.cancel()  # the caller was interrupted: do not leave the work running
            raise

    def _unusable(self) -> str | None:
        if os.getpid() != self.pid:
            return (
                "this BlockingApp was started in another process before a fork; its loop thread "
                "did not survive it: start one in each process (after the fork, or lazily)"
            )
        if threading.get_ident() == self._thread.ident:
            return (
                "a blocking call from the App's own event loop would wait for itself forever: "
                "await the App's async method instead"
            )
        if not self.running:
            return "the BlockingApp is closed"
        return None

    def stop(self) -> None:
        """Stop the loop, wait for its thread, close it."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class Facade(Generic[A]):
    """A blocking face of the async object ``target``, whose coroutines run on ``runner``, each
    call waiting at most ``timeout`` seconds (plus the call's own ``timeout=`` when it has one)."""

    def __init__(self, target: A, runner: LoopThread, timeout: float) -> None:
        self.target = target
        self.runner = runner
        self.timeout = timeout

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run any coroutine on the App's loop and wait for its result (``timeout`` seconds, by
        default this facade's)."""
        return self.runner.run(coro, self.timeout if timeout is None else timeout, "run")

    def within(self, seconds: float) -> Self:
        """The same facade, each call waiting at most ``seconds``."""
        if not seconds > 0:
            raise ValueError(f"within(seconds): seconds must be > 0, got {seconds!r}")
        view = copy.copy(self)
        view.timeout = seconds
        return view


class _Blocking(Generic[A, P, T, R]):
    """A blocking method of a :class:`Facade`, derived from the async method ``fn`` of its
    target; ``wrap`` turns the coroutine's result into what the caller gets."""

    def __init__(
        self,
        fn: Callable[Concatenate[A, P], Coroutine[Any, Any, T]],
        wrap: Callable[[Facade[Any], T], R] | None,
    ) -> None:
        self.fn = fn
        self.wrap = wrap
        self.name = getattr(fn, "__name__", "call")
        self.__doc__ = fn.__doc__
        # where the method's own ``timeout`` is, when given by position (its first is ``self``)
        params = list(inspect.signature(fn).parameters)
        self.timeout_at = params.index("timeout") - 1 if "timeout" in params else None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = f"{owner.__name__}.{name}"

    @overload
    def __get__(self, facade: None, owner: type) -> _Blocking[A, P, T, R]: ...

    @overload
    def __get__(self, facade: Facade[A], owner: type) -> Callable[P, R]: ...

    def __get__(
        self, facade: Facade[A] | None, owner: type
    ) -> _Blocking[A, P, T, R] | Callable[P, R]:
        if facade is None:
            return self
        fn, wrap, name, at = self.fn, self.wrap, self.name, self.timeout_at

        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            own = args[at] if at is not None and at < len(args) else kwargs.get("timeout")
            limit = facade.timeout + (own if isinstance(own, int | float) else 0)
            result = facade.runner.run(fn(facade.target, *args, **kwargs), limit, name)
            return wrap(facade, result) if wrap is not None else result  # type: ignore[return-value]

        call.__name__ = name.rpartition(".")[2]
        call.__doc__ = fn.__doc__
        return call


def blocking(
    fn: Callable[Concatenate[A, P], Coroutine[Any, Any, T]],
) -> _Blocking[A, P, T, T]:
    """The blocking form of the async method ``fn``, as a method of a :class:`Facade`."""
    return _Blocking(fn, None)


def blocking_as(
    fn: Callable[Concatenate[A, P], Coroutine[Any, Any, T]],
    wrap: Callable[[Facade[Any], T], R],
) -> _Blocking[A, P, T, R]:
    """Like :func:`blocking`, the result given through ``wrap`` (a ticket made blocking)."""
    return _Blocking(fn, wrap)


class BlockingTicket(Facade[Ticket]):
    """A sent command's ticket: ``outcome(timeout=…)`` and ``result(timeout=…)`` block."""

    outcome = blocking(Ticket.outcome)
    result = blocking(Ticket.result)

    @property
    def message_id(self) -> str:
        """The sent command's id."""
        return self.target.message_id

    @property
    def stream(self) -> str:
        """The stream the command was recorded in."""
        return self.target.stream

    def __repr__(self) -> str:
        return f"BlockingTicket({self.message_id!r}, stream={self.stream!r})"


def _ticket(facade: Facade[Any], ticket: Ticket) -> BlockingTicket:
    return BlockingTicket(ticket, facade.runner, facade.timeout)


class BlockingDeadLetters(Facade[DeadLetters]):
    """``app.dead_letters`` with blocking calls: list, show, retry and skip."""

    list = blocking(DeadLetters.list)
    get = blocking(DeadLetters.get)
    show = blocking(DeadLetters.show)
    groups = blocking(DeadLetters.groups)
    retry = blocking(DeadLetters.retry)
    retry_stream = blocking(DeadLetters.retry_stream)
    retry_error = blocking(DeadLetters.retry_error)
    retry_all = blocking(DeadLetters.retry_all)
    skip = blocking(DeadLetters.skip)
    skip_error = blocking(DeadLetters.skip_error)
    skip_all = blocking(DeadLetters.skip_all)


class BlockingApp(Facade[App]):
    """An :class:`~tidings.App` for synchronous code: its calls block, from any thread.

    ``BlockingApp(app)`` starts one event-loop thread and opens ``app`` on it; ``timeout`` is
    how long each call waits (``within(seconds)`` gives a view with another). With ``worker=True``
    (or a dict of worker options) a worker runs on the same loop. ``close()`` — also at exit, and
    at the end of ``with BlockingApp(app) as blocking_app:`` — stops the worker, closes the App and
    ends the thread. Registration stays on the App; the App's async methods must not be called
    from other loops meanwhile.
    """

    invoke = blocking(App.invoke)
    send = blocking_as(App.send, _ticket)
    publish = blocking(App.publish)
    append = blocking(App.append)
    if TYPE_CHECKING:  # App.get's overloads, which a derived method cannot carry

        @overload
        def get(self, collection: str, key: str) -> Any: ...

        @overload
        def get(self, collection: str, key: str, type: type[T]) -> T | None: ...

        def get(self, collection: str, key: str, type: Any = Any) -> Any: ...

    else:
        get = blocking(App.get)
    documents = blocking(App.documents)
    outcome = blocking(App.outcome)
    caught_up = blocking(App.caught_up)
    position = blocking(App.position)
    read_stream = blocking(App.read_stream)
    read_all = blocking(App.read_all)
    streams = blocking(App.streams)
    load = blocking(App.load)
    unhandled = blocking(App.unhandled)

    def __init__(
        self, app: App, *, timeout: float = 30.0, worker: bool | dict[str, Any] = False
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"BlockingApp: timeout must be > 0 seconds, got {timeout!r}")
        super().__init__(app, LoopThread(f"tidings:{app.name}"), timeout)
        self._worker: Worker | None = None
        self._worker_done: Any = None
        try:
            self.runner.run(app.open(), timeout, f"opening App {app.name!r}")
            if worker is not False:
                options = worker if isinstance(worker, dict) else {}
                self._worker = self.runner.run(_build(app, options), timeout, "worker")
                self._worker_done = asyncio.run_coroutine_threadsafe(
                    self._worker.run(), self.runner.loop
                )
        except BaseException:
            self.runner.stop()
            raise
        atexit.register(self.close)

    @property
    def app(self) -> App:
        """The async App this facade runs."""
        return self.target

    @property
    def dead_letters(self) -> BlockingDeadLetters:
        """List, show, retry and skip what subscriptions hold back (blocking)."""
        return BlockingDeadLetters(self.target.dead_letters, self.runner, self.timeout)

    @property
    def last_position(self) -> int:
        """The global position of the last message committed through the App."""
        return self.target.last_position

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return not self.runner.running

    def close(self) -> None:
        """Stop the worker (if one runs here), close the App, end the loop thread. Idempotent."""
        if self.closed or os.getpid() != self.runner.pid:
            return
        atexit.unregister(self.close)
        try:
            if self._worker is not None:
                self.runner.loop.call_soon_threadsafe(self._worker.stop)
                self._worker_done.result(self.timeout)
            self.runner.run(self.target.close(), self.timeout, "closing the App")
        finally:
            self.runner.stop()

    def __enter__(self) -> BlockingApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"BlockingApp({self.target.name!r}, {state}, timeout={self.timeout})"


async def _build(app: App, options: dict[str, Any]) -> Worker:
    return app.worker(**options)
