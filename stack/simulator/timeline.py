"""The timeline every generator writes to: ids, clocks and the ordered buffer of rows.

Why a buffer: one episode (a login and its payments, a fraud ring) produces rows at several future
times (a status update seconds later, a chargeback hours later). Episodes push rows with their own
times; the generator pops them in time order once no later-starting episode can precede them.
Helpers here emit the rows that many episodes share (devices, logins, transactions) so each
pattern reads as a story, not as dict plumbing.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from hashlib import blake2b

from fraudgraph.stack.simulator.config import SimConfig
from fraudgraph.stack.simulator.rows import TABLES, GroundTruth, Op, Row

SECOND = 1_000_000  # the timeline counts integer microseconds from the start (PostgreSQL's resolution)


@dataclass(slots=True)
class Account:
    id: int
    customer_id: int
    currency: str


class Timeline:
    def __init__(self, config: SimConfig):
        self.config = config
        self.rng = random.Random(config.seed)  # swapped per phase by drawing_from()
        self.truth = GroundTruth()
        self.end_us = int(config.duration_s * SECOND)
        self._heap: list[tuple[int, int, Row]] = []
        self._seq = 0
        self._ids = {t: config.id_base for t in TABLES if t != "devices"}
        self._devices = 0
        self._report_lo, self._report_hi = config.report_delay()

    @contextmanager
    def drawing_from(self, rng: random.Random):
        """Use ``rng`` for the draws inside the block. Legit and fraud activity have their own
        generators, so changing the fraud rate leaves the legitimate behaviour's draws unchanged."""
        saved, self.rng = self.rng, rng
        try:
            yield
        finally:
            self.rng = saved

    # ---- the buffer ----
    def emit(self, us: int, table: str, op: Op, values: dict, before: dict | None = None) -> None:
        self._seq += 1  # ties at the same microsecond keep emission order (a device before its login)
        heapq.heappush(self._heap, (us, self._seq, Row(table, op, values, self.time(us), before)))

    def pop_until(self, us: int | None) -> Iterator[Row]:
        """Rows earlier than ``us`` (all rows when None), in time order."""
        heap = self._heap
        while heap and (us is None or heap[0][0] < us):
            yield heapq.heappop(heap)[2]

    def time(self, us: int):
        return self.config.start + timedelta(microseconds=us)

    def new_id(self, table: str) -> int:
        self._ids[table] += 1
        return self._ids[table] - 1

    def seconds(self, lo: float, hi: float) -> int:
        """A random duration in microseconds, uniform in [lo, hi] seconds."""
        return int(self.rng.uniform(lo, hi) * SECOND)

    # ---- shared row helpers ----
    def device(self, us: int, os: str, user_agent: str, first_seen_us: int | None = None) -> str:
        """A new device row; its id is a fingerprint-like hex string unique to this run's id_base."""
        self._devices += 1
        fid = blake2b(f"{self.config.id_base}/{self._devices}".encode(), digest_size=10).hexdigest()
        self.emit(
            us,
            "devices",
            "insert",
            {
                "id": fid,
                "os": os,
                "user_agent": user_agent,
                "first_seen": self.time(us if first_seen_us is None else first_seen_us),
            },
        )
        return fid

    def login(self, us: int, customer_id: int, device: str | None, ip: str, success: bool = True) -> None:
        self.emit(
            us,
            "logins",
            "insert",
            {
                "id": self.new_id("logins"),
                "customer_id": customer_id,
                "device_id": device,
                "ip": ip,
                "success": success,
                "at": self.time(us),
            },
        )

    def profile_change(self, us: int, customer_id: int, field: str, device: str | None, ip: str | None) -> None:
        self.emit(
            us,
            "profile_changes",
            "insert",
            {
                "id": self.new_id("profile_changes"),
                "customer_id": customer_id,
                "field": field,
                "device_id": device,
                "ip": ip,
                "at": self.time(us),
            },
        )

    def transaction(
        self,
        us: int,
        account: Account,
        kind: str,
        cents: int,
        *,
        merchant: int | None = None,
        counterparty: int | None = None,
        device: str | None = None,
        ip: str | None = None,
        currency: str | None = None,
        pattern: str | None = None,
        decline_p: float = 0.02,
    ) -> int:
        """Insert a pending transaction, update it to its final status a few seconds later, and
        record its label (plus, for fraud, the delayed report that is the engine's only ground truth)."""
        rng = self.rng
        tid = self.new_id("transactions")
        at = self.time(us)
        values = {
            "id": tid,
            "account_id": account.id,
            "kind": kind,
            "amount": Decimal(max(cents, 1)).scaleb(-2),
            "currency": currency or account.currency,
            "merchant_id": merchant,
            "counterparty_account_id": counterparty,
            "device_id": device,
            "ip": ip,
            "status": "pending",
            "created_at": at,
            "updated_at": at,
        }
        self.emit(us, "transactions", "insert", values)
        declined = rng.random() < decline_p
        final = "declined" if declined else "authorized" if kind == "card_payment" else "settled"
        done_us = us + self.seconds(0.2, 4.0)
        self.emit(done_us, "transactions", "update", dict(values, status=final, updated_at=self.time(done_us)), values)
        if pattern is None:
            self.truth.legit_transactions += 1
            if rng.random() < self.config.false_positive_rate:
                self._report(us, tid, "false_positive")
                self.truth.false_positives.add(tid)
        else:
            self.truth.labels[tid] = pattern
            if rng.random() < self.config.report_coverage:
                kind_ = "chargeback" if kind == "card_payment" and not declined else "confirmed_fraud"
                self._report(us, tid, kind_)
                self.truth.reported[tid] = kind_
        return tid

    def _report(self, us: int, transaction_id: int, kind: str) -> None:
        # Log-uniform delay: most reports come early in the window, a long tail comes much later.
        delay = math.exp(self.rng.uniform(math.log(self._report_lo), math.log(self._report_hi)))
        at_us = us + max(int(delay * SECOND), math.ceil(self._report_lo * SECOND))
        self.emit(
            at_us,
            "fraud_reports",
            "insert",
            {
                "id": self.new_id("fraud_reports"),
                "transaction_id": transaction_id,
                "kind": kind,
                "reported_at": self.time(at_us),
            },
        )
