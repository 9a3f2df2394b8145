"""Whether a catalog's JSON Schemas still serve the consumers of a previous release.

A schema is both what producers emit and what the catalog accepts, and events outlive
releases in queues, outboxes and dead letters. So a change is breaking when either side of an
upgrade would trip over it:

* an event type version that is no longer registered;
* a field removed (its properties entry gone);
* a field retyped: any change to the JSON types it admits, ``null`` and formats included
  (``string`` to ``string | null``, ``integer`` to ``number``, ``date`` to ``date-time``);
* a field whose allowed values (``const``/``enum``) changed;
* a field that became required, was added as required, or is no longer required.

Adding optional fields and adding event types or versions are not breaking. Descriptions,
titles, defaults and bounds such as ``maxLength`` are not compared.

Fields are named by their path in the ``entity-event`` envelope, ``[]`` standing for an array
item and ``*`` for a map value: ``eventData.newData.householdMembers[].fullName``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidings.errors import ConfigurationError

__all__ = ["breaking_changes", "load_schemas", "schema_key"]

_JSON_TYPES = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def breaking_changes(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[str]:
    """One line per change from ``old`` to ``new`` that breaks consumers, in a stable order.

    Both arguments map ``"EventType/version"`` to that version's schema, as
    :meth:`~tidings.events.catalog.EventCatalog.json_schemas` returns them. Lines read
    ``"<EventType> <version>: <field path>: <what changed>"``; an empty list means compatible.
    """
    problems: list[str] = []
    for key in sorted(old):
        label = key.replace("/", " ", 1)
        if key not in new:
            problems.append(f"{label}: event type version removed")
            continue
        for path, what in _compare(_Root(old[key]), _Root(new[key]), old[key], new[key], ""):
            problems.append(f"{label}: {path}: {what}" if path else f"{label}: {what}")
    return problems


def schema_key(schema: Mapping[str, Any]) -> str:
    """``"EventType/version"`` of an exported schema, read from its ``eventType`` and
    ``version`` constants; raises ConfigurationError when they are missing."""
    properties = schema.get("properties", {}) if isinstance(schema, Mapping) else {}
    try:
        return f"{properties['eventType']['const']}/{properties['version']['const']}"
    except (KeyError, TypeError):
        raise ConfigurationError("not an event schema: no eventType and version const") from None


def load_schemas(directory: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The ``*.schema.json`` files of ``directory`` (as ``tidings schemas export`` writes
    them) keyed ``"EventType/version"``; raises ConfigurationError for an unreadable or
    invalid file, or a directory without any."""
    folder = Path(directory)
    paths = sorted(folder.glob("*.schema.json"))
    if not paths:
        raise ConfigurationError(f"{folder}: no *.schema.json files")
    schemas: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
            key = schema_key(schema)
            if key in schemas:
                raise ConfigurationError(f"a second schema of {key.replace('/', ' ')}")
            schemas[key] = schema
        except OSError as exc:
            raise ConfigurationError(f"{path}: {exc.strerror or exc}") from None
        except (ValueError, ConfigurationError) as exc:
            raise ConfigurationError(f"{path}: {exc}") from None
    return schemas


