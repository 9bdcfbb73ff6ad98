"""The declarative mapping from source tables and columns to domain events (see mappings/bank.toml).

A bank's schema rarely matches the events one to one, so a field's source is more than a column:

* a column, read as the field's type (``"amount"``);
* a column with transforms, applied in this order: ``values`` (a code -> the engine's value, e.g.
  status ``"A"`` -> ``"completed"``; an unlisted code is bad input), ``minor_units`` (an integer
  of cents -> a decimal amount), ``time_unit`` (an epoch number in ``s``/``ms``/``us``/``ns``/
  ``days``) or ``format`` (a ``strptime`` format for date text, read as UTC), ``case``
  (``lower``/``upper``);
* several ``columns``: a composite key, joined with ``/`` into one text key;
* a constant (``{ const = "card" }``), for a fact the schema does not store;
* nothing: a field whose event type allows ``None`` may be left out, and is then unknown for
  every row (``UNKNOWN_FIELDS`` documents what each stage does with it). A required field left
  out is refused at start.

Keys: customers, accounts and merchants are keyed by integers unless ``[source] text_keys`` names
their entity; then every field that refers to one (``KEY_FIELDS``) reads its key as text (an
integer column's value becomes its digits), so one entity's keys never mix types. A composite key
is always text.

Topics: Debezium names them ``<prefix>.<schema>.<table>``; ``[source] schema`` (default
``public``) and ``[source] topic`` (a pattern over ``{prefix}``, ``{schema}``, ``{table}``) say
how, and a table's own ``topic`` overrides it.

Loading checks the mapping against the event types, so a typo in a deployment's mapping fails at
start-up with a message naming the table and field, not later on the first message.
"""

from __future__ import annotations

import tomllib
import types
import typing
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fraudgraph.connectors.events import EVENT_TYPES, DomainEvent

DEFAULT_MAPPING = Path(__file__).parent / "mappings" / "bank.toml"
DEFAULT_TOPIC = "{prefix}.{schema}.{table}"
KEY_SEPARATOR = "/"  # between the parts of a composite key
TIME_UNITS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": -1_000, "days": 86_400_000_000}  # µs per unit
CASES = ("lower", "upper")
KEY_FIELDS = {
    "customer_id": "customer",
    "account_id": "account",
    "counterparty_account_id": "account",
    "merchant_id": "merchant",
}  # entity-id fields -> the entity they refer to

# What an unknown (unmapped) field means downstream. Every event field that may be left out of a
# mapping is listed, so the list and the event types cannot drift apart (tests check it).
UNKNOWN_FIELDS: dict[str, str] = {
    "CustomerUpserted.full_name": "graph property absent; nothing else reads it",
    "CustomerUpserted.email": "graph property absent; nothing else reads it",
    "CustomerUpserted.phone": "graph property absent; nothing else reads it",
    "CustomerUpserted.country": "node state holds it unknown (no feature or rule reads it); graph property absent",
    "CustomerUpserted.kyc_level": "features: encoded as missing (0.0, as before the customer's row arrives, and as "
    "level 0); no rule reads it; graph property absent; a model trained with it is refused without it",
    "CustomerUpserted.created_at": "graph property absent; nothing else reads it",
    "AccountUpserted.kind": "features: encoded as missing (the 'other' kind slot, as before the account's row "
    "arrives); graph property absent; a model trained with it is refused without it",
    "AccountUpserted.currency": "graph property absent; nothing else reads it",
    "AccountUpserted.status": "node state holds it unknown (no feature or rule reads it); graph property absent",
    "AccountUpserted.opened_at": "the account's age is unknown (its first activity is not taken for its opening): "
    "the mule rule's new-account findings do not fire and say why (rule_skipped); graph property absent",
    "MerchantUpserted.name": "graph property absent; nothing else reads it",
    "MerchantUpserted.mcc": "node state holds it unknown (no feature or rule reads it); graph property absent",
    "MerchantUpserted.country": "node state holds it unknown (no feature or rule reads it); graph property absent",
    "MerchantUpserted.created_at": "colluding_merchant's reason leaves out the merchant's age; graph property absent",
    "DeviceUpserted.os": "node state holds it unknown (nothing reads it); graph property absent",
    "DeviceUpserted.user_agent": "graph property absent; nothing else reads it",
    "DeviceUpserted.first_seen": "graph property absent (the node's first_ts_ms still says when a source row first "
    "touched it); nothing else reads it",
    "LoginRecorded.device_id": "no device node or link for the login (state and graph); a model trained with it is "
    "refused without it",
    "LoginRecorded.ip": "no IP node or link for the login (state and graph), so logins without an IP share nothing; "
    "a model trained with it is refused without it",
    "ProfileChanged.device_id": "graph: the change's edge points at the customer itself; nothing else reads it",
    "ProfileChanged.ip": "graph property absent; nothing else reads it",
    "TransactionRow.currency": "graph property absent; nothing else reads it",
    "TransactionRow.merchant_id": "left out: no merchant for any payment, and a payment without a counterparty has "
    "an unknown payee: colluding_merchant and fraud_proximity's merchant party do not fire and say why; a model "
    "trained with it is refused without it. Null in a mapped column: not a card payment, as always",
    "TransactionRow.counterparty_account_id": "left out: no payee account, and a payment without a merchant has an "
    "unknown payee: mule's payee side and fraud_proximity's counterparty party do not fire and say why; a model "
    "trained with it is refused without it. Null in a mapped column: not a transfer, as always",
    "TransactionRow.device_id": "left out: no device for any payment: velocity (per device, and whether a payment "
    "without an IP was online), new_device_or_ip, shared_device_or_ip, fraud_proximity's device party and "
    "colluding_merchant's payers per device do not fire and say why; a model trained with it is refused without "
    "it. Null in a mapped column: a payment without a device (card-present), as always",
    "TransactionRow.ip": "left out: no IP for any payment: velocity (whether a payment without a device was "
    "online), new_device_or_ip, shared_device_or_ip and fraud_proximity's IP party do not fire and say why; a "
    "model trained with it is refused without it. Null in a mapped column: a payment without an IP, as always",
    "TransactionRow.updated_at": "graph property absent; nothing else reads it",
    "TransactionUpdated.previous_status": "an update to declined counts as a new decline (a declined row updated "
    "again counts again); nothing else reads it",
    "FraudReported.reported_at": "graph: the report's reported_at absent (its fraud_report_ts_ms, the change's "
    "commit time, is written as always); state and labels use the commit time, as always",
}


