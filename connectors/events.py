"""The engine's vocabulary: typed, immutable domain events decoded from the bank's change stream.

Every event carries the ``SourcePosition`` it came from. Its ``version`` (the PostgreSQL LSN of the
change) grows with every change to a row, so downstream state drops an event whose version is not
newer than what it already holds: a replay after a crash or a consumer-group reset then changes
nothing.

Field types here are the contract; which source table and column feeds each field is data, in the
mapping (``mapping.py``), so a bank with another schema maps onto the same events. A field typed
``X | None`` may be left out of a mapping or be null in a row; ``None`` then means unknown, and
``mapping.UNKNOWN_FIELDS`` says what every stage does with it. Ids, amounts, a transaction's kind,
status and creation time, and the time of each fact are required: the engine cannot place or score
an event without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TypeAlias

# The id of a customer, account or merchant: the source's integer key, or its text key (a
# composite key arrives joined into one text, ``mapping.py``). Transactions, fraud reports, logins
# and profile changes keep integer ids: queries and labels name transactions by number.
EntityId: TypeAlias = int | str


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where in the source database's log a change happened."""

    lsn: int  # PostgreSQL log sequence number of the change
    tx_id: int | None
    ts_ms: int  # commit time at the source, epoch milliseconds
    snapshot: bool = False  # read by the connector's initial snapshot (op "r"), not streamed

    @property
    def version(self) -> int:
        return self.lsn


@dataclass(frozen=True, slots=True)
class DomainEvent:
    position: SourcePosition


# ---- entities: upserted by create/update/snapshot, removed by delete ----


@dataclass(frozen=True, slots=True)
class CustomerUpserted(DomainEvent):
    customer_id: EntityId
    full_name: str | None
    email: str | None
    phone: str | None
    country: str | None
    kyc_level: int | None
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class AccountUpserted(DomainEvent):
    account_id: EntityId
    customer_id: EntityId
    kind: str | None
    currency: str | None
    status: str | None
    opened_at: datetime | None


@dataclass(frozen=True, slots=True)
class MerchantUpserted(DomainEvent):
    merchant_id: EntityId
    name: str | None
    mcc: str | None
    country: str | None
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeviceUpserted(DomainEvent):
    device_id: str
    os: str | None
    user_agent: str | None
    first_seen: datetime | None


@dataclass(frozen=True, slots=True)
class EntityDeleted(DomainEvent):
    """A row was deleted at the source. ``entity`` is the mapping's entity name."""

    entity: str
    key: str
    text_key: bool = False  # the entity is keyed by text (a mapping's text_keys, or a composite key): keep it text


@dataclass(frozen=True, slots=True)
class TableTruncated(DomainEvent):
    """TRUNCATE at the source: nothing per row follows, so the engine reports it loudly."""

    entity: str


# ---- facts: things that happened ----


@dataclass(frozen=True, slots=True)
class LoginRecorded(DomainEvent):
    login_id: int
    customer_id: EntityId
    device_id: str | None
    ip: str | None
    success: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class ProfileChanged(DomainEvent):
    change_id: int
    customer_id: EntityId
    field: str
    device_id: str | None
    ip: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class TransactionRow(DomainEvent):
    """The transaction row as the source holds it; created and updated events share it."""

    transaction_id: int
    account_id: EntityId
    kind: str
    amount: Decimal
    currency: str | None
    merchant_id: EntityId | None
    counterparty_account_id: EntityId | None
    device_id: str | None
    ip: str | None
    status: str
    created_at: datetime
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class TransactionCreated(TransactionRow):
    """A new payment (or one read by the connector's snapshot): what the engine scores."""


@dataclass(frozen=True, slots=True)
class TransactionUpdated(TransactionRow):
    previous_status: str | None  # from the change's "before" image (REPLICA IDENTITY FULL)


@dataclass(frozen=True, slots=True)
class FraudReported(DomainEvent):
    """A late label: chargeback, confirmed fraud or false positive for one transaction."""

    report_id: int
    transaction_id: int
    kind: str
    reported_at: datetime | None


EVENT_TYPES: dict[str, type[DomainEvent]] = {
    cls.__name__: cls
    for cls in (
        CustomerUpserted,
        AccountUpserted,
        MerchantUpserted,
        DeviceUpserted,
        EntityDeleted,
        TableTruncated,
        LoginRecorded,
        ProfileChanged,
        TransactionCreated,
        TransactionUpdated,
        FraudReported,
    )
}
