"""Which index serves a catalogue's searches, chosen by its size and measured on its own items (issue 27).

Exact search costs N·d per query and loses nothing; Annoy costs about ``search_k``·d whatever N is, and loses
neighbours; HNSW costs about log N, and loses few, but its graph is slower to build and lives in each process. So
``Settings.index = "auto"`` serves:

- exact search up to ``Settings.exact_max_items`` items, measured on this machine (``python -m core bench
  crossover``, BENCHMARKS.md): up to there a scan costs under about 1 ms, free next to a query's model forward,
  and Annoy's fraction of a millisecond saved would cost it true neighbours: recall 1.0 for free;
- Annoy above it, with the smallest ``search_k`` (``Settings.search_k``, doubled while needed) that holds
  recall@10 ≥ ``TARGET_RECALL`` on a sample of the catalogue's own items within ``BUDGET_MS``;
- HNSW where no such ``search_k`` exists (at 1M vectors Annoy's default gives 0.77 in 1.6 ms), with the smallest
  ``ef`` (from ``Settings.hnsw_ef`` up) that holds the target.

``"exact"``, ``"annoy"`` and ``"hnsw"`` serve that index with the settings' parameters as they are. Whatever is
chosen is measured when it is chosen: recall@10 against exact search and the search step's p50 on
``SAMPLE_QUERIES`` of the catalogue's items (each excluding itself), on one BLAS thread as the app serves. The
``IndexChoice`` is cached with the index (core/search/workspace.py), so a start loads it instead of timing again,
and the pages show the measured figures, not the promised ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from core.config import Settings
from core.progress import Progress, no_progress
from core.search.index import AnnoySearcher, ExactSearcher, HNSWSearcher, Searcher
from core.search.metrics import nearest

TARGET_RECALL = 0.95  # recall@10 against exact the served index must hold on the catalogue's own items
BUDGET_MS = 2.0  # the search step's p50 Annoy must hold it within; past that, HNSW
SAMPLE_QUERIES = 200  # items measured (each excluding itself): recall to about ±0.01 at 0.95
MAX_DOUBLINGS = 6  # search_k or ef at most 64× the setting's
K = 10


@dataclass(frozen=True)
class IndexChoice:
    """What serves, why, and how it measured on the catalogue's own items when it was chosen."""

    kind: str  # "exact", "annoy" or "hnsw"
    mode: str  # the setting that chose it: "auto", "exact", "annoy" or "hnsw"
    reason: str
    n_items: int
    queries: int
    recall_at_10: float
    p50_ms: float
    exact_p50_ms: float
    search_k: int | None = None  # Annoy's, where Annoy serves
    ef: int | None = None  # HNSW's, where HNSW serves
    tried: list[dict[str, Any]] = field(default_factory=list)  # every (parameter, recall, p50) measured on the way
    seconds: float = 0.0  # measuring (and building HNSW, where it was built on the way)

    @property
    def speedup_vs_exact(self) -> float:
        return round(self.exact_p50_ms / max(self.p50_ms, 1e-9), 1)

    @property
    def label(self) -> str:
        """The index and its query-time parameter, e.g. "Annoy (search_k 4000)"."""
        if self.kind == "annoy":
            return f"Annoy (search_k {self.search_k})"
        if self.kind == "hnsw":
            return f"HNSW (ef {self.ef})"
        return "exact search"

    def summary(self) -> str:
        """One line for the pages: the served index with its measured recall and latency."""
        figures = (f"recall@10 {self.recall_at_10:.3f} on {self.queries} of the catalogue's items, "
                   f"p50 {self.p50_ms:.2f} ms")
        if self.kind != "exact":
            figures += f" ({self.speedup_vs_exact:g}× exact's {self.exact_p50_ms:.2f} ms)"
        return f"{self.label}: {figures}; {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "IndexChoice":
        """Raises KeyError or TypeError on a record of another shape (the caller then chooses again)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def sample_rows(n_items: int, seed: int, n: int = SAMPLE_QUERIES) -> np.ndarray:
    """The items the choice is measured on: a fixed random sample, so a rebuild measures the same ones."""
    return np.sort(np.random.default_rng(seed).permutation(n_items)[: min(n, n_items)])


def measure(searcher: Searcher, vectors: np.ndarray, rows: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(recall@10 against ``truth``, p50 ms of the search step) with each row as a query that excludes itself,
    back to back on one thread, after one warm-up query."""
    from threadpoolctl import threadpool_limits

    latencies, recalls = [], []
    with threadpool_limits(limits=1, user_api="blas"):  # as served (core.threads.single_threaded_blas)
        searcher.search(np.asarray(vectors[rows[0]]), K + 1)
        for j, row in enumerate(rows):
            vector = np.asarray(vectors[row])
            started = time.perf_counter()
            found = searcher.search(vector, K + 1)
            latencies.append((time.perf_counter() - started) * 1e3)
            got = [i for i in found.indices if i != row][:K]
            wanted = truth[j][:K]
            recalls.append(len(set(got) & set(wanted.tolist())) / max(len(wanted), 1))
    return round(float(np.mean(recalls)), 4), round(float(np.percentile(latencies, 50)), 4)


