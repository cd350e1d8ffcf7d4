"""A static read of Python source: where messages are sent, invoked, published and made, and what
each function calls, raises and writes."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

#: method names whose first argument is a message: ``ctx.send(X(...))``, ``app.invoke(X(...))``
VERBS = ("send", "invoke", "publish")


@dataclass(frozen=True, slots=True)
class Call:
    """A message handed to ``send``, ``invoke``, ``publish`` or ``append``, by class name."""

    verb: str
    name: str
    line: int
    #: the name the call is made on (``app`` of ``app.send(...)``, ``self`` of ``self.app...``)
    receiver: str | None = None


@dataclass
class Function:
    """What one function (or the module's own code) does with messages."""

    name: str
    #: the lines of its ``def`` and its decorators (a code object starts at the first decorator)
    lines: frozenset[int]
    #: the names of its parameters, in order
    params: tuple[str, ...] = ()
    calls: list[Call] = field(default_factory=list)
    #: classes called by name (for a decide function: the events it returns), with their line
    made: list[tuple[str, int]] = field(default_factory=list)
    #: bare names it calls (helpers of the same module it hands work to)
    callees: set[str] = field(default_factory=set)
    #: the names it raises (``raise Refused(...)``), with their line
    raises: list[tuple[str, int]] = field(default_factory=list)
    #: method calls on names neither assigned here nor its first two parameters: (root, line)
    outside: list[tuple[str, int]] = field(default_factory=list)
    #: whether it reads a message id (``ctx.message_id``)
    uses_message_id: bool = False


@dataclass
class Module:
    """The functions of one source file, and what its top-level code does."""

    file: str
    functions: list[Function]
    top: Function

    def at(self, line: int) -> Function | None:
        """The function whose ``def`` or decorator is at ``line``."""
        return next((f for f in self.functions if line in f.lines), None)

    def named(self, name: str) -> list[Function]:
        return [f for f in self.functions if f.name == name]


def read_module(path: str | Path) -> Module:
    """Read one source file (raises ``OSError``/``SyntaxError`` if it cannot)."""
    text = Path(path).read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))
    top = Function("<module>", frozenset())
    functions: list[Function] = []
    _Reader(functions).walk(tree.body, top)
    return Module(str(path), functions, top)


def _name(node: ast.expr) -> str | None:
    """``X`` of ``X`` or ``module.X``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


class _Reader:
    def __init__(self, functions: list[Function]) -> None:
        self.functions = functions

    def walk(self, body: list[ast.stmt], current: Function) -> None:
        local: set[str] = set()
        for stmt in body:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    local.add(node.id)
        for stmt in body:
            self.visit(stmt, current, local)

    def visit(self, node: ast.AST, current: Function, local: set[str]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            params = tuple(a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs))
            lines = {node.lineno, *(d.lineno for d in node.decorator_list)}
            inner = Function(node.name, frozenset(lines), params)
            self.functions.append(inner)
            self.walk(node.body, inner)
            return
        if isinstance(node, ast.Lambda):
            return
        if isinstance(node, ast.Call):
            self.call(node, current, local)
        elif isinstance(node, ast.Raise) and node.exc is not None:
            raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = _name(raised)
            if name is not None:
                current.raises.append((name, node.lineno))
        elif (isinstance(node, ast.Attribute) and node.attr == "message_id") or (
            isinstance(node, ast.Name) and node.id == "message_id"
        ):
            current.uses_message_id = True
        for child in ast.iter_child_nodes(node):
            self.visit(child, current, local)

    def call(self, node: ast.Call, current: Function, local: set[str]) -> None:
        func = node.func
        name = _name(func)
        if name is not None and name[:1].isupper():
            current.made.append((name, node.lineno))
        if isinstance(func, ast.Name):
            current.callees.add(func.id)
            return
        if not isinstance(func, ast.Attribute):
            return
        receiver = _root(func.value)
        if func.attr in VERBS and node.args and isinstance(node.args[0], ast.Call):
            made = _name(node.args[0].func)
            if made is not None:
                current.calls.append(Call(func.attr, made, node.lineno, receiver))
        elif func.attr == "append" and len(node.args) >= 2:
            events = node.args[1]
            if isinstance(events, ast.List | ast.Tuple):
                for item in events.elts:
                    made = _name(item.func) if isinstance(item, ast.Call) else None
                    if made is not None:
                        current.calls.append(Call("append", made, node.lineno, receiver))
        root = _root(func)
        if root is not None and root not in local and root not in current.params[:2]:
            current.outside.append((root, node.lineno))
