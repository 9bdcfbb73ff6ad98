"""Each mapping feature, on change events captured from the real Debezium connector (tests/fixtures)
with their rows rewritten the way another bank's schema would hold them."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from fraudgraph.connectors.decoder import DecodeError, decode
from fraudgraph.connectors.events import EntityDeleted, TransactionCreated
from fraudgraph.connectors.mapping import UNKNOWN_FIELDS, event_field_types, load_mapping, nullable, parse_mapping

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "debezium" / "string-schemaless"
REFERENCE = tomllib.loads((Path(load_mapping.__code__.co_filename).parent / "mappings" / "bank.toml").read_text())


def envelope(stem: str, after: dict | None = None, *, schema: str = "public", drop: tuple[str, ...] = ()) -> dict:
    """A captured envelope of ``stem`` with its row replaced by ``after`` (or kept, minus ``drop``)."""
    value = json.loads(json.loads((FIXTURES / f"{stem}.json").read_text())["value"])
    if after is not None:
        value["after"] = after
    for column in drop:
        value["after"].pop(column, None)
    value["source"]["schema"] = schema
    return value


def decoded(mapping, table: str, value: dict, key: bytes | None = None):
    return decode(f"bank.{value['source']['schema']}.{table}", json.dumps(value).encode(), mapping, "string", key)


def with_table(table: str, **changes) -> dict:
    """The reference mapping with one table's spec changed (``fields`` merged, None removes)."""
    data = json.loads(json.dumps(REFERENCE))
    spec = data["tables"][table]
    for name, value in changes.pop("fields", {}).items():
        if value is None:
            spec["fields"].pop(name)
        else:
            spec["fields"][name] = value
    spec.update(changes)
    return data


def tx_row(**changes) -> dict:
    row = dict(envelope("transactions.c")["after"])
    row.update(changes)
    return row


# ---- optional fields ----


def test_a_field_that_may_be_null_can_be_left_out_and_is_unknown():
    mapping = parse_mapping(with_table("transactions", fields={"device_id": None, "ip": None}))
    event = decoded(mapping, "transactions", envelope("transactions.c"))
    assert isinstance(event, TransactionCreated) and event.device_id is None and event.ip is None
    assert mapping.tables["transactions"].unknown_fields(TransactionCreated) == ["device_id", "ip"]
    assert "TransactionRow.device_id" not in mapping.present_fields()
    assert "TransactionRow.amount" in mapping.present_fields()


def test_a_required_field_left_out_is_refused_at_load_naming_table_and_field():
    with pytest.raises(ValueError, match=r"table 'transactions'.*missing required fields \['amount'\]"):
        parse_mapping(with_table("transactions", fields={"amount": None}))


def test_every_field_that_may_be_left_out_says_what_unknown_means():
    from fraudgraph.connectors.events import EVENT_TYPES
    from fraudgraph.connectors.mapping import _declaring

    optional = {
        f"{_declaring(cls, name)}.{name}"
        for cls in EVENT_TYPES.values()
        for name, tp in event_field_types(cls).items()
        if nullable(tp)
    }
    assert optional == set(UNKNOWN_FIELDS)


# ---- constants and transforms ----


def test_a_constant_fills_a_field_the_schema_does_not_store():
    mapping = parse_mapping(with_table("transactions", fields={"kind": {"const": "card_payment"}}))
    event = decoded(mapping, "transactions", envelope("transactions.c", tx_row(kind=None)))
    assert event.kind == "card_payment"


def test_minor_units_codes_epoch_seconds_date_text_and_case():
    mapping = parse_mapping(
        with_table(
            "transactions",
            fields={
                "amount": {"column": "amount_cents", "minor_units": 2},
                "status": {"column": "status_code", "values": {"1": "completed", "9": "declined"}},
                "created_at": {"column": "created_epoch", "time_unit": "s"},
                "updated_at": {"column": "booked_on", "format": "%d/%m/%Y %H:%M"},
                "currency": {"column": "currency", "case": "upper"},
            },
        )
    )
    row = tx_row(amount_cents=1234567, status_code=9, created_epoch=1_795_427_283, booked_on="23/11/2026 09:48")
    row["currency"] = "gbp"
    event = decoded(mapping, "transactions", envelope("transactions.c", row))
    assert event.amount == Decimal("12345.67") and event.status == "declined" and event.currency == "GBP"
    assert event.created_at == datetime(2026, 11, 23, 9, 48, 3, tzinfo=UTC)
    assert event.updated_at == datetime(2026, 11, 23, 9, 48, tzinfo=UTC)


