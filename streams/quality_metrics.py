"""Exports a ``QualityTracker``'s windows as Prometheus gauges, computed when Prometheus scrapes.

Why a collector rather than gauges set by the pipeline: the ratios are derived from the bucket
counts, so computing them at scrape time costs nothing per event and a scrape always shows one
consistent snapshot (precision, recall and the counts it came from agree with each other).
"""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

PREFIX = "fraudgraph_quality_"


class QualityCollector:
    def __init__(self, tracker=None):
        self.tracker = tracker  # set by the worker once it has one; no samples until then

    def describe(self):
        return []  # no samples at registration time: the tracker is attached later

    def collect(self):
        windows = ["window"]
        precision = GaugeMetricFamily(PREFIX + "precision_ratio", "Alerted decisions later labelled fraud / alerted decisions, per event-time window", labels=windows)
        recall = GaugeMetricFamily(PREFIX + "recall_ratio", "Decisions labelled fraud that were alerted / decisions labelled fraud, per window", labels=windows)
        fpr = GaugeMetricFamily(PREFIX + "false_positive_ratio", "False-positive rate: alerted but not labelled fraud / decisions not labelled fraud, per window", labels=windows)
        alerts = GaugeMetricFamily(PREFIX + "alerts", "Alert volume: decisions other than approve in the window", labels=windows)
        decisions = GaugeMetricFamily(PREFIX + "decisions", "Decisions in the window by label (fraud, legit = reported false positive, unlabelled) and whether alerted", labels=["window", "label", "alerted"])
        watermark = GaugeMetricFamily(PREFIX + "watermark_timestamp_seconds", "Newest decision event time seen: the end of every window")
        tracker = self.tracker
        if tracker is not None:
            for name in tracker.windows_s:
                w = tracker.window(name)
                precision.add_metric([name], w.precision)
                recall.add_metric([name], w.recall)
                fpr.add_metric([name], w.false_positive_rate)
                alerts.add_metric([name], w.alerts)
                for label, total, alerted in (("fraud", w.fraud, w.fraud_alerted),
                                              ("legit", w.legit_labelled, w.legit_labelled_alerted),
                                              ("unlabelled", w.unlabelled, w.alerts - w.fraud_alerted - w.legit_labelled_alerted)):
                    decisions.add_metric([name, label, "true"], alerted)
                    decisions.add_metric([name, label, "false"], total - alerted)
            if tracker.watermark_ms is not None:
                watermark.add_metric([], tracker.watermark_ms / 1000)
        yield from (precision, recall, fpr, alerts, decisions, watermark)
