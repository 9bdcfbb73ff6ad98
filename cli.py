"""The ``fraudgraph`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import sys

from fraudgraph.settings import load_settings


def _stack(args, settings) -> int:
    from fraudgraph.stack import jars, local
    from fraudgraph.stack.debezium import register_connector

    if args.action == "fetch":
        jars.fetch_all(settings.cache_dir)
    elif args.action == "up":
        local.up(settings)
    elif args.action == "down":
        stopped = local.down(settings)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    elif args.action == "status":
        states = local.status(settings)
        for st in states:
            print(
                f"{st.name:9s} {'running' if st.running else 'stopped':8s} pid={st.pid or '-':<8} {st.endpoint:45s} log {st.log}"
            )
        return 0 if all(st.running for st in states) else 3
    elif args.action == "connector":
        print(json.dumps(register_connector(settings), indent=2))
    elif args.action == "watchdog":
        import logging

        from fraudgraph.stack.cdc_watchdog import watch

        logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s %(message)s")
        watch(settings, settings.cdc_stall_s, metrics_port=settings.cdc_watchdog_port)
    return 0


def _worker(args, settings) -> int:
    from fraudgraph.streams.topics import TopicError
    from fraudgraph.streams.worker import run_worker

    try:
        return run_worker(settings, loglevel=args.loglevel)
    except TopicError as exc:  # e.g. CDC topics partitioned unlike the worker's tables: nothing started
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _progress(**kwargs):
    """A progress bar on stderr (tqdm), shown only when stdout is a terminal: scripts and logs
    get the command's output alone."""
    from tqdm import tqdm

    return tqdm(file=sys.stderr, disable=not sys.stdout.isatty(), dynamic_ncols=True, **kwargs)


def _simulate(args, settings) -> int:
    from fraudgraph.stack.simulator import simulate

    with _progress(desc="rows written", unit="row") as bar:

        def written(sink) -> None:
            bar.update(sink.total - bar.n)
            bar.set_postfix(transactions=sink.rows["transactions"]["insert"], refresh=False)

        report = simulate(
            settings,
            mode=args.mode,
            customers=args.customers,
            duration_s=args.duration,
            rate=args.rate,
            fraud_rate=args.fraud_rate,
            seed=args.seed,
            progress=written,
        )
    print(json.dumps(report.to_dict(), indent=2))
    return 0


def _csv_log(args) -> tuple[list, dict, set[int]]:
    """``train --source csv``: a CSV transaction log's rows and label reports, in event-time order,
    and the ids of the transactions its mapping's ``unknown_values`` leave unlabelled."""
    from pathlib import Path

    from fraudgraph.connectors import events as ev
    from fraudgraph.connectors.csv_log import read_csv_log
    from fraudgraph.connectors.csv_log_mapping import load_csv_log_mapping

    if not args.csv or not args.mapping:
        raise SystemExit("error: --source csv needs --csv PATH and --mapping MAPPING.toml")
    try:
        mapping = load_csv_log_mapping(args.mapping)
        if mapping.columns.label is None:
            raise SystemExit(f"error: {args.mapping} maps no label column (columns.label): nothing to learn from")
        unlabelled: set[int] = set()
        events = list(read_csv_log(args.csv, mapping, unlabelled=unlabelled))
    except (OSError, ValueError) as exc:  # CsvLogError / CsvLogMappingError name the file, line and field
        raise SystemExit(f"error: {exc}") from None
    return (
        events,
        {
            "source": "csv",
            "csv": str(Path(args.csv).resolve()),
            "mapping": str(Path(args.mapping).resolve()),
            "rows": sum(isinstance(e, ev.TransactionCreated) for e in events),
            "unlabelled_rows": len(unlabelled),
        },
        unlabelled,
    )


