"""The advisor's rules: each with a stable id, a severity and what it teaches about commands and
events; :func:`findings` applies them to topologies."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import msgspec

from tidings.messages import CommandFailed
from tidings.topology.model import Handler, MessageType, Place, Topology

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (ERROR, WARNING, INFO)


class Rule(msgspec.Struct, frozen=True):
    """One heuristic: ``id`` (stable, ``TD001``…), a short ``name``, and why it matters."""

    id: str
    name: str
    severity: str
    summary: str
    explanation: str


class Finding(msgspec.Struct, frozen=True):
    """One place where a rule applies."""

    rule: str
    severity: str
    message: str
    app: str
    #: the message types and handlers concerned (what suppressions name)
    subjects: list[str]
    place: Place | None = None
    #: why it is not reported: ``"in code"`` (``@allow``) or ``"pyproject.toml"``
    suppressed: str | None = None


RULES: dict[str, Rule] = {
    r.id: r
    for r in [
        Rule(
            "TD001",
            "command-not-handled",
            ERROR,
            "A command is sent or invoked, but nothing in the App handles it.",
            "A command asks one known recipient to do something; a command nobody handles is a "
            "request nobody will ever answer: sent, it waits forever; invoked, it raises "
            "HandlerNotFound in production. Register its one handler with @app.command (or a "
            "decider), or, if it only announces what happened, make it an event and publish it.",
        ),
        Rule(
            "TD002",
            "handler-never-sent",
            INFO,
            "A command has a handler, but the code read never sends or invokes it.",
            "A command exists because someone asks for it. If nothing sends or invokes it, the "
            "handler is dead code, or the asking happens where the advisor does not read (a web "
            "route in another module: name it with --include, or allow the rule on the type).",
        ),
        Rule(
            "TD003",
            "event-without-subscriber",
            INFO,
            "An event is published, but nothing subscribes to it.",
            "An event is a fact recorded for whoever cares, now or later; having no subscriber "
            "yet is allowed, and the fact is kept. It is worth a look: if the publisher expects "
            "something to happen because of it, it wanted a command with a known recipient.",
        ),
        Rule(
            "TD004",
            "subscriber-without-publisher",
            WARNING,
            "A subscriber waits for an event that the code read never publishes.",
            "A subscriber reacts to facts others record. If nothing publishes the event, the "
            "subscriber never runs: the event was renamed, is published in another service (then "
            "allow the rule), or the subscriber is left over.",
        ),
        Rule(
            "TD005",
            "subscriber-refuses",
            ERROR,
            "A subscriber raises Refused.",
            "An event is a fact: it has happened and cannot be refused, only followed by other "
            "facts. A subscriber that raises Refused fails, is retried and parked, and the "
            "publisher never hears of it. If the recipient may say no, the sender wanted a "
            "command: send one, and let its handler refuse.",
        ),
        Rule(
            "TD006",
            "critical-single-subscriber",
            WARNING,
            "An event has exactly one subscriber, and it is business-critical.",
            "A subscriber's failure never reaches the publisher: that is what makes events "
            "cheap to add. When exactly one recipient must do the work and its failure matters "
            "(the receipt of a paid ticket), that is a command: send it, so that it has one "
            "handler, a recorded outcome, and a CommandFailed event and an alert when it dies.",
        ),
        Rule(
            "TD007",
            "command-many-recipients",
            ERROR,
            "One command type is handled by several Apps that share a store.",
            "A command has exactly one recipient. Two services handling the same command type on "
            "one store compete for it, and which one carries it out is chance. Keep one handler; "
            "if the other should react to what happened, subscribe it to the event the first "
            "publishes.",
        ),
        Rule(
            "TD008",
            "command-named-as-fact",
            WARNING,
            "A command's name reads as something that already happened.",
            "Commands ask and events tell, and their names should say which: a command is an "
            "imperative (ReserveSeat), an event a past-tense fact (SeatReserved). A command named "
            "as a fact hides that it may be refused; rename it, or make it the event it reads as.",
        ),
        Rule(
            "TD009",
            "event-named-as-order",
            WARNING,
            "An event's name reads as an order.",
            "An event records a fact; it cannot be refused and nobody is obliged to act on it. "
            "An event named as an order (SendEmail) suggests a recipient is expected to do "
            "something: then it is a command. Otherwise name the fact (EmailRequested).",
        ),
        Rule(
            "TD010",
            "sent-command-unwatched",
            WARNING,
            "A command is sent, and nobody is told when it dies.",
            "A sent command runs later, and it may fail for good. Then tidings records a "
            "CommandFailed event and fires an alert, but only a subscriber to CommandFailed or "
            "an alert callback (app.on_alert) tells anyone. Add one, so the sender is not left "
            "guessing.",
        ),
        Rule(
            "TD011",
            "cycle-without-workflow",
            WARNING,
            "Commands and events cause each other in a cycle that no workflow owns.",
            "A command's events make a subscriber send a command whose events lead back to the "
            "first: a process, spread over subscribers that each see one step. Nobody owns its "
            "state, its end or its timeouts. Make it a Workflow: one place that knows where each "
            "instance is and when to give up.",
        ),
        Rule(
            "TD012",
            "subscriber-not-idempotent",
            INFO,
            "A subscriber writes outside ctx and never reads the message id.",
            "Delivery is at least once: a subscriber may see an event twice (after a crash, a "
            "lost lease). Writes through ctx commit with the checkpoint, so they happen once. A "
            "subscriber that calls other systems should pass ctx.message_id along as an "
            "idempotency key, so that a repeat changes nothing.",
        ),
        Rule(
            "TD013",
            "command-many-recipients-on-broker",
            ERROR,
            "One command type has several recipients across a broker.",
            "A command has exactly one recipient, across services too. A command routed to "
            "another service's queue and also handled where it is sent is carried out twice (the "
            "local handler and the other service each take it); routed to two services, or "
            "handled by two services on one broker, which one carries it out depends on who "
            "sends it. Route it to the one service that handles it, and let the others "
            "subscribe to the event that service publishes.",
        ),
    ]
}

PAST = {
    "sent", "paid", "made", "done", "sold", "built", "taken", "given", "held", "lost", "found",
    "bought", "left", "won", "begun", "shut", "set", "put", "read", "kept", "met", "told", "gone",
    "seen", "known", "written", "chosen", "drawn", "frozen", "broken", "spent", "split", "hit",
}  # fmt: skip
NOT_PAST = {"need", "seed", "feed", "speed", "bed", "shed", "embed", "proceed", "exceed", "breed"}
ORDERS = {
    "add", "approve", "assign", "book", "buy", "calculate", "cancel", "change", "charge",
    "check", "close", "collect", "complete", "confirm", "create", "delete", "deliver", "do",
    "enable", "disable", "generate", "get", "give", "import", "issue", "make", "mark", "notify",
    "open", "pay", "place", "process", "publish", "register", "reject", "release", "remove",
    "rename", "request", "reserve", "reset", "retry", "run", "schedule", "send", "set", "ship",
    "start", "stop", "submit", "update", "upload", "validate",
}  # fmt: skip


def words(name: str) -> list[str]:
    """A class name's words, lowercase: ``SeatReserved`` → ``["seat", "reserved"]``."""
    return [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+", name)]


def is_past(word: str) -> bool:
    return word in PAST or (word.endswith("ed") and len(word) > 3 and word not in NOT_PAST)


def reads_as_fact(name: str) -> bool:
    found = words(name)
    return bool(found) and is_past(found[-1]) and found[0] not in ORDERS


def reads_as_order(name: str) -> bool:
    found = words(name)
    return len(found) > 1 and found[0] in ORDERS and not is_past(found[-1])


class _Context:
    def __init__(self, topology: Topology) -> None:
        self.t = topology

    def finding(
        self, rule: str, message: str, subjects: Sequence[str], place: Place | None
    ) -> Finding:
        return Finding(rule, RULES[rule].severity, message, self.t.app, list(subjects), place)

    def own(self) -> list[MessageType]:
        return [m for m in self.t.messages if not m.internal]

    def subscribers(self, type_name: str) -> list[Handler]:
        return [h for h in self.t.handling(type_name) if h.role in ("subscriber", "workflow")]


def _names(message: MessageType) -> list[str]:
    return [message.name, message.type_name]


def _commands(c: _Context) -> Iterator[Finding]:
    for m in c.own():
        if m.kind != "command":
            continue
        handlers = c.t.handling(m.type_name)
        asked = c.t.used(m.type_name, "send", "invoke")
        if not handlers and c.t.routed(m.type_name):
            continue  # another service handles it
        if not handlers:
            where = asked[0].place if asked else m.place
            how = {"send": "sent", "invoke": "invoked"}[asked[0].verb] if asked else "registered"
            yield c.finding(
                "TD001",
                f"command {m.name} is {how}, but nothing in App {c.t.app!r} handles it",
                _names(m),
                where,
            )
        elif not asked:
            h = handlers[0]
            yield c.finding(
                "TD002",
                f"command {m.name} is handled by {h.name}, but no code read sends or invokes it",
                [*_names(m), h.name],
                h.place or m.place,
            )


def _events(c: _Context) -> Iterator[Finding]:
    for m in c.own():
        if m.kind != "event":
            continue
        subscribers = c.subscribers(m.type_name)
        published = c.t.used(m.type_name, "publish", "append", "decide")
        if published and not subscribers and not c.t.routed(m.type_name):
            yield c.finding(
                "TD003",
                f"event {m.name} is published, but nothing subscribes to it",
                _names(m),
                published[0].place,
            )
        if subscribers and not published and not c.t.received(m.type_name):
            for s in subscribers:
                yield c.finding(
                    "TD004",
                    f"{s.role} {s.name} takes {m.name}, which no code read publishes",
                    [*_names(m), s.name],
                    s.place,
                )
        critical = [s for s in subscribers if s.critical]
        if len(subscribers) == 1 and critical:
            yield c.finding(
                "TD006",
                f"event {m.name} has one subscriber, {critical[0].name}, and it is critical: "
                f"consider a command sent to it instead",
                [*_names(m), critical[0].name],
                critical[0].place,
            )


def _subscribers(c: _Context) -> Iterator[Finding]:
    for h in c.t.handlers:
        for place in h.refuses:
            yield c.finding(
                "TD005",
                f"{h.role} {h.name} raises Refused: an event cannot be refused",
                [h.name, *h.handles],
                place,
            )
        if h.role == "subscriber" and h.writes_outside and not h.uses_message_id:
            yield c.finding(
                "TD012",
                f"subscriber {h.name} writes outside ctx and never reads ctx.message_id",
                [h.name, *h.handles],
                h.writes_outside[0],
            )


def _names_and_watching(c: _Context) -> Iterator[Finding]:
    for m in c.own():
        if m.kind == "command" and reads_as_fact(m.name):
            yield c.finding("TD008", f"command {m.name} is named as a fact", _names(m), m.place)
        if m.kind == "event" and reads_as_order(m.name):
            yield c.finding("TD009", f"event {m.name} is named as an order", _names(m), m.place)
    watched = c.t.alert_routes or bool(c.subscribers(CommandFailed.__type_name__))
    if watched:
        return
    for m in c.own():
        sent = c.t.used(m.type_name, "send") if m.kind == "command" else []
        if sent:
            yield c.finding(
                "TD010",
                f"command {m.name} is sent; when it dies, no alert callback and no "
                "CommandFailed subscriber is told",
                _names(m),
                sent[0].place,
            )


def _cycles(c: _Context) -> Iterator[Finding]:
    # Commands lead to what their handler publishes or sends; events to what a plain subscriber
    # sends. Workflow steps are left out: a cycle through a workflow is owned.
    edges: dict[str, set[str]] = {}
    for h in c.t.handlers:
        if h.role == "workflow":
            continue
        verbs: tuple[str, ...] = ("send", "invoke")
        if h.role != "subscriber":
            verbs += ("publish", "append", "decide")
        caused = {u.message for u in c.t.owned(h.id, *verbs)}
        for handled in h.handles:
            edges.setdefault(handled, set()).update(caused)
    for cycle in _strong_components(edges):
        names = [_name_of(c.t, t) for t in cycle]
        subscribers = [h for t in cycle for h in c.subscribers(t) if h.role == "subscriber"]
        yield c.finding(
            "TD011",
            "no workflow owns the cycle " + " → ".join([*names, names[0]]),
            names + [h.name for h in subscribers],
            subscribers[0].place if subscribers else None,
        )


def _name_of(topology: Topology, type_name: str) -> str:
    found = topology.message(type_name)
    return found.name if found is not None else type_name


def _strong_components(edges: dict[str, set[str]]) -> list[list[str]]:
    """The cycles of a graph (Tarjan's strongly connected components of two or more nodes, or
    one with an edge to itself), each in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(_ordered(component, edges))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _ordered(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """The component as a walk from its smallest node along its edges."""
    members = set(component)
    walk = [min(component)]
    while len(walk) < len(component):
        nxt = sorted(n for n in edges.get(walk[-1], ()) if n in members and n not in walk)
        if not nxt:
            return sorted(component)
        walk.append(nxt[0])
    return walk


def _shared_commands(topologies: Sequence[Topology]) -> Iterator[Finding]:
    for i, first in enumerate(topologies):
        for second in topologies[i + 1 :]:
            if first.store != second.store or first.store.startswith("memory:"):
                continue
            for h in first.handlers:
                for type_name in h.handles:
                    m = first.message(type_name)
                    if m is None or m.kind != "command":
                        continue
                    for other in second.handling(type_name):
                        yield Finding(
                            "TD007",
                            RULES["TD007"].severity,
                            f"command {m.name} is handled in App {first.app!r} by {h.name} and "
                            f"in App {second.app!r} by {other.name}, on one store",
                            f"{first.app}+{second.app}",
                            [*_names(m), h.name, other.name],
                            other.place,
                        )


def _broker_commands(topologies: Sequence[Topology]) -> Iterator[Finding]:
    """TD013: per broker (protocol, host, namespace), each command type's recipients: the
    services it is routed to, and the connected Apps that handle it."""
    recipients: dict[tuple[str, str, str | None, str], dict[str, str]] = {}
    parties: dict[tuple[str, str, str | None, str], list[Topology]] = {}
    for t in topologies:
        handled = {n for h in t.handlers if h.role in ("command", "decider") for n in h.handles}
        for link in t.links:
            where = (link.protocol, link.host, link.namespace)
            for name in handled:
                recipients.setdefault((*where, name), {})[t.app] = f"handled by {t.app}"
                parties.setdefault((*where, name), []).append(t)
            for channel in link.channels:
                if channel.action == "send" and channel.kind == "service":
                    for name in channel.types or ():
                        found = recipients.setdefault((*where, name), {})
                        found.setdefault(channel.name, f"routed to {channel.name} by {t.app}")
                        parties.setdefault((*where, name), []).append(t)
    for key, found in sorted(recipients.items(), key=lambda item: item[0][3]):
        involved = parties[key]
        m = next((t.message(key[3]) for t in involved if t.message(key[3])), None)
        if len(found) < 2 or m is None or m.kind != "command":
            continue
        handlers = [h for t in involved for h in t.handling(key[3])]
        yield Finding(
            "TD013",
            RULES["TD013"].severity,
            f"command {m.name} has {len(found)} recipients on one broker: "
            + ", ".join(sorted(found.values())),
            "+".join(sorted({t.app for t in involved})),
            [*_names(m), *sorted({h.name for h in handlers})],
            handlers[0].place if handlers else m.place,
        )


CHECKS = (_commands, _events, _subscribers, _names_and_watching, _cycles)


def findings(topologies: Sequence[Topology]) -> list[Finding]:
    """Every rule applied to each topology, and across them (TD007, TD013), most severe first."""
    found: list[Finding] = []
    for topology in topologies:
        context = _Context(topology)
        for check in CHECKS:
            found += check(context)
    found += _shared_commands(topologies)
    found += _broker_commands(topologies)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(found, key=lambda f: (order[f.severity], f.rule, f.message))
