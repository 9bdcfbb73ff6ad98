"""The graph sink process's metrics reach the worker's /metrics, merged into one family per name,
and its settings are the worker's however they were given."""

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fraudgraph.graph import metrics as graph_metrics
from fraudgraph.settings import Settings, load_settings
from fraudgraph.streams import graph_process, metrics


def test_the_sinks_samples_join_the_workers_families(tmp_path):
    settings = Settings(worker_data_dir=tmp_path)
    metrics.CONSUMER_LAG.labels("worker", "bank.public.transactions", "0").set(3)
    sink = CollectorRegistry()  # what the sink process writes: its lag and graph metrics
    Gauge(graph_process.LAG, "lag", ["group", "topic", "partition"], registry=sink).labels(
        "graph", "bank.public.transactions", "0"
    ).set(7)
    Histogram("fraudgraph_graph_freshness_seconds", "f", registry=sink).observe(0.5)
    graph_process.metrics_file(settings).write_bytes(generate_latest(sink))

    graph_metrics.FRESHNESS_SECONDS.observe(9.0)  # the worker's own copy of a sink metric: replaced
    text = graph_process.exposition(settings).decode()
    series = [line.split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert len(series) == len(set(series))  # no series twice: Prometheus would reject the scrape
    families = {f.name: f for f in text_string_to_metric_families(text)}
    lag = {
        s.labels["group"]: s.value
        for s in families[graph_process.LAG].samples
        if s.labels["topic"] == "bank.public.transactions"
    }
    assert lag == {"worker": 3, "graph": 7}
    assert (
        next(s.value for s in families["fraudgraph_graph_freshness_seconds"].samples if s.name.endswith("_count")) == 1
    )
    assert "fraudgraph_decisions" in families  # the worker's own, untouched


def test_no_sink_file_yet_serves_the_workers_metrics_alone(tmp_path):
    text = graph_process.exposition(Settings(worker_data_dir=tmp_path)).decode()
    assert "fraudgraph_decisions_total" in text


def test_the_sink_gets_the_workers_settings_exactly(tmp_path):
    settings = Settings(
        worker_id="w7",
        worker_data_dir=tmp_path,
        kafka_ssl_check_hostname=False,
        worker_max_idle_ms=12.5,
        neo4j_password="s3cret",
    )
    assert load_settings(settings.environ()) == settings
