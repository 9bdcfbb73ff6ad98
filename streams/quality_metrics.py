"""Exports the ``QualityTracker`` windows as Prometheus gauges, computed when Prometheus scrapes.

Why a collector rather than gauges set by the pipeline: the ratios are derived from the bucket
counts, so computing them at scrape time costs nothing per event and a scrape always shows one
consistent snapshot (precision, recall and the counts it came from agree with each other).
"""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

PREFIX = "fraudgraph_quality_"


class QualityCollector:
    def __init__(self, trackers=()):
        self.trackers = list(trackers)  # set by the worker once it has them; no samples until then

    def describe(self):
        return []  # no samples at registration time: the trackers are attached later

    def collect(self):
        w = ["window"]
        ratios = {
            "precision": GaugeMetricFamily(
                PREFIX + "precision_ratio",
                "Alerted decisions later labelled fraud / alerted decisions (unlabelled = legit), per event-time window",
                labels=w,
            ),
            "recall": GaugeMetricFamily(
                PREFIX + "recall_ratio",
                "Decisions labelled fraud that were alerted / decisions labelled fraud, per window",
                labels=w,
            ),
            "false_positive_rate": GaugeMetricFamily(
                PREFIX + "false_positive_ratio",
                "Alerted but not labelled fraud / decisions not labelled fraud, per window",
                labels=w,
            ),
            "labelled_alert_precision": GaugeMetricFamily(
                PREFIX + "labelled_alert_precision_ratio",
                "Among alerted decisions with a label: labelled fraud / labelled, per window",
                labels=w,
            ),
            "label_coverage": GaugeMetricFamily(
                PREFIX + "label_coverage_ratio",
                "Decisions with a label (fraud or reported legit) / decisions: how far the window's ratios can be trusted",
                labels=w,
            ),
            "alert_rate": GaugeMetricFamily(
                PREFIX + "alert_rate_ratio", "Alerted decisions / decisions, per window", labels=w
            ),
        }
        alerts = GaugeMetricFamily(
            PREFIX + "alerts", "Alert volume: decisions other than approve in the window", labels=w
        )
        decisions = GaugeMetricFamily(
            PREFIX + "decisions",
            "Decisions in the window by label (fraud, legit = reported false positive, unlabelled) and whether alerted",
            labels=["window", "label", "alerted"],
        )
        ages = GaugeMetricFamily(
            PREFIX + "window_age_seconds",
            "The event-time ages a window covers before the watermark (edge newest, oldest)",
            labels=["window", "edge"],
        )
        watermark = GaugeMetricFamily(
            PREFIX + "watermark_timestamp_seconds",
            "Newest decision event time seen: where every window's ages count from",
        )
        newest = None
        for tracker in self.trackers:
            for name, window in tracker.windows.items():
                counts = tracker.window(name)
                for attr, family in ratios.items():
                    family.add_metric([name], getattr(counts, attr))
                alerts.add_metric([name], counts.alerts)
                for label, total, alerted in (
                    ("fraud", counts.fraud, counts.fraud_alerted),
                    ("legit", counts.legit_labelled, counts.legit_labelled_alerted),
                    (
                        "unlabelled",
                        counts.unlabelled,
                        counts.alerts - counts.fraud_alerted - counts.legit_labelled_alerted,
                    ),
                ):
                    decisions.add_metric([name, label, "true"], alerted)
                    decisions.add_metric([name, label, "false"], total - alerted)
                ages.add_metric([name, "newest"], window.newest_age_s)
                ages.add_metric([name, "oldest"], window.oldest_age_s)
            if tracker.watermark_ms is not None:
                newest = tracker.watermark_ms
        if newest is not None:
            watermark.add_metric([], newest / 1000)
        yield from (*ratios.values(), alerts, decisions, ages, watermark)
