"""The benchmark report's arithmetic: which run counts as sustained, the comparison, the profile
summary. (The figures themselves come from real runs; this only checks what is made of them.)"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import report  # noqa: E402
from worker import histogram_quantile, profile_summary, quality  # noqa: E402

REPO_STATE = Path(__file__).resolve().parents[2].name + "/streams/state.py"  # as py-spy names it


def run(offered, throughput, p99, unscored=0, fresh=0.5):
    return {
        "offered_tx_per_s": offered,
        "scored": 100,
        "unscored_after_drain": unscored,
        "throughput_tx_per_s": throughput,
        "throughput_events_per_s": throughput * 4,
        "steady_latency_ms": {"p50": p99 // 4, "p95": p99 // 2, "p99": p99, "max": p99 * 2},
        "stages_ms": {k: {"p50": 1, "p99": 2} for k in ("state_ms", "decide_ms", "rules_ms", "model_ms", "batch")},
        "graph_freshness_s": {"p50_le": 0.1, "p99_le": fresh, "events": 400},
        "quality": {"recall": 0.9, "fpr": 0.01, "precision": 0.5},
        "worker_peak_rss_mib": 600.0,
        "timeline": [[0, 10, 5, p99]],
    }


RESULT = {
    "started": "now",
    "command": "bench",
    "versions": {"x": "1"},
    "loadavg_at_start": 0.1,
    "machine": {"cores": 2, "cpu": "cpu", "mem_gib": 1},
    "load": {
        "runs": [
            run(100, 100.0, 40),
            run(250, 249.0, 90),
            run(500, 310.0, 60),  # 500: did not keep up
            run(1000, 990.0, 400, fresh=2.5),
            run(2000, 1990.0, 80, unscored=3),
            run("max", 320.0, 50000),
        ]
    },
    "recovery": {
        "changelog": {"states": 1000, "mean_state_bytes": 900},
        "cold_start_s": 9.0,
        "restart_after_kill_s": 6.5,
        "process_start_s": 3.0,
        "local_store_mib": 2.0,
    },
}


def test_sustained_means_kept_up_drained_and_p99_within_bound():
    s = report.summary(RESULT)
    assert s["max_sustained_tx_per_s_p99_le_100ms"] == 250  # 500 fell behind, 1000 too slow, 2000 left a backlog
    assert s["unpaced_drain_tx_per_s"] == 320.0
    assert (s["p50_at_2000_ms"], s["p99_at_2000_ms"]) == (20, 80)
    assert s["graph_freshness_p99_le_s"] == 2.5 and s["restart_after_kill_s"] == 6.5


def test_comparison_pairs_runs_by_offered_rate_and_markdown_has_every_section():
    baseline = {"load": {"runs": [run(100, 99.0, 45), run("max", 200.0, 90000)]}}
    rows = {name: (old, new) for name, old, new in report.compare(RESULT, baseline)}
    assert rows["100 tx/s: steady p99 ms"] == (45, 40)
    assert rows["max tx/s: throughput tx/s"] == (200.0, 320.0)
    assert "250 tx/s: throughput tx/s" not in rows  # no baseline run to compare with
    text = report.markdown(RESULT, baseline)
    for heading in ("Against the targets", "Load series", "Recovery after SIGKILL", "Compared with"):
        assert heading in text


def test_profile_summary_shares_and_histogram_quantile():
    collapsed = "\n".join(
        [
            "main (a/site-packages/faust/streams.py:1);apply_event (" + REPO_STATE + ":5) 6",
            "main (a/site-packages/faust/streams.py:1);put (a/site-packages/rocksdict/x.py:3) 3",
            "idle (a/python3.11/asyncio/base_events.py:9) 1",  # event-loop framing: not a module of interest
        ]
    )
    p = profile_summary(collapsed)
    assert p["samples"] == 10
    assert p["inclusive_by_module"]["faust/streams.py"] == 0.9
    assert p["inclusive_by_module"]["streams/state.py"] == 0.6
    assert "asyncio/base_events.py" not in p["inclusive_by_module"]
    assert p["self_by_frame"][f"apply_event ({REPO_STATE}:5)"] == 0.6
    metrics = {
        'h_bucket{le="0.1"}': 50.0,
        'h_bucket{le="1.0"}': 98.0,
        'h_bucket{le="2.5"}': 100.0,
        'h_bucket{le="+Inf"}': 100.0,
    }
    assert histogram_quantile(metrics, "h", 0.5) == 0.1
    assert histogram_quantile(metrics, "h", 0.99) == 2.5
    assert histogram_quantile({}, "h", 0.99) is None


def test_quality_counts_alerts_against_the_truth():
    q = quality({1: "block", 2: "review", 3: "approve", 4: "approve"}, fraud={1, 3, 99})
    assert (q["fraud"], q["legit"], q["alerted"]) == (2, 2, 2)
    assert (q["recall"], q["fpr"], q["precision"]) == (0.5, 0.5, 0.5)
