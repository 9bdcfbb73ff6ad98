"""The declarative mapping from source tables and columns to domain events (see mappings/bank.toml).

Loading checks the mapping against the event types, so a typo in a deployment's mapping fails at
start-up with a message naming the table and field, not later on the first message.
"""

from __future__ import annotations

import tomllib
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from fraudgraph.connectors.events import EVENT_TYPES, DomainEvent

DEFAULT_MAPPING = Path(__file__).parent / "mappings" / "bank.toml"


@dataclass(frozen=True)
class FieldSource:
    column: str
    scale: int | None = None  # only for NUMERIC columns that may arrive as schemaless base64
    from_before: bool = False


@dataclass(frozen=True)
class TableMapping:
    table: str
    entity: str
    key: str
    create: type[DomainEvent]
    update: type[DomainEvent]
    fields: dict[str, FieldSource]  # event field -> where its value comes from


@dataclass(frozen=True)
class Mapping:
    tables: dict[str, TableMapping]

    def for_table(self, table: str) -> TableMapping | None:
        return self.tables.get(table)


# A dict rather than functools.cache: mypy takes a frozen dataclass's type for unhashable.
_FIELD_TYPES: dict[type[DomainEvent], dict[str, object]] = {}


def event_field_types(cls: type[DomainEvent]) -> dict[str, object]:
    """The payload fields of an event type (everything but ``position``) with their types."""
    found = _FIELD_TYPES.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = _FIELD_TYPES[cls] = {f.name: hints[f.name] for f in fields(cls) if f.name != "position"}
    return found


def _event_type(table: str, name: str) -> type[DomainEvent]:
    try:
        return EVENT_TYPES[name]
    except KeyError:
        raise ValueError(f"mapping for table {table!r}: unknown event {name!r}; known: {sorted(EVENT_TYPES)}") from None


def _field_source(spec, from_before: bool) -> FieldSource:
    if isinstance(spec, str):
        return FieldSource(spec, from_before=from_before)
    return FieldSource(spec["column"], spec.get("scale"), from_before)


def parse_mapping(data: dict) -> Mapping:
    tables = {}
    for table, spec in data.get("tables", {}).items():
        create, update = _event_type(table, spec["create"]), _event_type(table, spec["update"])
        sources = {name: _field_source(s, False) for name, s in spec.get("fields", {}).items()}
        sources |= {name: _field_source(s, True) for name, s in spec.get("before", {}).items()}
        for cls in {create, update}:
            wanted = set(event_field_types(cls))
            missing, extra = wanted - set(sources), set(sources) - wanted - _other_fields(create, update, cls)
            if missing or extra:
                raise ValueError(
                    f"mapping for table {table!r} does not fit {cls.__name__}: "
                    f"missing fields {sorted(missing)}, unknown fields {sorted(extra)}"
                )
        tables[table] = TableMapping(table, spec["entity"], spec["key"], create, update, sources)
    if not tables:
        raise ValueError("mapping has no tables")
    return Mapping(tables)


def _other_fields(create, update, cls) -> set[str]:
    # A field that only the create or only the update event has is fine for the other one.
    return (set(event_field_types(create)) | set(event_field_types(update))) - set(event_field_types(cls))


def load_mapping(path: Path | str | None = None) -> Mapping:
    path = Path(path) if path else DEFAULT_MAPPING
    with open(path, "rb") as fh:
        return parse_mapping(tomllib.load(fh))
