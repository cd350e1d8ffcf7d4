"""Forms made from a command's JSON schema (msgspec), and the values a submitted form gives."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgspec


class Field(msgspec.Struct, frozen=True):
    """One input of a generated form: ``kind`` is text, integer, number, boolean or json."""

    name: str
    kind: str
    required: bool
    value: str
    checked: bool = False


def _kind(spec: Mapping[str, Any]) -> str:
    kind = spec.get("type")
    if kind in ("string", "integer", "number", "boolean"):
        return str(kind)
    return "json"


def fields(schema: Mapping[str, Any], values: Mapping[str, Any] | None = None) -> list[Field]:
    """The inputs of a form for ``schema`` (an object's), prefilled from ``values``."""
    values = values or {}
    required = set(schema.get("required", ()))
    made = []
    for name, spec in schema.get("properties", {}).items():
        kind = _kind(spec)
        value = values.get(name, spec.get("default"))
        if kind == "boolean":
            made.append(Field(name, kind, name in required, "", bool(value)))
            continue
        if value is None:
            text = ""
        elif kind == "json":
            text = json.dumps(value)
        else:
            text = str(value)
        made.append(Field(name, "text" if kind == "string" else kind, name in required, text))
    return made


class FormError(Exception):
    """A submitted form does not give a valid command: what is wrong, field by field."""


def values(schema: Mapping[str, Any], form: Mapping[str, str]) -> dict[str, Any]:
    """The JSON values a submitted form gives for ``schema``'s properties."""
    found: dict[str, Any] = {}
    for name, spec in schema.get("properties", {}).items():
        kind = _kind(spec)
        raw = form.get(name)
        if kind == "boolean":
            found[name] = raw is not None and raw not in ("", "false", "off")
            continue
        if raw is None or (raw == "" and kind != "string"):
            continue
        try:
            if kind == "integer":
                found[name] = int(raw)
            elif kind == "number":
                found[name] = float(raw)
            elif kind == "json":
                found[name] = json.loads(raw)
            else:
                found[name] = raw
        except ValueError as exc:
            raise FormError(f"{name}: expected {kind}, got {raw!r}") from exc
    return found


def build(cls: type[Any], given: Mapping[str, Any]) -> Any:
    """``cls`` from JSON values, checked against its types (``FormError`` says what is wrong)."""
    try:
        return msgspec.convert(dict(given), cls)
    except msgspec.ValidationError as exc:
        raise FormError(str(exc)) from exc


def decode(cls: type[Any], text: str) -> Any:
    """``cls`` from a JSON text an operator edited (``FormError`` says what is wrong)."""
    try:
        return msgspec.json.decode(text.encode(), type=cls)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise FormError(str(exc)) from exc
