"""The retrieval lab: exact, K-Means, PCA, Annoy and HNSW measured side by side on the catalogue's own vectors.

For each method: build time, size on disk and in memory, query latency (p50/p99, search only, back-to-back, one
thread; index builds use every core), recall@10 against exact search, and precision@10 / mAP@10 by category. Then
an Annoy sweep over ``n_trees`` × ``search_k``, an HNSW sweep over ``M`` × ``ef`` (``ef_construction`` from the
settings), and a scale curve at larger N (real vectors where the catalogue has that many, otherwise vectors drawn
from per-category Gaussians fitted to the real ones, labelled ``synthetic``). The result is one JSON document,
also stored beside the model's artifacts so the Model page can show it.

``--methods`` picks which are built; ``served`` (not in the default five) is what ``Settings.index`` would serve
at that size (core/search/served.py: Annoy built, then exact, Annoy at a chosen ``search_k``, or HNSW), its build
seconds being Annoy's build plus the choice (HNSW's build included where it was chosen).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.artifacts import atomic_path, save_npy
from core.config import Settings
from core.progress import Progress, no_progress
from core.search.index import (
    AnnoySearcher,
    ExactSearcher,
    HNSWSearcher,
    KMeansSearcher,
    PCASearcher,
    Searcher,
    l2_normalize,
)
from core.search.metrics import average_precision_at_k, nearest, precision_at_k, recall_at_k
from core.search.served import choose_index
from core.search.workspace import Workspace

K = 10
SWEEP_TREES = (8, 16, 32, 64)
SWEEP_SEARCH_K = (250, 500, 1000, 2000, 4000, 8000)
SWEEP_M = (8, 16, 32)
SWEEP_EF = (16, 32, 64, 128, 256)  # from the first power of two above the K + 1 = 11 neighbours measure() asks
METHODS = ("exact", "kmeans", "pca", "annoy", "hnsw")  # the lab's default; "served" on request
ALL_METHODS = (*METHODS, "served")
RESULT_FILE = "retrieval.json"
SERVED = True  # measures the catalogue's served model


def _mb(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 2)


def truth_top_k(vectors: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Exact top-k rows for each query row, the query itself excluded. Chunks of 64 queries: at the scale curve's
    1M vectors a chunk's score matrix is 256 MB."""
    return nearest(vectors[queries], vectors, k, query_rows=queries, chunk=64)[0]


def measure(searcher: Searcher, vectors: np.ndarray, labels: np.ndarray, queries: np.ndarray,
            truth: np.ndarray) -> dict:
    """Latency, recall against ``truth``, and category precision / mAP for one searcher."""
    counts = np.bincount(labels)
    latencies, recalls, precisions, aps = [], [], [], []
    searcher.search(vectors[queries[0]], K + 1)  # warm-up
    for j, row in enumerate(queries):
        started = time.perf_counter()
        found = searcher.search(vectors[row], K + 1)
        latencies.append((time.perf_counter() - started) * 1e3)
        got = [i for i in found.indices if i != row][:K]
        recalls.append(recall_at_k(got, truth[j], K))
        precisions.append(precision_at_k(labels[got], labels[row], K))
        aps.append(average_precision_at_k(labels[got], labels[row], K, int(counts[labels[row]]) - 1))
    return {
        "p50_ms": round(float(np.percentile(latencies, 50)), 4),
        "p99_ms": round(float(np.percentile(latencies, 99)), 4),
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "precision_at_10": round(float(np.mean(precisions)), 4),
        "map_at_10": round(float(np.mean(aps)), 4),
    }


