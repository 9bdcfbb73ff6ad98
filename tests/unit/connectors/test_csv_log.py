"""Generic CSV transaction logs read as time-ordered domain events (connectors/csv_log.py), and AMLSim."""

from __future__ import annotations

import csv
import os
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from fraudgraph.connectors.amlsim import AMLSIM_MAPPING, DEFAULT_AMLSIM_DIR, read_amlsim
from fraudgraph.connectors.csv_log import CsvLogError, IdMap, RejectedRow, read_csv_log
from fraudgraph.connectors.csv_log_mapping import (
    CsvColumns,
    CsvLogMapping,
    CsvLogMappingError,
    load_csv_log_mapping,
    parse_csv_log_mapping,
)
from fraudgraph.connectors.events import FraudReported, TransactionCreated
from fraudgraph.streams.state import Source, apply_event

UTC = UTC
COLUMNS = CsvColumns(time="t", source="from", target="to", amount="amt")
AMLSIM_DIR = Path(os.environ.get("FRAUDGRAPH_AMLSIM_DIR") or DEFAULT_AMLSIM_DIR)


def write(tmp_path: Path, text: str, name: str = "log.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def mapping(**options) -> CsvLogMapping:
    columns = options.pop("columns", COLUMNS)
    return CsvLogMapping(columns=columns, **options)


def summary(events) -> list[tuple]:
    return [(type(e).__name__[0], e.transaction_id, e.position.ts_ms, e.position.lsn) for e in events]


# ---- mapping validation ----


def test_toml_mapping_is_validated_with_errors_naming_the_field(tmp_path):
    good = {"columns": {"time": "t", "source": "from", "target": "to", "amount": "amt"}}
    assert parse_csv_log_mapping(good).columns == COLUMNS

    cases = {
        "columns.amount is required": {"columns": {"time": "t", "source": "from", "target": "to"}},
        "[columns] table is required": {"time_format": "iso"},
        "unknown keys ['time_fromat']": {**good, "time_fromat": "iso"},
        "columns.devise: unknown column key": {"columns": {**good["columns"], "devise": "d"}},
        "columns.location: not supported": {"columns": {**good["columns"], "location": "city"}},
        "columns.ip: must be a non-empty column name": {"columns": {**good["columns"], "ip": ""}},
        "label_delay_s: expected int or float": {**good, "label_delay_s": "1d"},
        "time_ordered: expected bool": {**good, "time_ordered": 1},
        "time_format must be one of": {**good, "time_format": "unix"},
        "step_origin: not an ISO datetime": {**good, "step_origin": "yesterday"},
        "fraud_values: expected a list of strings": {**good, "fraud_values": [1]},
        'target_is = "column" needs columns.target_kind': {**good, "target_is": "column"},
        "label_delay_s must be >= 0": {**good, "label_delay_s": -1},
        "fraud_values and non_fraud_values overlap": {
            "columns": {**good["columns"], "label": "y"},
            "fraud_values": ["Y"],
            "non_fraud_values": ["y "],
        },
    }
    for message, data in cases.items():
        with pytest.raises(CsvLogMappingError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_csv_log_mapping(data)

    # The classic TOML slip: an option written after [columns] lands inside it, and is named.
    path = write(
        tmp_path, '[columns]\ntime = "t"\nsource = "a"\ntarget = "b"\namount = "c"\nlabel_delay_s = 5\n', "m.toml"
    )
    with pytest.raises(CsvLogMappingError, match="columns.label_delay_s: unknown column key"):
        load_csv_log_mapping(path)
    with pytest.raises(CsvLogMappingError, match="not valid TOML"):
        load_csv_log_mapping(write(tmp_path, "columns = [", "bad.toml"))


def test_mappings_built_in_code_are_validated_too():
    with pytest.raises(CsvLogMappingError, match="ids must be one of"):
        mapping(ids="hash")
    with pytest.raises(CsvLogMappingError, match="step_seconds must be > 0"):
        mapping(time_format="step", step_seconds=0)
    with pytest.raises(CsvLogMappingError, match="step_origin must have a time zone"):
        mapping(step_origin=datetime(2020, 1, 1))
    with pytest.raises(CsvLogMappingError, match="merchant_values and account_values"):
        mapping(columns=CsvColumns("t", "from", "to", "amt", target_kind="k"), target_is="column")
    with pytest.raises(CsvLogMappingError, match="only read with target_is"):
        mapping(columns=CsvColumns("t", "from", "to", "amt", target_kind="k"))


def test_a_mapped_column_missing_from_the_header_fails_before_any_row(tmp_path):
    path = write(tmp_path, "t,from,to,value\n2024-01-01T00:00:00,1,2,3\n")
    with pytest.raises(CsvLogError, match=r"log.csv:1: columns.amount: column 'amt' is not in the header"):
        list(read_csv_log(path, mapping()))


def test_the_shipped_amlsim_mapping_loads():
    m = load_csv_log_mapping(AMLSIM_MAPPING)
    assert (m.columns.source, m.columns.target, m.columns.amount, m.columns.time) == (
        "sourceNodeId",
        "targetNodeId",
        "value",
        "time",
    )
    assert (m.time_format, m.step_seconds, m.target_is, m.ids, m.label_delay_s) == (
        "step",
        86400,
        "account",
        "integer",
        604800,
    )


# ---- time formats ----


@pytest.mark.parametrize(
    "time_format, texts, options, expected",
    [
        (
            "iso",
            ["2024-03-01T12:00:00Z", "2024-03-01T13:30:00.250", "2024-03-01T16:00:00+02:00"],
            {},
            [
                datetime(2024, 3, 1, 12, tzinfo=UTC),
                datetime(2024, 3, 1, 13, 30, 0, 250000, tzinfo=UTC),
                datetime(2024, 3, 1, 16, tzinfo=timezone(timedelta(hours=2))),
            ],
        ),
        (
            "epoch_s",
            ["1709294400", "1709299800.25", "1709301600"],
            {},
            [
                datetime(2024, 3, 1, 12, tzinfo=UTC),
                datetime(2024, 3, 1, 13, 30, 0, 250000, tzinfo=UTC),
                datetime(2024, 3, 1, 14, tzinfo=UTC),
            ],
        ),
        (
            "epoch_ms",
            ["1709294400000", "1709299800250", "1709301600000"],
            {},
            [
                datetime(2024, 3, 1, 12, tzinfo=UTC),
                datetime(2024, 3, 1, 13, 30, 0, 250000, tzinfo=UTC),
                datetime(2024, 3, 1, 14, tzinfo=UTC),
            ],
        ),
        (
            "step",
            ["0", "1", "5"],
            {"step_seconds": 1800, "step_origin": datetime(2024, 3, 1, 12, tzinfo=UTC)},
            [
                datetime(2024, 3, 1, 12, tzinfo=UTC),
                datetime(2024, 3, 1, 12, 30, tzinfo=UTC),
                datetime(2024, 3, 1, 14, 30, tzinfo=UTC),
            ],
        ),
    ],
)
def test_each_time_format(tmp_path, time_format, texts, options, expected):
    path = write(tmp_path, "t,from,to,amt\n" + "".join(f"{t},1,2,10.00\n" for t in texts))
    events = list(read_csv_log(path, mapping(time_format=time_format, **options)))
    assert [e.created_at for e in events] == expected
    # ts_ms is the same instant as created_at (an ISO time keeps its own zone, for the hour feature)
    assert [e.position.ts_ms for e in events] == [int(at.timestamp() * 1000) for at in expected]
    assert [e.created_at == e.updated_at for e in events] == [True] * 3


def test_step_origin_from_toml_accepts_a_native_toml_datetime_or_a_string():
    base = {"columns": {"time": "t", "source": "from", "target": "to", "amount": "amt"}, "time_format": "step"}
    native = parse_csv_log_mapping({**base, "step_origin": datetime(2020, 1, 1)})  # tomllib's naive local datetime
    text = parse_csv_log_mapping({**base, "step_origin": "2020-01-01T00:00:00Z"})
    assert native.step_origin == text.step_origin == datetime(2020, 1, 1, tzinfo=UTC)


# ---- ordering ----

LABELLED = CsvColumns(time="t", source="from", target="to", amount="amt", label="fraud")


def test_labels_arrive_late_and_interleave_with_later_transactions_deterministically(tmp_path):
    # rows at 0, 10, 20, 30, 40 s; the ones at 0 and 10 are fraud, reported 20 s later: the first
    # report falls due exactly at the 20 s transaction (the transaction comes first), the second
    # between 20 and 40 s's neighbours at 30 s, after the 30 s transaction.
    path = write(tmp_path, "t,from,to,amt,fraud\n0,1,2,5,1\n10,1,3,5,true\n20,2,3,5,0\n30,3,1,5,\n40,1,2,5,False\n")
    events = list(read_csv_log(path, mapping(columns=LABELLED, time_format="epoch_s", label_delay_s=20)))
    assert summary(events) == [
        ("T", 1, 0, 1),
        ("T", 2, 10_000, 2),
        ("T", 3, 20_000, 3),
        ("F", 1, 20_000, 4),
        ("T", 4, 30_000, 5),
        ("F", 2, 30_000, 6),
        ("T", 5, 40_000, 7),
    ]
    reports = [e for e in events if isinstance(e, FraudReported)]
    assert [(r.report_id, r.kind, r.reported_at) for r in reports] == [
        (1, "confirmed_fraud", datetime(1970, 1, 1, 0, 0, 20, tzinfo=UTC)),
        (2, "confirmed_fraud", datetime(1970, 1, 1, 0, 0, 30, tzinfo=UTC)),
    ]
    assert events == list(read_csv_log(path, mapping(columns=LABELLED, time_format="epoch_s", label_delay_s=20)))


def test_reports_outlast_the_file_and_negatives_are_reported_only_when_asked(tmp_path):
    path = write(tmp_path, "t,from,to,amt,fraud\n0,1,2,5,1\n0,1,3,5,0\n1,2,3,5,1\n")
    m = mapping(
        columns=LABELLED,
        time_format="epoch_s",
        label_delay_s=3600,
        report_negatives=True,
        fraud_report_kind="chargeback",
    )
    events = list(read_csv_log(path, m))
    assert summary(events) == [
        ("T", 1, 0, 1),
        ("T", 2, 0, 2),
        ("T", 3, 1000, 3),
        ("F", 1, 3_600_000, 4),
        ("F", 2, 3_600_000, 5),
        ("F", 3, 3_601_000, 6),
    ]
    assert [e.kind for e in events[3:]] == ["chargeback", "false_positive", "chargeback"]
    # without a delay a report still follows its own transaction and every other one at that instant
    events = list(read_csv_log(path, mapping(columns=LABELLED, time_format="epoch_s")))
    assert summary(events) == [("T", 1, 0, 1), ("T", 2, 0, 2), ("F", 1, 0, 3), ("T", 3, 1000, 4), ("F", 3, 1000, 5)]


def test_an_unsorted_file_is_an_error_unless_sorting_in_memory_is_asked_for(tmp_path):
    path = write(tmp_path, "t,from,to,amt,fraud\n20,1,2,5,1\n10,1,3,5,0\n20,2,3,5,\n5,3,1,5,1\n")
    with pytest.raises(CsvLogError, match=r"log.csv:3: time .* is before the previous row's .*time_ordered = false"):
        list(read_csv_log(path, mapping(columns=LABELLED, time_format="epoch_s")))
    events = list(
        read_csv_log(path, mapping(columns=LABELLED, time_format="epoch_s", time_ordered=False, label_delay_s=10))
    )
    # sorted by time, ties in file order; ids stay the rows' numbers in the file
    assert summary(events) == [
        ("T", 4, 5000, 1),
        ("T", 2, 10_000, 2),
        ("F", 4, 15_000, 3),
        ("T", 1, 20_000, 4),
        ("T", 3, 20_000, 5),
        ("F", 1, 30_000, 6),
    ]


# ---- malformed rows ----

BAD = (
    "t,from,to,amt,fraud\n"
    "0,1,2,5.00,0\n"
    "1,1,2,five,0\n"  # line 3: bad number
    "2,,2,5.00,0\n"  # line 4: missing source
    "3,1,2,5.00\n"  # line 5: short row
    "4,1,2,5.00,maybe\n"  # line 6: unknown label value
    "5,1,2,-1,0\n"  # line 7: negative amount
    "6,1,x,5.00,0\n"  # line 8: non-integer id with ids = "integer"
    "soon,1,2,5.00,0\n"  # line 9: bad time
    "\n"  # blank line: no row
    "10,1,2,7.50,1\n"
)


def test_a_malformed_row_raises_with_its_line_by_default(tmp_path):
    path = write(tmp_path, BAD)
    with pytest.raises(CsvLogError, match=r"log.csv:3: columns.amount: 'five' is not a number") as info:
        list(read_csv_log(path, mapping(columns=LABELLED, time_format="epoch_s")))
    assert info.value.line == 3


def test_malformed_rows_are_collected_with_reasons_when_a_rejected_list_is_given(tmp_path):
    path = write(tmp_path, BAD)
    rejected: list[RejectedRow] = []
    events = list(read_csv_log(path, mapping(columns=LABELLED, time_format="epoch_s"), rejected=rejected))
    assert [(r.line, r.reason) for r in rejected] == [
        (3, "columns.amount: 'five' is not a number"),
        (4, "columns.source ('from') is empty"),
        (5, "4 fields, the header has 5"),
        (6, "columns.label: 'maybe' is in neither fraud_values nor non_fraud_values"),
        (7, "columns.amount: '-1' is not a plausible amount (0 <= amount < 1E+16)"),
        (8, "columns.target: 'x' is not an integer (ids = \"first_seen\" maps text ids)"),
        (9, "columns.time: 'soon' is not epoch seconds"),
    ]
    assert rejected[0].fields == ("1", "1", "2", "five", "0")
    # the good rows keep their row numbers as transaction ids; lsns stay dense
    assert summary(events) == [("T", 1, 0, 1), ("T", 9, 10_000, 2), ("F", 9, 10_000, 3)]
    assert events[1].amount == Decimal("7.50")


def test_a_labeller_that_cannot_label_a_row_makes_it_malformed(tmp_path):
    path = write(tmp_path, "t,from,to,amt\n0,1,2,5\n1,1,2,5\n")

    def label_of(row):
        if row["t"] == "1":
            raise ValueError("no label for this row")
        return True

    rejected = []
    events = list(read_csv_log(path, mapping(time_format="epoch_s"), rejected=rejected, label_of=label_of))
    assert [(r.line, r.reason) for r in rejected] == [(3, "label_of: no label for this row")]
    assert summary(events) == [("T", 1, 0, 1), ("F", 1, 0, 2)]
    with pytest.raises(ValueError, match="both columns.label and label_of"):
        read_csv_log(path, mapping(columns=LABELLED), label_of=label_of)


# ---- ids, targets, optional columns ----

RICH = CsvColumns(
    time="when",
    source="payer",
    target="payee",
    amount="amount",
    kind="type",
    device="dev",
    ip="ip",
    transaction_id="ref",
    target_kind="payee_type",
)
RICH_LOG = (
    "when,payer,payee,payee_type,amount,type,dev,ip,ref\n"
    "2024-01-01T00:00:00Z,alice,shop-9,M,12.00,PAYMENT,ph1,10.0.0.1,tx-a\n"
    "2024-01-01T00:01:00Z,bob,alice,C,3.00,TRANSFER,,,tx-b\n"
    "2024-01-01T00:02:00Z,carol,shop-2,M,8.00,CASH_OUT,ph2,10.0.0.2,tx-c\n"
    "2024-01-01T00:03:00Z,alice,bob,C,1.00,,,,tx-d\n"
)
RICH_MAPPING = dict(
    columns=RICH,
    ids="first_seen",
    target_is="column",
    merchant_values=frozenset({"M"}),
    account_values=frozenset({"C"}),
    kind_values={"PAYMENT": "card_payment", "TRANSFER": "transfer"},
    default_kind="topup",
    currency="EUR",
)


def test_text_ids_get_integers_in_first_seen_order_per_namespace_deterministically(tmp_path):
    path = write(tmp_path, RICH_LOG)
    ids = IdMap()
    events = list(read_csv_log(path, mapping(**RICH_MAPPING), ids=ids))
    assert [(e.transaction_id, e.account_id, e.merchant_id, e.counterparty_account_id) for e in events] == [
        (1, 1, 1, None),
        (2, 2, None, 1),
        (3, 3, 2, None),
        (4, 1, None, 2),
    ]
    assert ids.raw_ids("account") == {1: "alice", 2: "bob", 3: "carol"}
    assert ids.raw_ids("merchant") == {1: "shop-9", 2: "shop-2"}
    assert ids.raw_ids("transaction") == {1: "tx-a", 2: "tx-b", 3: "tx-c", 4: "tx-d"}
    again = IdMap()
    assert list(read_csv_log(path, mapping(**RICH_MAPPING), ids=again)) == events
    assert again.namespaces == ids.namespaces
    # kinds mapped, unmapped ones kept as they are, an empty one defaulted; empty device/ip -> None
    assert [(e.kind, e.device_id, e.ip, e.currency) for e in events] == [
        ("card_payment", "ph1", "10.0.0.1", "EUR"),
        ("transfer", None, None, "EUR"),
        ("CASH_OUT", "ph2", "10.0.0.2", "EUR"),
        ("topup", None, None, "EUR"),
    ]


def test_absent_optional_columns_give_none_fields_and_defaults(tmp_path):
    path = write(tmp_path, "t,from,to,amt\n2024-01-01T00:00:00,7,8,1.5\n")
    (event,) = read_csv_log(path, mapping(target_is="merchant"))
    assert isinstance(event, TransactionCreated)
    assert (event.account_id, event.merchant_id, event.counterparty_account_id) == (7, 8, None)
    assert (event.device_id, event.ip, event.kind, event.status, event.currency) == (
        None,
        None,
        "transfer",
        "settled",
        "USD",
    )


def test_an_unknown_target_kind_value_is_a_malformed_row(tmp_path):
    path = write(tmp_path, RICH_LOG.replace(",C,3.00", ",X,3.00"))
    rejected = []
    events = list(read_csv_log(path, mapping(**RICH_MAPPING), rejected=rejected))
    assert [(r.line, r.reason) for r in rejected] == [
        (3, "columns.target_kind: 'X' is in neither merchant_values nor account_values")
    ]
    assert len(events) == 3


def test_replaying_a_log_through_the_worker_state_function(tmp_path):
    path = write(tmp_path, "t,from,to,amt,fraud\n0,1,2,5,1\n60,2,1,9,0\n")
    store = {}

    class DictStore:
        def get(self, key):
            return store.get(key)

        def put(self, state):
            store[state.key] = state

    for i, event in enumerate(read_csv_log(path, mapping(columns=LABELLED, time_format="epoch_s", label_delay_s=30))):
        apply_event(event, Source("csv", 0, i, event.position.ts_ms), DictStore())
    assert store["Transaction:1"].attrs["label"] == "confirmed_fraud"
    assert store["Transaction:1"].attrs["label_ts_ms"] == 30_000
    assert "label" not in store["Transaction:2"].attrs
    assert store["Account:1"].amounts.count == 1 and store["Account:2"].amounts.count == 1


# ---- AMLSim ----


def amlsim_label_count_with_the_csv_module() -> tuple[int, int, int, int]:
    """Rows, laundering transfers, first and last step, straight from the raw files."""
    with open(AMLSIM_DIR / "nodes.csv", newline="") as fh:
        start = {row["nodeid"]: int(row["fraudStep"]) for row in csv.DictReader(fh) if row["isFraud"] == "1"}
    rows = laundering = 0
    steps = set()
    with open(AMLSIM_DIR / "transactions.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            rows += 1
            steps.add(int(row["time"]))
            sender = start.get(row["sourceNodeId"])
            if sender is not None and sender >= 0 and int(row["time"]) >= sender and row["targetNodeId"] in start:
                laundering += 1
    return rows, laundering, min(steps), max(steps)


@pytest.mark.slow  # ~3 s: the whole file, twice (once through the csv module)
def test_amlsim_reads_fully_with_late_labels_on_laundering_transfers():
    if not (AMLSIM_DIR / "transactions.csv").exists():
        pytest.skip(f"optional dataset absent: AMLSim files not under {AMLSIM_DIR} (set FRAUDGRAPH_AMLSIM_DIR)")
    rows, laundering, first_step, last_step = amlsim_label_count_with_the_csv_module()
    assert (rows, laundering, first_step, last_step) == (118_250, 2_176, 1, 149)

    rejected = []
    transactions, reports = {}, []
    previous = None
    for event in read_amlsim(AMLSIM_DIR, rejected=rejected):
        assert previous is None or (event.position.ts_ms, event.position.lsn) > (
            previous.position.ts_ms,
            previous.position.lsn,
        )
        previous = event
        if isinstance(event, TransactionCreated):
            transactions[event.transaction_id] = event
        else:
            assert event.transaction_id in transactions  # a label never precedes its transfer
            assert event.position.ts_ms == transactions[event.transaction_id].position.ts_ms + 7 * 86_400_000
            reports.append(event)
    assert rejected == []
    assert len(transactions) == rows and len(reports) == laundering
    assert {r.kind for r in reports} == {"confirmed_fraud"}
    origin = datetime(2017, 1, 1, tzinfo=UTC)
    times = sorted(t.created_at for t in transactions.values())
    assert (times[0], times[-1]) == (origin + timedelta(days=first_step), origin + timedelta(days=last_step))
    assert all(t.counterparty_account_id is not None and t.merchant_id is None for t in transactions.values())


# ---- unknown_values: rows that are transactions but carry no label ----

UNKNOWN_LOG = (
    "t,from,to,amt,fraud\n"
    "1,1,2,5.00,1\n"  # fraud
    "2,1,3,5.00,2\n"  # declared unknown
    "3,2,3,5.00,0\n"  # legitimate
    "4,3,1,5.00,\n"  # empty cell
    "5,3,2,5.00, 2 \n"  # declared unknown, padded
)


def test_unknown_label_codes_are_transactions_without_a_report_and_are_collected(tmp_path):
    path = write(tmp_path, UNKNOWN_LOG)
    unlabelled: set[int] = set()
    m = mapping(columns=LABELLED, time_format="epoch_s", unknown_values=frozenset({"2"}))
    events = list(read_csv_log(path, m, unlabelled=unlabelled))
    assert [e.transaction_id for e in events if isinstance(e, TransactionCreated)] == [1, 2, 3, 4, 5]
    assert [e.transaction_id for e in events if isinstance(e, FraudReported)] == [1]
    assert unlabelled == {2, 5}  # the empty cell keeps its old meaning: no report, not masked
    # without unknown_values, "2" is no label code at all: a malformed row, as before
    with pytest.raises(CsvLogError, match=r":3: columns.label: '2' is in neither"):
        list(read_csv_log(path, mapping(columns=LABELLED, time_format="epoch_s")))


def test_an_empty_label_cell_is_unknown_when_the_mapping_lists_the_empty_code(tmp_path):
    path = write(tmp_path, UNKNOWN_LOG)
    unlabelled: set[int] = set()
    m = mapping(columns=LABELLED, time_format="epoch_s", unknown_values=frozenset({"2", ""}))
    list(read_csv_log(path, m, unlabelled=unlabelled))
    assert unlabelled == {2, 4, 5}


def test_unknown_values_from_toml_and_their_checks(tmp_path):
    base = {"columns": {"time": "t", "source": "a", "target": "b", "amount": "c", "label": "y"}}
    m = parse_csv_log_mapping({**base, "unknown_values": ["2", "n/a"]})
    assert m.unknown_values == frozenset({"2", "n/a"})
    with pytest.raises(CsvLogMappingError, match="unknown_values overlap"):
        parse_csv_log_mapping({**base, "unknown_values": ["2", " TRUE"]})
    with pytest.raises(CsvLogMappingError, match="unknown_values: expected a list of strings"):
        parse_csv_log_mapping({**base, "unknown_values": [2]})
    no_label = {"columns": {k: v for k, v in base["columns"].items() if k != "label"}}
    with pytest.raises(CsvLogMappingError, match="unknown_values needs columns.label"):
        parse_csv_log_mapping({**no_label, "unknown_values": ["2"]})
