"""Debezium change events (bytes off Kafka) to typed domain events, or a reason why not.

Accepts what the Debezium PostgreSQL connector writes through Kafka Connect's JsonConverter, with
or without the ``schema``/``payload`` wrapper, for ops ``c`` ``u`` ``d`` ``r`` ``t`` and tombstones.
With a schema, each column's Connect type says how to read it (decimals as base64 bytes, double or
string; Debezium's time types). Without one, the configured ``decimal.handling.mode`` and the
mapping's scale say how to read a decimal, and timestamps are ISO strings or epoch numbers whose
unit follows from their magnitude.

``decode`` is a pure function: it raises ``DecodeError`` with a reason from a small fixed set (so
the dead-letter metric's label stays bounded) and a human-readable detail.
"""

from __future__ import annotations

import base64
import binascii
import math
import types
import typing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

import orjson

from fraudgraph.connectors.events import DomainEvent, EntityDeleted, SourcePosition, TableTruncated
from fraudgraph.connectors.mapping import (
    KEY_SEPARATOR,
    TIME_UNITS,
    FieldSource,
    Mapping,
    TableMapping,
    event_field_types,
)

MAX_MESSAGE_BYTES = 1 << 20
MAX_STRING_CHARS = 4096
# NUMERIC(18,2) in the reference schema; anything at or above this is not a real payment.
MAX_AMOUNT = Decimal("1e16")
# PostgreSQL's BIGINT and Neo4j's integers are signed 64-bit, and the Bolt driver refuses anything
# larger; orjson reads integers up to 2**64-1. A bigger one would be decoded and then fail the graph
# stage (which stops the worker), so it is rejected here, with the message kept.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

REASONS = (
    "too_large",
    "not_json",
    "not_an_envelope",
    "unknown_table",
    "unsupported_op",
    "missing_field",
    "bad_value",
    "absurd_value",
)
# Not raised by decode(): the worker's label for an unexpected exception inside the decoder.
DECODER_BUG = "decoder_error"


class DecodeError(ValueError):
    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Tombstone:
    """Kafka's null value after a delete (for log compaction); the delete event came just before."""

    topic: str


Decoded = DomainEvent | Tombstone


def table_of(topic: str) -> str:
    return topic.rsplit(".", 1)[-1]


def decode(
    topic: str, value: bytes | None, mapping: Mapping, decimal_handling_mode: str = "precise", key: bytes | None = None
) -> Decoded:
    if value is None:
        return Tombstone(topic)
    if len(value) > MAX_MESSAGE_BYTES:
        raise DecodeError("too_large", f"{len(value)} bytes > {MAX_MESSAGE_BYTES}")
    split = _split_envelope(value)
    if split is not None:
        column_schemas, doc = split
    else:
        try:
            doc = orjson.loads(value)  # ~4x faster than json on schema'd envelopes; strict UTF-8
        except (orjson.JSONDecodeError, RecursionError) as exc:
            raise DecodeError("not_json", str(exc)[:200]) from None
        if not isinstance(doc, dict):
            raise DecodeError("not_an_envelope", f"top level is {type(doc).__name__}, not an object")
        column_schemas = {}
        if "payload" in doc and "schema" in doc:
            column_schemas, doc = _column_schemas(doc["schema"]), doc["payload"]
    if doc is None:
        return Tombstone(topic)
    if not isinstance(doc, dict):
        raise DecodeError("not_an_envelope", "payload is not an object")
    op, source = doc.get("op"), doc.get("source")
    if not isinstance(op, str) or not isinstance(source, dict):
        raise DecodeError("not_an_envelope", "no op/source: not a Debezium change event")
    table = source.get("table") or table_of(topic)
    in_schema = source.get("schema") in (None, mapping.schema)  # the same table name in another schema is not ours
    tm = mapping.for_table(table) if isinstance(table, str) and in_schema else None
    if tm is None:
        # Never repr() what the message holds: a deeply nested value would raise RecursionError.
        shown = repr(table[:100]) if isinstance(table, str) else f"of type {type(table).__name__}"
        raise DecodeError("unknown_table", f"no mapping for table {shown}")
    position = _position(source, doc)

    if op == "t":
        return TableTruncated(position, tm.entity)
    before, after = doc.get("before"), doc.get("after")
    if op == "d":
        return EntityDeleted(position, tm.entity, _delete_key(tm, before, key), tm.text_key)
    if op not in ("c", "u", "r"):
        raise DecodeError("unsupported_op", f"op {op[:20]!r}")
    if not isinstance(after, dict):
        raise DecodeError("not_an_envelope", f"op {op} without an 'after' row")
    if before is not None and not isinstance(before, dict):
        raise DecodeError("not_an_envelope", "'before' is not an object")
    cls = tm.update if op == "u" else tm.create
    values: dict[str, Any] = {}
    for name, expected in event_field_types(cls).items():
        src = tm.fields.get(name)
        if src is None:  # not mapped: unknown (the mapping only leaves out fields that may be None)
            values[name] = None
            continue
        row = before if src.from_before else after
        values[name] = _field(expected, src, row, column_schemas, decimal_handling_mode, table)
    return cls(position, **values)


