"""Scorer benchmark: targets/s and latency per batch size, on CPU and (when present) CUDA, next to
a raw torch-geometric ``RGCNConv`` forward of the same shapes timed in the same run (the ceiling).

What is timed, per batch of B transaction targets (real states: a simulator run replayed through
the worker's ``apply_event``):

* ``encode``: host-side state -> tensors (``models.batch.encode``);
* ``forward``: the batched incremental R-GCN on the device (``HeteroRGCN.score_batch``), synchronised;
* ``total``: both plus the host->device copy, what ``LoadedModel.infer`` costs;
* ``raw``: two ``RGCNConv`` layers (hidden -> hidden -> 1, same relations and bases) over a graph
  with the same node and edge counts: layer 1 over one edge per (node, relation) that has
  neighbours (what our layer 1 reads as a precomputed mean), layer 2 over the target edges.

Usage: python benchmarks/scorer.py [--batches 1,16,256,4096] [--repeats 30] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from common import machine, pct

from fraudgraph.models.batch import encode
from fraudgraph.models.features import FEATURE_WIDTHS
from fraudgraph.models.hetero import FRAUD_RELATIONS
from fraudgraph.models.rgcn import HeteroRGCN
from fraudgraph.settings import load_settings
from fraudgraph.stack.simulator.config import SimConfig
from fraudgraph.training.replay import decoded, event_time_order, replay, simulator_records


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int) -> list[float]:
    fn()  # warm-up
    _sync(device)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append((time.perf_counter() - t) * 1000)
    return out


def raw_ceiling(batch, model: HeteroRGCN, device: torch.device):
    from torch_geometric.nn import RGCNConv

    R, H = len(model.relations), model.hidden
    n = sum(x.size(0) for x in batch.x.values())
    e1 = int(sum(h.sum() for h in batch.has.values()))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, H, generator=gen).to(device)
    ei1 = torch.randint(n, (2, max(e1, 1)), generator=gen).to(device)
    et1 = torch.randint(R, (max(e1, 1),), generator=gen).to(device)
    ei2 = torch.stack([batch.edge_node, batch.targets[batch.edge_target]]).to(device)
    et2 = batch.edge_relation.to(device)
    conv1 = RGCNConv(H, H, R, num_bases=model.conv1.num_bases).to(device).eval()
    conv2 = RGCNConv(H, 1, R, num_bases=model.conv2.num_bases).to(device).eval()

    @torch.no_grad()
    def run():
        h = torch.relu(conv1(x, ei1, et1))
        return conv2(h, ei2, et2)

    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,16,256,4096")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "scorer.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    settings = load_settings({})
    log = replay(
        event_time_order(
            decoded(simulator_records(SimConfig(customers=150, duration_s=6 * 3600, seed=2), settings), settings)
        )
    )
    requests = [e.request for e in log.examples]
    torch.manual_seed(0)
    model = HeteroRGCN(FEATURE_WIDTHS, FRAUD_RELATIONS, hidden=32, out_channels=1, num_bases=4).eval()
    rows = []
    for device_name in args.devices.split(","):
        device = torch.device(device_name)
        m = model.to(device)
        for size in (int(b) for b in args.batches.split(",")):
            reqs = (requests * (size // len(requests) + 1))[:size]
            host = encode(reqs, m)
            on_device = host.to(device, torch.float32)
            repeats = max(5, args.repeats if size <= 256 else args.repeats // 3)
            with torch.no_grad():
                enc = _timed(lambda reqs=reqs, m=m: encode(reqs, m), torch.device("cpu"), repeats)
                fwd = _timed(lambda m=m, on_device=on_device: m.score_batch(on_device), device, repeats)
                tot = _timed(
                    lambda m=m, reqs=reqs, device=device: m.score_batch(encode(reqs, m).to(device, torch.float32)),
                    device,
                    repeats,
                )
            raw = _timed(raw_ceiling(host, m, device), device, repeats)
            row = {
                "device": device_name,
                "batch": size,
                "encode_ms_p50": pct(enc, 0.5),
                "forward_ms_p50": pct(fwd, 0.5),
                "forward_ms_p99": pct(fwd, 0.99),
                "total_ms_p50": pct(tot, 0.5),
                "total_ms_p99": pct(tot, 0.99),
                "raw_rgcnconv_ms_p50": pct(raw, 0.5),
                "targets_per_s_total": size / (pct(tot, 0.5) / 1000),
                "forward_vs_raw": pct(fwd, 0.5) / pct(raw, 0.5),
            }
            rows.append(row)
            print(
                f"{device_name:5s} batch {size:5d}: encode {row['encode_ms_p50']:8.3f} ms  forward {row['forward_ms_p50']:8.3f} ms"
                f"  total p50/p99 {row['total_ms_p50']:8.3f}/{row['total_ms_p99']:8.3f} ms  raw RGCNConv {row['raw_rgcnconv_ms_p50']:8.3f} ms"
                f"  forward/raw {row['forward_vs_raw']:5.2f}  {row['targets_per_s_total']:10.0f} targets/s",
                flush=True,
            )
    report = {
        "benchmark": "scorer",
        "command": "python benchmarks/scorer.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "model": {"hidden": 32, "num_bases": 4, "relations": len(FRAUD_RELATIONS)},
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
