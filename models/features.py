"""Raw node features: how each node type's source attributes become the vector the model reads.

Why here, with the model, and versioned: a checkpoint is only meaningful with the encoding it was
trained on, so ``FEATURE_SPEC`` is recorded in every checkpoint and every score. The worker calls
these functions when it first links a node (its state keeps the vector as linked, see
``models/incremental.py``), and training replays call the very same functions, so serving and
training cannot encode differently.

Every encoder is deterministic and total: an unknown category maps to the "other" slot, a missing
value to zeros, so a new source value never breaks scoring.

A field the bank's mapping leaves out, or a null in its row, arrives as ``None`` (unknown,
``connectors/mapping.py``: ``UNKNOWN_FIELDS``) and is encoded as missing: exactly what a node gets
before its own row has arrived (an account's kind in the "other" slot, a customer's KYC level as
0). Known values encode as they always did, so ``FEATURE_SPEC`` holds for complete data. The
encoding cannot tell an unknown KYC level from level 0, nor an unknown account kind from an unlisted
one; that is why a model's card lists the fields it was trained with, and a worker whose mapping
lacks one of them refuses the model (``models/serving.py``) rather than feed it "missing" where it
learned from values.
"""

from __future__ import annotations

import math
from datetime import datetime

FEATURE_SPEC = "v1"

TRANSACTION_KINDS = ("card_payment", "transfer", "withdrawal", "topup")
ACCOUNT_KINDS = ("checking", "savings", "wallet", "merchant_settlement")


def _one_hot(value: str | None, categories: tuple[str, ...]) -> list[float]:
    """One slot per category plus a last "other" slot."""
    out = [0.0] * (len(categories) + 1)
    out[categories.index(value) if value in categories else len(categories)] = 1.0
    return out


def transaction_features(amount: float, kind: str, at: datetime) -> list[float]:
    hour = (at.hour + at.minute / 60) / 24 * 2 * math.pi
    return [math.log1p(max(amount, 0.0)), *_one_hot(kind, TRANSACTION_KINDS), math.sin(hour), math.cos(hour)]


def account_features(kind: str | None) -> list[float]:
    return _one_hot(kind, ACCOUNT_KINDS)  # None (unknown, or no row yet): the "other" slot


def customer_features(kyc_level: int | None) -> list[float]:
    return [1.0, (kyc_level or 0) / 3.0]  # None (unknown, or no row yet): 0.0


def constant_features() -> list[float]:
    """Merchants, devices and IPs: identity only; what they are is learned from their neighbours."""
    return [1.0]


FEATURE_WIDTHS = {
    "Transaction": len(transaction_features(0.0, "", datetime(2000, 1, 1))),
    "Account": len(account_features(None)),
    "Customer": len(customer_features(None)),
    "Merchant": 1,
    "Device": 1,
    "IP": 1,
}
