"""The bank's world at the start of a run: merchants, employers and customers with their accounts,
devices, home IPs, favourite merchants, friends, salaries and bills.

Why so much structure: a fraud model learns *deviations from habit*. Real customers pay the same
few merchants, log in from the same phones and home networks, get paid on payday and pay the same
bills; households share an IP, families share a tablet, people travel and change phones. Without
that texture every new device or shared IP looks like fraud and any detector looks brilliant.

Entities that exist before the run are emitted at t=0 (a bank's existing book), with creation
times in the past; people created during the run (mules, synthetic identities) come from the same
``new_person`` helper at the moment they sign up.
"""

from __future__ import annotations

import bisect
import itertools
import unicodedata
from dataclasses import dataclass, field

from fraudgraph.stack.simulator.timeline import SECOND, Account, Timeline

DAY = 86_400 * SECOND


@dataclass(frozen=True)
class Country:
    currency: str
    weight: float  # share of the bank's customers
    ipv4_first_octets: tuple[int, ...]
    phone_prefix: str
    ipv6_prefix: str


COUNTRIES = {
    "GB": Country("GBP", 0.55, (81, 86, 90, 109), "+44 7", "2a02:c7c"),
    "DE": Country("EUR", 0.10, (84, 91, 93), "+49 15", "2003:e4"),
    "FR": Country("EUR", 0.08, (82, 90, 176), "+33 6", "2a01:cb0"),
    "ES": Country("EUR", 0.06, (83, 88, 95), "+34 6", "2a0c:5a80"),
    "NL": Country("EUR", 0.05, (77, 145), "+31 6", "2a02:a46"),
    "PL": Country("PLN", 0.06, (78, 83, 89), "+48 5", "2a01:110f"),
    "US": Country("USD", 0.10, (24, 67, 73, 98), "+1 415", "2600:1700"),
}
# Data-centre ranges: where card testers and account takers connect from (VPNs, rented servers).
HOSTING_FIRST_OCTETS = (45, 104, 139, 185, 193)

# ISO 18245 category -> (what, median amount in major units, log-normal sigma)
MCC = {
    "5411": ("grocery", 35.0, 0.6),
    "5812": ("restaurant", 28.0, 0.6),
    "5814": ("fast food", 11.0, 0.4),
    "5541": ("fuel", 55.0, 0.4),
    "5732": ("electronics", 180.0, 0.9),
    "5651": ("clothing", 60.0, 0.7),
    "5912": ("pharmacy", 18.0, 0.6),
    "4121": ("taxi", 22.0, 0.5),
    "5999": ("online shop", 25.0, 0.8),
    "5815": ("digital goods", 9.0, 0.6),
    "7011": ("hotel", 140.0, 0.5),
    "4511": ("airline", 250.0, 0.6),
    "4900": ("utilities", 80.0, 0.4),
    "4814": ("telecom", 35.0, 0.3),
    "6300": ("insurance", 60.0, 0.4),
}
EVERYDAY_MCC = ("5411", "5411", "5812", "5814", "5541", "5651", "5912", "4121", "5999", "5815", "5732")
BILL_MCC = ("4900", "4814", "6300")
TRAVEL_MCC = ("7011", "5812", "4121", "5411", "5812")

FIRST = (
    "Olivia",
    "Noah",
    "Amelia",
    "Liam",
    "Isla",
    "Lukas",
    "Emma",
    "Hugo",
    "Lucía",
    "Mateo",
    "Zofia",
    "Jakub",
    "Sophie",
    "Daan",
    "Ava",
    "Ethan",
    "Chloé",
    "Jonas",
    "Maya",
    "Omar",
    "Priya",
    "Chen",
    "Zoë",
)
LAST = (
    "Smith",
    "Jones",
    "Müller",
    "Schmidt",
    "Martin",
    "Bernard",
    "García",
    "López",
    "de Vries",
    "Nowak",
    "Kowalski",
    "Johnson",
    "Brown",
    "Patel",
    "O'Brien",
    "Wilson",
    "Rossi",
    "Khan",
    "Novak",
)
BRANDS = ("Corner", "City", "Green", "Blue", "Royal", "Metro", "Urban", "Golden", "Swift", "Prime", "Nova")
DEVICE_KINDS = (  # (os, user agent) as a bank's app or web front end would log them
    ("ios", "BankApp/8.4 (iPhone15,2; iOS 17.5)"),
    ("ios", "BankApp/8.3 (iPhone13,1; iOS 16.7)"),
    ("android", "BankApp/8.4 (Pixel 8; Android 14)"),
    ("android", "BankApp/8.2 (SM-S911B; Android 13)"),
    ("windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0"),
    ("macos", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15"),
)
FRAUD_DEVICE_KINDS = (
    ("linux", "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/125.0"),
    ("android", "BankApp/7.9 (generic_x86; Android 11)"),
    ("windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/118.0"),
)


@dataclass(slots=True)
class Merchant:
    id: int
    mcc: str
    country: str

    @property
    def currency(self) -> str:
        return COUNTRIES[self.country].currency


@dataclass(slots=True, eq=False)
class Person:
    """A customer and the habits the legitimate generator follows."""

    id: int
    country: str
    row: dict  # the current customers row (updates need the before image)
    accounts: list[Account] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)  # home first, then mobile/work
    favourites: list[Merchant] = field(default_factory=list)
    friends: list[Account] = field(default_factory=list)
    travel: tuple[int, str, str] | None = None  # (from us, destination country, hotel IP)

    @property
    def main(self) -> Account:
        return self.accounts[0]


