"""The decision policy: a versioned TOML file of thresholds, rule parameters, rule actions and
allow/deny lists, validated as a whole, and a source that swaps it without a restart.

Why a file and not settings: the fraud team changes it during the day (a new mule pattern, a
merchant to deny) without a deploy, and every decision records the ``version`` it was made under,
so "why was this blocked at 14:02" has an answer. Why whole-file validation: a policy that is half
applied is worse than an old one, so a file with any error is rejected and the policy in force stays.

Format (the shipped ``default_policy.toml`` is a complete example)::

    version = "2026-11-01.1"       # required, non-empty; recorded in every decision
    [model]                        # model score thresholds, 0 <= review_at <= block_at <= 1
    review_at = 0.7
    block_at = 0.95
    [combine]                      # distinct rules hit that force review / block (0: off)
    review_at_rules = 2
    block_at_rules = 3
    [allow]                        # accounts (payer or payee), customers, devices, ips, merchants
    accounts = [42]
    [deny]
    ips = ["185.1.2.3"]
    [rules.velocity]               # any rule of rules.RULES; omitted rules and keys keep their defaults
    action = "review"              # none (record only) | review | block
    enabled = true
    account_per_minute = 6
"""

from __future__ import annotations

import hashlib
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fraudgraph.streams.rules import CHOICES, RULES

log = logging.getLogger(__name__)