def _field(expected, src: FieldSource, row: dict | None, column_schemas: dict, decimal_mode: str, table: str):
    """One event field's value from its source: a constant, a composite key, or a column with transforms."""
    if src.columns:
        parts = [_row_key(row.get(c) if row else None, f"{table}.{c}") for c in src.columns]
        where = f"{table}.{'+'.join(src.columns)}"
        return _coerce(expected, KEY_SEPARATOR.join(parts), None, None, decimal_mode, where, text_key=True)
    if src.column is None:
        return _coerce(expected, src.const, None, None, decimal_mode, f"{table} constant", text_key=src.text_key)
    where = f"{table}.{src.column}"
    raw = row.get(src.column) if row else None
    column_schema = column_schemas.get(src.column)
    if raw is not None:
        if src.values is not None:
            code = str(raw).lower() if isinstance(raw, bool) else str(raw)
            if code not in src.values:
                raise DecodeError("bad_value", f"{where}: code {code[:40]!r} is not in the mapping's values")
            raw, column_schema = src.values[code], None
        if src.minor_units is not None:
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise DecodeError("bad_value", f"{where}: minor units must be an integer, got {type(raw).__name__}")
            raw = Decimal(raw).scaleb(-src.minor_units)
        if src.time_unit is not None:
            raw = _epoch(raw, TIME_UNITS[src.time_unit], where)
        elif src.format is not None:
            raw = _parsed_date(raw, src.format, where)
        if src.case is not None and isinstance(raw, str):
            raw = raw.lower() if src.case == "lower" else raw.upper()
    return _coerce(expected, raw, column_schema, src.scale, decimal_mode, where, src.from_before, src.text_key)


def _position(source: dict, envelope: dict) -> SourcePosition:
    lsn = source.get("lsn")
    if not isinstance(lsn, int) or isinstance(lsn, bool) or lsn < 0:
        raise DecodeError("missing_field", "source.lsn (the change's version) is missing or not a non-negative integer")
    if lsn > INT64_MAX:
        raise DecodeError("absurd_value", f"source.lsn {lsn} is beyond a 64-bit signed integer")
    ts_ms = source.get("ts_ms", envelope.get("ts_ms"))
    if not isinstance(ts_ms, int) or isinstance(ts_ms, bool):
        raise DecodeError("missing_field", "source.ts_ms is missing")
    if not INT64_MIN <= ts_ms <= INT64_MAX:
        raise DecodeError("absurd_value", f"source.ts_ms {ts_ms} is beyond a 64-bit signed integer")
    tx_id = source.get("txId")
    tx_id = (
        tx_id if isinstance(tx_id, int) and not isinstance(tx_id, bool) and INT64_MIN <= tx_id <= INT64_MAX else None
    )
    snapshot = source.get("snapshot") not in (None, False, "false")
    return SourcePosition(lsn=lsn, tx_id=tx_id, ts_ms=ts_ms, snapshot=snapshot)


_SCHEMA_KEY, _PAYLOAD_KEY = b'{"schema":', b',"payload":'
_MAX_SCHEMAS = 256
_schemas: dict[bytes, dict[str, dict]] = {}  # a schema's JSON text -> its column schemas


def _split_envelope(value: bytes) -> tuple[dict[str, dict], Any] | None:
    """``(column schemas, payload)`` of a JsonConverter envelope, ``{"schema":S,"payload":P}`` as
    Kafka Connect writes it, without parsing S again: a table's schema is the same text in every
    message and most of its bytes (3 of 4 KB on the reference schema), so its column schemas are
    kept by that text. None for anything else, which the caller parses whole.

    The split is at the first ``,"payload":``. A Connect schema has no key "payload" and a JSON
    string cannot hold an unescaped quote, so that is the boundary; and if it were not, S would be a
    proper prefix of a JSON object, which never parses, so the message would be parsed whole."""
    if not value.startswith(_SCHEMA_KEY) or not value.endswith(b"}"):
        return None
    cut = value.find(_PAYLOAD_KEY)
    if cut < 0:
        return None
    schema = value[len(_SCHEMA_KEY) : cut]
    columns = _schemas.get(schema)
    try:
        if columns is None:
            columns = _column_schemas(orjson.loads(schema))
            if len(_schemas) >= _MAX_SCHEMAS:
                _schemas.clear()
            _schemas[schema] = columns
        return columns, orjson.loads(value[cut + len(_PAYLOAD_KEY) : -1])
    except (orjson.JSONDecodeError, RecursionError):
        return None


