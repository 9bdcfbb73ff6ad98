"""Benchmark graphs for checking the R-GCN against published numbers. Today: AIFB (Ristoski et al.,
as used by Schlichtkrull et al. 2018).

The raw files (``aifb_stripped.nt.gz``, ``completeDataset.tsv``, ``trainingSet.tsv``,
``testSet.tsv``) are the ones ``torch_geometric.datasets.Entities(root, "AIFB")`` reads from
``<root>/aifb/raw/``. They are symlinked from the source folder into
``<cache>/datasets/aifb/raw`` (never into the repository), and the parsed graph is cached next to
them in ``processed/``.

Why not ``Entities`` itself: it needs pandas (not otherwise a dependency), and it numbers nodes
and labels by iterating Python sets, so the numbering changes from process to process. This loader
builds the same graph the same way (every subject and object a node; predicates ordered by
frequency; relation 2p for s->o and 2p+1 for o->s; the classes of ``completeDataset.tsv``), but
sorted, so runs and seeds are comparable. Needs ``rdflib`` to parse N-Triples.
"""

from __future__ import annotations

import csv
import gzip
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

AIFB_FILES = ("aifb_stripped.nt.gz", "completeDataset.tsv", "trainingSet.tsv", "testSet.tsv")
# The shared datasets folder sits beside the clone (../shared/datasets), never inside it.
DEFAULT_AIFB_SOURCE = str(Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "aifb")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fraudgraph" / "datasets"


@dataclass
class EntityGraph:
    """An entity-classification graph: featureless nodes, typed directed edges, labelled splits."""

    num_nodes: int
    num_relations: int
    num_classes: int
    edge_index: Tensor
    edge_type: Tensor
    train_idx: Tensor
    train_y: Tensor
    test_idx: Tensor
    test_y: Tensor

    def to(self, device: str | torch.device) -> EntityGraph:
        return EntityGraph(
            self.num_nodes,
            self.num_relations,
            self.num_classes,
            *(
                getattr(self, f).to(device)
                for f in ("edge_index", "edge_type", "train_idx", "train_y", "test_idx", "test_y")
            ),
        )


def _stage_raw(source: Path, root: Path) -> Path:
    raw = root / "aifb" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in AIFB_FILES:
        src, dst = source / name, raw / name
        if not src.exists():
            raise FileNotFoundError(f"AIFB file {src} missing (set --data-dir or FRAUDGRAPH_AIFB_DIR)")
        if dst.is_symlink() or dst.exists():
            if dst.resolve() == src.resolve():
                continue
            dst.unlink()
        dst.symlink_to(src.resolve())
    return raw


def _labels(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as f:
        return [(row["person"], row["label_affiliation"]) for row in csv.DictReader(f, delimiter="\t")]


def _parse(raw: Path) -> EntityGraph:
    import rdflib

    g = rdflib.Graph()
    with gzip.open(raw / "aifb_stripped.nt.gz", "rb") as f:
        g.parse(file=f, format="nt")  # type: ignore[arg-type]  # rdflib hints BinaryIO; GzipFile is not one nominally
    freq = Counter(g.predicates())
    relations = sorted(freq, key=lambda p: (-freq[p], str(p)))
    rel_id = {p: i for i, p in enumerate(relations)}
    # Keyed by the term (not its string): a literal and a URI with the same text stay two nodes.
    nodes = sorted(set(g.subjects()) | set(g.objects()), key=lambda n: n.n3())
    node_id = {n: i for i, n in enumerate(nodes)}
    src, dst, typ = [], [], []
    for s, p, o in g:
        a, b, r = node_id[s], node_id[o], rel_id[p]
        src += [a, b]
        dst += [b, a]
        typ += [2 * r, 2 * r + 1]
    edge = torch.tensor([src, dst, typ], dtype=torch.long)
    n, R = len(nodes), 2 * len(relations)
    edge = edge[:, torch.argsort(edge[0] * n * R + edge[1] * R + edge[2])]
    classes = sorted({label for _, label in _labels(raw / "completeDataset.tsv")})
    cls = {c: i for i, c in enumerate(classes)}

    def split(name: str) -> tuple[Tensor, Tensor]:
        rows = _labels(raw / name)
        return (torch.tensor([node_id[rdflib.URIRef(p)] for p, _ in rows]), torch.tensor([cls[c] for _, c in rows]))

    train_idx, train_y = split("trainingSet.tsv")
    test_idx, test_y = split("testSet.tsv")
    return EntityGraph(
        n, R, len(classes), edge[:2].contiguous(), edge[2].contiguous(), train_idx, train_y, test_idx, test_y
    )


def load_aifb(source: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> EntityGraph:
    """AIFB as an ``EntityGraph`` (8,285 nodes, 90 relations with inverses, 4 classes, 140/36 split).

    ``source``: folder with the raw files (default ``$FRAUDGRAPH_AIFB_DIR`` or
    ../shared/datasets/aifb beside the clone); ``root``: cache (default ``~/.cache/fraudgraph/datasets``).
    """
    source = Path(source or os.environ.get("FRAUDGRAPH_AIFB_DIR") or DEFAULT_AIFB_SOURCE)
    root = Path(root) if root else cache_dir()
    raw = _stage_raw(source, root)
    processed = root / "aifb" / "processed" / "fraudgraph_aifb.pt"
    stamp = [os.stat(raw / f).st_size for f in AIFB_FILES]  # re-parse if the raw files change
    if processed.exists():
        cached = torch.load(processed, weights_only=False)
        if cached.get("stamp") == stamp:
            return EntityGraph(**cached["graph"])
    graph = _parse(raw)
    processed.parent.mkdir(parents=True, exist_ok=True)
    tmp = processed.with_suffix(".tmp")
    torch.save({"stamp": stamp, "graph": vars(graph)}, tmp)
    tmp.replace(processed)
    return graph
