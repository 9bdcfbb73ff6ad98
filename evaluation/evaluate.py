"""``fraudgraph evaluate <dataset>``: one registry of dataset evaluations.

Each evaluator takes ``(seed, out, command)`` and returns its JSON report (also written to
``out`` or its default under ``benchmarks/results/``). Add a dataset by adding an entry to
``EVALUATORS``; imports stay inside the functions so the CLI starts without loading torch models.
``csv`` is any labelled transaction log, so it also takes the log and its mapping
(``NEEDS_LOG``).
"""

from __future__ import annotations

from collections.abc import Callable

NEEDS_LOG = frozenset({"csv"})  # evaluators that take csv= and mapping=


def _aifb(seed: int | None, out: str | None, command: str) -> dict:
    """AIFB is judged over seeds 0..4 (its test set is 36 people); ``--seed N`` runs seeds 0..N."""
    from fraudgraph.evaluation.aifb import main

    argv = ["--seeds", str(5 if seed is None else seed + 1)]
    return main(argv + (["--out", out] if out else []))


def _yelpchi(seed: int | None, out: str | None, command: str) -> dict:
    from fraudgraph.evaluation.yelpchi import evaluate

    return evaluate(seed=0 if seed is None else seed, out=out, command=command)


def _amlsim(seed: int | None, out: str | None, command: str) -> dict:
    from fraudgraph.evaluation.amlsim import evaluate

    return evaluate(seed=0 if seed is None else seed, out=out, command=command)


def _csv(seed: int | None, out: str | None, command: str, *, csv: str, mapping: str) -> dict:
    from fraudgraph.evaluation.csv_log import evaluate

    return evaluate(csv, mapping, seed=0 if seed is None else seed, out=out, command=command)


def _recs(dataset: str) -> Callable[[int | None, str | None, str], dict]:
    def run(seed: int | None, out: str | None, command: str) -> dict:
        from fraudgraph.evaluation.recs import evaluate

        return evaluate(dataset, seed=0 if seed is None else seed, out=out, command=command)

    return run


EVALUATORS: dict[str, Callable[..., dict]] = {
    "aifb": _aifb,
    "csv": _csv,
    "recs-simulator": _recs("simulator"),
    "recs-yelpchi": _recs("yelpchi"),
    "amlsim": _amlsim,
    "yelpchi": _yelpchi,
}