def _train(args, settings) -> int:
    """Replay the log in event-time order through the worker's state code, train, register."""
    from collections import Counter
    from collections.abc import Iterable

    from fraudgraph.models.registry import ModelRegistry, card_for
    from fraudgraph.training import replay as rp
    from fraudgraph.training.train import TrainConfig, train, training_fields

    skipped: Counter = Counter()
    records: Iterable[tuple[str, bytes | None, bytes | None]]
    unlabelled: set[int] = set()
    if args.source == "csv":
        events, trained_on, unlabelled = _csv_log(args)  # already in event-time order, nothing to decode
    elif args.source == "kafka":
        records = rp.kafka_records(settings)
        trained_on = {"source": "kafka", "topics_prefix": settings.topic_prefix, "records": len(records)}
    else:
        from fraudgraph.stack.simulator.config import SimConfig

        sim = SimConfig(
            customers=args.customers, duration_s=args.hours * 3600, seed=args.seed, fraud_rate=args.fraud_rate
        )
        records = rp.simulator_records(sim, settings)
        trained_on = {"source": "simulator", "customers": args.customers, "hours": args.hours, "seed": args.seed}
    if args.source != "csv":
        events = rp.event_time_order(rp.decoded(records, settings, skipped))
    with _progress(iterable=events, desc="replay", unit="event") as replaying:
        log = rp.replay(replaying)
    examples = log.examples
    config = TrainConfig(
        epochs=args.epochs,
        hidden=args.hidden,
        target_fpr=args.target_fpr,
        target_alert_rate=args.target_alert_rate,
        seed=args.seed,
    )
    labels, known = log.labelled(unlabelled)
    with _progress(total=args.epochs, desc="train", unit="epoch") as bar:

        def epoch_done(figures: dict) -> None:
            bar.update(1)
            bar.set_postfix(val_auc_pr=f"{figures['val_auc_pr']:.3f}")

        model, report = train(
            [e.request for e in examples], labels, [e.ts_ms for e in examples], config, on_epoch=epoch_done, known=known
        )
    report["replay"] = {"events": log.events, "undecodable": dict(skipped), "labels": len(log.labels)}
    trained_on["windows"] = report["windows"]
    trained_on["fields"] = training_fields(settings, args.mapping if args.source == "csv" else None)
    metrics = {"validation": report["validation"], "test": report["test"]}
    if args.register:
        card = ModelRegistry(settings.model_dir).register(
            model,
            card_for(
                model,
                threshold=report["threshold"],
                target_fpr=config.target_fpr,
                metrics=metrics,
                trained_on=trained_on,
            ),
            make_current=not args.no_promote,
        )
        report["version"] = card.version
    if args.recs:
        report["recs"] = _train_recs(args, settings, events, model, examples, trained_on)
    if args.report:
        with open(args.report, "w") as fh:
            json.dump(report, fh, indent=2, default=str)
    print(
        json.dumps(
            {
                k: report.get(k)
                for k in ("version", "examples", "train_seconds", "threshold", "validation", "test", "recs")
            },
            indent=2,
            default=str,
        )
    )
    return 0


def _train_recs(args, settings, events, fraud_model, examples, trained_on: dict) -> dict:
    """The recommender from the same replayed log, with the fraud model's opinion of each merchant
    as its risk prior (training/recs_fit.py); registered in its own registry, promoted alike."""
    from fraudgraph.models.recs_registry import RecsRegistry
    from fraudgraph.training.recs_fit import fit_recommender, fraud_scores
    from fraudgraph.training.recs_train import RecsConfig

    config = RecsConfig(epochs=args.recs_epochs, seed=args.seed)
    try:
        model, items, report = fit_recommender(events, config, scores=fraud_scores(fraud_model, examples))
    except ValueError as err:  # e.g. a transfer-only log (--source csv): nothing to recommend from
        return {"skipped": str(err)}
    summary = {
        k: report.get(k)
        for k in (
            "payments",
            "fraudulent_payments_excluded",
            "merchants",
            "epochs",
            "val_hit_rate_at_10",
            "train_seconds",
        )
    }
    if args.register:
        card = RecsRegistry(settings.recs_registry_dir()).register(
            model,
            {
                "items": items,
                "metrics": {"validation": {"hit_rate_at_10": report.get("val_hit_rate_at_10")}},
                "trained_on": {**trained_on, "windows": report["windows"], "config": report["config"]},
            },
            make_current=not args.no_promote,
        )
        summary["version"] = card.version
    return summary


def _evaluate(args, settings) -> int:
    from fraudgraph.evaluation.evaluate import EVALUATORS, NEEDS_LOG

    log_args = f" --csv {args.csv} --mapping {args.mapping}" if args.dataset in NEEDS_LOG else ""
    command = (
        f"fraudgraph evaluate {args.dataset}"
        + log_args
        + (f" --seed {args.seed}" if args.seed is not None else "")
        + (f" --out {args.out}" if args.out else "")
    )
    if args.dataset not in NEEDS_LOG:
        if args.csv or args.mapping:
            raise SystemExit(f"error: --csv and --mapping are for `evaluate csv`, not {args.dataset}")
        EVALUATORS[args.dataset](args.seed, args.out, command)
        return 0
    if not args.csv or not args.mapping:
        raise SystemExit(f"error: evaluate {args.dataset} needs --csv PATH and --mapping MAPPING.toml")
    try:
        EVALUATORS[args.dataset](args.seed, args.out, command, csv=args.csv, mapping=args.mapping)
    except (OSError, ValueError) as exc:  # CsvLogError / CsvLogMappingError name the file, line and field
        raise SystemExit(f"error: {exc}") from None
    return 0