def _column_schemas(schema) -> dict[str, dict]:
    """Column name -> Connect field schema, from the envelope's 'after' (or 'before') struct."""
    if not isinstance(schema, dict):
        return {}
    parts = schema.get("fields")
    for part in parts if isinstance(parts, list) else ():
        if isinstance(part, dict) and part.get("field") in ("after", "before") and isinstance(part.get("fields"), list):
            return {f["field"]: f for f in part["fields"] if isinstance(f, dict) and isinstance(f.get("field"), str)}
    return {}


def _logical_name(column_schema: dict | None) -> str | None:
    name = (column_schema or {}).get("name")
    return name if isinstance(name, str) else None


def _delete_key(tm: TableMapping, before, key: bytes | None) -> str:
    where = f"{tm.table}.{'+'.join(tm.key)}"
    if isinstance(before, dict) and all(before.get(c) is not None for c in tm.key):
        return KEY_SEPARATOR.join(_row_key(before[c], where) for c in tm.key)
    if key is not None:  # REPLICA IDENTITY DEFAULT: the record key still names the row
        try:
            doc = orjson.loads(key)
        except orjson.JSONDecodeError:
            doc = None
        doc = doc.get("payload", doc) if isinstance(doc, dict) else None
        if isinstance(doc, dict) and all(doc.get(c) is not None for c in tm.key):
            return KEY_SEPARATOR.join(_row_key(doc[c], f"{where} (record key)") for c in tm.key)
    raise DecodeError("missing_field", f"delete without a {where} in 'before' or the record key")


def _row_key(raw, where: str) -> str:
    """A primary key is an integer or a string; anything else would become a nonsense node key."""
    if isinstance(raw, int) and not isinstance(raw, bool) and INT64_MIN <= raw <= INT64_MAX:
        return str(raw)
    if isinstance(raw, str) and 0 < len(raw) <= MAX_STRING_CHARS:
        return raw
    shown = (
        f"string of {len(raw)} chars"
        if isinstance(raw, str)
        else str(raw)
        if isinstance(raw, int)
        else type(raw).__name__
    )
    raise DecodeError(
        "bad_value",
        f"{where}: a key must be a 64-bit integer or a non-empty string of at most "
        f"{MAX_STRING_CHARS} chars, got {shown}",
    )


@cache
def _unwrap_optional(tp) -> tuple[object, bool]:
    """(the type without None, whether None is allowed); ``int | str`` (an entity id) stays whole."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = tuple(a for a in typing.get_args(tp) if a is not type(None))
        base = args[0] if len(args) == 1 else KEY_TYPE if set(args) == {int, str} else tp
        return base, type(None) in typing.get_args(tp)
    return tp, False


KEY_TYPE = "int | str"  # marker: an entity id, integer or text


def _coerce(
    tp,
    raw,
    column_schema: dict | None,
    scale: int | None,
    decimal_mode: str,
    where: str,
    optional: bool = False,
    text_key: bool = False,
):
    base, nullable = _unwrap_optional(tp)
    if raw is None:
        if nullable or optional:
            return None
        raise DecodeError("missing_field", f"{where} is null or absent")
    if base is KEY_TYPE and text_key:
        return _row_key(raw, where)  # an integer arrives as its text, so one entity's keys are all text
    if base is int or base is KEY_TYPE:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise DecodeError("bad_value", f"{where}: expected an integer, got {type(raw).__name__}")
        if not INT64_MIN <= raw <= INT64_MAX:
            raise DecodeError("bad_value", f"{where}: {raw} is beyond a 64-bit signed integer")
        return raw
    if base is bool:
        if not isinstance(raw, bool):
            raise DecodeError("bad_value", f"{where}: expected a boolean, got {type(raw).__name__}")
        return raw
    if base is str:
        if not isinstance(raw, str):
            raise DecodeError("bad_value", f"{where}: expected a string, got {type(raw).__name__}")
        if len(raw) > MAX_STRING_CHARS:
            raise DecodeError("bad_value", f"{where}: string of {len(raw)} chars > {MAX_STRING_CHARS}")
        return raw
    if base is Decimal:
        amount = raw if isinstance(raw, Decimal) else _decimal(raw, column_schema, scale, decimal_mode, where)
        if not amount.is_finite() or amount < 0 or amount >= MAX_AMOUNT:
            raise DecodeError("absurd_value", f"{where}: {str(amount)[:40]} is not a plausible amount")
        return amount
    if base is datetime:
        return raw if isinstance(raw, datetime) else _timestamp(raw, column_schema, where)
    raise TypeError(f"no decoder for field type {tp!r}")  # a programming error, not bad input


def _decimal(raw, column_schema: dict | None, scale: int | None, mode: str, where: str) -> Decimal:
    name = _logical_name(column_schema)
    try:
        if name == "org.apache.kafka.connect.data.Decimal" and column_schema is not None:
            return _unscaled(raw, int(column_schema["parameters"]["scale"]), where)
        if name == "io.debezium.data.VariableScaleDecimal" and isinstance(raw, dict):
            return _unscaled(raw.get("value"), int(raw["scale"]), where)
        if isinstance(raw, bool):
            raise DecodeError("bad_value", f"{where}: expected a number, got a boolean")
        if isinstance(raw, (int, float)):  # decimal.handling.mode=double
            if isinstance(raw, float) and not math.isfinite(raw):
                raise DecodeError("absurd_value", f"{where}: {raw}")
            return Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
        if isinstance(raw, str):
            if column_schema is None and mode == "precise":
                if scale is None:
                    raise DecodeError("bad_value", f"{where}: schemaless precise decimal needs a scale in the mapping")
                return _unscaled(raw, scale, where)
            return Decimal(raw.strip())  # decimal.handling.mode=string (or "NaN"/"Infinity", caught later)
    except (InvalidOperation, ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError("bad_value", f"{where}: not a decimal ({str(raw)[:40]!r})") from None
    raise DecodeError("bad_value", f"{where}: not a decimal ({type(raw).__name__})")


def _unscaled(raw, scale: int, where: str) -> Decimal:
    """Connect's Decimal: base64 of the unscaled value's big-endian two's-complement bytes."""
    if not isinstance(raw, str):
        raise DecodeError("bad_value", f"{where}: expected base64 decimal bytes, got {type(raw).__name__}")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("bad_value", f"{where}: invalid base64 decimal {raw[:40]!r}") from None
    if not data or len(data) > 32:
        raise DecodeError("bad_value", f"{where}: decimal of {len(data)} bytes")
    return Decimal(int.from_bytes(data, "big", signed=True)).scaleb(-scale)


