"""Policy files: what loads, what is rejected and with which message, hot reload keeping the
previous policy on a bad file, and decide()'s precedence (deny > allow > rules/combination/model)."""

import logging
import os
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from fraudgraph.connectors import events as ev
from fraudgraph.streams.decision import decide
from fraudgraph.streams.policy import DEFAULT_POLICY_FILE, PolicyError, PolicySource, load_policy, parse_policy
from fraudgraph.streams.rules import HIGH, LOW, MEDIUM, Hit
from fraudgraph.streams.scoring import ModelOpinion, Reason, ScoringInput, scored_record
from fraudgraph.streams.state import NodeState, Source

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
MS0 = int(T0.timestamp() * 1000)

POLICY = """
version = "{version}"
[model]
review_at = 0.6
block_at = 0.9
[combine]
review_at_rules = 2
block_at_rules = 3
[allow]
accounts = [5]
[deny]
ips = ["185.6.6.6"]
[rules.velocity]
action = "block"
account_per_minute = 4
[rules.amount_anomaly]
action = "none"
[rules.colluding_merchant]
enabled = false
"""


def write(path, text):
    path.write_text(text)
    # Same-second rewrites: move the mtime on explicitly, as a real edit minutes later would.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_the_shipped_default_loads():
    policy = load_policy(None)
    assert policy.version == "default-1" and DEFAULT_POLICY_FILE.name == "default_policy.toml"
    assert 0 < policy.review_at < policy.block_at <= 1


def test_a_valid_file_sets_thresholds_actions_params_and_lists():
    policy = parse_policy(POLICY.format(version="v2").encode())
    assert (policy.version, policy.review_at, policy.block_at) == ("v2", 0.6, 0.9)
    assert policy.rules["velocity"].action == "block" and policy.rules["velocity"].params["account_per_minute"] == 4
    assert policy.rules["velocity"].params["account_per_hour"] == 20  # omitted: the rule's default
    assert "colluding_merchant" not in policy.rule_params and "mule" in policy.rule_params
    assert policy.allow.accounts == {5} and policy.deny.ips == {"185.6.6.6"}
    with pytest.raises(TypeError):
        policy.rules["velocity"].params["account_per_minute"] = 1  # read-only


@pytest.mark.parametrize(
    "text, message",
    [
        ('version = "v"\nmodle = {}', "unknown key modle"),
        ("review_at = 0.5", "unknown key review_at"),
        ("[model]\nreview_at = 0.5", "version: required"),
        ('version = ""', "version: required"),
        ("version = 3", "version: required"),
        (
            'version = "v"\n[model]\nreview_at = 0.95\nblock_at = 0.9',
            "model.review_at (0.95) must not exceed model.block_at (0.9)",
        ),
        ('version = "v"\n[model]\nblock_at = 1.5', "model.block_at: must be between 0 and 1"),
        ('version = "v"\n[model]\nreview_at = "high"', "model.review_at: expected a number"),
        (
            'version = "v"\n[combine]\nreview_at_rules = 4\nblock_at_rules = 2',
            "combine.review_at_rules (4) must not exceed",
        ),
        ('version = "v"\n[rules.velocty]\naction = "review"', "unknown rule rules.velocty"),
        ('version = "v"\n[rules.velocity]\nper_minute = 3', "unknown parameter rules.velocity.per_minute"),
        (
            'version = "v"\n[rules.velocity]\naccount_per_minute = 2.5',
            "rules.velocity.account_per_minute: expected a non-negative integer",
        ),
        (
            'version = "v"\n[rules.velocity]\naccount_per_minute = -1',
            "rules.velocity.account_per_minute: expected a non-negative integer",
        ),
        ('version = "v"\n[rules.velocity]\nonline_only = "yes"', "rules.velocity.online_only: expected true or false"),
        ('version = "v"\n[rules.velocity]\naction = "alert"', "rules.velocity.action: expected one of"),
        ('version = "v"\n[rules.mule]\nwindow_s = -5', "rules.mule.window_s: must be >= 0"),
        (
            'version = "v"\n[rules.fraud_proximity]\nparties = ["acount"]',
            "rules.fraud_proximity.parties: unknown value(s) ['acount']",
        ),
        ('version = "v"\n[allow]\naccounts = ["7"]', "allow.accounts: expected a list of integers"),
        ('version = "v"\n[deny]\nphones = ["+44"]', "unknown list deny.phones"),
        ('version = "v"\n[allow]\nips = ["1.2.3.4"]\n[deny]\nips = ["1.2.3.4"]', "allow.ips and deny.ips both list"),
        ('version = "v"\n[rules]\nvelocity = 3', "rules.velocity: expected a table"),
        ('version = "v"\n[model\n', "not valid TOML"),
    ],
)
def test_invalid_files_are_rejected_naming_the_field(tmp_path, text, message):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "nope.toml")


