"""``fraudgraph mapping check``: does a mapping decode what is actually on the CDC topics?

A mapping loads when it fits the event types (``mapping.py`` checks that), but only the records
say whether its columns exist and hold what the fields expect. This samples up to N records from
each mapped table's topic, decodes them with the mapping under test, and reports per table:

* ``read``: records sampled; ``tombstones``: Kafka's null values after deletes (nothing to decode);
* ``decoded``: records decoded into an event, by event type (``events``); ``rows``: those that are
  the table's own create/update events. Deletes and truncates decode from the key alone, so they
  say nothing about the field mapping;
* ``failures``: per decoder reason, how many and the first one's detail (it names
  ``table.column``);
* ``unknown_fields``: per create/update event type, the fields the table leaves unknown;
* ``status``: ``no records`` (nothing but tombstones, if anything, was read; also when the topic
  does not exist), ``ok`` (no failures), ``all failed`` (failures and no row decoded: the table
  fails entirely), ``some failed``.

``check_mapping`` is pure (records in, report out); ``sample_topics`` is the Kafka edge: a consumer
configured through ``kafka_config`` with a throwaway group, assigned to every partition from its
beginning, never committing, that stops at each partition's end, at N records per topic or at a
deadline. The sample is the start of each topic (snapshot reads and the oldest changes), so update
events may be absent from it; ``events`` shows which were exercised.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable
from collections.abc import Mapping as MappingOf
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fraudgraph.connectors.decoder import DecodeError, Tombstone, decode
from fraudgraph.connectors.events import EntityDeleted, TableTruncated
from fraudgraph.connectors.mapping import Mapping, TableMapping, load_mapping
from fraudgraph.settings import Settings

Record = tuple[str, bytes | None, bytes | None]  # (topic, key, value) as read from Kafka

OK, SOME_FAILED, ALL_FAILED, NO_RECORDS = "ok", "some failed", "all failed", "no records"
_NOT_ROWS = (EntityDeleted, TableTruncated)  # decoded without the field mapping


class MappingLoadError(ValueError):
    """The mapping file does not load (missing, not TOML, or not a valid mapping)."""


@dataclass
class ReasonFailures:
    count: int
    first_detail: str


@dataclass
class TableReport:
    table: str
    topic: str
    unknown_fields: dict[str, list[str]]  # create/update event type -> fields the table leaves unknown
    read: int = 0
    decoded: int = 0
    rows: int = 0
    tombstones: int = 0
    events: dict[str, int] = field(default_factory=dict)  # decoded event type -> count
    failures: dict[str, ReasonFailures] = field(default_factory=dict)  # decoder reason -> count, first detail
    note: str = ""  # e.g. the topic does not exist, or the sample stopped at the deadline

    @property
    def failed(self) -> int:
        return sum(f.count for f in self.failures.values())

    @property
    def status(self) -> str:
        if self.read - self.tombstones == 0:
            return NO_RECORDS
        if not self.failures:
            return OK
        return ALL_FAILED if self.rows == 0 else SOME_FAILED

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "topic": self.topic,
            "status": self.status,
            "read": self.read,
            "decoded": self.decoded,
            "rows": self.rows,
            "tombstones": self.tombstones,
            "failed": self.failed,
            "events": dict(self.events),
            "failures": {r: {"count": f.count, "first": f.first_detail} for r, f in self.failures.items()},
            "unknown_fields": {cls: list(names) for cls, names in self.unknown_fields.items()},
            "note": self.note,
        }


@dataclass
class MappingReport:
    tables: list[TableReport]

    @property
    def failing(self) -> list[TableReport]:
        """The tables that fail entirely: records, failures, and not one row decoded."""
        return [t for t in self.tables if t.status == ALL_FAILED]

    @property
    def exit_code(self) -> int:
        return 1 if self.failing else 0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": not self.failing, "tables": [t.to_dict() for t in self.tables]}


def unknown_fields(tm: TableMapping) -> dict[str, list[str]]:
    """Per create/update event type (once when they are the same), the fields the table leaves unknown."""
    return {cls.__name__: tm.unknown_fields(cls) for cls in dict.fromkeys((tm.create, tm.update))}


def check_table(
    mapping: Mapping, table: str, topic: str, records: Iterable[Record], decimal_handling_mode: str = "precise"
) -> TableReport:
    """Decode one table's records with ``mapping`` and count what happened."""
    tm = mapping.tables[table]
    report = TableReport(table, topic, unknown_fields(tm))
    events: Counter[str] = Counter()
    for rec_topic, key, value in records:
        report.read += 1
        try:
            event = decode(rec_topic, value, mapping, decimal_handling_mode, key)
        except DecodeError as err:
            seen = report.failures.get(err.reason)
            if seen is None:
                report.failures[err.reason] = ReasonFailures(1, err.detail)
            else:
                seen.count += 1
            continue
        if isinstance(event, Tombstone):
            report.tombstones += 1
            continue
        report.decoded += 1
        events[type(event).__name__] += 1
        if not isinstance(event, _NOT_ROWS):
            report.rows += 1
    report.events = dict(sorted(events.items()))
    return report


def check_mapping(
    mapping: Mapping,
    records: MappingOf[str, Iterable[Record]],
    prefix: str,
    decimal_handling_mode: str = "precise",
    notes: MappingOf[str, str] | None = None,
) -> MappingReport:
    """A report per mapped table, in the mapping's order, from ``records`` (table -> its sampled
    records; a table absent from it has none). ``notes``: table -> a remark to carry (from the edge)."""
    notes = notes or {}
    reports = []
    for table in mapping.tables:
        report = check_table(
            mapping, table, mapping.topic(table, prefix), records.get(table, ()), decimal_handling_mode
        )
        report.note = notes.get(table, "")
        reports.append(report)
    return MappingReport(reports)


