"""The benchmark report: ``bench.json`` -> ``bench.md`` with plots, and the comparison with a
previous result. Pure functions of the result dictionaries (plots aside), so they are unit-tested.
"""

from __future__ import annotations

from pathlib import Path

TARGETS = {  # issue 9's goals for this 2-core machine; a report says met / missed, it asserts nothing
    "p99_at_2000_ms": 50,
    "p50_at_2000_ms": 10,
    "max_throughput_tx_per_s": 5000,
    "max_throughput_p99_ms": 100,
    "graph_freshness_p99_s": 1.0,
    "restart_after_kill_s": 5.0,
}


def _rate_key(run: dict) -> str:
    rate = run["offered_tx_per_s"]
    return "max" if rate == "max" else str(int(rate))


def summary(result: dict) -> dict:
    """The figures the targets are about, from a full result."""
    runs = result.get("load", {}).get("runs", [])
    # Sustained: the run delivered (close to) what was offered and kept p99 within the bound.
    sustained = [
        r
        for r in runs
        if r["offered_tx_per_s"] != "max"
        and r["unscored_after_drain"] == 0
        and r["throughput_tx_per_s"] >= 0.95 * r["offered_tx_per_s"]
        and r["steady_latency_ms"]["p99"] <= TARGETS["max_throughput_p99_ms"]
    ]
    at_2000 = next((r for r in runs if r["offered_tx_per_s"] == 2000), None)
    unpaced = next((r for r in runs if r["offered_tx_per_s"] == "max"), None)
    fresh = [r["graph_freshness_s"]["p99_le"] for r in runs if r["graph_freshness_s"]["p99_le"] is not None]
    recovery = result.get("recovery") or {}
    return {
        "max_sustained_tx_per_s_p99_le_100ms": max((r["offered_tx_per_s"] for r in sustained), default=None),
        "unpaced_drain_tx_per_s": unpaced["throughput_tx_per_s"] if unpaced else None,
        "unpaced_bare_loop_tx_per_s": (unpaced.get("bare_loop") or {}).get("tx_per_s") if unpaced else None,
        "p50_at_2000_ms": at_2000["steady_latency_ms"]["p50"] if at_2000 else None,
        "p99_at_2000_ms": at_2000["steady_latency_ms"]["p99"] if at_2000 else None,
        "graph_freshness_p99_le_s": max(fresh) if fresh else None,
        "restart_after_kill_s": recovery.get("restart_after_kill_s"),
        "recovery_states": (recovery.get("changelog") or {}).get("states"),
        "worker_peak_rss_mib": max((r["worker_peak_rss_mib"] for r in runs), default=None),
    }


def compare(result: dict, baseline: dict) -> list[tuple[str, object, object]]:
    """(figure, baseline, now) rows: the summary, then throughput and p99 per offered rate."""
    rows = []
    now, before = summary(result), summary(baseline)
    for k in now:
        rows.append((k, before.get(k), now.get(k)))
    old_runs = {_rate_key(r): r for r in baseline.get("load", {}).get("runs", [])}
    for r in result.get("load", {}).get("runs", []):
        old = old_runs.get(_rate_key(r))
        if old:
            rows.append((f"{_rate_key(r)} tx/s: throughput tx/s", old["throughput_tx_per_s"], r["throughput_tx_per_s"]))
            rows.append(
                (f"{_rate_key(r)} tx/s: steady p99 ms", old["steady_latency_ms"]["p99"], r["steady_latency_ms"]["p99"])
            )
    return rows