def build_methods(vectors: np.ndarray, settings, directory: Path, n_clusters: int | None = None,
                  methods: tuple[str, ...] = METHODS, choices: dict | None = None
                  ) -> dict[str, tuple[Searcher, float, float]]:
    """{method: (searcher, build seconds, bytes on disk)} for each of ``methods``; files are written under
    ``directory``. The served method's ``IndexChoice`` goes into ``choices`` (when given) under "served"."""
    directory.mkdir(parents=True, exist_ok=True)
    built: dict[str, tuple[Searcher, float, float]] = {}

    def timed(name: str, make: Callable[[], Searcher], path: Path, save: Callable[[Searcher, Path], None]) -> None:
        if name not in methods:
            return
        started = time.perf_counter()
        searcher = make()
        seconds = time.perf_counter() - started
        with atomic_path(path) as tmp:
            save(searcher, tmp)
        built[name] = (searcher, seconds, path.stat().st_size)

    timed("exact", lambda: ExactSearcher(vectors), directory / "exact.npy", lambda s, p: save_npy(p, s.embeddings))

    clusters = n_clusters or settings.kmeans_clusters
    timed("kmeans", lambda: KMeansSearcher.build(vectors, clusters, settings.kmeans_probe, settings.seed),
          directory / "kmeans.npz", lambda s, p: s.save(p))
    timed("pca", lambda: PCASearcher.build(vectors, settings.pca_search_dim, settings.seed),
          directory / "pca.npz", lambda s, p: s.save(p))

    if "annoy" in methods or "served" in methods:
        annoy_path = directory / f"annoy-{settings.n_trees}.ann"
        started = time.perf_counter()
        with atomic_path(annoy_path) as tmp:
            AnnoySearcher.build(vectors, tmp, settings.n_trees, seed=settings.seed)
        annoy_s = time.perf_counter() - started
        annoy = AnnoySearcher.load(annoy_path, vectors, settings.search_k)
        if "annoy" in methods:
            built["annoy"] = (annoy, annoy_s, annoy_path.stat().st_size)

    timed("hnsw", lambda: HNSWSearcher.build(vectors, settings.hnsw_m, settings.hnsw_ef_construction,
                                             settings.hnsw_ef, settings.seed),
          directory / f"hnsw-{settings.hnsw_m}.bin", lambda s, p: s.save(p))

    if "served" in methods:
        hnsw_path = directory / f"served-hnsw-{settings.hnsw_m}.bin"

        def build_hnsw() -> HNSWSearcher:
            graph = HNSWSearcher.build(vectors, settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef,
                                       settings.seed)
            graph.save(hnsw_path)
            return graph

        choice, searcher = choose_index(vectors, settings, annoy, build_hnsw)
        disk = annoy_path.stat().st_size + (hnsw_path.stat().st_size if hnsw_path.exists() else 0)
        built["served"] = (searcher, annoy_s + choice.seconds, disk)
        if choices is not None:
            choices["served"] = choice
    return built


def annoy_sweep(vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, labels: np.ndarray, directory: Path,
                seed: int, progress: Progress = no_progress) -> list[dict]:
    rows = []
    total = len(SWEEP_TREES) * len(SWEEP_SEARCH_K)
    for n_trees in SWEEP_TREES:
        path = directory / f"sweep-{n_trees}.ann"
        started = time.perf_counter()
        with atomic_path(path) as tmp:
            AnnoySearcher.build(vectors, tmp, n_trees, seed=seed)
        build_s = time.perf_counter() - started
        for search_k in SWEEP_SEARCH_K:
            searcher = AnnoySearcher.load(path, vectors, search_k)
            figures = measure(searcher, vectors, labels, queries, truth)
            rows.append({"n_trees": n_trees, "search_k": search_k, "build_s": round(build_s, 2),
                         "disk_mb": _mb(path.stat().st_size), **figures})
            progress("Annoy sweep", len(rows), total)
        path.unlink()
    return rows


