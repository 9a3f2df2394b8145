"""The event catalog: every event type, each version with its payload model.

One catalog replaces the envelope and payload classes that each repository used to copy.
A payload model is a pydantic model that validates ``eventData.oldData`` and
``eventData.newData`` separately, each when not ``None``. Updates carry only the changed
fields, so an update event's model has every field optional. Payload keys are camelCase on
the wire; give the model an alias generator (``pydantic.alias_generators.to_camel``) so that
its fields are validated, named in errors and exported under those keys.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel, ValidationError

from tidings.errors import ConfigurationError, SchemaViolation, UnknownEventType
from tidings.events.model import Event
from tidings.events.schema import envelope_schema

__all__ = ["EventCatalog", "EventSpec", "ParsedData"]

M = TypeVar("M", bound=BaseModel)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*", re.ASCII)


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One registered version of one event type.

    ``source_domain``, when set, is the only domain allowed to publish this event type.
    """

    event_type: str
    version: str
    data: type[BaseModel]
    source_domain: str | None = None
    description: str = ""

    @property
    def key(self) -> str:
        """``"EventType/version"``: the key of :meth:`EventCatalog.json_schemas`."""
        return f"{self.event_type}/{self.version}"


@dataclass(frozen=True, slots=True)
class ParsedData(Generic[M]):
    """An event's ``oldData`` and ``newData`` as payload model instances (``None`` if absent)."""

    old: M | None
    new: M | None


class EventCatalog:
    """Event types registered with a payload model per version.

    Registering is idempotent: the same type, version and spec again is a no-op; the same type
    and version with anything different raises :class:`~tidings.errors.ConfigurationError`.
    Type and version names are letters, digits, ``.``, ``_`` and ``-``, so that they are safe
    in file names, URIs and broker subjects.
    """

    def __init__(self) -> None:
        self._specs: dict[str, dict[str, EventSpec]] = {}

    def register(
        self,
        event_type: str,
        version: str = "v1",
        *,
        data: type[BaseModel],
        source_domain: str | None = None,
        description: str = "",
    ) -> None:
        """Register ``data`` as the payload model of ``event_type`` at ``version``.

        The description defaults to the model's docstring.
        """
        for what, name in (("event type", event_type), ("version", version)):
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ConfigurationError(
                    f"invalid {what} {name!r}: use letters, digits, '.', '_' and '-'"
                )
        if not (isinstance(data, type) and issubclass(data, BaseModel)):
            raise ConfigurationError(f"{event_type} {version}: data must be a pydantic model")
        description = description or (data.__doc__ or "").strip()
        spec = EventSpec(event_type, version, data, source_domain, description)
        versions = self._specs.setdefault(event_type, {})
        existing = versions.get(version)
        if existing is not None and existing != spec:
            raise ConfigurationError(
                f"{event_type} {version} is already registered with "
                f"{existing.data.__qualname__}; register a new version instead"
            )
        versions[version] = spec

    def payload(
        self,
        event_type: str,
        version: str = "v1",
        *,
        source_domain: str | None = None,
        description: str = "",
    ) -> Callable[[type[M]], type[M]]:
        """Decorator form of :meth:`register` for the payload model class."""

        def decorate(model: type[M]) -> type[M]:
            self.register(
                event_type,
                version,
                data=model,
                source_domain=source_domain,
                description=description,
            )
            return model

        return decorate

    def spec(self, event_type: str, version: str) -> EventSpec:
        """The registration of ``event_type`` at ``version``; raises UnknownEventType."""
        try:
            return self._specs[event_type][version]
        except KeyError:
            raise UnknownEventType(event_type, version) from None

    def specs(self) -> list[EventSpec]:
        """Every registration, by event type then version."""
        return [self._specs[t][v] for t in self.event_types() for v in self.versions(t)]

    def knows(self, event_type: str, version: str | None = None) -> bool:
        """Whether ``event_type`` is registered (at ``version``, when given)."""
        versions = self._specs.get(event_type, {})
        return bool(versions) if version is None else version in versions

    def event_types(self) -> list[str]:
        """Registered event types, sorted."""
        return sorted(self._specs)

    def versions(self, event_type: str) -> list[str]:
        """Registered versions of ``event_type`` in natural order (v2 before v10); [] if none."""
        return sorted(self._specs.get(event_type, {}), key=_natural)

    def validate(self, event: Event) -> None:
        """Raise UnknownEventType or SchemaViolation unless ``event`` fits its registration."""
        self.parse(event)

    @overload
    def parse(self, event: Event) -> ParsedData[BaseModel]: ...

    @overload
    def parse(self, event: Event, model: type[M]) -> ParsedData[M]: ...

    def parse(self, event: Event, model: type[BaseModel] | None = None) -> ParsedData[Any]:
        """Validate ``event`` and return its data as payload model instances.

        Raises UnknownEventType for an unregistered type or version, and SchemaViolation
        listing every failing field (``"newData.firstName: Input should be a valid string"``)
        or a ``sourceDomain`` other than the registered one. When ``model`` is given it must be
        the registered model (or a base of it), which makes the result typed.
        """
        spec = self.spec(event.event_type, event.version)
        if model is not None and not issubclass(spec.data, model):
            raise ConfigurationError(
                f"{spec.event_type} {spec.version} is registered with "
                f"{spec.data.__qualname__}, not {model.__qualname__}"
            )
        errors: list[str] = []
        if spec.source_domain is not None and event.source_domain != spec.source_domain:
            errors.append(
                f"sourceDomain: expected {spec.source_domain!r}, got {event.source_domain!r}"
            )
        old = _validate(spec.data, "oldData", event.event_data.old_data, errors)
        new = _validate(spec.data, "newData", event.event_data.new_data, errors)
        if errors:
            raise SchemaViolation(spec.event_type, spec.version, errors)
        return ParsedData(old, new)

    def json_schema(self, event_type: str, version: str) -> dict[str, Any]:
        """JSON Schema of the full ``entity-event`` wire envelope of this type and version."""
        return envelope_schema(self.spec(event_type, version))

    def json_schemas(self) -> dict[str, dict[str, Any]]:
        """Every registration's JSON Schema, keyed ``"EventType/version"``."""
        return {spec.key: envelope_schema(spec) for spec in self.specs()}

    def write_json_schemas(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write ``<EventType>.<version>.schema.json`` per registration into ``directory``
        (created if missing; other files are left alone) and return the paths written.
        The output is stable: sorted keys, two-space indent, a final newline."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for spec in self.specs():
            path = folder / f"{spec.event_type}.{spec.version}.schema.json"
            text = json.dumps(envelope_schema(spec), indent=2, sort_keys=True, ensure_ascii=False)
            path.write_text(text + "\n", encoding="utf-8")
            written.append(path)
        return written


def _validate(
    model: type[BaseModel], where: str, data: dict[str, Any] | None, errors: list[str]
) -> BaseModel | None:
    if data is None:
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            path = ".".join([where, *(str(part) for part in error["loc"])])
            errors.append(f"{path}: {error['msg']}")
        return None


def _natural(version: str) -> tuple[int | str, ...]:
    return tuple(
        int(part) if index % 2 else part
        for index, part in enumerate(re.split(r"([0-9]+)", version))
    )