def _table(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: "–" if v is None else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(result: dict, baseline: dict | None = None, plots: list[str] = ()) -> str:
    m = result["machine"]
    out = [
        f"# fraudgraph benchmark — {result['started']}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['mem_gib']} GiB, GPU: {m.get('gpu') or 'none'}; "
        f"load average at start {result.get('loadavg_at_start')}",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
    ]
    s = summary(result)
    out += [
        "## Against the targets",
        "",
        _table(
            ["figure", "measured", "target"],
            [
                [
                    "max sustained tx/s with p99 ≤ 100 ms",
                    s["max_sustained_tx_per_s_p99_le_100ms"],
                    f"≥ {TARGETS['max_throughput_tx_per_s']}",
                ],
                ["unpaced drain rate, tx/s", s["unpaced_drain_tx_per_s"], "–"],
                [
                    "bare loop over the same log (consume, decode, produce per transaction), tx/s; engine's share",
                    f"{s['unpaced_bare_loop_tx_per_s']}; "
                    + (
                        f"{s['unpaced_drain_tx_per_s'] / s['unpaced_bare_loop_tx_per_s']:.1%}"
                        if s["unpaced_bare_loop_tx_per_s"]
                        else "–"
                    ),
                    "≥ 5% share",
                ],
                [
                    "p50 / p99 at 2,000 tx/s offered, ms",
                    f"{s['p50_at_2000_ms']} / {s['p99_at_2000_ms']}",
                    f"≤ {TARGETS['p50_at_2000_ms']} / ≤ {TARGETS['p99_at_2000_ms']}",
                ],
                [
                    "graph freshness p99 (bucket bound), s",
                    s["graph_freshness_p99_le_s"],
                    f"≤ {TARGETS['graph_freshness_p99_s']}",
                ],
                [
                    f"scoring resumes after SIGKILL, s ({s['recovery_states']} node states)",
                    s["restart_after_kill_s"],
                    f"≤ {TARGETS['restart_after_kill_s']}",
                ],
                ["worker peak RSS, MiB", s["worker_peak_rss_mib"], "–"],
            ],
        ),
        "",
    ]
    runs = result.get("load", {}).get("runs", [])
    if runs:
        out += [
            "## Load series (CDC append → score append)",
            "",
            "Steady = second half of each run by CDC append time (the first half opens with every entity row at once). "
            "Unscored after drain: transactions not yet scored when the run stopped waiting (3 min after the simulator "
            "finished); a backlog, not a loss (the integration tests check nothing is lost).",
            "",
            _table(
                [
                    "offered tx/s",
                    "scored",
                    "unscored after drain",
                    "tx/s",
                    "CDC events/s",
                    "steady p50",
                    "p95",
                    "p99",
                    "max",
                    "freshness p99 ≤ s",
                    "recall",
                    "FPR",
                    "precision",
                    "peak RSS MiB",
                ],
                [
                    [
                        _rate_key(r),
                        r["scored"],
                        r["unscored_after_drain"],
                        r["throughput_tx_per_s"],
                        r["throughput_events_per_s"],
                        r["steady_latency_ms"]["p50"],
                        r["steady_latency_ms"]["p95"],
                        r["steady_latency_ms"]["p99"],
                        r["steady_latency_ms"]["max"],
                        r["graph_freshness_s"]["p99_le"],
                        r["quality"]["recall"],
                        r["quality"]["fpr"],
                        r["quality"]["precision"],
                        r["worker_peak_rss_mib"],
                    ]
                    for r in runs
                ],
            ),
            "",
            "Where a transaction's time goes inside the worker (p50 / p99 ms; the rest of its latency is queueing):",
            "",
            _table(
                ["offered tx/s", "state", "decide (batch)", "rules", "model", "batch size"],
                [
                    [_rate_key(r)]
                    + [
                        f"{r['stages_ms'][k]['p50']} / {r['stages_ms'][k]['p99']}"
                        for k in ("state_ms", "decide_ms", "rules_ms", "model_ms", "batch")
                    ]
                    for r in runs
                ],
            ),
            "",
        ]
    rec = result.get("recovery")
    if rec and "changelog" in rec:
        out += [
            "## Recovery after SIGKILL",
            "",
            _table(
                [
                    "node states",
                    "mean state bytes",
                    "cold start s",
                    "restart after kill s",
                    "of which process start s",
                    "local store MiB",
                ],
                [
                    [
                        rec["changelog"]["states"],
                        rec["changelog"]["mean_state_bytes"],
                        rec["cold_start_s"],
                        rec["restart_after_kill_s"],
                        rec["process_start_s"],
                        rec["local_store_mib"],
                    ]
                ],
            ),
            "",
        ]
    if result.get("micro"):
        out += ["## Micro-benchmarks", ""]
        for name, r in result["micro"].items():
            out.append(
                f"- **{name}**: `{r.get('command', '')}` → `{r.get('file', '')}`"
                + (f" (failed: {r['error']})" if r.get("error") else "")
            )
        out.append("")
    for r in runs:
        if "inclusive_by_module" in r.get("profile", {}):
            p = r["profile"]
            out += [
                f"## Where the time goes ({_rate_key(r)} tx/s offered; py-spy, {p['samples']} samples of the worker process)",
                "",
                "Share of samples with the module anywhere on the stack (so shares overlap):",
                "",
                _table(["module", "share"], [[k, v] for k, v in p["inclusive_by_module"].items()]),
                "",
                "Top frames by self time:",
                "",
                _table(["frame", "share"], [[k.replace("|", "\\|"), v] for k, v in p["self_by_frame"].items()]),
                "",
            ]
    if result.get("analysis"):
        out += ["## Analysis", "", result["analysis"], ""]
    if baseline:
        out += [
            f"## Compared with {baseline.get('started', 'the baseline')}",
            "",
            _table(["figure", "baseline", "now"], [list(r) for r in compare(result, baseline)]),
            "",
        ]
    out += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(out) + "\n"


def plot(result: dict, out_dir: Path) -> list[str]:
    """Latency over time per run, and throughput vs p99; PNG files next to the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result.get("load", {}).get("runs", [])
    if not runs:
        return []
    paths = []
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for r in runs:
        t = [row[0] for row in r["timeline"]]
        ax.plot(t, [row[3] for row in r["timeline"]], label=f"{_rate_key(r)} tx/s p99")
    ax.set_yscale("log")
    ax.set(
        xlabel="seconds since the run's first CDC append",
        ylabel="latency p99 per second, ms",
        title="Latency over time",
    )
    ax.legend()
    paths.append(str(out_dir / "latency_over_time.png"))
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot([r["throughput_tx_per_s"] for r in runs], [r["steady_latency_ms"]["p99"] for r in runs], "o-")
    for r in runs:
        ax.annotate(_rate_key(r), (r["throughput_tx_per_s"], r["steady_latency_ms"]["p99"]))
    ax.set_yscale("log")
    ax.set(xlabel="throughput, tx/s", ylabel="steady p99, ms", title="Throughput vs p99 (labels: offered tx/s)")
    paths.append(str(out_dir / "throughput_vs_p99.png"))
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close("all")
    return paths
