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
            print(f"{st.name:9s} {'running' if st.running else 'stopped':8s} pid={st.pid or '-':<8} {st.endpoint:45s} log {st.log}")
        return 0 if all(st.running for st in states) else 3
    elif args.action == "connector":
        print(json.dumps(register_connector(settings), indent=2))
    return 0


def _worker(args, settings) -> int:
    from fraudgraph.streams.worker import run_worker

    return run_worker(settings, loglevel=args.loglevel)


def _simulate(args, settings) -> int:
    from fraudgraph.stack.simulator import simulate

    report = simulate(settings, mode=args.mode, customers=args.customers, duration_s=args.duration,
                      rate=args.rate, fraud_rate=args.fraud_rate, seed=args.seed)
    print(json.dumps(report.to_dict(), indent=2))
    return 0


def _demo(args, settings) -> int:
    from fraudgraph.demo import run_demo

    return run_demo(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fraudgraph", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="the local stack without Docker: Kafka, Neo4j, PostgreSQL, Connect+Debezium")
    stack.add_argument("action", choices=["fetch", "up", "down", "status", "connector"],
                       help="fetch jars | start (idempotent) | stop what it started | show | (re)register the Debezium connector")
    stack.set_defaults(func=_stack)

    worker = sub.add_parser("worker", help="run the streaming worker (Faust): decode CDC, dead-letter bad input, metrics on /metrics")
    worker.add_argument("--loglevel", default="info")
    worker.set_defaults(func=_worker)

    sim = sub.add_parser("simulate", help="write a seeded, realistic payment workload (with labelled fraud) into PostgreSQL or straight to Kafka")
    sim.add_argument("--mode", choices=["postgres", "kafka"], default="postgres",
                     help="postgres: through the real CDC path; kafka: Debezium-format events straight to Kafka (load tests)")
    sim.add_argument("--customers", type=int, default=1000, help="population size")
    sim.add_argument("--duration", type=float, default=3600.0, help="simulated seconds of activity")
    sim.add_argument("--rate", type=float, default=None, help="wall-clock transactions/s cap (default: as fast as possible)")
    sim.add_argument("--fraud-rate", type=float, default=0.02, help="approximate fraction of fraudulent transactions")
    sim.add_argument("--seed", type=int, default=1)
    sim.set_defaults(func=_simulate)

    demo = sub.add_parser("demo", help="bring the stack up and follow a change from PostgreSQL through Debezium into Kafka")
    demo.set_defaults(func=_demo)

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
