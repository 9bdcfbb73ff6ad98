"""Any transaction-log CSV, replayed as the engine's domain events in event-time order.

Why: training and evaluation replay a time-ordered iterator of domain events through the same
``streams.state.apply_event`` the worker uses, so a public log (AMLSim, PaySim, a bank's export)
becomes usable by turning each row into a ``TransactionCreated`` and each label into a late
``FraudReported``, exactly the two events the live stream carries. ``CsvLogMapping``
(``csv_log_mapping.py``) says which column is which.

What comes out
--------------
* One ``TransactionCreated`` per data row; fields the log lacks (device, IP, merchant or
  counterparty) are ``None``.
* For a labelled row, a ``FraudReported`` at the transaction's time + ``label_delay_s``: a replay
  learns the label late, as production does, so a point-in-time feature can never see it early.
* Merged by event time. Ties: at one instant transactions come before reports, and each kind comes
  in file order (a report in its transaction's file order), so the output is a pure function of the
  file and the mapping.
* A row whose label is one of the mapping's ``unknown_values`` gets no report, like an unlabelled
  one; pass a set as ``unlabelled`` and its transaction id is added to it, so training and
  evaluation can mask it out rather than count it as legitimate (exhaust the events first).
* Synthetic positions: ``lsn`` 1, 2, 3, ... in output order (state treats LSN 0 as "nothing
  applied", so numbering starts at 1), ``ts_ms`` the event time in epoch milliseconds, no ``tx_id``.

Malformed rows (a bad number, an empty required value, a wrong field count, an unknown label value)
are never dropped silently: by default the reader raises ``CsvLogError`` naming the file and line;
pass a list as ``rejected`` and each such row is appended to it as a ``RejectedRow`` (line, reason,
raw fields) and skipped instead. A mapped column missing from the header, or (with
``time_ordered``) a row earlier than the one before it, always raises: that is the mapping not
fitting the file, not one bad row.

Memory: the file is streamed. With ``time_ordered`` (the default) the reader holds only the reports
not yet due, about label rate x ``label_delay_s`` of them, plus, with ``ids = "first_seen"``, one
dictionary entry per distinct id. With ``time_ordered = false`` it holds every transaction until the
file is read, to sort them.
"""

from __future__ import annotations

import csv
import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path

from fraudgraph.connectors.csv_log_mapping import EPOCH, CsvLogMapping
from fraudgraph.connectors.decoder import MAX_AMOUNT
from fraudgraph.connectors.events import DomainEvent, FraudReported, SourcePosition, TransactionCreated

MILLISECOND = timedelta(milliseconds=1)
FALSE_POSITIVE = "false_positive"

LabelOf = Callable[[dict[str, str]], bool | None]
"""Labels a row from its raw fields (header name -> text): True fraud, False not, None unknown.
Raises ValueError for a row it cannot label (the row is then malformed)."""


class CsvLogError(ValueError):
    def __init__(self, path: Path | str, line: int, reason: str):
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = str(path), line, reason


@dataclass(frozen=True)
class RejectedRow:
    line: int  # physical line in the file where the row ends (the header is line 1)
    reason: str
    fields: tuple[str, ...]


class IdMap:
    """Text ids to integers, 1, 2, ... in first-seen order, one sequence per namespace.

    Deterministic for a given file, and kept by the caller (pass one to ``read_csv_log``) to turn
    the engine's integers back into the log's ids.
    """

    def __init__(self) -> None:
        self.namespaces: dict[str, dict[str, int]] = {}

    def id_for(self, namespace: str, raw: str) -> int:
        ids = self.namespaces.setdefault(namespace, {})
        return ids.setdefault(raw, len(ids) + 1)

    def raw_ids(self, namespace: str) -> dict[int, str]:
        return {i: raw for raw, i in self.namespaces.get(namespace, {}).items()}


class _Malformed(ValueError):
    """One row cannot become an event; the reason names the mapping field."""