def load(path: Path | str | None) -> Mapping:
    """The mapping under test; ``MappingLoadError`` (naming the file) if it does not load."""
    try:
        return load_mapping(path)
    except OSError as exc:
        raise MappingLoadError(f"mapping {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError, AttributeError) as exc:  # TOML errors are ValueErrors; wrong shapes the others
        raise MappingLoadError(f"mapping {path}: {exc}") from None


# ---- the Kafka edge ----


@dataclass
class Sample:
    records: dict[str, list[Record]]  # topic -> the records read from it
    missing: list[str]  # topics that do not exist
    unfinished: list[str]  # topics still short of N and of their end at the deadline


def sample_topics(settings: Settings, topics: list[str], n: int, timeout_s: float = 30.0) -> Sample:
    """Up to ``n`` records from the beginning of each topic, stopping at each partition's end or at
    ``timeout_s`` overall (what was read by then is kept). Commits nothing; creates no topic.
    Raises ``confluent_kafka.KafkaException`` when the cluster does not answer."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    from fraudgraph.kafka_config import confluent_config

    deadline = time.monotonic() + timeout_s
    consumer = Consumer(
        confluent_config(
            settings,
            **{
                "group.id": f"fraudgraph-mapping-check-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
            },
        )
    )
    out: dict[str, list[Record]] = {t: [] for t in topics}
    try:
        meta = consumer.list_topics(timeout=max(1.0, deadline - time.monotonic())).topics  # all: creates nothing
        missing = [t for t in topics if t not in meta or meta[t].error is not None or not meta[t].partitions]
        ends: dict[tuple[str, int], int] = {}  # partitions still to read -> the offset to stop before
        assign = []
        for topic in (t for t in topics if t not in missing):
            for p in meta[topic].partitions:
                wait = max(1.0, deadline - time.monotonic())
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=wait)
                if high > low:
                    ends[topic, p] = min(high, low + n)
                    assign.append(TopicPartition(topic, p, low))
        if assign:
            consumer.assign(assign)
        while ends and (left := deadline - time.monotonic()) > 0:
            msg = consumer.poll(min(left, 1.0))
            if msg is None:
                continue
            read, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if read is None or partition is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    ends.pop((read, partition), None)
                    continue
                raise KafkaException(err)
            if (read, partition) not in ends:
                continue
            out[read].append((read, msg.key(), msg.value()))
            if offset is not None and offset + 1 >= ends[read, partition]:
                ends.pop((read, partition))
            if len(out[read]) >= n:  # this topic's sample is complete: drop its other partitions
                for done in [tp for tp in ends if tp[0] == read]:
                    ends.pop(done)
        unfinished = sorted({t for t, _ in ends})
        return Sample(out, missing, unfinished)
    finally:
        consumer.close()


def check_on_kafka(settings: Settings, mapping: Mapping, n: int, timeout_s: float = 30.0) -> MappingReport:
    """Sample each mapped table's topic on the configured Kafka and check the mapping against it."""
    prefix = settings.topic_prefix
    topic_of = {table: mapping.topic(table, prefix) for table in mapping.tables}
    sample = sample_topics(settings, list(dict.fromkeys(topic_of.values())), n, timeout_s)
    notes = {}
    for table, topic in topic_of.items():
        if topic in sample.missing:
            notes[table] = "topic does not exist"
        elif topic in sample.unfinished:
            notes[table] = f"sampling stopped after {timeout_s:g} s"
    records = {table: sample.records.get(topic, []) for table, topic in topic_of.items()}
    return check_mapping(mapping, records, prefix, settings.decimal_handling_mode, notes)


# ---- the command's text output ----


def describe(report: MappingReport) -> str:
    """One line per table (table, topic, read, decoded, rows, tombstones, status, failures by reason),
    then under it the first failure of each reason, the unknown fields and any note; a summary last."""
    header = ("table", "topic", "read", "decoded", "rows", "tombstones", "status", "failures")
    lines = [
        [t.table, t.topic, str(t.read), str(t.decoded), str(t.rows), str(t.tombstones), t.status] for t in report.tables
    ]
    widths = [max(len(h), *(len(row[i]) for row in lines)) for i, h in enumerate(header[:-1])]
    right = {2, 3, 4, 5}  # counts align right

    def cells(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))

    out = [f"{cells(list(header[:-1]))}  {header[-1]}"]
    for t, row in zip(report.tables, lines):
        failures = " ".join(f"{reason}={f.count}" for reason, f in t.failures.items()) or "-"
        out.append(f"{cells(row)}  {failures}")
        for reason, f in t.failures.items():
            out.append(f"    first {reason}: {f.first_detail}")
        unknown = "; ".join(f"{cls}: {', '.join(names)}" for cls, names in t.unknown_fields.items() if names)
        if unknown:
            out.append(f"    unknown fields: {unknown}")
        if t.note:
            out.append(f"    note: {t.note}")
    counts = Counter(t.status for t in report.tables)
    summary = ", ".join(f"{counts[s]} {s}" for s in (OK, SOME_FAILED, ALL_FAILED, NO_RECORDS) if counts[s])
    out.append(f"{len(report.tables)} tables: {summary}")
    if report.failing:
        out.append(
            "FAILED: no row decoded in "
            + ", ".join(t.table for t in report.failing)
            + " (see the first failures above)"
        )
    return "\n".join(out)
