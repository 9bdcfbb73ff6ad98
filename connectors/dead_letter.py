"""What a dead-lettered message carries: the original bytes, untouched, plus why and where from.

The value and key are the original bytes (nothing re-encoded, so nothing is lost); the reason and
the source topic/partition/offset travel as headers, following Kafka Connect's dead-letter-queue
convention, so existing DLQ tooling can read them.
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER_PREFIX = "fraudgraph.dlq."


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (HEADER_PREFIX + "reason", self.reason.encode()),
            (HEADER_PREFIX + "detail", self.detail[:1000].encode("utf-8", "replace")),
            (HEADER_PREFIX + "topic", self.topic.encode()),
            (HEADER_PREFIX + "partition", str(self.partition).encode()),
            (HEADER_PREFIX + "offset", str(self.offset).encode()),
        ]

    @classmethod
    def from_headers(cls, key: bytes | None, value: bytes | None, headers) -> DeadLetter:
        h = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (headers or [])}
        p = HEADER_PREFIX
        return cls(
            key, value, h[p + "reason"], h[p + "detail"], h[p + "topic"], int(h[p + "partition"]), int(h[p + "offset"])
        )