# (ts_ms, rank, seq): rank 0 transaction, 1 report; seq the transaction's data row number.
_Key = tuple[int, int, int]


@dataclass(slots=True)
class _Pending:
    key: _Key
    cls: type[DomainEvent]
    values: dict

    def __lt__(self, other: _Pending) -> bool:
        return self.key < other.key


def read_csv_log(
    path: Path | str,
    mapping: CsvLogMapping,
    *,
    rejected: list[RejectedRow] | None = None,
    ids: IdMap | None = None,
    label_of: LabelOf | None = None,
    unlabelled: set[int] | None = None,
) -> Iterator[DomainEvent]:
    """The log's transactions and label reports as domain events, in event-time order.

    ``label_of`` labels rows from data outside the file (``amlsim.py`` joins per-account labels);
    it replaces ``columns.label``, so the two together are an error. ``unlabelled`` collects the
    transaction ids of rows labelled with one of ``mapping.unknown_values``, as the events are read.
    """
    if label_of is not None and mapping.columns.label is not None:
        raise ValueError("both columns.label and label_of label the rows; use one")
    rows = _parsed_rows(Path(path), mapping, rejected, ids if ids is not None else IdMap(), label_of, unlabelled)
    if not mapping.time_ordered:
        rows = iter(sorted(rows, key=lambda pair: pair[0].key))
    return _merged(rows)


def _merged(rows: Iterator[tuple[_Pending, _Pending | None]]) -> Iterator[DomainEvent]:
    """Transactions (already in time order) merged with their reports, which come due later."""
    due: list[_Pending] = []
    lsn = 0
    for transaction, report in rows:
        while due and due[0].key < transaction.key:
            lsn += 1
            yield _event(heapq.heappop(due), lsn)
        lsn += 1
        yield _event(transaction, lsn)
        if report is not None:
            heapq.heappush(due, report)
    while due:
        lsn += 1
        yield _event(heapq.heappop(due), lsn)


def _event(pending: _Pending, lsn: int) -> DomainEvent:
    return pending.cls(SourcePosition(lsn=lsn, tx_id=None, ts_ms=pending.key[0]), **pending.values)


def _parsed_rows(
    path: Path,
    mapping: CsvLogMapping,
    rejected: list[RejectedRow] | None,
    ids: IdMap,
    label_of: LabelOf | None,
    unlabelled: set[int] | None,
) -> Iterator[tuple[_Pending, _Pending | None]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=mapping.delimiter)
        header = [name.strip() for name in next(reader, [])]
        if not header:
            raise CsvLogError(path, 1, "empty file: no header row")
        row_parser = _RowParser(mapping, _column_indexes(path, header, mapping), ids)
        seq = 0
        report_id = 0
        last_ts = None
        for fields in reader:
            if not fields:
                continue  # a blank line is no row
            seq += 1
            try:
                if len(fields) != len(header):
                    raise _Malformed(f"{len(fields)} fields, the header has {len(header)}")
                if label_of is not None:  # before parse(), which assigns first-seen ids last
                    try:
                        outside_label = label_of(dict(zip(header, fields)))
                    except ValueError as exc:
                        raise _Malformed(f"label_of: {exc}") from None
                transaction, label, unknown = row_parser.parse(fields, seq)
                if label_of is not None:
                    label = outside_label
            except _Malformed as exc:
                if rejected is None:
                    raise CsvLogError(path, reader.line_num, str(exc)) from None
                rejected.append(RejectedRow(reader.line_num, str(exc), tuple(fields)))
                continue
            ts = transaction.key[0]
            if mapping.time_ordered and last_ts is not None and ts < last_ts:
                raise CsvLogError(
                    path,
                    reader.line_num,
                    f"time {_iso(ts)} is before the previous row's {_iso(last_ts)}: "
                    "the file is not in time order (set time_ordered = false to sort in memory)",
                )
            last_ts = ts
            if unknown and unlabelled is not None:
                unlabelled.add(transaction.values["transaction_id"])
            report = None
            if label or (label is False and mapping.report_negatives):
                report_id += 1
                report = row_parser.report(
                    transaction, report_id, mapping.fraud_report_kind if label else FALSE_POSITIVE
                )
            yield transaction, report