@dataclass
class Population:
    people: list[Person]
    cum_weights: list[float]  # activity weights: a few heavy users, many light ones
    merchants_by_country: dict[str, list[Merchant]]
    merchants_by_mcc: dict[tuple[str, str], list[Merchant]]  # (country, mcc) -> merchants
    merchant_weights: dict[str, list[float]]  # popularity (Zipf): a few big chains, a long tail
    recurring: list[tuple[int, tuple]]  # (phase in the cycle, event) sorted by phase
    phases: list[int]  # the sorted phases, for bisect
    taken_over: set[int] = field(default_factory=set)  # customers already victims of a takeover

    def merchant(self, rng, country: str, mccs: tuple[str, ...] | None = None) -> Merchant:
        if mccs:  # every country has every category (see build_population)
            return rng.choice(self.merchants_by_mcc[country, rng.choice(mccs)])
        return rng.choices(self.merchants_by_country[country], cum_weights=self.merchant_weights[country])[0]

    def due(self, w0: int, w1: int, period: int) -> list[tuple[int, tuple]]:
        """Recurring events whose cycle phase falls in [w0, w1), with their absolute times."""
        lo, span = w0 % period, w1 - w0
        out = []
        for a, b, shift in ((lo, min(lo + span, period), 0), (0, lo + span - period, period)):
            for i in range(bisect.bisect_left(self.phases, a), bisect.bisect_left(self.phases, b)):
                phase, event = self.recurring[i]
                out.append((w0 + phase - lo + shift, event))
        return out


# ---- small generators of realistic values ----
def pick_country(rng) -> str:
    return rng.choices(list(COUNTRIES), weights=[c.weight for c in COUNTRIES.values()])[0]


def ip_in(rng, country: str) -> str:
    c = COUNTRIES[country]
    if rng.random() < 0.15:
        return f"{c.ipv6_prefix}:{rng.randrange(1, 0xFFFF):x}::{rng.randrange(1, 0xFFFF):x}"
    return f"{rng.choice(c.ipv4_first_octets)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def hosting_ip(rng) -> str:
    return f"{rng.choice(HOSTING_FIRST_OCTETS)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def phone_in(rng, country: str) -> str:
    return f"{COUNTRIES[country].phone_prefix}{rng.randrange(10_000_000, 99_999_999)}"


def amount_cents(rng, mcc: str) -> int:
    _, median, sigma = MCC[mcc]
    return max(50, int(median * rng.lognormvariate(0, sigma) * 100))


def new_device(tl: Timeline, us: int, fraud: bool = False, first_seen_us: int | None = None) -> str:
    os, ua = tl.rng.choice(FRAUD_DEVICE_KINDS if fraud else DEVICE_KINDS)
    return tl.device(us, os, ua, first_seen_us)


def new_person(
    tl: Timeline,
    us: int,
    country: str,
    *,
    kyc: int,
    phone: str | None = None,
    created_us: int | None = None,
    account_kinds: tuple[str, ...] = ("checking",),
    name: str | None = None,
) -> Person:
    """Emit a customer and their accounts at ``us`` (created ``created_us``, default: now)."""
    rng = tl.rng
    cid = tl.new_id("customers")
    first, last = rng.choice(FIRST), rng.choice(LAST)
    full_name = name or f"{first} {last}"
    local = unicodedata.normalize("NFKD", f"{first}.{last}").encode("ascii", "ignore").decode().lower()
    email = f"{local.replace(chr(39), '').replace(' ', '')}{cid % 10_000}@{rng.choice(('mail.test', 'inbox.test'))}"
    created = created_us if created_us is not None else us
    row = {
        "id": cid,
        "full_name": full_name,
        "email": email,
        "phone": phone,
        "country": country,
        "kyc_level": kyc,
        "created_at": tl.time(created),
    }
    tl.emit(us, "customers", "insert", row)
    person = Person(cid, country, row)
    for kind in account_kinds:
        opened = us if created >= us else min(us, created + rng.randrange(0, 30 * DAY))
        aid = tl.new_id("accounts")
        currency = COUNTRIES[country].currency
        tl.emit(
            us,
            "accounts",
            "insert",
            {
                "id": aid,
                "customer_id": cid,
                "kind": kind,
                "currency": currency,
                "status": "active",
                "opened_at": tl.time(opened),
            },
        )
        person.accounts.append(Account(aid, cid, currency))
    return person


