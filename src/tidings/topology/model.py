"""The topology of an App: its message types, handlers and workflows, and where the code sends,
invokes and publishes what — one plain model that the advisor, AsyncAPI and the graph all read."""

from __future__ import annotations

import inspect
import os
import sys
import types
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from tidings.app import App
from tidings.dependencies import underlying
from tidings.errors import Refused
from tidings.messages import Command, Event, Message
from tidings.topology.links import BrokerLink, links_of
from tidings.topology.marks import allowed
from tidings.topology.scan import Call, Function, Module, read_module
from tidings.workflow import Workflow


class Place(msgspec.Struct, frozen=True):
    """A file and line (the file relative to the current directory when under it)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class MessageType(msgspec.Struct, frozen=True):
    """A command or event class."""

    name: str
    type_name: str
    kind: str
    doc: str
    place: Place | None
    allow: list[str]
    #: the framework's own (``tidings.*``): never judged
    internal: bool


class Handler(msgspec.Struct, frozen=True):
    """A command handler, a decider, a subscriber or a workflow."""

    #: unique in its App: ``command:fn``, ``decider:decide``, ``subscriber:email``, ``workflow:x``
    id: str
    name: str
    role: str
    #: the type names it handles (a workflow: the events it reacts to)
    handles: list[str]
    place: Place | None
    allow: list[str]
    critical: bool = False
    #: a workflow's timeouts by name
    timeouts: list[str] = []
    #: where a subscriber raises ``Refused``
    refuses: list[Place] = []
    #: where a subscriber calls on something other than its message and ``ctx``
    writes_outside: list[Place] = []
    uses_message_id: bool = False


class Usage(msgspec.Struct, frozen=True):
    """A message sent, invoked, published, appended or decided (returned by a decide function)."""

    verb: str
    message: str
    #: the handler (its id) whose code this is, or ``code:<function>`` for other code
    owner: str
    place: Place


class Topology(msgspec.Struct):
    """What one App is made of and where its messages go."""

    app: str
    store: str
    messages: list[MessageType]
    handlers: list[Handler]
    usages: list[Usage]
    #: whether the App has an alert callback (``app.on_alert``)
    alert_routes: bool
    #: the source files read
    read: list[str]
    #: its links to brokers (``app.connect``)
    links: list[BrokerLink] = []

    def message(self, type_name: str) -> MessageType | None:
        return next((m for m in self.messages if m.type_name == type_name), None)

    def handling(self, type_name: str) -> list[Handler]:
        """The handlers of a type (for a command: one; for an event: its subscribers)."""
        return [h for h in self.handlers if type_name in h.handles]

    def used(self, type_name: str, *verbs: str) -> list[Usage]:
        return [u for u in self.usages if u.message == type_name and u.verb in verbs]

    def owned(self, owner: str, *verbs: str) -> list[Usage]:
        return [u for u in self.usages if u.owner == owner and u.verb in verbs]

    def routed(self, type_name: str) -> list[str]:
        """The topics or services its links send messages of this type to."""
        return sorted(
            {
                c.name
                for link in self.links
                for c in link.channels
                if c.action == "send" and type_name in (c.types or ())
            }
        )

    def received(self, type_name: str) -> bool:
        """Whether its links take in events of this type from a subscribed topic."""
        return any(
            c.action == "receive"
            and c.kind == "topic"
            and (c.types is None or type_name in c.types)
            for link in self.links
            for c in link.channels
        )


def shown_path(file: str) -> str:
    """``file`` relative to the current directory when it is under it."""
    try:
        relative = os.path.relpath(file)
    except ValueError:
        return file
    return file if relative.startswith("..") else relative


def _place(target: Any) -> Place | None:
    try:
        file = inspect.getsourcefile(target)
        _, line = inspect.getsourcelines(target)
    except (OSError, TypeError):
        return None
    return None if file is None else Place(shown_path(file), line)


def _is_framework(module: str) -> bool:
    return (module == "tidings" or module.startswith("tidings.")) and not module.startswith(
        "tidings.examples."
    )


class _Builder:
    def __init__(self, app: App, modules: Iterable[types.ModuleType]) -> None:
        self.app = app
        self.modules: dict[str, types.ModuleType] = {}
        self.read: dict[str, Module] = {}
        self.classes: dict[str, type[Message]] = {}
        self.handlers: list[Handler] = []
        self.functions: dict[str, list[tuple[Function, Module]]] = {}
        for module in modules:
            self.add_module(module)

    def add_module(self, module: types.ModuleType | None) -> None:
        if module is None or _is_framework(module.__name__):
            return
        try:
            file = inspect.getsourcefile(module)
        except TypeError:
            return
        if file is None or file in self.modules:
            return
        self.modules[file] = module
        try:
            self.read[file] = read_module(file)
        except (OSError, SyntaxError, UnicodeDecodeError):
            return
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Command | Event):
                self.classes.setdefault(value.__name__, value)

    def add_function(self, fn: Callable[..., Any]) -> tuple[Function, Module] | None:
        """The scanned function behind a handler (its module is read on the way)."""
        fn = underlying(fn)
        self.add_module(sys.modules.get(getattr(fn, "__module__", "") or ""))
        code = getattr(fn, "__code__", None)
        if code is None:
            return None
        module = self.read.get(code.co_filename)
        found = module.at(code.co_firstlineno) if module is not None else None
        return None if found is None or module is None else (found, module)

    def handler(
        self,
        id: str,
        name: str,
        role: str,
        handles: list[str],
        fns: list[Callable[..., Any]],
        **kw: Any,
    ) -> None:
        marks: frozenset[str] = frozenset()
        scanned = []
        for fn in fns:
            marks |= allowed(underlying(fn))
            found = self.add_function(fn)
            if found is not None:
                scanned.append(found)
        self.functions[id] = scanned
        place = _place(underlying(fns[0])) if fns else None
        self.handlers.append(Handler(id, name, role, handles, place, sorted(marks), **kw))

    def build(self) -> Topology:
        app = self.app
        commands = app.handlers.commands
        deciders: dict[int, tuple[Any, list[str]]] = {}
        for cls, handler in commands.items():
            if handler.decider is not None:
                entry = deciders.setdefault(id(handler.decider), (handler.decider.decider, []))
                entry[1].append(cls.__type_name__)
            else:
                name = _short(handler.fn)
                self.handler(
                    f"command:{name}",
                    name,
                    "command",
                    [cls.__type_name__],
                    [handler.fn],
                )
        for decider, handled in deciders.values():
            name = _short(decider.decide)
            self.handler(f"decider:{name}", name, "decider", handled, [decider.decide])
        for sub in app.handlers.subscribers.values():
            owner = getattr(sub.fn, "__self__", None)
            handles = [e.__type_name__ for e in sub.events]
            if isinstance(owner, Workflow):
                fns = [fn for fn, _, _ in owner.handlers.values()] + list(owner.timeouts.values())
                self.handler(
                    sub.name,
                    owner.name,
                    "workflow",
                    [e.__type_name__ for e in owner.handlers],
                    fns,
                    timeouts=sorted(owner.timeouts),
                )
                continue
            self.handler(
                f"subscriber:{sub.name}",
                sub.name,
                "subscriber",
                handles,
                [sub.fn],
                critical=sub.name in self.app.alerts.critical,
                **self.judge_subscriber(f"subscriber:{sub.name}", sub.fn),
            )
        usages = self.usages()
        return Topology(
            app=app.name,
            store=app.store.url,
            messages=self.message_types(usages),
            handlers=self.handlers,
            usages=usages,
            alert_routes=app.alerts.routed,
            read=[shown_path(f) for f in self.read],
            links=links_of(app),
        )

    def judge_subscriber(self, id: str, fn: Callable[..., Any]) -> dict[str, Any]:
        """Where a subscriber refuses, and whether it writes outside ``ctx``."""
        found = self.add_function(fn)
        if found is None:
            return {}
        function, module = found
        real = underlying(fn)
        names = {**getattr(real, "__globals__", {}), **_closure(real)}
        file = shown_path(module.file)
        refuses = [
            Place(file, line)
            for name, line in function.raises
            if isinstance(names.get(name), type) and issubclass(names[name], Refused)
        ]
        outside = [
            Place(file, line)
            for root, line in function.outside
            if root in names and not isinstance(names[root], types.ModuleType | type)
        ]
        # Dependencies (parameters after the message and ctx) are outside too.
        outside += [
            Place(file, line) for root, line in function.outside if root in function.params[2:]
        ]
        return {
            "refuses": refuses,
            "writes_outside": sorted(set(outside), key=lambda p: p.line),
            "uses_message_id": function.uses_message_id,
        }

    def resolve(self, name: str) -> type[Message] | None:
        return self.classes.get(name)

    def usages(self) -> list[Usage]:
        for cls in self.app.factory.known():
            self.classes.setdefault(cls.__name__, cls)
        for cls in self.app.handlers.commands:
            self.classes.setdefault(cls.__name__, cls)
        owned: set[int] = set()
        found: list[Usage] = []
        for handler in self.handlers:
            for function, module in self.reached(handler.id):
                owned.add(id(function))
                found += self.function_usages(function, module, handler.id, handler.role)
        for module in self.read.values():
            for function in [module.top, *module.functions]:
                if id(function) not in owned:
                    found += self.function_usages(function, module, f"code:{function.name}", "")
        return sorted(set(found), key=lambda u: (u.place.file, u.place.line, u.verb, u.message))

    def reached(self, handler_id: str) -> list[tuple[Function, Module]]:
        """A handler's functions and the helpers of their modules they call by name."""
        todo = list(self.functions.get(handler_id, []))
        seen: dict[int, tuple[Function, Module]] = {}
        while todo:
            function, module = todo.pop()
            if id(function) in seen:
                continue
            seen[id(function)] = (function, module)
            for callee in function.callees:
                todo += [(f, module) for f in module.named(callee)]
        return list(seen.values())

    def function_usages(
        self, function: Function, module: Module, owner: str, role: str
    ) -> list[Usage]:
        file = shown_path(module.file)
        found = []
        for call in function.calls:
            if not role and not self.mine(call, function, module):
                continue
            cls = self.resolve(call.name)
            if cls is not None:
                found.append(Usage(call.verb, cls.__type_name__, owner, Place(file, call.line)))
        if role == "decider":
            for name, line in function.made:
                cls = self.resolve(name)
                if cls is not None and issubclass(cls, Event):
                    found.append(Usage("decide", cls.__type_name__, owner, Place(file, line)))
        return found

    def mine(self, call: Call, function: Function, module: Module) -> bool:
        """Whether a call in code outside this App's handlers is made on this App: on a name
        that is this App, or on one that is neither another App nor a parameter (another
        handler's ``ctx``)."""
        names = vars(self.modules[module.file])
        found = names.get(call.receiver) if call.receiver is not None else None
        if found is self.app:
            return True
        return not isinstance(found, App) and call.receiver not in function.params

    def message_types(self, usages: list[Usage]) -> list[MessageType]:
        named = {u.message for u in usages}
        for handler in self.handlers:
            named.update(handler.handles)
        by_type = {c.__type_name__: c for c in self.classes.values()}
        known = {c.__type_name__: c for c in self.app.factory.known()}
        found = []
        for type_name in sorted(named | known.keys()):
            cls = known.get(type_name) or by_type.get(type_name)
            if cls is None:
                continue
            found.append(
                MessageType(
                    cls.__name__,
                    type_name,
                    "command" if issubclass(cls, Command) else "event",
                    inspect.cleandoc(cls.__doc__ or ""),
                    _place(cls),
                    sorted(allowed(cls)),
                    _is_framework(cls.__module__),
                )
            )
        return found