def _column_indexes(path: Path, header: list[str], mapping: CsvLogMapping) -> dict[str, int]:
    positions = {name: i for i, name in reversed(list(enumerate(header)))}  # a repeated name: its first column
    out = {}
    for name, column in vars(mapping.columns).items():
        if column is None:
            continue
        if column not in positions:
            raise CsvLogError(path, 1, f"columns.{name}: column {column!r} is not in the header {header}")
        out[name] = positions[column]
    return out


def _iso(ts_ms: int) -> str:
    return (EPOCH + ts_ms * MILLISECOND).isoformat()


class _RowParser:
    """One row's text to a pending TransactionCreated (+ its label), or _Malformed."""

    def __init__(self, mapping: CsvLogMapping, index: dict[str, int], ids: IdMap):
        self.mapping, self.index, self.ids = mapping, index, ids
        self.time = _TIME_PARSERS[mapping.time_format](mapping)
        self.delay_ms = round(mapping.label_delay_s * 1000)
        self.merchant_values = {v.strip() for v in mapping.merchant_values}
        self.account_values = {v.strip() for v in mapping.account_values}
        self.fraud_values = {v.strip().casefold() for v in mapping.fraud_values}
        self.non_fraud_values = {v.strip().casefold() for v in mapping.non_fraud_values}
        self.unknown_values = {v.strip().casefold() for v in mapping.unknown_values}

    def optional_text(self, fields: list[str], name: str) -> str | None:
        i = self.index.get(name)
        value = fields[i].strip() if i is not None else ""
        return value or None

    def text(self, fields: list[str], name: str) -> str:
        value = self.optional_text(fields, name)
        if value is None:
            raise _Malformed(f"columns.{name} ({getattr(self.mapping.columns, name)!r}) is empty")
        return value

    def parse(self, fields: list[str], seq: int) -> tuple[_Pending, bool | None, bool]:
        """The pending transaction, its label (None: none), and whether the label is declared
        unknown (one of ``unknown_values``: to be masked, not counted as legitimate)."""
        m = self.mapping
        ts_ms, at = self.time(self.text(fields, "time"))
        amount = _amount(self.text(fields, "amount"))
        source, target = self.text(fields, "source"), self.text(fields, "target")
        target_is = m.target_is if m.target_is != "column" else self._target_kind(self.text(fields, "target_kind"))
        kind = self.optional_text(fields, "kind")
        kind = m.default_kind if kind is None else m.kind_values.get(kind, kind)
        raw_label = self.optional_text(fields, "label") if "label" in self.index else None
        unknown = "label" in self.index and (raw_label or "").casefold() in self.unknown_values
        label = None if unknown else self._label(raw_label)
        raw_tx = self.text(fields, "transaction_id") if "transaction_id" in self.index else None
        if m.ids == "integer":  # check every id before the first one is used
            source_id, target_id = _integer("source", source), _integer("target", target)
            transaction_id = seq if raw_tx is None else _integer("transaction_id", raw_tx)
        else:
            source_id = self.ids.id_for("account", source)
            target_id = self.ids.id_for(target_is, target)
            transaction_id = seq if raw_tx is None else self.ids.id_for("transaction", raw_tx)
        values = {
            "transaction_id": transaction_id,
            "account_id": source_id,
            "kind": kind,
            "amount": amount,
            "currency": m.currency,
            "merchant_id": target_id if target_is == "merchant" else None,
            "counterparty_account_id": target_id if target_is == "account" else None,
            "device_id": self.optional_text(fields, "device"),
            "ip": self.optional_text(fields, "ip"),
            "status": m.status,
            "created_at": at,
            "updated_at": at,
        }
        return _Pending((ts_ms, 0, seq), TransactionCreated, values), label, unknown

    def report(self, transaction: _Pending, report_id: int, kind: str) -> _Pending:
        ts_ms, _, seq = transaction.key
        values = {
            "report_id": report_id,
            "transaction_id": transaction.values["transaction_id"],
            "kind": kind,
            "reported_at": transaction.values["created_at"] + self.delay_ms * MILLISECOND,
        }
        return _Pending((ts_ms + self.delay_ms, 1, seq), FraudReported, values)

    def _target_kind(self, value: str) -> str:
        if value in self.merchant_values:
            return "merchant"
        if value in self.account_values:
            return "account"
        raise _Malformed(f"columns.target_kind: {value[:40]!r} is in neither merchant_values nor account_values")

    def _label(self, value: str | None) -> bool | None:
        if value is None:
            return None
        folded = value.casefold()
        if folded in self.fraud_values:
            return True
        if folded in self.non_fraud_values:
            return False
        raise _Malformed(f"columns.label: {value[:40]!r} is in neither fraud_values nor non_fraud_values")


