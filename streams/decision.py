"""One transaction's decision: the model's opinion and the rule hits, combined by the policy.

Precedence, and why:

1. Deny list: block. A party the bank has decided against is never let through, whatever else.
2. Allow list: approve, with a reason naming what it overrode, so an analyst can see an allow list
   entry waving through what the rules or the model would have stopped.
3. Otherwise the most severe of: each hit's rule action, the model's thresholds, and the number of
   distinct rules hit (weak signals that agree are a strong one).

The verdict lists every reason that drove it: the list entry, the rule hits (most severe first),
the combination, the model's score with its top contributing features or neighbours. Without a
model the verdict says so, and its score is 0: a rule is not a probability. Last come the rules
that could not decide for want of a field the mapping or the row left unknown (``rule_skipped``,
``rules.py``): they inform the analyst, and change neither the decision nor the count of rules hit.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from fraudgraph.streams.policy import LIST_TYPES, Lists, Policy
from fraudgraph.streams.rules import Evaluation, Hit, Skip, evaluate_all
from fraudgraph.streams.scoring import APPROVE, BLOCK, REVIEW, ModelOpinion, Reason, ScoringInput, Verdict

_RANK = {APPROVE: 0, REVIEW: 1, BLOCK: 2}
MODEL_UNAVAILABLE = "model_unavailable"


def evaluate_rules(inp: ScoringInput, policy: Policy, unmapped: Collection[str] = frozenset()) -> Evaluation:
    """The policy's enabled rules on one transaction: their hits, and the rules skipped for an
    unknown field (``unmapped``: what the worker's mapping leaves out). Pure; runs on the CPU."""
    return evaluate_all(inp, policy.rule_params, unmapped)


def _parties(inp: ScoringInput) -> dict[str, list[Any]]:
    t = inp.transaction
    account = inp.state("Account", t.account_id)
    owner = account.attrs.get("owner") if account is not None else None
    return {
        "accounts": [t.account_id, t.counterparty_account_id],
        "customers": [owner],
        "devices": [t.device_id],
        "ips": [t.ip],
        "merchants": [t.merchant_id],
    }


def _listed(parties: dict[str, list[Any]], lists: Lists) -> list[str]:
    return [
        f"{name[:-1] if name != 'ips' else 'IP'} {v}"
        for name in LIST_TYPES
        for v in parties[name]
        if v is not None and v in getattr(lists, name)
    ]


def decide(
    inp: ScoringInput,
    model: ModelOpinion | None,
    hits: Sequence[Hit],
    policy: Policy,
    skipped: Sequence[Skip] = (),
) -> Verdict:
    score = model.score if model is not None else 0.0
    parties = _parties(inp)
    informing = [s.reason for s in skipped]  # appended to every verdict; decide nothing

    denied = _listed(parties, policy.deny)
    if denied:
        reasons = [Reason("deny_list", f"{', '.join(denied)} on the deny list")] + [h.reason for h in hits]
        return Verdict(score, BLOCK, reasons + _model_reasons(model, policy) + informing, policy.version)

    decision, reasons = APPROVE, [h.reason for h in hits]
    for hit in hits:
        action = policy.rules[hit.rule].action
        if action != "none":  # "none": recorded, decides nothing on its own
            decision = max(decision, action, key=_RANK.__getitem__)
    rules_hit = len({h.rule for h in hits})
    for threshold, action in ((policy.block_at_rules, BLOCK), (policy.review_at_rules, REVIEW)):
        if threshold and rules_hit >= threshold:
            reasons.append(Reason("rules_combined", f"{rules_hit} rules hit ({action} at {threshold})"))
            decision = max(decision, action, key=_RANK.__getitem__)
            break
    model_action = _model_action(model, policy)
    decision = max(decision, model_action, key=_RANK.__getitem__)
    reasons += _model_reasons(model, policy)

    allowed = _listed(parties, policy.allow)
    if allowed:
        drivers = dict.fromkeys(r.code for r in reasons if r.code != MODEL_UNAVAILABLE)
        overrode = f"; overrides {decision} from {', '.join(drivers)}" if decision != APPROVE else ""
        allow = Reason("allow_list", f"{', '.join(allowed)} on the allow list{overrode}")
        return Verdict(score, APPROVE, [allow, *informing], policy.version)
    return Verdict(score, decision, reasons + informing, policy.version)


def _model_action(model: ModelOpinion | None, policy: Policy) -> str:
    if model is None:
        return APPROVE
    return BLOCK if model.score >= policy.block_at else REVIEW if model.score >= policy.review_at else APPROVE


def _model_reasons(model: ModelOpinion | None, policy: Policy) -> list[Reason]:
    """The model's score and top features when its score crossed a threshold (else it drove nothing)."""
    if model is None:
        return [Reason(MODEL_UNAVAILABLE, "no model opinion: decided by rules and lists only")]
    action = _model_action(model, policy)
    if action == APPROVE:
        return []
    threshold = policy.block_at if action == BLOCK else policy.review_at
    return [
        Reason("model_score", f"model {model.version} scored {model.score:.3f} (>= {action} threshold {threshold})"),
        *model.reasons,
    ]