def test_source_reloads_a_valid_change_and_keeps_the_policy_on_a_bad_one(tmp_path, caplog):
    path = tmp_path / "policy.toml"
    write(path, POLICY.format(version="v1"))
    source = PolicySource(path)
    assert source.current.version == "v1" and source.reload_if_changed() is False

    with caplog.at_level(logging.INFO, logger="fraudgraph.streams.policy"):
        write(path, POLICY.format(version="v2").replace("review_at = 0.6", "review_at = 0.5"))
        assert source.reload_if_changed() is True
    assert source.current.version == "v2" and source.current.review_at == 0.5
    assert "v1 -> v2" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fraudgraph.streams.policy"):
        write(path, POLICY.format(version="v3").replace("block_at = 0.9", "block_at = 0.1"))
        assert source.reload_if_changed() is False
        assert source.reload_if_changed() is False  # unchanged bad file: no new attempt, no log spam
    assert source.current.version == "v2" and source.current.block_at == 0.9
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "keeping version v2" in errors[0].getMessage()
    assert "model.review_at (0.6) must not exceed model.block_at (0.1)" in errors[0].getMessage()

    write(path, POLICY.format(version="v2").replace("review_at = 0.6", "review_at = 0.4"))
    assert source.reload_if_changed() is False  # a different policy under the same version
    assert source.current.review_at == 0.5

    path.unlink()
    assert source.reload_if_changed() is False and source.current.version == "v2"
    write(path, POLICY.format(version="v4"))
    assert source.reload_if_changed() is True and source.current.version == "v4"


def test_an_invalid_policy_at_start_is_fatal(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('version = "v"\n[model]\nreview_at = 2.0')
    with pytest.raises(PolicyError, match="model.review_at"):
        PolicySource(path)


# ---- decide ----

POL = parse_policy(POLICY.format(version="p7").encode())


def inp(account=1, device="d1", ip="81.0.0.1", merchant=3, counterparty=None, owner=None):
    t = ev.TransactionCreated(
        ev.SourcePosition(10, None, MS0),
        99,
        account,
        "card_payment",
        Decimal("50"),
        "EUR",
        merchant,
        counterparty,
        device,
        ip,
        "pending",
        T0,
        T0,
    )
    states = {}
    if owner is not None:
        states[f"Account:{account}"] = NodeState("Account", f"Account:{account}", [0.0], attrs={"owner": owner})
    return ScoringInput(t, Source("bank.public.transactions", 0, 0, MS0), states)


def hit(rule, severity=MEDIUM):
    return Hit(rule, severity, Reason(rule, f"{rule} fired"))


def model(score):
    return ModelOpinion(score, "rgcn-3", [Reason("neighbour", "device d1 shared with a reported account")])


def codes(verdict):
    return [r.code for r in verdict.reasons]


def test_no_hits_and_a_low_model_score_approve_with_no_reasons():
    v = decide(inp(), model(0.2), [], POL)
    assert (v.decision, v.reasons, v.score, v.policy_version) == ("approve", [], 0.2, "p7")


def test_model_thresholds_review_and_block_with_the_models_reasons():
    review = decide(inp(), model(0.7), [], POL)
    assert review.decision == "review" and codes(review) == ["model_score", "neighbour"]
    assert "rgcn-3 scored 0.700 (>= review threshold 0.6)" in review.reasons[0].detail
    assert decide(inp(), model(0.9), [], POL).decision == "block"


def test_rule_actions_force_the_decision_and_none_only_records():
    v = decide(inp(), model(0.1), [hit("amount_anomaly")], POL)
    assert v.decision == "approve" and codes(v) == ["amount_anomaly"]  # recorded, decides nothing
    assert decide(inp(), model(0.1), [hit("mule", HIGH)], POL).decision == "review"
    v = decide(inp(), model(0.7), [hit("velocity")], POL)
    assert v.decision == "block" and codes(v) == ["velocity", "model_score", "neighbour"]  # most severe wins


def test_agreeing_rules_combine():
    two = decide(inp(), model(0.1), [hit("amount_anomaly"), hit("new_device_or_ip", LOW)], POL)
    assert two.decision == "review" and codes(two)[-1] == "rules_combined"
    same = decide(inp(), model(0.1), [hit("new_device_or_ip", LOW), hit("new_device_or_ip", LOW)], POL)
    assert same.decision == "approve"  # one rule twice (device and IP) is one rule
    three = decide(inp(), model(0.1), [hit("amount_anomaly"), hit("new_device_or_ip", LOW), hit("mule", HIGH)], POL)
    assert three.decision == "block" and "3 rules hit (block at 3)" in three.reasons[-1].detail


def test_without_a_model_the_rules_decide_and_the_verdict_says_so():
    v = decide(inp(), None, [hit("mule", HIGH)], POL)
    assert (v.decision, v.score) == ("review", 0.0) and codes(v) == ["mule", "model_unavailable"]


def test_allow_list_approves_and_records_what_it_overrode():
    v = decide(inp(account=5), model(0.95), [hit("velocity")], POL)
    assert v.decision == "approve" and codes(v) == ["allow_list"]
    assert v.reasons[0].detail == "account 5 on the allow list; overrides block from velocity, model_score, neighbour"
    payee = decide(inp(account=1, counterparty=5, merchant=None), model(0.1), [], POL)
    assert payee.decision == "approve" and payee.reasons[0].detail == "account 5 on the allow list"


def test_deny_list_blocks_even_an_allowed_account():
    v = decide(inp(account=5, ip="185.6.6.6"), model(0.01), [], POL)
    assert v.decision == "block" and codes(v) == ["deny_list"] and "IP 185.6.6.6" in v.reasons[0].detail


def test_customer_lists_match_the_accounts_owner():
    pol = parse_policy(b'version = "c"\n[deny]\ncustomers = [77]')
    assert decide(inp(owner=77), model(0.0), [], pol).decision == "block"
    assert decide(inp(owner=78), model(0.0), [], pol).decision == "approve"
    assert decide(inp(), model(0.0), [], pol).decision == "approve"  # no account state: no owner to match


def test_the_policy_version_reaches_the_score_record():
    i = inp()
    record = scored_record(i, decide(i, model(0.7), [], POL), "rgcn-3", {})
    assert record.policy_version == "p7" and record.reasons[0]["code"] == "model_score"