def _integer(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _Malformed(
            f'columns.{name}: {text[:40]!r} is not an integer (ids = "first_seen" maps text ids)'
        ) from None


def _amount(text: str) -> Decimal:
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise _Malformed(f"columns.amount: {text[:40]!r} is not a number") from None
    if not amount.is_finite() or amount < 0 or amount >= MAX_AMOUNT:
        raise _Malformed(f"columns.amount: {text[:40]!r} is not a plausible amount (0 <= amount < {MAX_AMOUNT})")
    return amount


# ---- time formats: text -> (epoch ms, datetime) ----


def _from_ms(ts_ms: int, text: str) -> tuple[int, datetime]:
    try:
        return ts_ms, EPOCH + ts_ms * MILLISECOND
    except OverflowError:
        raise _Malformed(f"columns.time: {text[:40]!r} is out of range") from None


def _iso_time(mapping: CsvLogMapping) -> Callable[[str], tuple[int, datetime]]:
    def parse(text: str) -> tuple[int, datetime]:
        try:
            at = datetime.fromisoformat(text)
        except ValueError:
            raise _Malformed(f"columns.time: {text[:40]!r} is not an ISO datetime") from None
        at = at if at.tzinfo else at.replace(tzinfo=UTC)  # keeps its own zone: the hour feature is local
        return (at - EPOCH) // MILLISECOND, at

    return parse


def _epoch_s_time(mapping: CsvLogMapping) -> Callable[[str], tuple[int, datetime]]:
    def parse(text: str) -> tuple[int, datetime]:
        try:
            seconds = Decimal(text)
            if not seconds.is_finite():
                raise InvalidOperation
        except InvalidOperation:
            raise _Malformed(f"columns.time: {text[:40]!r} is not epoch seconds") from None
        return _from_ms(int((seconds * 1000).to_integral_value(ROUND_FLOOR)), text)

    return parse


def _epoch_ms_time(mapping: CsvLogMapping) -> Callable[[str], tuple[int, datetime]]:
    def parse(text: str) -> tuple[int, datetime]:
        try:
            ms = int(text)
        except ValueError:
            raise _Malformed(f"columns.time: {text[:40]!r} is not integer epoch milliseconds") from None
        return _from_ms(ms, text)

    return parse


def _step_time(mapping: CsvLogMapping) -> Callable[[str], tuple[int, datetime]]:
    origin_ms = (mapping.step_origin - EPOCH) // MILLISECOND
    step_ms = round(mapping.step_seconds * 1000)

    def parse(text: str) -> tuple[int, datetime]:
        try:
            step = int(text)
        except ValueError:
            raise _Malformed(f"columns.time: {text[:40]!r} is not an integer step") from None
        return _from_ms(origin_ms + step * step_ms, text)

    return parse


_TIME_PARSERS = {"iso": _iso_time, "epoch_s": _epoch_s_time, "epoch_ms": _epoch_ms_time, "step": _step_time}