def build_population(tl: Timeline) -> Population:
    """Emit the bank's existing book at t=0 and return the habits that drive legitimate activity."""
    rng, n = tl.rng, tl.config.customers
    # Merchants: every country gets every everyday category, plus a Zipf tail of popularity.
    merchants_by_country: dict[str, list[Merchant]] = {}
    for country in COUNTRIES:
        count = max(len(MCC), int(n / 12 * COUNTRIES[country].weight) + len(MCC))
        mccs = list(MCC) + [rng.choice(EVERYDAY_MCC) for _ in range(count - len(MCC))]
        merchants_by_country[country] = []
        for mcc in mccs:
            mid = tl.new_id("merchants")
            name = f"{rng.choice(BRANDS)} {MCC[mcc][0].title()} {mid % 1000}"
            tl.emit(
                0,
                "merchants",
                "insert",
                {
                    "id": mid,
                    "name": name,
                    "mcc": mcc,
                    "country": country,
                    "created_at": tl.time(-rng.randrange(90 * DAY, 3000 * DAY)),
                },
            )
            merchants_by_country[country].append(Merchant(mid, mcc, country))
    merchant_weights = {
        c: list(itertools.accumulate(1 / (i + 1) for i in range(len(ms)))) for c, ms in merchants_by_country.items()
    }
    by_mcc: dict[tuple[str, str], list[Merchant]] = {}
    for ms in merchants_by_country.values():
        rng.shuffle(ms)  # popularity rank independent of category
        for m in ms:
            by_mcc.setdefault((m.country, m.mcc), []).append(m)

    # Employers: a few companies whose payroll runs pay many customers at once.
    employers = [
        new_person(
            tl,
            0,
            pick_country(rng),
            kyc=2,
            created_us=-rng.randrange(400 * DAY, 5000 * DAY),
            name=f"{rng.choice(BRANDS)} {rng.choice(('Ltd', 'GmbH', 'SARL', 'Inc', 'Sp. z o.o.'))}",
        )
        for _ in range(max(2, n // 150))
    ]

    people: list[Person] = []
    weights: list[float] = []
    household_ip: str | None = None
    family_device: str | None = None
    pop = Population(people, [], merchants_by_country, by_mcc, merchant_weights, [], [])
    for _ in range(n):
        country = pick_country(rng)
        kinds = ("checking",) if rng.random() < 0.6 else ("checking", rng.choice(("savings", "wallet")))
        created = -rng.randrange(30 * DAY, 3000 * DAY)
        p = new_person(
            tl,
            0,
            country,
            kyc=rng.choices((0, 1, 2), weights=(4, 26, 70))[0],
            phone=phone_in(rng, country) if rng.random() < 0.9 else None,
            created_us=created,
            account_kinds=kinds,
        )
        # Households share a home IP; families share a tablet: legitimate sharing the model must tolerate.
        if household_ip and rng.random() < 0.12:
            p.ips.append(household_ip)
        else:
            p.ips.append(ip_in(rng, country))
        household_ip = p.ips[0]
        p.ips.append(ip_in(rng, country))  # mobile network
        if family_device and rng.random() < 0.04:
            p.devices.append(family_device)
        for _ in range(rng.choice((1, 1, 2, 2, 3))):
            p.devices.append(new_device(tl, 0, first_seen_us=created + rng.randrange(0, 20 * DAY)))
        family_device = p.devices[-1]
        p.favourites = [pop.merchant(rng, country) for _ in range(rng.randint(3, 8))]
        if rng.random() < 0.03:  # travels during the run
            dest = rng.choice([c for c in COUNTRIES if c != country])
            p.travel = (rng.randrange(0, tl.end_us), dest, ip_in(rng, dest))
        people.append(p)
        weights.append(rng.lognormvariate(0, 0.8))
    for p in people:
        p.friends = [rng.choice(people).main for _ in range(rng.choice((0, 1, 2, 3)))]
        p.friends = [a for a in p.friends if a.customer_id != p.id]
    pop.cum_weights = list(itertools.accumulate(weights))

    # Recurring events: payroll runs (one per employer, all its staff at once) and bills.
    period = int(tl.config.recurring_period_s * SECOND)
    recurring: list[tuple[int, tuple]] = []
    staff: dict[int, list[tuple[Person, int]]] = {}
    for p in people:
        if rng.random() < 0.75:
            staff.setdefault(rng.randrange(len(employers)), []).append((p, rng.randrange(1800, 6000) * 100))
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            m = pop.merchant(rng, p.country, BILL_MCC)
            recurring.append((rng.randrange(period), ("bill", p, m, amount_cents(rng, m.mcc))))
    for i, members in staff.items():
        recurring.append((rng.randrange(period), ("payroll", employers[i].main, members)))
    recurring.sort(key=lambda e: e[0])
    pop.recurring, pop.phases = recurring, [phase for phase, _ in recurring]
    return pop