# Connect/Debezium logical name -> microseconds per unit (negative: divide, for nanoseconds)
_EPOCH_UNITS = {
    "io.debezium.time.Timestamp": 1000,
    "org.apache.kafka.connect.data.Timestamp": 1000,
    "io.debezium.time.MicroTimestamp": 1,
    "io.debezium.time.NanoTimestamp": -1000,
    "io.debezium.time.Date": 86_400_000_000,
    "org.apache.kafka.connect.data.Date": 86_400_000_000,
}


def _epoch(raw, micros_per_unit: int, where: str) -> datetime:
    """An epoch number in the mapping's declared unit (µs per unit; negative: divide, for ns)."""
    if isinstance(raw, bool) or not isinstance(raw, int | float) or (isinstance(raw, float) and not math.isfinite(raw)):
        raise DecodeError("bad_value", f"{where}: expected an epoch number, got {type(raw).__name__}")
    micros = raw // -micros_per_unit if micros_per_unit < 0 else raw * micros_per_unit
    try:
        return EPOCH + timedelta(microseconds=int(micros))
    except OverflowError:
        raise DecodeError("absurd_value", f"{where}: timestamp {raw} out of range") from None


def _parsed_date(raw, fmt: str, where: str) -> datetime:
    """Date text in the mapping's ``strptime`` format; without a zone in it, UTC."""
    if not isinstance(raw, str):
        raise DecodeError("bad_value", f"{where}: expected date text, got {type(raw).__name__}")
    try:
        parsed = datetime.strptime(raw[:MAX_STRING_CHARS], fmt)
    except ValueError:
        raise DecodeError("bad_value", f"{where}: {raw[:40]!r} does not match the format {fmt!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _timestamp(raw, column_schema: dict | None, where: str) -> datetime:
    if isinstance(raw, str):  # io.debezium.time.ZonedTimestamp / ISO text
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise DecodeError("bad_value", f"{where}: not an ISO timestamp ({raw[:40]!r})") from None
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        try:  # 0001-01-01T00:00+14:00 parses, but lies before year 1 in UTC: every later comparison would overflow
            parsed.astimezone(UTC)
        except OverflowError:
            raise DecodeError("absurd_value", f"{where}: {raw[:40]!r} is outside years 1..9999 in UTC") from None
        return parsed
    if isinstance(raw, int) and not isinstance(raw, bool):
        name = _logical_name(column_schema)
        unit = None if name is None else _EPOCH_UNITS.get(name)
        if unit is None:  # schemaless: infer the unit from the magnitude (valid for years 1973..5138)
            mag = abs(raw)
            unit = -1000 if mag >= 10**17 else 1 if mag >= 10**14 else 1000 if mag >= 10**11 else 1_000_000
        return _epoch(raw, unit, where)
    raise DecodeError("bad_value", f"{where}: expected a timestamp, got {type(raw).__name__}")
