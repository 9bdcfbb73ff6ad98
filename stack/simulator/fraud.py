"""Fraud patterns: each a function that plays one episode and labels every transaction it makes.

Each episode takes a start time and a ``size`` (how many fraudulent transactions it should make) and
returns how many it made. The shapes follow what fraud teams describe; each leaves a different
trace in the graph, which is the point of a graph model:

* card_testing: a stolen card tried many times for small amounts from one new device on a
  data-centre IP, many declines, then one big purchase.
* account_takeover: failed then successful login from a new device and foreign IP, the email and
  phone changed (profile_changes + customers updates), then a large transfer to a brand-new payee.
* mule_ring: scammed victims (from their *own* devices: authorised push payment) pay recently
  opened mule accounts, which share devices and an IP and forward the money within minutes to a
  collector abroad.
* synthetic_identity: new customers sharing a phone number and devices behave nicely for a while
  (top-ups, small payments), then bust out with large purchases and withdrawals.
* colluding_merchant: a new merchant takes many card-not-present payments from compromised
  accounts in a short time.
"""

from __future__ import annotations

import random

from fraudgraph.stack.simulator.population import (
    COUNTRIES,
    Person,
    Population,
    amount_cents,
    hosting_ip,
    ip_in,
    new_device,
    new_person,
    phone_in,
)
from fraudgraph.stack.simulator.timeline import SECOND, Timeline

DAY = 86_400 * SECOND


def _victim(tl: Timeline, pop: Population) -> Person:
    return tl.rng.choice(pop.people)


def _takeover_victim(tl: Timeline, pop: Population) -> Person:
    # One takeover per customer: two interleaved takeovers would update the same customers row
    # out of time order (the before images are taken in generation order).
    for _ in range(50):  # bounded: a tiny population may run out of fresh victims
        victim = _victim(tl, pop)
        if victim.id not in pop.taken_over:
            break
    pop.taken_over.add(victim.id)
    return victim


def _foreign(tl: Timeline, country: str) -> str:
    return tl.rng.choice([c for c in COUNTRIES if c != country])


def card_testing(tl: Timeline, pop: Population, us: int, size: int) -> int:
    rng, name = tl.rng, "card_testing"
    victim = _victim(tl, pop)
    device, ip = new_device(tl, us, fraud=True), hosting_ip(rng)
    shops = [pop.merchant(rng, rng.choice(list(COUNTRIES)), ("5999", "5815")) for _ in range(rng.randint(1, 3))]
    tests = size - 1 if size >= 6 else size
    for _ in range(tests):
        us += tl.seconds(2, 20)
        m = rng.choice(shops)
        tl.transaction(
            us,
            victim.main,
            "card_payment",
            rng.randrange(50, 300),
            merchant=m.id,
            currency=m.currency,
            device=device,
            ip=ip,
            pattern=name,
            decline_p=0.35,
        )
    if tests < size:  # the card works: cash it out on something resellable
        m = pop.merchant(rng, rng.choice(list(COUNTRIES)), ("5732",))
        tl.transaction(
            us + tl.seconds(60, 600),
            victim.main,
            "card_payment",
            rng.randrange(400, 1500) * 100,
            merchant=m.id,
            currency=m.currency,
            device=device,
            ip=ip,
            pattern=name,
            decline_p=0.1,
        )
    return size


def account_takeover(tl: Timeline, pop: Population, us: int, size: int) -> int:
    rng, name = tl.rng, "account_takeover"
    victim = _takeover_victim(tl, pop)
    abroad = _foreign(tl, victim.country)
    payee = new_person(tl, us, abroad, kyc=1)  # the drop account the money goes to
    device, ip = new_device(tl, us, fraud=True), rng.choice((hosting_ip(rng), ip_in(rng, abroad)))
    for _ in range(rng.randint(1, 3)):  # credential stuffing / guessing
        us += tl.seconds(3, 40)
        tl.login(us, victim.id, device, ip, success=False)
    us += tl.seconds(5, 60)
    tl.login(us, victim.id, device, ip)
    for field, value in (("email", f"{victim.id}.{rng.randrange(10**6)}@inbox.test"), ("phone", phone_in(rng, abroad))):
        us += tl.seconds(20, 180)
        tl.profile_change(us, victim.id, field, device, ip)
        before = victim.row
        victim.row = dict(before, **{field: value})
        tl.emit(us, "customers", "update", victim.row, before)
    for _ in range(size):
        us += tl.seconds(60, 600)
        tl.transaction(
            us,
            victim.main,
            "transfer",
            rng.randrange(1_000, 9_000) * 100,
            counterparty=payee.main.id,
            device=device,
            ip=ip,
            pattern=name,
            decline_p=0.05,
        )
    return size


