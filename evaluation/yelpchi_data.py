"""YelpChi review-spam graph (Rayana & Akoglu 2015; graph as in CARE-GNN, Dou et al. 2020), built
from the raw ``YelpChi_metadata.gz`` (``user product rating label date`` per line).

The graph is the published one, checked by its exact edge counts (tests): products with more than
800 reviews dropped (45,954 reviews left, 6,677 filtered = fraudulent), review nodes in file order,
three undirected relations between two reviews of

* ``rur``: the same user (49,315 pairs);
* ``rtr``: the same product in the same calendar year, months at most 1 apart (573,616). December
  and the next January are *not* linked: the published counts only come out with "same year";
* ``rsr``: the same product with the same star rating (3,402,743).

Union: 3,846,979 distinct pairs (a pair may be in several relations).

Features are ours, since the published 32 need review text: only what the file holds (rating,
date, user and product activity), never the label. User statistics use all of the user's reviews
in the file, including those of the dropped large products: a platform knows a reviewer's whole
history, and dropping products only simplifies the graph. Counts and spans enter as log1p; every
column is then z-scored over all nodes (label-free, so transductive use leaks nothing).

Edges are built by sorting and index arithmetic (``_pairs_within``), never per pair in Python: the
same-rating relation alone is 3.4M pairs. The built graph is cached under
``~/.cache/fraudgraph/datasets/yelpchi/`` keyed by the raw file's size and mtime and
``FEATURE_VERSION`` (bump it whenever the features change).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fraudgraph.evaluation.datasets import cache_dir

DEFAULT_YELPCHI_SOURCE = str(Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "yelpchi")
RAW_FILE = "YelpChi_metadata.gz"
MAX_PRODUCT_REVIEWS = 800
RELATIONS = ("rur", "rtr", "rsr")
FEATURE_VERSION = 1


@dataclass
class ReviewGraph:
    """Review nodes with features, binary labels (1 = fraudulent) and undirected relations.

    ``pairs[name]`` holds each undirected pair once as (2, E) with row 0 < row 1; message passing
    wants both directions, which ``edge_index`` / ``typed_edges`` produce.
    """

    x: Tensor
    y: Tensor
    feature_names: list[str]
    pairs: dict[str, Tensor]
    product: Tensor = field(repr=False)  # product id of each review: for product-level subsets

    @property
    def num_nodes(self) -> int:
        return int(self.x.size(0))

    def edge_index(self, name: str) -> Tensor:
        p = self.pairs[name]
        return torch.cat([p, p.flip(0)], dim=1)

    def edge_indices(self) -> dict[str, Tensor]:
        return {name: self.edge_index(name) for name in self.pairs}

    def typed_edges(self) -> tuple[Tensor, Tensor]:
        """All relations as one R-GCN input: (edge_index (2, 2E), edge_type (2E,)) in ``pairs`` order."""
        ei = [self.edge_index(n) for n in self.pairs]
        types = [torch.full((e.size(1),), r, dtype=torch.long) for r, e in enumerate(ei)]
        return torch.cat(ei, dim=1), torch.cat(types)

    def subgraph(self, nodes: Tensor) -> ReviewGraph:
        """The induced subgraph on ``nodes`` (sorted), renumbered 0..len-1. Features are kept as
        computed on the whole graph (they are review statistics, not graph properties)."""
        nodes = torch.unique(nodes)
        new_id = torch.full((self.num_nodes,), -1, dtype=torch.long)
        new_id[nodes] = torch.arange(nodes.numel())
        pairs = {}
        for name, p in self.pairs.items():
            q = new_id[p]
            pairs[name] = q[:, (q >= 0).all(0)]
        return ReviewGraph(self.x[nodes], self.y[nodes], list(self.feature_names), pairs, self.product[nodes])


def _pairs_within(key: np.ndarray, window: int = 0) -> np.ndarray:
    """All unordered pairs (i, j) with 0 <= key[j] - key[i] <= window, as (2, E) node ids, i != j.

    After a stable sort by key, node at sorted position k pairs with every later position up to the
    last one whose key is <= key[k] + window: a contiguous run, so its partners are an arange and
    all runs together are one ``np.repeat`` plus an offset. Keys must encode grouping so that keys
    of different groups are more than ``window`` apart.
    """
    order = np.argsort(key, kind="stable")
    k = key[order]
    pos = np.arange(k.size)
    end = np.searchsorted(k, k + window, side="right")
    partners = end - pos - 1
    first = np.repeat(pos, partners)
    run_start = np.repeat(np.cumsum(partners) - partners, partners)
    second = first + 1 + (np.arange(first.size) - run_start)
    a, b = order[first], order[second]
    return np.stack([np.minimum(a, b), np.maximum(a, b)])


def _read(path: Path) -> dict[str, np.ndarray]:
    with gzip.open(path, "rt") as f:
        cols = list(zip(*(line.split() for line in f)))
    return {
        "user": np.asarray(cols[0], dtype=np.int64),
        "product": np.asarray(cols[1], dtype=np.int64),
        "rating": np.asarray(cols[2], dtype=np.float64),
        "label": np.asarray(cols[3], dtype=np.int64),
        "day": np.asarray(cols[4], dtype="datetime64[D]").astype(np.int64),
    }


def build_relations(
    product: np.ndarray, user: np.ndarray, rating: np.ndarray, day: np.ndarray
) -> dict[str, np.ndarray]:
    """The three published relations among the given reviews, as (2, E) undirected pairs."""
    dates = day.astype("datetime64[D]")
    year = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    # product * 10^6 + year * 100 + month: months of one (product, year) are 1..12 apart at most
    # and Dec -> Jan of the next year jumps by 89, so a window of 1 links only same-year neighbours.
    rtr_key = product * 1_000_000 + year * 100 + month
    return {
        "rur": _pairs_within(user),
        "rtr": _pairs_within(rtr_key, window=1),
        "rsr": _pairs_within(product * 10 + rating.astype(np.int64)),
    }


def _group(keys: np.ndarray) -> tuple[np.ndarray, int]:
    _, inverse = np.unique(keys, return_inverse=True)
    return inverse.ravel(), int(inverse.max()) + 1


def _mean(g: np.ndarray, n: int, v: np.ndarray) -> np.ndarray:
    return np.bincount(g, v, minlength=n) / np.bincount(g, minlength=n)


def _std(g: np.ndarray, n: int, v: np.ndarray) -> np.ndarray:
    m = _mean(g, n, v)
    return np.sqrt(np.maximum(_mean(g, n, v * v) - m * m, 0.0))


def _extreme(g: np.ndarray, n: int, v: np.ndarray, op: np.ufunc) -> np.ndarray:
    out = np.full(n, np.inf if op is np.minimum else -np.inf)
    op.at(out, g, v)
    return out


def _gap_to_neighbour_in_time(g: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Days to the previous and next review of the same group (large sentinel if none)."""
    order = np.lexsort((day, g))
    gs, ds = g[order], day[order]
    prev = np.full(g.size, 10_000.0)
    nxt = np.full(g.size, 10_000.0)
    same = gs[1:] == gs[:-1]
    gap = (ds[1:] - ds[:-1]).astype(np.float64)
    prev[order[1:][same]] = gap[same]
    nxt[order[:-1][same]] = gap[same]
    return prev, nxt


