"""Legitimate activity: what the bank's good customers do in each slice of simulated time.

Four kinds of episode, each a short story that emits rows:

* app session: log in (now and then after a mistyped password) from a usual device and network,
  then one or more payments minutes apart: online card payments at favourite merchants, transfers to
  friends, cash withdrawals, wallet top-ups; sometimes a shopping burst of many payments.
* in-store card payment: card present, so no device, no IP and no login.
* payroll run: an employer pays all its staff at once (an honest burst of incoming transfers).
* bill: a recurring card-on-file payment to a utility, telecom or insurer.

Rates follow the hour of day, and a few percent of customers change phones (a new device that is
not fraud) or travel (a foreign IP and foreign merchants that are not fraud either).
"""

from __future__ import annotations

import math

from fraudgraph.stack.simulator.population import (
    EVERYDAY_MCC,
    TRAVEL_MCC,
    Person,
    Population,
    amount_cents,
    new_device,
)
from fraudgraph.stack.simulator.timeline import SECOND, Timeline

APP_SESSIONS_PER_HOUR = 0.5  # per customer, at activity 1.0 and an average hour
STORE_PAYMENTS_PER_HOUR = 0.8
# Relative activity by UTC hour (quiet nights, lunch and evening peaks), normalised to mean 1.
_HOURLY = (
    0.2,
    0.12,
    0.08,
    0.07,
    0.08,
    0.15,
    0.35,
    0.7,
    1.0,
    1.15,
    1.25,
    1.35,
    1.5,
    1.45,
    1.3,
    1.25,
    1.3,
    1.45,
    1.6,
    1.65,
    1.5,
    1.2,
    0.8,
    0.45,
)
HOURLY = tuple(h * len(_HOURLY) / sum(_HOURLY) for h in _HOURLY)


def poisson(rng, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:  # normal approximation: exact enough for a load generator, and O(1)
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def legit_window(tl: Timeline, pop: Population, w0: int, w1: int) -> None:
    """Start every legitimate episode that begins in [w0, w1)."""
    rng, cfg = tl.rng, tl.config
    hour = tl.time((w0 + w1) // 2).hour
    customer_hours = len(pop.people) * (w1 - w0) / (3600 * SECOND) * HOURLY[hour] * cfg.activity
    people, cw = pop.people, pop.cum_weights
    for person in rng.choices(people, cum_weights=cw, k=poisson(rng, customer_hours * APP_SESSIONS_PER_HOUR)):
        app_session(tl, pop, person, rng.randrange(w0, w1))
    for person in rng.choices(people, cum_weights=cw, k=poisson(rng, customer_hours * STORE_PAYMENTS_PER_HOUR)):
        store_payment(tl, pop, person, rng.randrange(w0, w1))
    for us, event in pop.due(w0, w1, int(cfg.recurring_period_s * SECOND)):
        if event[0] == "bill":
            _, person, merchant, cents = event
            tl.transaction(us, person.main, "card_payment", cents, merchant=merchant.id)
        else:
            _, employer_account, staff = event
            for i, (person, cents) in enumerate(staff):  # a payroll file: one transfer every ~50 ms
                tl.transaction(
                    us + i * 50_000, employer_account, "transfer", cents, counterparty=person.main.id, decline_p=0.0
                )


def where(person: Person, us: int) -> tuple[str, str | None]:
    """(country, travel IP) at time ``us``: abroad after the trip starts."""
    if person.travel and us >= person.travel[0]:
        return person.travel[1], person.travel[2]
    return person.country, None


def app_session(tl: Timeline, pop: Population, person: Person, us: int) -> None:
    rng = tl.rng
    if rng.random() < 0.015:  # a new phone: an unseen device that is perfectly legitimate
        person.devices.append(new_device(tl, us))
        device = person.devices[-1]
    else:
        device = person.devices[0] if rng.random() < 0.75 else rng.choice(person.devices)
    country, travel_ip = where(person, us)
    ip = travel_ip or (person.ips[0] if rng.random() < 0.75 else person.ips[1])
    if rng.random() < 0.03:  # mistyped password
        tl.login(us, person.id, device, ip, success=False)
        us += tl.seconds(5, 30)
    tl.login(us, person.id, device, ip)
    if rng.random() < 0.01:  # routine security hygiene, not an attack
        tl.profile_change(us + tl.seconds(10, 60), person.id, rng.choice(("password", "address", "mfa")), device, ip)
    burst = rng.random() < 0.05
    payments = rng.randint(5, 12) if burst else min(6, 1 + int(rng.expovariate(1.2)))
    for _ in range(payments):
        us += tl.seconds(5, 40) if burst else tl.seconds(20, 240)
        _payment(tl, pop, person, us, country, device, ip)


def _payment(tl: Timeline, pop: Population, person: Person, us: int, country: str, device: str, ip: str) -> None:
    rng = tl.rng
    roll = rng.random()
    account = person.main
    if roll < 0.12 and person.friends:
        friend = rng.choice(person.friends)
        tl.transaction(
            us, account, "transfer", rng.randrange(5, 250) * 100, counterparty=friend.id, device=device, ip=ip
        )
    elif roll < 0.18:
        tl.transaction(us, account, "withdrawal", rng.choice((20, 40, 50, 100, 200)) * 100, device=device, ip=ip)
    elif roll < 0.23:
        wallet = person.accounts[-1]  # top up the wallet (or the only account) from an external card
        tl.transaction(us, wallet, "topup", rng.randrange(10, 300) * 100, device=device, ip=ip, decline_p=0.01)
    else:
        merchant = _merchant(tl, pop, person, country)
        tl.transaction(
            us,
            account,
            "card_payment",
            amount_cents(rng, merchant.mcc),
            merchant=merchant.id,
            currency=merchant.currency,
            device=device,
            ip=ip,
        )


def _merchant(tl: Timeline, pop: Population, person: Person, country: str):
    rng = tl.rng
    if country != person.country:
        return pop.merchant(rng, country, TRAVEL_MCC)
    if rng.random() < 0.85:
        return rng.choice(person.favourites)
    return pop.merchant(rng, country, EVERYDAY_MCC if rng.random() < 0.5 else None)


def store_payment(tl: Timeline, pop: Population, person: Person, us: int) -> None:
    country, _ = where(person, us)
    merchant = _merchant(tl, pop, person, country)
    tl.transaction(
        us,
        person.main,
        "card_payment",
        amount_cents(tl.rng, merchant.mcc),
        merchant=merchant.id,
        currency=merchant.currency,
    )
