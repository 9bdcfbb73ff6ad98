"""`fraudgraph demo`'s code path, shortened: it trains a model (none registered), runs a worker over
payments written into PostgreSQL, and prints alerts with reasons, a score reply, a recommendation
reply and the run's recall and precision; nothing it started is left running."""

import re
from pathlib import Path

from fraudgraph.demo import run_demo


def demo_children() -> list[str]:
    """Command lines of processes running this checkout's worker for a demo group."""
    out = []
    for cmdline in Path("/proc").glob("[0-9]*/environ"):
        try:
            if b"FRAUDGRAPH_WORKER_ID=fraudgraph-demo-" in cmdline.read_bytes():
                out.append(cmdline.parent.name)
        except OSError:
            continue
    return out


def test_the_demo_shows_the_main_job(stack, tmp_path):
    said: list[str] = []
    code = run_demo(stack.replace(model_dir=tmp_path / "models"), seconds=15, customers=150, rate=25, say=said.append)
    text = "\n".join(said)
    lines = text.splitlines()
    print(text)
    assert code == 0, text
    assert "model: none registered; training one" in text and re.search(r"model: rgcn-\S+ in \d+ s", text)
    alert = next(line for line in lines if line.strip().startswith("ALERT"))
    assert re.search(r"ALERT (REVIEW|BLOCK) +tx \d+ score [\d.]+ +\w+: ", alert)  # a reason code and its detail
    score_reply = lines[lines.index(next(x for x in lines if x.startswith("$ fraudgraph score"))) + 1]
    assert re.match(r"transaction \d+ \(account \d+\): (REVIEW|BLOCK)", score_reply)
    recs_reply = lines[lines.index(next(x for x in lines if x.startswith("$ fraudgraph recommend"))) + 1 :]
    recs_reply = [x for x in recs_reply if not x.startswith("(")]  # the note on a demo-trained recommender
    assert recs_reply[0].startswith("account ") and recs_reply[1].strip().startswith("1. merchant ")
    assert re.search(
        r"this run: (\d+) of \1 payments decided, \d+ fraudulent, \d+ alerted: recall \d+%, precision \d+%", text
    )
    assert "MATCH (t:Transaction {id: " in text
    assert not demo_children()  # the demo's worker (and its graph sink) stopped