def _demo(args, settings) -> int:
    from fraudgraph.demo import run_demo

    return run_demo(settings, seconds=args.seconds, customers=args.customers, rate=args.rate)


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _score(args, settings) -> int:
    from fraudgraph.streams import client

    try:
        reply = client.score(settings, transaction_id=args.transaction, account_id=args.account, timeout_s=args.timeout)
    except client.NoReply as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    if args.json:
        _print_json(reply)
    elif reply["status"] == "ok":
        print("\n".join(client.describe_score(s) for s in reply["scores"]))
    else:
        print(f"{reply['status']}: {reply.get('error', '')}", file=sys.stderr)
    return 0 if reply["status"] == "ok" else 1


def _recommend(args, settings) -> int:
    from fraudgraph.streams import client

    try:
        reply = client.recommend(settings, args.account, args.k, timeout_s=args.timeout)
    except client.NoReply as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    if args.json:
        _print_json(reply)
    elif reply["status"] == "ok":
        print(client.describe_recommendations(reply))
    else:
        print(f"{reply['status']}: {reply.get('error', '')}", file=sys.stderr)
    return 0 if reply["status"] == "ok" else 1


def _alerts(args, settings) -> int:
    from fraudgraph.streams import client

    try:
        for alert in client.alerts(settings, last=args.last, follow=args.follow):
            if args.json:
                print(json.dumps(alert, sort_keys=True), flush=True)
            else:
                print(client.describe_score(alert), flush=True)
    except client.NoReply as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        pass
    return 0


def _mapping_check(args, settings) -> int:
    """Exit 0: every table with records decoded at least one row; 1: some table failed entirely;
    2: the mapping does not load; 3: Kafka did not answer (or its settings are wrong)."""
    from confluent_kafka import KafkaException

    from fraudgraph.connectors import mapping_check as mc
    from fraudgraph.kafka_config import KafkaSecurityError

    if args.sample < 1:
        print("error: --sample must be at least 1", file=sys.stderr)
        return 2
    path = args.mapping or settings.mapping_file or None
    try:
        mapping = mc.load(path)
        report = mc.check_on_kafka(settings, mapping, args.sample, timeout_s=args.timeout)
    except mc.MappingLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (KafkaException, KafkaSecurityError) as err:
        print(f"error: Kafka at {settings.kafka_bootstrap}: {err}", file=sys.stderr)
        return 3
    if args.json:
        _print_json(report.to_dict())
    else:
        print(mc.describe(report))
    return report.exit_code