DEFAULT_POLICY_FILE = Path(__file__).with_name("default_policy.toml")
RULE_ACTIONS = ("none", "review", "block")
# List name -> the type of its entries (the source's key types: integer ids, string device ids and IPs).
LIST_TYPES: dict[str, type] = {"accounts": int, "customers": int, "devices": str, "ips": str, "merchants": int}
_TOP_LEVEL = {"version", "model", "combine", "allow", "deny", "rules"}


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the offending field."""


@dataclass(frozen=True)
class RuleConfig:
    enabled: bool
    action: str  # one of RULE_ACTIONS
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Lists:
    accounts: frozenset[int] = frozenset()
    customers: frozenset[int] = frozenset()
    devices: frozenset[str] = frozenset()
    ips: frozenset[str] = frozenset()
    merchants: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Policy:
    version: str
    review_at: float  # model score from which a transaction is reviewed
    block_at: float  # ... and blocked
    review_at_rules: int  # this many distinct rules hit force review (0: off)
    block_at_rules: int  # ... and block (0: off)
    rules: Mapping[str, RuleConfig]  # every rule of rules.RULES, enabled or not
    allow: Lists = field(default_factory=Lists)
    deny: Lists = field(default_factory=Lists)
    digest: str = ""  # sha256 of the file's bytes

    @property
    def rule_params(self) -> dict[str, Mapping[str, Any]]:
        """The enabled rules and their parameters: what ``rules.evaluate`` takes."""
        return {name: rc.params for name, rc in self.rules.items() if rc.enabled}


def load_policy(path: str | os.PathLike | None = None) -> Policy:
    """Read and validate a policy file (``None`` or empty: the shipped default)."""
    path = Path(path) if path else DEFAULT_POLICY_FILE
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise PolicyError(f"{path}: cannot read policy file: {err}") from None
    return parse_policy(raw, str(path))


def parse_policy(raw: bytes, where: str = "<policy>") -> Policy:
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise PolicyError(f"{where}: not valid TOML: {err}") from None
    try:
        return _policy(data, hashlib.sha256(raw).hexdigest())
    except PolicyError as err:
        raise PolicyError(f"{where}: {err}") from None


def _policy(data: dict[str, Any], digest: str) -> Policy:
    _no_unknown("", data, _TOP_LEVEL)
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        raise PolicyError(f"version: required, a non-empty string (got {version!r})")

    model = _table("model", data.get("model", {}))
    _no_unknown("model.", model, {"review_at", "block_at"})
    review_at, block_at = (_number(f"model.{k}", model.get(k, d)) for k, d in (("review_at", 0.7), ("block_at", 0.95)))
    for name, value in (("model.review_at", review_at), ("model.block_at", block_at)):
        if not 0.0 <= value <= 1.0:
            raise PolicyError(f"{name}: must be between 0 and 1 (got {value})")
    if review_at > block_at:
        raise PolicyError(f"model.review_at ({review_at}) must not exceed model.block_at ({block_at})")

    combine = _table("combine", data.get("combine", {}))
    _no_unknown("combine.", combine, {"review_at_rules", "block_at_rules"})
    review_n, block_n = (_count(f"combine.{k}", combine.get(k, 0)) for k in ("review_at_rules", "block_at_rules"))
    if review_n and block_n and review_n > block_n:
        raise PolicyError(f"combine.review_at_rules ({review_n}) must not exceed combine.block_at_rules ({block_n})")

    allow, deny = _lists("allow", data.get("allow", {})), _lists("deny", data.get("deny", {}))
    for name in LIST_TYPES:
        both = getattr(allow, name) & getattr(deny, name)
        if both:
            raise PolicyError(f"allow.{name} and deny.{name} both list {sorted(both, key=str)}")

    rules_table = _table("rules", data.get("rules", {}))
    _no_unknown("rules.", rules_table, set(RULES), what="rule")
    rules = {name: _rule(name, _table(f"rules.{name}", rules_table.get(name, {}))) for name in RULES}
    return Policy(version.strip(), review_at, block_at, review_n, block_n, MappingProxyType(rules), allow, deny, digest)


def _rule(name: str, table: dict[str, Any]) -> RuleConfig:
    rule = RULES[name]
    _no_unknown(f"rules.{name}.", table, {"enabled", "action", *rule.defaults}, what="parameter")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise PolicyError(f"rules.{name}.enabled: expected true or false (got {enabled!r})")
    action = table.get("action", rule.action)
    if action not in RULE_ACTIONS:
        raise PolicyError(f"rules.{name}.action: expected one of {list(RULE_ACTIONS)} (got {action!r})")
    params = {}
    for key, default in rule.defaults.items():
        params[key] = _param(f"rules.{name}.{key}", table.get(key, default), default, CHOICES.get((name, key)))
    return RuleConfig(enabled, action, MappingProxyType(params))


def _param(where: str, value: Any, default: Any, choices: set[str] | None) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise PolicyError(f"{where}: expected true or false (got {value!r})")
        return value
    if isinstance(default, int):
        return _count(where, value)
    if isinstance(default, float):
        value = _number(where, value)
        if value < 0:
            raise PolicyError(f"{where}: must be >= 0 (got {value})")
        return value
    if isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PolicyError(f"{where}: expected a list of strings (got {value!r})")
        if choices is not None and (unknown := [v for v in value if v not in choices]):
            raise PolicyError(f"{where}: unknown value(s) {unknown}; expected some of {sorted(choices)}")
        return tuple(value)
    raise AssertionError(f"rule parameter {where} has a default of unsupported type")  # a bug in RULES


def _lists(section: str, table: Any) -> Lists:
    table = _table(section, table)
    _no_unknown(f"{section}.", table, set(LIST_TYPES), what="list")
    out = {}
    for name, kind in LIST_TYPES.items():
        entries = table.get(name, [])
        bad = (
            [e for e in entries if not isinstance(e, kind) or isinstance(e, bool)]
            if isinstance(entries, list)
            else None
        )
        if bad is None or bad:
            raise PolicyError(
                f"{section}.{name}: expected a list of {'integers' if kind is int else 'strings'} "
                f"(got {bad if bad else entries!r})"
            )
        out[name] = frozenset(entries)
    return Lists(**out)


def _table(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: expected a table (got {value!r})")
    return value


def _no_unknown(prefix: str, table: dict[str, Any], known: set[str], what: str = "key") -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise PolicyError(f"unknown {what} {', '.join(prefix + u for u in unknown)}; expected one of {sorted(known)}")


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PolicyError(f"{where}: expected a number (got {value!r})")
    return float(value)


def _count(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PolicyError(f"{where}: expected a non-negative integer (got {value!r})")
    return value


class PolicySource:
    """The policy in force, swapped for a changed file by ``reload_if_changed``.

    Cheap to call per batch: a ``stat`` when nothing changed. A changed file is read and hashed; if
    its content is new it must validate *and* carry a new ``version`` (two different policies under
    one version would make the version recorded in decisions meaningless). A rejected file is
    logged once per content and the policy in force stays until a valid file replaces it.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else DEFAULT_POLICY_FILE
        self.current = load_policy(self.path)  # no policy at start is fatal: nothing to fall back to
        self._stamp = self._stat()
        self._rejected: str | None = None  # digest of the last rejected content
        log.info("decision policy %s loaded from %s", self.current.version, self.path)

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def reload_if_changed(self) -> bool:
        """Swap in the file's policy if it changed and is valid; True when the policy was replaced."""
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            raw = self.path.read_bytes()
        except OSError as err:
            log.error("decision policy %s unreadable (%s); keeping version %s", self.path, err, self.current.version)
            return False
        digest = hashlib.sha256(raw).hexdigest()
        if digest in (self.current.digest, self._rejected):
            return False  # touched, or rewritten with what we already have (or already rejected)
        try:
            policy = parse_policy(raw, str(self.path))
            if policy.version == self.current.version:
                raise PolicyError(
                    f"{self.path}: content changed but version is still {policy.version!r}; "
                    "give the new policy a new version"
                )
        except PolicyError as err:
            self._rejected = digest
            log.error("decision policy rejected, keeping version %s: %s", self.current.version, err)
            return False
        log.info("decision policy %s -> %s (%s)", self.current.version, policy.version, self.path)
        self.current, self._rejected = policy, None
        return True
