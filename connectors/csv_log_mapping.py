"""How the columns of an arbitrary transaction-log CSV become the engine's domain events.

Why a declarative mapping: public fraud logs (AMLSim, PaySim, a bank's export) all carry the same
few facts (when, who paid, whom, how much, sometimes the kind, device, IP and a label) under other
column names and time conventions. One mapping per log lets ``csv_log.read_csv_log`` replay any of
them through the same state and feature code as the live CDC stream, and it can be written in code
(``CsvLogMapping(...)``) or kept beside the data as TOML (``load_csv_log_mapping``, shape in
``mappings/amlsim.toml``).

Everything is checked when the mapping is built, so a typo fails before the first row is read, with
a message naming the field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIME_FORMATS = ("iso", "epoch_s", "epoch_ms", "step")
TARGET_KINDS = ("account", "merchant", "column")
ID_MODES = ("integer", "first_seen")


class CsvLogMappingError(ValueError):
    """A mapping that cannot describe any file: wrong key, missing column, inconsistent options."""


@dataclass(frozen=True)
class CsvColumns:
    """CSV column names (header names) for each fact; ``None`` means the log does not have it."""

    time: str
    source: str  # the paying account
    target: str  # the payee: an account or a merchant (see CsvLogMapping.target_is)
    amount: str
    kind: str | None = None  # transaction type; absent: CsvLogMapping.default_kind
    device: str | None = None
    ip: str | None = None
    label: str | None = None  # fraud / not fraud, per transaction
    transaction_id: str | None = None  # absent: the data row's number in the file (1-based)
    target_kind: str | None = None  # says per row whether the target is a merchant or an account


@dataclass(frozen=True)
class CsvLogMapping:
    columns: CsvColumns
    # Time column: "iso" (ISO 8601; naive means UTC), "epoch_s" (may have decimals), "epoch_ms"
    # (integer), or "step" (integer; time = step_origin + step * step_seconds).
    time_format: str = "iso"
    step_seconds: float = 3600.0
    step_origin: datetime = EPOCH
    # The file is already in event-time order (checked: a row earlier than the one before it is an
    # error). False: the reader holds every transaction in memory and sorts them.
    time_ordered: bool = True
    # Whom the target column names: "account" (a transfer), "merchant" (a payment), or "column":
    # columns.target_kind says per row, its value in merchant_values or account_values.
    target_is: str = "account"
    merchant_values: frozenset[str] = frozenset()
    account_values: frozenset[str] = frozenset()
    # Source/target/transaction ids: "integer" (the column holds integers, used as they are) or
    # "first_seen" (any text; integers 1, 2, ... in first-seen file order, one sequence per
    # namespace: accounts, merchants, transactions; deterministic for a given file).
    ids: str = "integer"
    # Transaction attributes the log may not carry.
    default_kind: str = "transfer"
    kind_values: dict[str, str] = field(default_factory=dict)  # raw type -> engine kind; others as they are
    currency: str = "USD"
    status: str = "settled"  # a log records completed transactions
    # Labels: a label value (compared stripped and case-insensitively) in fraud_values is fraud, in
    # non_fraud_values is not, empty is unknown; anything else is a malformed row. The report is
    # emitted label_delay_s after the transaction, as a FraudReported of kind fraud_report_kind;
    # known non-fraud rows get a "false_positive" report only if report_negatives.
    fraud_values: frozenset[str] = frozenset({"1", "true"})
    non_fraud_values: frozenset[str] = frozenset({"0", "false"})
    # Label codes that mean "not labelled" (e.g. {"2"}; "" names the empty cell). Such a row is still
    # a transaction (replayed, in the graph) but no label: training and evaluation leave it out of the
    # loss and the metrics (read_csv_log's ``unlabelled``). Without it, an unreported transaction is
    # legitimate, which is right for a bank's own history (everything fraud was reported) and wrong
    # for a log whose labeller skipped rows.
    unknown_values: frozenset[str] = frozenset()
    label_delay_s: float = 0.0
    fraud_report_kind: str = "confirmed_fraud"
    report_negatives: bool = False
    delimiter: str = ","

    def __post_init__(self) -> None:
        _check_choice("time_format", self.time_format, TIME_FORMATS)
        _check_choice("target_is", self.target_is, TARGET_KINDS)
        _check_choice("ids", self.ids, ID_MODES)
        if self.time_format == "step" and not self.step_seconds > 0:
            raise CsvLogMappingError(f"step_seconds must be > 0, got {self.step_seconds!r}")
        if self.step_origin.tzinfo is None:
            raise CsvLogMappingError("step_origin must have a time zone (e.g. 2017-01-01T00:00:00Z)")
        if not self.label_delay_s >= 0:
            raise CsvLogMappingError(f"label_delay_s must be >= 0, got {self.label_delay_s!r}")
        if self.target_is == "column":
            if self.columns.target_kind is None:
                raise CsvLogMappingError('target_is = "column" needs columns.target_kind')
            if not self.merchant_values or not self.account_values:
                raise CsvLogMappingError('target_is = "column" needs merchant_values and account_values')
            if self.merchant_values & self.account_values:
                raise CsvLogMappingError(
                    f"merchant_values and account_values overlap: {sorted(self.merchant_values & self.account_values)}"
                )
        elif self.columns.target_kind is not None:
            raise CsvLogMappingError(
                f'columns.target_kind is only read with target_is = "column", not {self.target_is!r}'
            )
        if self.columns.label is not None:
            if not self.fraud_values:
                raise CsvLogMappingError("fraud_values is empty: no label value would mean fraud")
            fraud, clean = _folded(self.fraud_values), _folded(self.non_fraud_values)
            if fraud & clean:
                raise CsvLogMappingError(f"fraud_values and non_fraud_values overlap: {sorted(fraud & clean)}")
            unknown = _folded(self.unknown_values)
            if unknown & (fraud | clean):
                raise CsvLogMappingError(
                    f"unknown_values overlap fraud_values or non_fraud_values: {sorted(unknown & (fraud | clean))}"
                )
        elif self.unknown_values:
            raise CsvLogMappingError("unknown_values needs columns.label: they are codes of the label column")
        if len(self.delimiter) != 1:
            raise CsvLogMappingError(f"delimiter must be one character, got {self.delimiter!r}")


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise CsvLogMappingError(f"{name} must be one of {list(choices)}, got {value!r}")


def _folded(values) -> frozenset[str]:
    return frozenset(v.strip().casefold() for v in values)


# ---- TOML ----

_REQUIRED_COLUMNS = tuple(f.name for f in fields(CsvColumns) if f.default is not None)
_COLUMN_KEYS = {f.name for f in fields(CsvColumns)}
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "time_format": (str,),
    "step_seconds": (int, float),
    "step_origin": (str, datetime),
    "time_ordered": (bool,),
    "target_is": (str,),
    "merchant_values": (list,),
    "account_values": (list,),
    "ids": (str,),
    "default_kind": (str,),
    "kind_values": (dict,),
    "currency": (str,),
    "status": (str,),
    "fraud_values": (list,),
    "non_fraud_values": (list,),
    "unknown_values": (list,),
    "label_delay_s": (int, float),
    "fraud_report_kind": (str,),
    "report_negatives": (bool,),
    "delimiter": (str,),
}
_NOT_SUPPORTED = {
    "location": "the domain events (connectors/events.py TransactionCreated) have no location field, so a "
    "location column would be read and dropped; leave it unmapped",
}


def parse_csv_log_mapping(data: dict) -> CsvLogMapping:
    """A mapping from TOML-shaped data: a ``[columns]`` table plus top-level options."""
    unknown = set(data) - {"columns"} - set(_OPTION_TYPES)
    if unknown:
        raise CsvLogMappingError(f"unknown keys {sorted(unknown)}; known: {sorted({'columns', *_OPTION_TYPES})}")
    columns = data.get("columns")
    if not isinstance(columns, dict):
        raise CsvLogMappingError(f"[columns] table is required, with at least {list(_REQUIRED_COLUMNS)}")
    for key in columns:
        if key in _NOT_SUPPORTED:
            raise CsvLogMappingError(f"columns.{key}: not supported: {_NOT_SUPPORTED[key]}")
        if key not in _COLUMN_KEYS:
            raise CsvLogMappingError(f"columns.{key}: unknown column key; known: {sorted(_COLUMN_KEYS)}")
        if not isinstance(columns[key], str) or not columns[key]:
            raise CsvLogMappingError(f"columns.{key}: must be a non-empty column name, got {columns[key]!r}")
    missing = [name for name in _REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise CsvLogMappingError(f"columns.{missing[0]} is required (missing: {missing})")

    options: dict[str, Any] = {}
    for key, value in data.items():
        if key == "columns":
            continue
        if not isinstance(value, _OPTION_TYPES[key]) or (isinstance(value, bool) and bool not in _OPTION_TYPES[key]):
            raise CsvLogMappingError(
                f"{key}: expected {' or '.join(t.__name__ for t in _OPTION_TYPES[key])}, got {value!r}"
            )
        options[key] = value
    for key in ("merchant_values", "account_values", "fraud_values", "non_fraud_values", "unknown_values"):
        if key in options:
            if not all(isinstance(v, str) for v in options[key]):
                raise CsvLogMappingError(f"{key}: expected a list of strings, got {options[key]!r}")
            options[key] = frozenset(options[key])
    if "kind_values" in options and not all(isinstance(v, str) for v in options["kind_values"].values()):
        raise CsvLogMappingError(f"kind_values: expected a table of strings, got {options['kind_values']!r}")
    if isinstance(options.get("step_origin"), str):
        options["step_origin"] = _origin(options["step_origin"])
    if isinstance(options.get("step_origin"), datetime) and options["step_origin"].tzinfo is None:
        options["step_origin"] = options["step_origin"].replace(tzinfo=UTC)
    return CsvLogMapping(columns=CsvColumns(**columns), **options)


def _origin(text: str) -> datetime:
    try:
        origin = datetime.fromisoformat(text)
    except ValueError:
        raise CsvLogMappingError(f"step_origin: not an ISO datetime: {text!r}") from None
    return origin if origin.tzinfo else origin.replace(tzinfo=UTC)


def load_csv_log_mapping(path: Path | str) -> CsvLogMapping:
    with open(path, "rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise CsvLogMappingError(f"{path}: not valid TOML: {exc}") from None
    return parse_csv_log_mapping(data)