def _entity_id(text: str) -> int | str:
    """An account id on the command line: a number, or a bank's text key."""
    return int(text) if text.isdigit() else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fraudgraph", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="the local stack without Docker: Kafka, Neo4j, PostgreSQL, Connect+Debezium")
    stack.add_argument(
        "action",
        choices=["fetch", "up", "down", "status", "connector", "watchdog"],
        help="fetch jars | start (idempotent) | stop what it started | show | (re)register the Debezium "
        "connector | run the CDC watchdog (restarts a failed or wedged Debezium task)",
    )
    stack.set_defaults(func=_stack)

    worker = sub.add_parser(
        "worker", help="run the streaming worker (Faust): decode CDC, dead-letter bad input, metrics on /metrics"
    )
    worker.add_argument("--loglevel", default="info")
    worker.set_defaults(func=_worker)

    sim = sub.add_parser(
        "simulate",
        help="write a seeded, realistic payment workload (with labelled fraud) into PostgreSQL or straight to Kafka",
    )
    sim.add_argument(
        "--mode",
        choices=["postgres", "kafka"],
        default="postgres",
        help="postgres: through the real CDC path; kafka: Debezium-format events straight to Kafka (load tests)",
    )
    sim.add_argument("--customers", type=int, default=1000, help="population size")
    sim.add_argument("--duration", type=float, default=3600.0, help="simulated seconds of activity")
    sim.add_argument(
        "--rate", type=float, default=None, help="wall-clock transactions/s cap (default: as fast as possible)"
    )
    sim.add_argument("--fraud-rate", type=float, default=0.02, help="approximate fraction of fraudulent transactions")
    sim.add_argument("--seed", type=int, default=1)
    sim.set_defaults(func=_simulate)

    tr = sub.add_parser(
        "train", help="replay the CDC log point-in-time through the worker's state, train the R-GCN, register it"
    )
    tr.add_argument(
        "--source",
        choices=["kafka", "simulator", "csv"],
        default="kafka",
        help="kafka: the CDC topics up to their current ends; simulator: a seeded run in process; "
        "csv: a transaction-log CSV with a label column (--csv, --mapping)",
    )
    tr.add_argument("--csv", metavar="PATH", help="--source csv: the transaction log")
    tr.add_argument(
        "--mapping", metavar="MAPPING.toml", help="--source csv: its column mapping (connectors/csv_log_mapping.py)"
    )
    tr.add_argument("--customers", type=int, default=1000, help="simulator population")
    tr.add_argument("--hours", type=float, default=24.0, help="simulated hours")
    tr.add_argument("--fraud-rate", type=float, default=0.02)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--epochs", type=int, default=40)
    tr.add_argument("--hidden", type=int, default=32)
    tr.add_argument("--target-fpr", type=float, default=0.01, help="the validation FPR the threshold is chosen for")
    tr.add_argument(
        "--target-alert-rate",
        type=float,
        default=None,
        metavar="SHARE",
        help="choose the threshold to flag at most this share of all validation transactions instead (0.005: 0.5%%)",
    )
    tr.add_argument("--no-register", dest="register", action="store_false", help="train and report only")
    tr.add_argument("--no-promote", action="store_true", help="register without making it CURRENT")
    tr.add_argument("--report", help="write the full training report (JSON) here")
    tr.add_argument(
        "--no-recs", dest="recs", action="store_false", help="train the fraud model only, not the recommender"
    )
    tr.add_argument(
        "--recs-epochs", type=int, default=30, help="at most this many recommender epochs (chosen on validation)"
    )
    tr.set_defaults(func=_train)

    ev = sub.add_parser(
        "evaluate", help="evaluate the R-GCN on a public dataset beside MLP and tree baselines, write a JSON report"
    )
    from fraudgraph.evaluation.evaluate import EVALUATORS  # light: the evaluators import torch lazily

    ev.add_argument("dataset", choices=sorted(EVALUATORS))
    ev.add_argument(
        "--seed", type=int, default=None, help="split/initialisation seed (yelpchi: default 0; aifb: runs seeds 0..N)"
    )
    ev.add_argument(
        "--out",
        default=None,
        help="JSON report path (default benchmarks/results/<dataset>.json or evaluate_<dataset>.json)",
    )
    ev.add_argument("--csv", metavar="PATH", help="csv: the labelled transaction log")
    ev.add_argument("--mapping", metavar="MAPPING.toml", help="csv: its column mapping (connectors/csv_log_mapping.py)")
    ev.set_defaults(func=_evaluate)

    sc = sub.add_parser(
        "score", help="ask the worker for a transaction's decision, or an account's latest ones (over the topics)"
    )
    which = sc.add_mutually_exclusive_group(required=True)
    which.add_argument("--transaction", type=int, metavar="ID")
    which.add_argument("--account", type=_entity_id, metavar="ID")
    rc = sub.add_parser("recommend", help="ask the worker for merchants to recommend to an account (over the topics)")
    rc.add_argument("--account", type=_entity_id, metavar="ID", required=True)
    rc.add_argument("--k", type=int, default=10, help="how many merchants")
    for query in (sc, rc):
        query.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply (exit 3 after)")
    al = sub.add_parser(
        "alerts", help="print the latest alerts (review and block decisions), and with --follow the new ones"
    )
    al.add_argument("--last", type=int, default=20, help="how many of the newest alerts per partition to start with")
    al.add_argument("--follow", action="store_true", help="keep printing alerts as they are published (Ctrl-C stops)")
    for client_command, func in ((sc, _score), (rc, _recommend), (al, _alerts)):
        client_command.add_argument("--json", action="store_true", help="the raw records, for scripts")
        client_command.set_defaults(func=func)

    demo = sub.add_parser(
        "demo",
        help="the main job end to end: stack, model, worker, live payments through PostgreSQL, "
        "alerts with reasons, a score and a recommendation query, recall and precision",
    )
    demo.add_argument("--seconds", type=float, default=60.0, help="how long the simulated payments flow")
    demo.add_argument("--rate", type=float, default=40.0, help="payments per second")
    demo.add_argument("--customers", type=int, default=300)
    demo.set_defaults(func=_demo)

    mapping = sub.add_parser("mapping", help="work with a source-schema mapping (connectors/mapping.py)")
    mapping_sub = mapping.add_subparsers(dest="action", required=True)
    check = mapping_sub.add_parser(
        "check",
        help="decode a sample of each mapped table's CDC topic with a mapping: per table how many decode, the first "
        "failure of each reason with its column, the fields left unknown; exit 1 if a table with records decodes none, "
        "2 if the mapping does not load",
    )
    check.add_argument(
        "--mapping", metavar="MAPPING.toml", help="the mapping to check (default: the configured one, else bank.toml)"
    )
    check.add_argument("--sample", type=int, default=100, metavar="N", help="records read from the start of each topic")
    check.add_argument("--timeout", type=float, default=30.0, help="seconds to spend reading, in all")
    check.add_argument("--json", action="store_true", help="the report as JSON, for scripts")
    check.set_defaults(func=_mapping_check)

    args = parser.parse_args(argv)
    settings = load_settings()
    from fraudgraph.stack.supervisor import StackError

    try:
        return args.func(args, settings)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