def mule_ring(tl: Timeline, pop: Population, us: int, size: int) -> int:
    rng, name = tl.rng, "mule_ring"
    mules_n = max(1, min(6, size // 4))
    victims_n = max(mules_n, size - mules_n)
    country = _victim(tl, pop).country
    collector = new_person(tl, us, _foreign(tl, country), kyc=1)
    shared = [new_device(tl, us, fraud=True) for _ in range(rng.randint(1, 2))]
    ring_ip = ip_in(rng, country)
    mules = []
    for _ in range(mules_n):
        mules.append(new_person(tl, us, country, kyc=rng.choice((1, 2)), phone=phone_in(rng, country)))
    received: dict[int, list[int]] = {m.id: [] for m in mules}  # mule -> amounts received (cents)
    last_in: dict[int, int] = {m.id: us for m in mules}
    for i in range(victims_n):
        victim, mule = _victim(tl, pop), mules[i % mules_n]
        t = us + tl.seconds(60, 2400)
        device = victim.devices[0]
        tl.login(t, victim.id, device, victim.ips[0])  # the victim is tricked, on their own phone
        cents = rng.randrange(300, 2500) * 100
        tl.transaction(
            t + tl.seconds(30, 180),
            victim.main,
            "transfer",
            cents,
            counterparty=mule.main.id,
            device=device,
            ip=victim.ips[0],
            pattern=name,
            decline_p=0.0,
        )
        received[mule.id].append(cents)
        last_in[mule.id] = max(last_in[mule.id], t + 180 * SECOND)
    for mule in mules:  # forward almost everything, fast, from the ring's shared kit
        t = last_in[mule.id] + tl.seconds(120, 1200)
        device = rng.choice(shared)
        tl.login(t, mule.id, device, ring_ip)
        cents = int(sum(received[mule.id]) * rng.uniform(0.9, 0.98))
        tl.transaction(
            t + tl.seconds(10, 90),
            mule.main,
            "transfer",
            cents,
            counterparty=collector.main.id,
            device=device,
            ip=ring_ip,
            pattern=name,
            decline_p=0.0,
        )
    return victims_n + mules_n


def synthetic_identity(tl: Timeline, pop: Population, us: int, size: int) -> int:
    rng, name = tl.rng, "synthetic_identity"
    k = max(1, min(4, size // 5))
    country = rng.choice(list(COUNTRIES))
    phone = phone_in(rng, country)  # the tell: several "different people" with one phone and one laptop
    shared = [new_device(tl, us, fraud=rng.random() < 0.5) for _ in range(rng.randint(1, 2))]
    ip = ip_in(rng, country)
    # Build-up lasts most of what is left of the run (at most five days), so bust-outs land inside it.
    span = max(120 * SECOND, min(5 * DAY, int((tl.end_us - us) * 0.6)))
    made, per = 0, [size // k + (1 if i < size % k else 0) for i in range(k)]
    for n in per:
        person = new_person(tl, us, country, kyc=1, phone=phone)
        device = rng.choice(shared)
        bust = max(1, n // 3)
        times = sorted(us + rng.randrange(span) for _ in range(n - bust))
        for t in times:  # looks like a thin-file newcomer: top-ups and small payments
            tl.login(t, person.id, device, ip)
            if rng.random() < 0.4:
                tl.transaction(
                    t + tl.seconds(5, 60),
                    person.main,
                    "topup",
                    rng.randrange(50, 400) * 100,
                    device=device,
                    ip=ip,
                    pattern=name,
                )
            else:
                m = pop.merchant(rng, country)
                tl.transaction(
                    t + tl.seconds(5, 60),
                    person.main,
                    "card_payment",
                    amount_cents(rng, m.mcc),
                    merchant=m.id,
                    currency=m.currency,
                    device=device,
                    ip=ip,
                    pattern=name,
                )
        t = us + span + tl.seconds(0, 600)
        tl.login(t, person.id, device, ip)
        for j in range(bust):  # bust-out: max out everything within minutes
            t += tl.seconds(20, 200)
            if j == bust - 1 and bust > 1:
                tl.transaction(
                    t, person.main, "withdrawal", rng.randrange(5, 10) * 10_000, device=device, ip=ip, pattern=name
                )
            else:
                m = pop.merchant(rng, country, ("5732",))
                tl.transaction(
                    t,
                    person.main,
                    "card_payment",
                    rng.randrange(800, 3500) * 100,
                    merchant=m.id,
                    currency=m.currency,
                    device=device,
                    ip=ip,
                    pattern=name,
                    decline_p=0.05,
                )
        made += n
    return made


def colluding_merchant(tl: Timeline, pop: Population, us: int, size: int) -> int:
    rng, name = tl.rng, "colluding_merchant"
    country = rng.choice(list(COUNTRIES))
    mcc = rng.choice(("5732", "5999", "5944", "7995"))
    mid = tl.new_id("merchants")
    tl.emit(
        us,
        "merchants",
        "insert",
        {"id": mid, "name": f"Quick Deals {mid % 1000}", "mcc": mcc, "country": country, "created_at": tl.time(us)},
    )
    kit = [(new_device(tl, us, fraud=True), hosting_ip(rng)) for _ in range(rng.randint(1, 2))]
    span = tl.seconds(600, 2700)
    for _ in range(size):
        victim = _victim(tl, pop)
        device, ip = rng.choice(kit)
        tl.transaction(
            us + rng.randrange(1, span),
            victim.main,
            "card_payment",
            rng.randrange(80, 650) * 100,
            merchant=mid,
            currency=COUNTRIES[country].currency,
            device=device,
            ip=ip,
            pattern=name,
            decline_p=0.04,
        )
    return size


PATTERN_FUNCTIONS = {
    "card_testing": card_testing,
    "account_takeover": account_takeover,
    "mule_ring": mule_ring,
    "synthetic_identity": synthetic_identity,
    "colluding_merchant": colluding_merchant,
}
# Typical fraudulent transactions per episode: (low, high), drawn uniformly.
EPISODE_SIZE = {
    "card_testing": (8, 25),
    "account_takeover": (1, 3),
    "mule_ring": (8, 24),
    "synthetic_identity": (6, 20),
    "colluding_merchant": (6, 20),
}


class FraudPlanner:
    """Starts fraud episodes so that fraud stays near ``fraud_rate`` of all transactions so far.

    Patterns come in shuffled rounds (every pattern once per round), so any run long enough for a
    handful of episodes shows all of them. An episode starts once the fraud deficit reaches half its
    size: episodes keep their natural size and the rate overshoots by at most half an episode.
    """

    def __init__(self, rng: random.Random, fraud_rate: float):
        self.rng = rng
        self.ratio = fraud_rate / (1 - fraud_rate)  # fraud per legit transaction
        self._round: list[str] = []
        self._draw()

    def _draw(self) -> None:
        if not self._round:
            self._round = list(PATTERN_FUNCTIONS)
            self.rng.shuffle(self._round)
        self.pattern = self._round.pop()
        self.size = self.rng.randint(*EPISODE_SIZE[self.pattern])

    def window(self, tl: Timeline, pop: Population, w0: int, w1: int) -> None:
        if self.ratio == 0:
            return
        truth = tl.truth
        while self.ratio * truth.legit_transactions - truth.fraud_transactions >= self.size / 2:
            PATTERN_FUNCTIONS[self.pattern](tl, pop, self.rng.randrange(w0, w1), self.size)
            self._draw()