class _Root:
    """Resolves local ``$ref`` pointers (``#/$defs/Name``) within one schema document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return None
        node: Any = self.document
        for part in ref[1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part) if isinstance(node, dict) else None
        return node


@dataclass
class _View:
    """What one schema node admits, its ``anyOf``/``oneOf``/``allOf``/``$ref`` flattened."""

    kinds: set[str] = field(default_factory=set)
    values: set[str] | None = field(default_factory=set)
    properties: dict[str, list[Any]] = field(default_factory=dict)
    required: set[str] | None = None
    items: list[Any] = field(default_factory=list)
    extra: list[Any] = field(default_factory=list)
    refs: frozenset[str] = frozenset()


def _view(root: _Root, node: Any, view: _View | None = None, depth: int = 0) -> _View:
    view = view if view is not None else _View()
    if not isinstance(node, dict) or depth > 64:
        view.kinds.add("any")
        view.values = None
        return view
    node = dict(node)
    for member in node.pop("allOf", []):
        resolved = root.resolve(member["$ref"]) if "$ref" in member else member
        node = {**(resolved or {}), **node}
    if "$ref" in node:
        view.refs = view.refs | {node["$ref"]}
        return _view(root, root.resolve(node["$ref"]), view, depth + 1)
    branches = node.get("anyOf", []) + node.get("oneOf", [])
    if branches:
        for branch in branches:
            _view(root, branch, view, depth + 1)
        return view
    kinds = _kinds(node)
    view.kinds |= {
        f"string({node['format']})" if k == "string" and "format" in node else k for k in kinds
    }
    choices = [node["const"]] if "const" in node else node.get("enum")
    if choices is not None or kinds == {"null"}:
        if view.values is not None:
            view.values |= {
                json.dumps(v, sort_keys=True) for v in (choices if choices is not None else [None])
            }
    else:
        view.values = None
    if "object" in kinds or "properties" in node:
        for name, sub in node.get("properties", {}).items():
            view.properties.setdefault(name, []).append(sub)
        required = set(node.get("required", []))
        view.required = required if view.required is None else view.required & required
        if isinstance(node.get("additionalProperties"), dict):
            view.extra.append(node["additionalProperties"])
    if "array" in kinds and isinstance(node.get("items"), dict):
        view.items.append(node["items"])
    return view


def _kinds(node: dict[str, Any]) -> set[str]:
    declared = node.get("type")
    if declared is not None:
        return set(declared) if isinstance(declared, list) else {declared}
    choices = [node["const"]] if "const" in node else node.get("enum")
    if choices is None:
        return {"any"}
    return {next((name for t, name in _JSON_TYPES if isinstance(v, t)), "null") for v in choices}


def _one(nodes: list[Any]) -> Any:
    return nodes[0] if len(nodes) == 1 else {"anyOf": nodes}


def _compare(
    old_root: _Root,
    new_root: _Root,
    old: Any,
    new: Any,
    path: str,
    seen: frozenset[tuple[frozenset[str], frozenset[str]]] = frozenset(),
) -> list[tuple[str, str]]:
    a, b = _view(old_root, old), _view(new_root, new)
    if a.refs and b.refs and (a.refs, b.refs) in seen:
        return []
    seen = seen | {(a.refs, b.refs)}
    found: list[tuple[str, str]] = []
    if a.kinds != b.kinds:
        found.append((path, f"retyped from {_show(a.kinds)} to {_show(b.kinds)}"))
    if a.values != b.values:
        found.append((path, f"allowed values changed from {_values(a)} to {_values(b)}"))
    prefix = f"{path}." if path else ""
    for name in sorted(a.properties.keys() | b.properties.keys()):
        where = prefix + name
        old_required = name in (a.required or set())
        new_required = name in (b.required or set())
        if name not in b.properties:
            found.append((where, "removed"))
            continue
        if name not in a.properties:
            if new_required:
                found.append((where, "added as required"))
            continue
        if new_required != old_required:
            found.append((where, "became required" if new_required else "no longer required"))
        found += _compare(
            old_root, new_root, _one(a.properties[name]), _one(b.properties[name]), where, seen
        )
    for old_sub, new_sub, suffix in ((a.items, b.items, "[]"), (a.extra, b.extra, ".*")):
        if old_sub and new_sub:
            found += _compare(old_root, new_root, _one(old_sub), _one(new_sub), path + suffix, seen)
    return found


def _show(kinds: set[str]) -> str:
    return " | ".join(sorted(kinds))


def _values(view: _View) -> str:
    return "any" if view.values is None else ", ".join(sorted(view.values))
