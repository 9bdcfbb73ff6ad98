"""A micro-batch of transactions to decisions: the model and the rules at the same time.

The model request goes to the ``ModelServer`` first, whose inference thread (GPU when there is
one) runs it while the rules evaluate here on the event loop's CPU (they start once the server
says the batch is on its thread, so the two overlap whatever the server's batching does); the policy then combines each
transaction's model opinion and rule hits (``streams/decision.py``). A transaction is decided
within one policy version, read once per batch.

The model never makes a transaction undecidable: no model registered yet, a model error, or state
that cannot be scored exactly all decide on rules and lists alone, with a ``model_unavailable``
reason saying so (and the error logged), rather than dropping or stalling the transaction.

The rules are told which fields the worker's mapping leaves out (``fields``: the ones it provides),
so a rule that needs one does not fire and says so (``rules.py``, unknown fields).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from fraudgraph.models.serving import ModelOutput, ModelServer
from fraudgraph.streams import metrics
from fraudgraph.streams.decision import decide, evaluate_rules
from fraudgraph.streams.policy import PolicySource
from fraudgraph.streams.rules import unmapped_fields
from fraudgraph.streams.scoring import ModelOpinion, Reason, ScoringInput, Verdict, model_request

log = logging.getLogger(__name__)

NO_MODEL = "none"

# What each relation into a transaction is, for an analyst reading the model's reasons.
NEIGHBOUR_NAMES = {
    "Account:INITIATED:Transaction": "the paying account",
    "Merchant:rev_PAYS:Transaction": "the merchant",
    "Account:rev_TRANSFER_TO:Transaction": "the receiving account",
    "Device:rev_USING_DEVICE:Transaction": "the device",
    "IP:rev_FROM_IP:Transaction": "the IP address",
}
TOP_NEIGHBOURS = 3


def opinion(out: ModelOutput) -> ModelOpinion:
    """The model's score with the neighbours that pushed it up most (their additive logit shares)."""
    top = sorted(((s, k) for k, s in out.shares.items() if s > 0), reverse=True)[:TOP_NEIGHBOURS]
    reasons = [
        Reason("model_neighbour", f"{NEIGHBOUR_NAMES.get(k, k)} raised the fraud logit by {s:+.2f}") for s, k in top
    ]
    return ModelOpinion(out.score, out.version, reasons)


@dataclass
class Decided:
    verdict: Verdict
    model_version: str
    rules_s: float  # the batch's rule time and model time, for the record's timings
    model_s: float


class Decider:
    def __init__(self, server: ModelServer | None, policies: PolicySource, fields: Collection[str] | None = None):
        """``fields``: the ``Event.field`` names the worker's mapping provides (``Mapping.present_fields``);
        None: every field."""
        self.server, self.policies = server, policies
        self.unmapped = unmapped_fields(fields)

    async def _model(
        self, inputs: Sequence[ScoringInput], dispatched: asyncio.Event
    ) -> tuple[list[ModelOpinion | None], float]:
        started = time.perf_counter()
        if self.server is not None:
            await self.server.started.wait()
        if self.server is None or self.server.loaded is None:
            return [None] * len(inputs), 0.0
        try:
            outs = await self.server.score([model_request(inp) for inp in inputs], dispatched)
        except Exception as err:  # noqa: BLE001 - decide on rules rather than not at all
            log.error(
                "model failed on a batch of %d (%s: %s); deciding on rules alone", len(inputs), type(err).__name__, err
            )
            return [None] * len(inputs), time.perf_counter() - started
        elapsed = time.perf_counter() - started
        metrics.MODEL_SECONDS.observe(elapsed)
        return [opinion(o) for o in outs], elapsed

    async def decide(self, inputs: Sequence[ScoringInput]) -> list[Decided]:
        self.policies.reload_if_changed()
        policy = self.policies.current
        dispatched = asyncio.Event()
        model = asyncio.ensure_future(self._model(inputs, dispatched))
        # The rules hold the event loop until they are done, so they start only once the server
        # has handed the whole batch to its inference thread (or the model call is over: no model,
        # or it failed). Merely yielding a few times is not enough: a server that lingers for a
        # fuller batch (its previous one was large) would then take the batch only after the
        # rules, and model and rules would run one after the other (tests/unit/test_decider.py).
        handed = asyncio.ensure_future(dispatched.wait())
        await asyncio.wait((model, handed), return_when=asyncio.FIRST_COMPLETED)
        handed.cancel()
        started = time.perf_counter()
        evaluations = [evaluate_rules(inp, policy, self.unmapped) for inp in inputs]
        rules_s = time.perf_counter() - started
        metrics.RULES_SECONDS.observe(rules_s)
        opinions, model_s = await model
        return [
            Decided(decide(inp, op, e.hits, policy, e.skipped), op.version if op else NO_MODEL, rules_s, model_s)
            for inp, op, e in zip(inputs, opinions, evaluations)
        ]