def review_features(
    user: np.ndarray, product: np.ndarray, rating: np.ndarray, day: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Features of the kept reviews (``keep`` mask over the file), from the file's columns only.

    User statistics over all reviews of the user in the file; product statistics over the product's
    reviews (products are kept or dropped whole, so it is the same). Returned raw (not scaled).
    """
    cols: dict[str, np.ndarray] = {}
    ug, nu = _group(user)
    pg, npr = _group(product)
    extreme = ((rating == 1) | (rating == 5)).astype(np.float64)
    u_count = np.bincount(ug, minlength=nu).astype(np.float64)
    p_count = np.bincount(pg, minlength=npr).astype(np.float64)
    u_first, u_last = _extreme(ug, nu, day, np.minimum), _extreme(ug, nu, day, np.maximum)
    p_first = _extreme(pg, npr, day, np.minimum)
    p_mean = _mean(pg, npr, rating)
    # leave-one-out product mean: how far this rating is from what *others* said
    p_sum = np.bincount(pg, rating, minlength=npr)
    loo_mean = np.where(p_count[pg] > 1, (p_sum[pg] - rating) / np.maximum(p_count[pg] - 1, 1), p_mean[pg])
    dev = rating - loo_mean
    ud_g, nud = _group(user * 100_000 + day)  # user x day
    pd_g, npd = _group(product * 100_000 + day)  # product x day
    pm_g, npm = _group(product * 10_000 + day // 30)  # product x 30-day window
    ps_g, nps = _group(product * 10 + rating.astype(np.int64))  # product x rating
    u_rank = np.empty(day.size)
    order = np.lexsort((day, ug))
    starts = np.r_[0, np.flatnonzero(np.diff(ug[order])) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, day.size]))
    u_rank[order] = np.arange(day.size) - run_start
    p_rank = np.empty(day.size)
    order = np.lexsort((day, pg))
    starts = np.r_[0, np.flatnonzero(np.diff(pg[order])) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, day.size]))
    p_rank[order] = np.arange(day.size) - run_start
    p_span = np.maximum(_extreme(pg, npr, day, np.maximum) - p_first, 1.0)
    p_prev, p_next = _gap_to_neighbour_in_time(pg, day)
    u_prev, u_next = _gap_to_neighbour_in_time(ug, day)

    cols["rating"] = rating
    cols["rating_extreme"] = extreme
    cols["day"] = (day - day.min()).astype(np.float64)
    cols["log_user_reviews"] = np.log1p(u_count[ug])
    cols["user_single_review"] = (u_count[ug] == 1).astype(np.float64)
    cols["user_mean_rating"] = _mean(ug, nu, rating)[ug]
    cols["user_rating_std"] = _std(ug, nu, rating)[ug]
    cols["user_extreme_share"] = _mean(ug, nu, extreme)[ug]
    cols["user_mean_abs_dev"] = _mean(ug, nu, np.abs(dev))[ug]
    cols["user_mean_dev"] = _mean(ug, nu, dev)[ug]
    cols["log_user_span_days"] = np.log1p(u_last[ug] - u_first[ug])
    cols["log_user_days_since_first"] = np.log1p(day - u_first[ug])
    cols["log_user_rank"] = np.log1p(u_rank)
    cols["log_user_same_day"] = np.log1p(np.bincount(ud_g, minlength=nud)[ud_g] - 1)
    cols["log_user_max_per_day"] = np.log1p(
        _extreme(ug, nu, np.bincount(ud_g, minlength=nud)[ud_g].astype(np.float64), np.maximum)[ug]
    )
    cols["log_user_products"] = np.log1p(
        np.bincount(_group(np.unique(np.stack([ug, pg], 1), axis=0)[:, 0])[0], minlength=nu)[ug]
    )
    cols["log_user_gap_prev"] = np.log1p(u_prev)
    cols["log_user_gap_next"] = np.log1p(u_next)
    cols["log_product_reviews"] = np.log1p(p_count[pg])
    cols["product_mean_rating"] = p_mean[pg]
    cols["product_rating_std"] = _std(pg, npr, rating)[pg]
    cols["product_extreme_share"] = _mean(pg, npr, extreme)[pg]
    cols["rating_dev"] = dev
    cols["rating_abs_dev"] = np.abs(dev)
    cols["product_same_rating_share"] = np.bincount(ps_g, minlength=nps)[ps_g] / p_count[pg]
    cols["log_product_age_days"] = np.log1p(day - p_first[pg])
    cols["product_age_share"] = (day - p_first[pg]) / p_span[pg]
    cols["product_rank_share"] = p_rank / p_count[pg]
    cols["log_product_same_day"] = np.log1p(np.bincount(pd_g, minlength=npd)[pd_g] - 1)
    cols["log_product_same_30d"] = np.log1p(np.bincount(pm_g, minlength=npm)[pm_g] - 1)
    # burst: this 30-day window's share of reviews against the product's average rate
    cols["log_product_burst"] = np.log(
        (np.bincount(pm_g, minlength=npm)[pm_g]) / (p_count[pg] * 30.0 / (p_span[pg] + 30.0))
    )
    cols["log_product_gap_prev"] = np.log1p(p_prev)
    cols["log_product_gap_next"] = np.log1p(p_next)
    cols["user_product_repeat"] = (np.bincount(_group(ug * npr + pg)[0])[_group(ug * npr + pg)[0]] > 1).astype(
        np.float64
    )
    names = list(cols)
    return np.stack([cols[n][keep] for n in names], axis=1), names


def standardize(x: np.ndarray) -> np.ndarray:
    mean, std = x.mean(0), x.std(0)
    return ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def build(path: Path) -> ReviewGraph:
    raw = _read(path)
    product_count = np.bincount(raw["product"])
    keep = product_count[raw["product"]] <= MAX_PRODUCT_REVIEWS
    x, names = review_features(raw["user"], raw["product"], raw["rating"], raw["day"], keep)
    rel = build_relations(raw["product"][keep], raw["user"][keep], raw["rating"][keep], raw["day"][keep])
    return ReviewGraph(
        x=torch.from_numpy(standardize(x)),
        y=torch.from_numpy((raw["label"][keep] == -1).astype(np.int64)),
        feature_names=names,
        pairs={n: torch.from_numpy(rel[n]).long() for n in RELATIONS},
        product=torch.from_numpy(raw["product"][keep]),
    )


def load_yelpchi(source: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> ReviewGraph:
    """YelpChi as a ``ReviewGraph``, built once and cached (~1 s to load from cache).

    ``source``: folder with ``YelpChi_metadata.gz`` (default ``$FRAUDGRAPH_YELPCHI_DIR`` or
    ../shared/datasets/yelpchi beside the clone); ``root``: cache (default ``~/.cache/fraudgraph/datasets``).
    """
    path = Path(source or os.environ.get("FRAUDGRAPH_YELPCHI_DIR") or DEFAULT_YELPCHI_SOURCE) / RAW_FILE
    if not path.exists():
        raise FileNotFoundError(f"YelpChi file {path} missing (set FRAUDGRAPH_YELPCHI_DIR)")
    st = os.stat(path)
    stamp = [st.st_size, int(st.st_mtime), FEATURE_VERSION]
    cached_path = (Path(root) if root else cache_dir()) / "yelpchi" / "fraudgraph_yelpchi.pt"
    if cached_path.exists():
        cached = torch.load(cached_path, weights_only=False)
        if cached.get("stamp") == stamp:
            g = cached["graph"]
            # stored as int32 pairs (half the disk); the graph hands out int64 like everything else
            g["pairs"] = {n: p.long() for n, p in g["pairs"].items()}
            return ReviewGraph(**g)
    graph = build(path)
    cached_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached_path.with_suffix(f".tmp{os.getpid()}")
    state = dict(vars(graph), pairs={n: p.int() for n, p in graph.pairs.items()})
    torch.save({"stamp": stamp, "graph": state}, tmp)
    tmp.replace(cached_path)
    return graph