@dataclass(frozen=True)
class FieldSource:
    column: str | None = None  # None: a constant or a composite key
    scale: int | None = None  # only for NUMERIC columns that may arrive as schemaless base64
    from_before: bool = False
    columns: tuple[str, ...] = ()  # a composite key, joined with KEY_SEPARATOR
    const: Any = None  # a constant value (when column and columns are unset)
    values: dict[str, Any] | None = None  # source code (as text) -> value
    minor_units: int | None = None  # integer in 10**-minor_units of the unit -> Decimal
    time_unit: str | None = None  # epoch number unit (TIME_UNITS)
    format: str | None = None  # strptime format of date text
    case: str | None = None  # "lower" or "upper"
    text_key: bool = False  # an entity id read as text (its entity is in [source] text_keys, or composite)

    @property
    def source_columns(self) -> tuple[str, ...]:
        return self.columns or ((self.column,) if self.column else ())


@dataclass(frozen=True)
class TableMapping:
    table: str
    entity: str
    key: tuple[str, ...]  # the column(s) that identify a row
    create: type[DomainEvent]
    update: type[DomainEvent]
    fields: dict[str, FieldSource]  # event field -> where its value comes from (unknown fields absent)
    topic: str  # the CDC topic pattern ({prefix} filled in by Mapping.topic)
    text_key: bool = False  # rows are keyed by text: the entity is in [source] text_keys, or the key is composite

    def unknown_fields(self, cls: type[DomainEvent]) -> list[str]:
        """The event's fields this table leaves unknown."""
        return [name for name in event_field_types(cls) if name not in self.fields]


@dataclass(frozen=True)
class Mapping:
    tables: dict[str, TableMapping]
    schema: str = "public"

    def for_table(self, table: str) -> TableMapping | None:
        return self.tables.get(table)

    def topic(self, table: str, prefix: str) -> str:
        return self.tables[table].topic.format(prefix=prefix)

    def topics(self, prefix: str) -> list[str]:
        """Every mapped table's CDC topic, in the mapping's order."""
        return [self.topic(t, prefix) for t in self.tables]

    def present_fields(self) -> set[str]:
        """``Event.field`` of every field some table maps (what a model trained here could use)."""
        out = set()
        for tm in self.tables.values():
            for cls in {tm.create, tm.update}:
                out |= {f"{_declaring(cls, name)}.{name}" for name in event_field_types(cls) if name in tm.fields}
        return out


_FIELD_TYPES: dict[type, dict[str, object]] = {}


def event_field_types(cls: type[DomainEvent]) -> dict[str, object]:
    """The payload fields of an event type (everything but ``position``) with their types."""
    if cls not in _FIELD_TYPES:
        hints = typing.get_type_hints(cls)
        _FIELD_TYPES[cls] = {f.name: hints[f.name] for f in fields(cls) if f.name != "position"}
    return _FIELD_TYPES[cls]


def nullable(tp: object) -> bool:
    return (isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union) and type(None) in typing.get_args(
        tp
    )


def _declaring(cls: type, name: str) -> str:
    """The class that declares the field (TransactionCreated's fields are TransactionRow's)."""
    for klass in reversed(cls.__mro__):
        if name in getattr(klass, "__annotations__", {}):
            return klass.__name__
    return cls.__name__


def _event_type(table: str, name: str) -> type[DomainEvent]:
    try:
        return EVENT_TYPES[name]
    except KeyError:
        raise ValueError(f"mapping for table {table!r}: unknown event {name!r}; known: {sorted(EVENT_TYPES)}") from None