def hnsw_sweep(vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, labels: np.ndarray, settings,
               progress: Progress = no_progress) -> list[dict]:
    """One graph per ``M`` (the build is the expensive part), then every query-time ``ef`` on it."""
    rows = []
    total = len(SWEEP_M) * len(SWEEP_EF)
    for m in SWEEP_M:
        started = time.perf_counter()
        searcher = HNSWSearcher.build(vectors, m, settings.hnsw_ef_construction, SWEEP_EF[0], settings.seed)
        build_s = time.perf_counter() - started
        for ef in SWEEP_EF:
            searcher.ef = ef
            figures = measure(searcher, vectors, labels, queries, truth)
            rows.append({"m": m, "ef": ef, "ef_construction": settings.hnsw_ef_construction,
                         "build_s": round(build_s, 2), "memory_mb": _mb(searcher.memory_bytes), **figures})
            progress("HNSW sweep", len(rows), total)
        del searcher  # freed before the next M's graph is built, not after
    return rows


def synthetic_like(vectors: np.ndarray, labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors from one Gaussian per category, each fitted (mean, covariance) to that category's real
    vectors, in the real category proportions: the clusters' shape survives, so index behaviour is comparable."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    sizes = np.round(counts / counts.sum() * n).astype(int)
    sizes[-1] = n - sizes[:-1].sum()
    parts, part_labels = [], []
    for c, size in zip(classes, sizes, strict=True):
        members = vectors[labels == c].astype(np.float64)
        mean, cov = members.mean(axis=0), np.cov(members, rowvar=False)
        parts.append(rng.multivariate_normal(mean, cov, size=size, method="eigh").astype(np.float32))
        part_labels.append(np.full(size, c))
    out = l2_normalize(np.concatenate(parts))
    order = rng.permutation(n)
    return np.ascontiguousarray(out[order]), np.concatenate(part_labels)[order]


def scale_curve(vectors: np.ndarray, labels: np.ndarray, settings, sizes: tuple[int, ...], directory: Path,
                n_queries: int, progress: Progress = no_progress, methods: tuple[str, ...] = METHODS) -> list[dict]:
    rows = []
    for step, n in enumerate(sizes):
        if n <= len(vectors):
            pick = np.sort(np.random.default_rng(settings.seed).permutation(len(vectors))[:n])
            data, data_labels, source = np.ascontiguousarray(vectors[pick]), labels[pick], "real"
        else:
            data, data_labels = synthetic_like(vectors, labels, n, settings.seed)
            source = "synthetic"
        queries = np.random.default_rng(settings.seed + 1).choice(n, size=min(n_queries, n), replace=False)
        truth = truth_top_k(data, queries)
        # Clusters grow like sqrt(N) so that each probe scans a comparable share of the data.
        clusters = max(16, int(4 * np.sqrt(n)))
        choices: dict = {}
        built = build_methods(data, settings, directory / f"n{n}", clusters, methods, choices)
        for method, (searcher, build_s, disk) in built.items():
            figures = measure(searcher, data, data_labels, queries, truth)
            rows.append({"n": n, "method": method, "source": source, "build_s": round(build_s, 2),
                         "disk_mb": _mb(disk), "memory_mb": _mb(searcher.memory_bytes), **figures,
                         **_served_figures(method, choices)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # a long curve's rows as they come
        del built
        progress("Scale curve", step + 1, len(sizes))
    return rows


def _served_figures(method: str, choices: dict) -> dict:
    """What the served method chose at this size, and what the choice measured on its own sample."""
    if method != "served":
        return {}
    choice = choices["served"]
    return {"index": choice.label, "choice_recall_at_10": choice.recall_at_10, "choice_p50_ms": choice.p50_ms,
            "choice_reason": choice.reason}


def run_retrieval_bench(workspace: Workspace, n_queries: int = 500, sweep: bool = True,
                        scale: tuple[int, ...] = (10_000, 100_000, 1_000_000),
                        progress: Progress = no_progress, methods: tuple[str, ...] = METHODS) -> dict:
    settings = workspace.settings
    vectors = np.ascontiguousarray(workspace.embeddings, dtype=np.float32)
    labels = workspace.catalog.labels.astype(np.int64)
    pool = workspace.catalog.query_rows()
    queries = np.random.default_rng(settings.seed).choice(pool, size=min(n_queries, len(pool)), replace=False)
    truth = truth_top_k(vectors, queries)
    result: dict = {
        "n_items": int(len(vectors)),
        "dim": int(vectors.shape[1]),
        "queries": int(len(queries)),
        "latency": "search only, back-to-back queries on one thread",
        "settings": {"n_trees": settings.n_trees, "search_k": settings.search_k,
                     "kmeans_clusters": settings.kmeans_clusters, "kmeans_probe": settings.kmeans_probe,
                     "pca_search_dim": settings.pca_search_dim, "hnsw_m": settings.hnsw_m,
                     "hnsw_ef_construction": settings.hnsw_ef_construction, "hnsw_ef": settings.hnsw_ef},
        "model_key": workspace.embedder.key,
        "catalog_key": workspace.catalog.key,
        "methods": {},
    }
    with tempfile.TemporaryDirectory(dir=settings.artifacts_dir) as tmp:
        lab = Path(tmp)
        choices: dict = {}
        built = build_methods(vectors, settings, lab / "catalogue", methods=methods, choices=choices)
        for done, (name, (searcher, build_s, disk)) in enumerate(built.items(), start=1):
            result["methods"][name] = {"build_s": round(build_s, 3), "disk_mb": _mb(disk),
                                       "memory_mb": _mb(searcher.memory_bytes),
                                       **measure(searcher, vectors, labels, queries, truth),
                                       **_served_figures(name, choices)}
            progress("Comparing methods", done, len(built))
        del built
        exact_p50 = result["methods"].get("exact", {}).get("p50_ms")
        for figures in result["methods"].values():
            if exact_p50 is not None:
                figures["speedup_vs_exact"] = round(exact_p50 / max(figures["p50_ms"], 1e-9), 1)
        if sweep:
            result["annoy_sweep"] = annoy_sweep(vectors, queries, truth, labels, lab, settings.seed, progress)
            result["hnsw_sweep"] = hnsw_sweep(vectors, queries, truth, labels, settings, progress)
        result["scale"] = scale_curve(vectors, labels, settings, scale, lab, min(n_queries, 200), progress, methods)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queries", type=int, default=200, help="number of queries")
    parser.add_argument("--no-sweep", action="store_true",
                        help="skip the sweeps (Annoy n_trees × search_k, HNSW M × ef)")
    parser.add_argument("--scale", default="10000,100000,1000000",
                        help="comma-separated N for the scale curve ('' to skip)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, of {', '.join(ALL_METHODS)}; served: what Settings.index serves")


def main(args: argparse.Namespace, settings: Settings, progress: Progress) -> dict:
    """The figures, also saved beside the model's artifacts for the Model page."""
    workspace = Workspace.open(settings, progress)
    scale = tuple(int(n) for n in args.scale.split(",") if n) if args.scale else ()
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = sorted(set(methods) - set(ALL_METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(ALL_METHODS)}")
    results = run_retrieval_bench(workspace, n_queries=args.queries, sweep=not args.no_sweep, scale=scale,
                                  progress=progress, methods=methods)
    print(f"saved for the Model page: {save_result(workspace, results)}", file=sys.stderr)
    return results


def save_result(workspace: Workspace, result: dict) -> Path:
    path = workspace.store.file(RESULT_FILE)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return path


def load_result(workspace: Workspace) -> dict | None:
    try:
        return json.loads(workspace.store.file(RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None


def methods_table(result: dict):
    """One row per method, in the order the page and BENCHMARKS.md show them."""
    import pandas as pd

    columns = ["build_s", "disk_mb", "memory_mb", "p50_ms", "p99_ms", "speedup_vs_exact", "recall_at_10",
               "precision_at_10", "map_at_10"]
    table = pd.DataFrame.from_dict(result["methods"], orient="index")
    return table.reindex(columns=[c for c in columns if c in table.columns])
