"""The worker's Kafka clients: Faust's aiokafka consumer and producer, each with one gap closed.

**Consumer.** After every rebalance Faust clears the messages it had fetched but not processed and seeks each
assigned partition back to its committed offset, so they are read again. aiokafka skips that seek
when the committed offset is missing or 0 (``seek_to_committed``: ``if offset and offset > 0``),
leaving the fetch position *after* the cleared messages: a fresh consumer group that fetched
during its first assignment lost those messages for good (seen in CI: every event produced
while a new worker started was never processed). Here such a partition goes back to its first
offset, which is what ``auto_offset_reset=earliest`` promises. What was already processed is
committed first (Faust's own periodic commit, brought forward), so only the cleared messages are
read again and nothing is processed twice.

That seek is an explicit ``seek`` run on the consumer's own thread (what aiokafka does for
committed partitions), not ``seek_to_beginning``: Faust resumes the partitions before it seeks
(``Recovery.on_recovery_completed``), so they are being consumed while the seek runs, and an
offset reset that aiokafka resolves in the background meanwhile can skip records for good (a
worker restarted on an uncommitted backlog never received runs of consecutive offsets). Records
handed over before the seek are still delivered; those read again are skipped as replays.

Changelog partitions are left alone: Faust positions them itself during recovery and never
commits offsets for them.

**Producer.** Faust turns on idempotence only inside Kafka transactions, which the worker does not
use (app.py says why). Without it a produce that reached the broker but whose answer was lost (a
broker restart, a leader change: the broker-restart test shows ``NotLeaderForPartition`` retries)
can be written twice. With ``enable_idempotence`` the broker drops the retried copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP


class Consumer(aiokafka_driver.Consumer):
    async def seek_to_committed(self) -> Mapping[TP, int]:
        await self.commit()
        committed = await super().seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        uncommitted = [tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs]
        if uncommitted:
            await self.seek_wait(await self._thread.earliest_offsets(*uncommitted))
        return committed


class Producer(aiokafka_driver.Producer):
    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}