def _field_source(table: str, name: str, spec: Any, from_before: bool, tp: object, text: bool) -> FieldSource:
    where = f"mapping for table {table!r}, field {name!r}"
    if isinstance(spec, str):
        return FieldSource(spec, from_before=from_before, text_key=text)
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: a column name or a table of options, not {spec!r}")
    known = {"column", "columns", "const", "scale", "values", "minor_units", "time_unit", "format", "case"}
    if set(spec) - known:
        raise ValueError(f"{where}: unknown options {sorted(set(spec) - known)}; known: {sorted(known)}")
    sources = [k for k in ("column", "columns", "const") if k in spec]
    if len(sources) != 1:
        raise ValueError(f"{where}: give exactly one of column, columns, const")
    columns = tuple(spec.get("columns", ()))
    if "columns" in spec and (len(columns) < 2 or not all(isinstance(c, str) and c for c in columns)):
        raise ValueError(f"{where}: columns is a list of at least two column names")
    if spec.get("time_unit") is not None and spec["time_unit"] not in TIME_UNITS:
        raise ValueError(f"{where}: time_unit {spec['time_unit']!r} is not one of {sorted(TIME_UNITS)}")
    if spec.get("case") is not None and spec["case"] not in CASES:
        raise ValueError(f"{where}: case {spec['case']!r} is not one of {list(CASES)}")
    if "time_unit" in spec and "format" in spec:
        raise ValueError(f"{where}: time_unit (epoch numbers) and format (date text) exclude each other")
    values = spec.get("values")
    if values is not None and not isinstance(values, dict):
        raise ValueError(f"{where}: values maps source codes to values")
    base = _base_type(tp)
    if "minor_units" in spec and base is not Decimal:
        raise ValueError(f"{where}: minor_units is for amounts")
    if ("time_unit" in spec or "format" in spec) and base is not datetime:
        raise ValueError(f"{where}: time_unit and format are for timestamps")
    return FieldSource(
        spec.get("column"),
        spec.get("scale"),
        from_before,
        columns,
        spec.get("const"),
        {str(k): v for k, v in values.items()} if values is not None else None,
        spec.get("minor_units"),
        spec.get("time_unit"),
        spec.get("format"),
        spec.get("case"),
        text or bool(columns),
    )


def _base_type(tp: object) -> object:
    args = [a for a in typing.get_args(tp) if a is not type(None)] if nullable(tp) else [tp]
    return args[0] if len(args) == 1 else tp


def parse_mapping(data: dict) -> Mapping:
    source = data.get("source", {})
    schema = source.get("schema", "public")
    topic_pattern = source.get("topic", DEFAULT_TOPIC)
    text_keys = set(source.get("text_keys", ()))
    if text_keys - set(KEY_FIELDS.values()):
        raise ValueError(
            f"[source] text_keys: {sorted(text_keys - set(KEY_FIELDS.values()))} are not "
            f"entities with ids ({sorted(set(KEY_FIELDS.values()))})"
        )
    tables = {}
    for table, spec in data.get("tables", {}).items():
        missing = [k for k in ("entity", "key", "create", "update") if k not in spec] if isinstance(spec, dict) else []
        if not isinstance(spec, dict) or missing:
            raise ValueError(f"mapping for table {table!r}: needs entity, key, create and update (missing {missing})")
        for section in ("fields", "before"):
            if not isinstance(spec.get(section, {}), dict):
                raise ValueError(f"mapping for table {table!r}: {section} maps event fields to their sources")
        create, update = _event_type(table, spec["create"]), _event_type(table, spec["update"])
        types_ = {**event_field_types(create), **event_field_types(update)}
        sources: dict[str, FieldSource] = {}
        for section, before in (("fields", False), ("before", True)):
            for name, s in spec.get(section, {}).items():
                if name not in types_:
                    raise ValueError(
                        f"mapping for table {table!r}: unknown field {name!r} for {create.__name__}/{update.__name__}"
                    )
                text = KEY_FIELDS.get(name) in text_keys
                sources[name] = _field_source(table, name, s, before, types_[name], text)
        for cls in {create, update}:
            missing = [n for n, tp in event_field_types(cls).items() if n not in sources and not nullable(tp)]
            if missing:
                raise ValueError(
                    f"mapping for table {table!r} does not fit {cls.__name__}: missing required fields {sorted(missing)} "
                    "(only fields that may be null can be left out)"
                )
        key = spec["key"]
        key = (key,) if isinstance(key, str) else tuple(key)
        pattern = spec.get("topic", topic_pattern)
        topic = pattern.replace("{schema}", schema).replace("{table}", table)
        text_key = len(key) > 1 or spec["entity"] in text_keys
        tables[table] = TableMapping(table, spec["entity"], key, create, update, sources, topic, text_key)
    if not tables:
        raise ValueError("mapping has no tables")
    return Mapping(tables, schema)


def load_mapping(path: Path | str | None = None) -> Mapping:
    path = Path(path) if path else DEFAULT_MAPPING
    with open(path, "rb") as fh:
        return parse_mapping(tomllib.load(fh))
