"""Synthetic domain events for the graph's tests and benchmark: valid, deterministic, and in a key
range of their own.

Why here and not in a test file: the unit tests, the integration tests and
``benchmarks/graph_writer.py`` all need the same well-formed events, and every event field must stay
in step with ``connectors/events.py``; one factory keeps that in one place. Ids are offset by
``base`` so runs against a shared Neo4j never collide (and can be cleaned up by key range).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice

from fraudgraph.connectors.events import (
    AccountUpserted,
    CustomerUpserted,
    DeviceUpserted,
    DomainEvent,
    EntityDeleted,
    FraudReported,
    LoginRecorded,
    MerchantUpserted,
    ProfileChanged,
    SourcePosition,
    TableTruncated,
    TransactionCreated,
    TransactionUpdated,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class EventFactory:
    """Builds events with increasing LSNs (versions). ``base`` offsets every integer id and prefixes
    every device id and IP, so a run's data is its own."""

    def __init__(self, base: int, lsn: int = 1_000, ts_ms: int | None = None):
        self.base = base
        self.lsn = lsn
        self.ts_ms = ts_ms if ts_ms is not None else int(T0.timestamp() * 1000)

    # ---- positions ----
    def pos(self, *, lsn: int | None = None, ts_ms: int | None = None, snapshot: bool = False) -> SourcePosition:
        if lsn is None:
            self.lsn += 8
            lsn = self.lsn
        if ts_ms is None:
            self.ts_ms += 1
            ts_ms = self.ts_ms
        return SourcePosition(lsn=lsn, tx_id=lsn // 8, ts_ms=ts_ms, snapshot=snapshot)

    def id(self, n: int) -> int:
        return self.base + n

    def device_id(self, n: int) -> str:
        return f"dev-{self.base}-{n}"

    def ip(self, n: int) -> str:
        return f"10.{(self.base // 65536) % 256}.{(self.base // 256) % 256}.{n % 256}|{self.base}"

    # ---- entities ----
    def customer(
        self, n: int, *, name: str | None = None, position: SourcePosition | None = None, **kw
    ) -> CustomerUpserted:
        return CustomerUpserted(
            position or self.pos(),
            self.id(n),
            name or f"Customer {n}",
            f"c{n}@example.test",
            kw.get("phone"),
            kw.get("country", "GB"),
            kw.get("kyc_level", 1),
            T0,
        )

    def account(
        self, n: int, customer: int, *, status: str = "active", position: SourcePosition | None = None
    ) -> AccountUpserted:
        return AccountUpserted(position or self.pos(), self.id(n), self.id(customer), "checking", "EUR", status, T0)

    def merchant(self, n: int, *, name: str | None = None, position: SourcePosition | None = None) -> MerchantUpserted:
        return MerchantUpserted(position or self.pos(), self.id(n), name or f"Merchant {n}", "5411", "FR", T0)

    def device(
        self, n: int | str, *, os: str | None = "android", position: SourcePosition | None = None
    ) -> DeviceUpserted:
        did = n if isinstance(n, str) else self.device_id(n)
        return DeviceUpserted(position or self.pos(), did, os, "Mozilla/5.0", T0)

    # ---- facts ----
    def login(
        self,
        n: int,
        customer: int,
        device: int | None,
        ip: int,
        *,
        success: bool = True,
        position: SourcePosition | None = None,
    ) -> LoginRecorded:
        return LoginRecorded(
            position or self.pos(),
            self.id(n),
            self.id(customer),
            None if device is None else self.device_id(device),
            self.ip(ip),
            success,
            T0,
        )

    def profile_change(
        self,
        n: int,
        customer: int,
        device: int | None,
        *,
        field: str = "email",
        ip: int | None = None,
        position: SourcePosition | None = None,
    ) -> ProfileChanged:
        return ProfileChanged(
            position or self.pos(),
            self.id(n),
            self.id(customer),
            field,
            None if device is None else self.device_id(device),
            None if ip is None else self.ip(ip),
            T0,
        )

    def card_payment(
        self,
        n: int,
        account: int,
        merchant: int,
        *,
        device: int | None = None,
        ip: int | None = None,
        amount: str = "12.34",
        status: str = "authorized",
        position: SourcePosition | None = None,
        updated: bool = False,
    ) -> TransactionCreated | TransactionUpdated:
        return self._tx(
            n, account, "card_payment", amount, self.id(merchant), None, device, ip, status, position, updated
        )

    def transfer(
        self,
        n: int,
        account: int,
        counterparty: int,
        *,
        device: int | None = None,
        ip: int | None = None,
        amount: str = "250.00",
        status: str = "pending",
        position: SourcePosition | None = None,
        updated: bool = False,
    ) -> TransactionCreated | TransactionUpdated:
        return self._tx(
            n, account, "transfer", amount, None, self.id(counterparty), device, ip, status, position, updated
        )

    def _tx(self, n, account, kind, amount, merchant_id, counterparty_id, device, ip, status, position, updated):
        common = dict(
            transaction_id=self.id(n),
            account_id=self.id(account),
            kind=kind,
            amount=Decimal(amount),
            currency="EUR",
            merchant_id=merchant_id,
            counterparty_account_id=counterparty_id,
            device_id=None if device is None else self.device_id(device),
            ip=None if ip is None else self.ip(ip),
            status=status,
            created_at=T0,
            updated_at=T0,
        )
        if updated:
            return TransactionUpdated(position or self.pos(), previous_status="pending", **common)
        return TransactionCreated(position or self.pos(), **common)

    def fraud_report(
        self, n: int, transaction: int, *, kind: str = "confirmed_fraud", position: SourcePosition | None = None
    ) -> FraudReported:
        return FraudReported(position or self.pos(), self.id(n), self.id(transaction), kind, T0)

    def delete(self, entity: str, key: int | str, *, position: SourcePosition | None = None) -> EntityDeleted:
        raw = key if isinstance(key, str) else str(self.id(key))
        return EntityDeleted(position or self.pos(), entity, raw)

    def truncate(self, entity: str) -> TableTruncated:
        return TableTruncated(self.pos(), entity)


def stream(
    factory: EventFactory,
    n_events: int,
    *,
    seed: int = 7,
    customers: int = 2_000,
    merchants: int = 300,
    devices: int = 3_000,
    ips: int = 2_000,
    now_ms=None,
) -> Iterator[DomainEvent]:
    """``n_events`` of a bank-like mix: reference rows first (customers with an account each,
    merchants, devices), then mostly transactions (card payments and transfers, some later settled),
    logins, profile changes and fraud reports. ``now_ms`` (a callable) stamps each event's source time
    as it is produced, so a benchmark's freshness measures real queueing and write delay."""
    return islice(_stream(factory, n_events, random.Random(seed), customers, merchants, devices, ips, now_ms), n_events)


def _stream(f: EventFactory, n_events, rnd, customers, merchants, devices, ips, now_ms) -> Iterator[DomainEvent]:
    def pos():
        return f.pos(ts_ms=now_ms() if now_ms else None)

    n_cust = max(1, min(customers, n_events // 10))
    n_merch = max(1, min(merchants, n_events // 50))
    n_dev = max(1, min(devices, n_events // 10))
    for i in range(n_cust):
        yield f.customer(i, position=pos())
        yield f.account(100_000 + i, i, position=pos())
    for i in range(n_merch):
        yield f.merchant(200_000 + i, position=pos())
    for i in range(n_dev):
        yield f.device(i, position=pos())
    payments: list[tuple[int, int, int]] = []  # (transaction, account, merchant) for later updates
    tx, login, change, report = 1_000_000, 2_000_000, 3_000_000, 4_000_000
    while True:
        r = rnd.random()
        c = rnd.randrange(n_cust)
        if r < 0.55:
            tx += 1
            payments.append((tx, 100_000 + c, 200_000 + rnd.randrange(n_merch)))
            yield f.card_payment(
                tx,
                payments[-1][1],
                payments[-1][2],
                device=rnd.randrange(n_dev),
                ip=rnd.randrange(ips),
                amount=f"{rnd.uniform(1, 500):.2f}",
                position=pos(),
            )
        elif r < 0.70:
            tx += 1
            yield f.transfer(
                tx,
                100_000 + c,
                100_000 + rnd.randrange(n_cust),
                device=rnd.randrange(n_dev),
                ip=rnd.randrange(ips),
                position=pos(),
            )
        elif r < 0.78 and payments:
            t, a, mch = rnd.choice(payments)
            yield f.card_payment(t, a, mch, status="settled", position=pos(), updated=True)
        elif r < 0.93:
            login += 1
            yield f.login(login, c, rnd.choice([None, rnd.randrange(n_dev)]), rnd.randrange(ips), position=pos())
        elif r < 0.98:
            change += 1
            yield f.profile_change(change, c, rnd.choice([None, rnd.randrange(n_dev)]), position=pos())
        elif tx > 1_000_000:
            report += 1
            yield f.fraud_report(report, rnd.randrange(1_000_001, tx + 1), position=pos())