def _short(fn: Callable[..., Any]) -> str:
    """A handler's name for people: its function's name (a decide function's with its module's)."""
    real = underlying(fn)
    name = getattr(real, "__name__", type(real).__name__)
    module = getattr(real, "__module__", "") or ""
    return f"{module.rpartition('.')[2]}.{name}" if name == "decide" and module else name


def _closure(fn: Any) -> dict[str, Any]:
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None) or ()
    if code is None:
        return {}
    values = {}
    for name, cell in zip(code.co_freevars, cells, strict=False):
        try:
            values[name] = cell.cell_contents
        except ValueError:
            continue
    return values


def explore(
    app: App, modules: Iterable[types.ModuleType] = ()
) -> tuple[Topology, dict[str, type[Message]]]:
    """The topology of ``app`` and its message classes by type name."""
    builder = _Builder(app, modules)
    topology = builder.build()
    classes = {c.__type_name__: c for c in builder.classes.values()}
    classes.update((c.__type_name__, c) for c in app.factory.known())
    return topology, {m.type_name: classes[m.type_name] for m in topology.messages}


def build(app: App, modules: Iterable[types.ModuleType] = ()) -> Topology:
    """The topology of ``app``: its registrations, and a static read of ``modules`` and of the
    modules its handlers are defined in."""
    return explore(app, modules)[0]