def annoy_ladder(vectors: np.ndarray, settings: Settings, annoy: AnnoySearcher, rows: np.ndarray,
                 truth: np.ndarray) -> list[dict[str, Any]]:
    """Annoy measured at ``settings.search_k``, doubled until recall@10 reaches ``TARGET_RECALL`` (the last row
    then ``holds``), the p50 passes ``BUDGET_MS``, or search_k covers every node (more adds nothing)."""
    tried, search_k = [], settings.search_k
    for _ in range(MAX_DOUBLINGS + 1):
        served = AnnoySearcher(annoy.index, search_k, annoy.fallback, annoy.path)
        recall, ms = measure(served, vectors, rows, truth)
        holds = recall >= TARGET_RECALL and ms <= BUDGET_MS
        tried.append({"index": "annoy", "search_k": search_k, "recall_at_10": recall, "p50_ms": ms, "holds": holds})
        if holds or ms > BUDGET_MS or search_k >= len(vectors) * settings.n_trees:
            break
        search_k *= 2
    return tried


def exact_truth(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each sampled row's exact 10 nearest other rows."""
    return nearest(np.asarray(vectors[rows]), vectors, K, query_rows=rows, chunk=64)[0]


def choose_index(vectors: np.ndarray, settings: Settings, annoy: AnnoySearcher,
                 build_hnsw: Callable[[], HNSWSearcher], progress: Progress = no_progress
                 ) -> tuple[IndexChoice, Searcher]:
    """The index ``settings.index`` serves these vectors with, measured. ``annoy`` is the catalogue's Annoy index
    (always built); ``build_hnsw`` builds or loads the HNSW graph, called only where HNSW is served."""
    started = time.perf_counter()
    n, mode = len(vectors), settings.index
    rows = sample_rows(n, settings.seed)
    truth = exact_truth(vectors, rows)
    exact = ExactSearcher(vectors)
    progress("Measuring the index", 0, 1)
    exact_recall, exact_ms = measure(exact, vectors, rows, truth)
    tried: list[dict[str, Any]] = [{"index": "exact", "recall_at_10": exact_recall, "p50_ms": exact_ms}]

    def chosen(kind: str, searcher: Searcher, reason: str, recall: float, ms: float, **parameter: int
               ) -> tuple[IndexChoice, Searcher]:
        progress("Measuring the index", 1, 1)
        choice = IndexChoice(kind, mode, reason, n, len(rows), recall, ms, exact_ms, tried=tried,
                             seconds=round(time.perf_counter() - started, 2), **parameter)
        return choice, searcher

    if mode == "exact" or (mode == "auto" and n <= settings.exact_max_items):
        why = "set by FVS_INDEX=exact" if mode == "exact" else (
            f"{n:,} items is within exact_max_items ({settings.exact_max_items:,}), where a scan is free (under about "
            f"1 ms) and loses nothing")
        return chosen("exact", exact, why, exact_recall, exact_ms)
    if mode == "annoy":
        served = AnnoySearcher(annoy.index, settings.search_k, exact, annoy.path)
        recall, ms = measure(served, vectors, rows, truth)
        tried.append({"index": "annoy", "search_k": settings.search_k, "recall_at_10": recall, "p50_ms": ms})
        return chosen("annoy", served, "set by FVS_INDEX=annoy", recall, ms, search_k=settings.search_k)
    if mode == "auto":
        ladder = annoy_ladder(vectors, settings, annoy, rows, truth)
        tried += ladder
        last = ladder[-1]
        if last["holds"]:
            why = (f"{n:,} items is past exact_max_items ({settings.exact_max_items:,}); the smallest search_k "
                   f"from {settings.search_k} that holds recall {TARGET_RECALL} within {BUDGET_MS:g} ms")
            served = AnnoySearcher(annoy.index, last["search_k"], exact, annoy.path)
            return chosen("annoy", served, why, last["recall_at_10"], last["p50_ms"], search_k=last["search_k"])
        reason = (f"Annoy held recall {last['recall_at_10']:.3f} at search_k {last['search_k']} in "
                  f"{last['p50_ms']:.2f} ms, short of recall {TARGET_RECALL} within {BUDGET_MS:g} ms")
    else:
        reason = "set by FVS_INDEX=hnsw"
    hnsw = build_hnsw()
    ef, best = settings.hnsw_ef, None
    for _ in range(MAX_DOUBLINGS + 1):
        hnsw.ef = ef
        recall, ms = measure(hnsw, vectors, rows, truth)
        tried.append({"index": "hnsw", "ef": ef, "recall_at_10": recall, "p50_ms": ms})
        best = (ef, recall, ms)
        if mode == "hnsw" or recall >= TARGET_RECALL or ms > BUDGET_MS:
            break
        ef *= 2
    ef, recall, ms = best
    hnsw.ef = ef
    return chosen("hnsw", hnsw, reason, recall, ms, ef=ef)