@pytest.mark.parametrize(
    "changes, detail",
    [
        ({"status_code": 5}, "transactions.status_code: code '5' is not in the mapping's values"),
        ({"amount_cents": "12.50"}, "transactions.amount_cents: minor units must be an integer"),
        ({"booked_on": "2026-11-23"}, "transactions.booked_on: '2026-11-23' does not match the format"),
    ],
)
def test_a_value_a_transform_cannot_read_is_bad_input_naming_the_column(changes, detail):
    mapping = parse_mapping(
        with_table(
            "transactions",
            fields={
                "amount": {"column": "amount_cents", "minor_units": 2},
                "status": {"column": "status_code", "values": {"1": "completed"}},
                "updated_at": {"column": "booked_on", "format": "%d/%m/%Y %H:%M"},
            },
        )
    )
    row = tx_row(amount_cents=100, status_code=1, booked_on="23/11/2026 09:48") | changes
    with pytest.raises(DecodeError) as err:
        decoded(mapping, "transactions", envelope("transactions.c", row))
    assert err.value.reason == "bad_value" and detail in err.value.detail


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"column": "a", "const": 1}, "exactly one of column, columns, const"),
        ({"column": "a", "time_unit": "fortnights"}, "time_unit 'fortnights' is not one of"),
        ({"column": "a", "minor_units": 2, "rounding": "up"}, "unknown options \\['rounding'\\]"),
        ({"columns": ["only_one"]}, "at least two column names"),
    ],
)
def test_a_malformed_field_is_refused_at_load(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_mapping(with_table("transactions", fields={"amount": spec}))


def test_a_transform_on_the_wrong_type_is_refused_at_load():
    with pytest.raises(ValueError, match="minor_units is for amounts"):
        parse_mapping(with_table("transactions", fields={"status": {"column": "s", "minor_units": 2}}))


# ---- keys ----


def test_a_composite_key_becomes_one_text_key_in_rows_references_and_deletes():
    data = with_table("accounts", key=["branch", "number"], fields={"account_id": {"columns": ["branch", "number"]}})
    data["tables"]["transactions"]["fields"]["account_id"] = {"columns": ["acct_branch", "acct_number"]}
    mapping = parse_mapping(data)
    account = envelope("accounts.c")["after"] | {"branch": "0042", "number": 1234}
    assert decoded(mapping, "accounts", envelope("accounts.c", account)).account_id == "0042/1234"
    payment = decoded(mapping, "transactions", envelope("transactions.c", tx_row(acct_branch="0042", acct_number=1234)))
    assert payment.account_id == "0042/1234"
    gone = envelope("accounts.u", schema="public")
    gone.update(op="d", before=account, after=None)
    event = decoded(mapping, "accounts", gone)
    assert isinstance(event, EntityDeleted) and event.key == "0042/1234" and event.text_key
    # with only the record key (REPLICA IDENTITY DEFAULT)
    gone["before"] = None
    event = decoded(mapping, "accounts", gone, key=b'{"branch": "0042", "number": 1234}')
    assert event.key == "0042/1234"


def test_text_keys_make_every_reference_to_the_entity_text():
    data = json.loads(json.dumps(REFERENCE))
    data["source"] = {"text_keys": ["customer"]}
    mapping = parse_mapping(data)
    customer = decoded(mapping, "customers", envelope("customers.c", envelope("customers.c")["after"] | {"id": "C-7"}))
    assert customer.customer_id == "C-7"
    account = decoded(mapping, "accounts", envelope("accounts.c"))  # its customer_id column holds an integer
    assert account.customer_id == str(envelope("accounts.c")["after"]["customer_id"])
    assert isinstance(account.account_id, int)  # accounts keep integer keys
    gone = envelope("customers.u")
    gone.update(op="d", before=gone["after"] | {"id": "C-7"}, after=None)
    deleted = decoded(mapping, "customers", gone)
    assert (deleted.entity, deleted.key, deleted.text_key) == ("customer", "C-7", True)
    assert not decoded(load_mapping(), "customers", gone).text_key  # the reference mapping keys customers by number


def test_without_text_keys_an_entity_id_must_be_an_integer():
    with pytest.raises(DecodeError, match="expected an integer"):
        decoded(load_mapping(), "transactions", envelope("transactions.c", tx_row(account_id="12")))
    with pytest.raises(ValueError, match="text_keys: \\['payment'\\] are not entities with ids"):
        parse_mapping({**REFERENCE, "source": {"text_keys": ["payment"]}})


# ---- schema and topic naming ----


def test_schema_and_topic_naming():
    mapping = load_mapping()
    assert mapping.topic("transactions", "bank") == "bank.public.transactions"
    data = json.loads(json.dumps(REFERENCE))
    data["source"] = {"schema": "core", "topic": "{prefix}-cdc.{schema}.{table}"}
    data["tables"]["fraud_reports"]["topic"] = "labels.chargebacks"
    core = parse_mapping(data)
    assert core.topic("transactions", "corebank") == "corebank-cdc.core.transactions"
    assert core.topic("fraud_reports", "corebank") == "labels.chargebacks"
    assert core.topics("corebank")[0] == "corebank-cdc.core.customers"
    assert isinstance(decoded(core, "transactions", envelope("transactions.c", schema="core")), TransactionCreated)
    # the same table name in another schema is not the mapped table
    with pytest.raises(DecodeError) as err:
        decoded(core, "transactions", envelope("transactions.c", schema="public"))
    assert err.value.reason == "unknown_table"


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"entity": "payment", "key": "id", "create": "TransactionCreated"}, r"missing \['update'\]"),
        ({**REFERENCE["tables"]["transactions"], "fields": 3}, "fields maps event fields to their sources"),
    ],
)
def test_a_malformed_table_is_refused_naming_it(spec, message):
    with pytest.raises(ValueError, match=rf"table 'payments'.*{message}"):
        parse_mapping({"tables": {"payments": spec}})
