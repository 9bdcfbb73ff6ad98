"""Hypothesis strategies for hostile input, shared by the unit fuzz tests and the live-worker test
(tests/integration/test_hostile_input.py): hostile JSON values, real Debezium envelopes from
tests/fixtures mutated anywhere (schema included) or damaged at the byte level, and score requests.
Keys and values come out as the bytes a Kafka record would carry."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import strategies as st

from fraudgraph.connectors.decoder import MAX_STRING_CHARS
from fraudgraph.streams.queries import MAX_ID_CHARS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "debezium"
FIXTURE_FILES = sorted(FIXTURES.glob("*/*.json"))
INJECTION = [
    "x'}) DETACH DELETE n //",
    '"},{"admin":true',
    "$param",
    "`x`",
    "${x}",
    "*/ RETURN 1 /*",
    "}) MATCH (n) SET n.pwned = true //",
    "\\",
    "'",
    '"',
]


def deep_text(depth: int) -> str:
    """Nesting as JSON text (as a Python object it would overflow json.dumps and hypothesis' printer)."""
    opens = "".join("[" if i % 2 else '{"a":' for i in range(depth))
    closes = "".join("]" if i % 2 else "}" for i in reversed(range(depth)))
    return opens + '"x"' + closes


class RawToken:
    """A JSON token Python's json cannot write: spliced into the text after dumping."""

    def __init__(self, text: str):
        self.text = text


HOSTILE_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**62, max_value=2**64 + 5),
    st.integers(max_value=-(2**62), min_value=-(2**64)),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64 - 1, 10**30, -(2**63), -(2**63) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -1e308, 5e-324, -0.0, 0.5]),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(
        [
            "",
            "\x00",
            "a\x00b",
            "\u202eevil",
            "𝕏" * 10,
            "NaN",
            "Infinity",
            "-Infinity",
            "1e999999",
            "sNaN",
            *INJECTION,
            "AQ==",
            "////",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "2026-13-45T99:99:99Z",
            "1e-999999999",
            "١٢٣",
        ]
    ),
    st.integers(min_value=MAX_STRING_CHARS - 2, max_value=MAX_STRING_CHARS + 2).map(lambda n: "s" * n),
    st.sampled_from([100_000, 600_000]).map(lambda n: "h" * n),
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "1e400",
            "-1e400",
            "123456789012345678901234567890",
            "1" * 400,
            "0.0000000000000000000000000000001",
            "1E+99999999999",
        ]
    ).map(RawToken),
)
JSON_VALUES = st.recursive(
    HOSTILE_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
) | st.integers(min_value=1, max_value=3000).map(lambda depth: RawToken(deep_text(depth)))


def dumps(doc) -> bytes:
    tokens = {}

    def default(obj):
        if isinstance(obj, RawToken):
            marker = f"@@raw{len(tokens)}@@"
            tokens[marker] = obj.text
            return marker
        raise TypeError(type(obj))

    text = json.dumps(doc, default=default, allow_nan=True)
    for marker, raw in tokens.items():
        text = text.replace(f'"{marker}"', raw)
    return text.encode("utf-8", "surrogatepass")  # hypothesis text may hold lone surrogates


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8", "surrogatepass")


def _paths(doc, prefix=()):
    """Every path to a value inside a JSON document."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated_envelopes(draw):
    """A real captured change event with one to three mutations anywhere in it."""
    fx = json.loads(draw(st.sampled_from(FIXTURE_FILES)).read_text())
    mode = fx["connector_config"]["decimal.handling.mode"]
    if fx["value"] is None:
        return fx["topic"], None, mode, _bytes(fx["key"])
    doc = json.loads(fx["value"])
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
        if not path:
            doc = draw(JSON_VALUES) if action == "replace" else doc
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        if action == "replace":
            parent[last] = draw(JSON_VALUES)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[
                draw(
                    st.text(max_size=8)
                    | st.sampled_from(["op", "after", "before", "source", "payload", "schema", "lsn", "table", "id"])
                )
            ] = draw(JSON_VALUES)
        else:
            parent.insert(draw(st.integers(0, len(parent))), draw(JSON_VALUES))
    key = _bytes(fx["key"])
    if draw(st.booleans()):
        key = draw(st.none() | st.binary(max_size=30) | JSON_VALUES.map(dumps))
    return fx["topic"], dumps(doc), mode, key


@st.composite
def damaged_bytes(draw):
    """A real change event's bytes, truncated, with bytes flipped or inserted."""
    fx = json.loads(draw(st.sampled_from(FIXTURE_FILES)).read_text())
    value = (fx["value"] or "null").encode()
    how = draw(st.sampled_from(["truncate", "flip", "insert"]))
    at = draw(st.integers(0, len(value)))
    if how == "truncate":
        value = value[:at]
    elif how == "flip" and value:
        at = min(at, len(value) - 1)
        value = value[:at] + bytes([value[at] ^ draw(st.integers(1, 255))]) + value[at + 1 :]
    else:
        value = value[:at] + draw(st.binary(min_size=1, max_size=20)) + value[at:]
    return fx["topic"], value, fx["connector_config"]["decimal.handling.mode"], _bytes(fx["key"])


# ---- score and recommendation requests ----


def request_ids():
    return st.text(min_size=1, max_size=MAX_ID_CHARS) | st.sampled_from(
        [
            "r-1",
            "\x00",
            "x'}) DETACH DELETE n //",
            '"},{"admin":true',
            "$param",
            "`r`",
            "𝕏" * MAX_ID_CHARS,
            "é" * (MAX_ID_CHARS + 1),
        ]
    )


IDS = st.one_of(
    st.sampled_from([1, 7, 8, 2**63 - 1]),
    st.integers(min_value=-3, max_value=10),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1]),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
    JSON_VALUES,
    st.sampled_from(["NaN", "1e400", "123456789012345678901234567890", "-0", "7.0"]).map(RawToken),
)


@st.composite
def requests(draw):
    doc = {}
    if draw(st.integers(0, 9)):
        doc["request_id"] = draw(request_ids() | JSON_VALUES)
    for name in draw(st.sets(st.sampled_from(["transaction_id", "account_id"]), max_size=2)):
        doc[name] = draw(IDS)
    doc.update(draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)))
    return dumps(doc)


@st.composite
def recs_requests(draw):
    """Recommendation requests: request_id, account_id and the optional k, exclude_used, max_risk."""
    doc = {}
    if draw(st.integers(0, 9)):
        doc["request_id"] = draw(request_ids() | JSON_VALUES)
    if draw(st.integers(0, 5)):
        doc["account_id"] = draw(IDS)
    options = {
        "k": IDS | st.integers(-2, 200),
        "exclude_used": st.booleans() | JSON_VALUES,
        "max_risk": st.floats() | st.sampled_from([0, 0.1, 0.2, 0.21, 1, -0.0]) | JSON_VALUES,
    }
    for name in draw(st.sets(st.sampled_from(sorted(options)))):
        doc[name] = draw(options[name])
    if not draw(st.integers(0, 4)):
        doc.update(draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2)))
    return dumps(doc)
