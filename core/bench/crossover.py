"""Where Annoy starts to pay on this machine (``python -m core bench crossover``): the size ``exact_max_items``
comes from.

For growing subsets of the catalogue's own vectors (the first N of a fixed shuffle), it builds the Annoy index and
measures, as the serving policy does (core/search/served.py), exact search and Annoy at the smallest ``search_k``
that holds recall@10 ≥ 0.95, both on one BLAS thread as served. Exact search grows with N, Annoy's search step at that
recall barely does: the crossover is the first N where Annoy's p50 is below exact's. Sizes past the catalogue use
vectors drawn from per-category Gaussians fitted to it (``synthetic``, as in the retrieval lab's scale curve).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from core.artifacts import atomic_path
from core.bench.retrieval import synthetic_like
from core.config import Settings
from core.progress import Progress, no_progress
from core.search.index import AnnoySearcher
from core.search.served import annoy_ladder, exact_truth, measure, sample_rows
from core.search.workspace import Workspace

SIZES = (1_000, 2_000, 5_000, 10_000, 20_000, 40_000, 70_000)
SERVED = True  # measures the catalogue's served model's vectors


def run_crossover(vectors: np.ndarray, labels: np.ndarray, settings: Settings, sizes: tuple[int, ...] = SIZES,
                  progress: Progress = no_progress) -> dict:
    """One row per size: exact's and Annoy's p50 at recall ≥ 0.95 (with the search_k it took), and the first size
    where Annoy is faster (None when it never is within ``sizes``)."""
    order = np.random.default_rng(settings.seed).permutation(len(vectors))
    rows = []
    with tempfile.TemporaryDirectory(prefix="fvs-crossover-") as tmp:
        for step, n in enumerate(sizes):
            if n <= len(vectors):
                data, source = np.ascontiguousarray(vectors[np.sort(order[:n])], dtype=np.float32), "real"
            else:
                data, source = synthetic_like(vectors, labels, n, settings.seed)[0], "synthetic"
            path = Path(tmp) / f"annoy-{n}.ann"
            started = time.perf_counter()
            with atomic_path(path) as built:
                AnnoySearcher.build(data, built, settings.n_trees, seed=settings.seed)
            build_s = time.perf_counter() - started
            annoy = AnnoySearcher.load(path, data, settings.search_k)
            sample = sample_rows(n, settings.seed)
            truth = exact_truth(data, sample)
            _, exact_ms = measure(annoy.fallback, data, sample, truth)
            last = annoy_ladder(data, settings, annoy, sample, truth)[-1]
            rows.append({"n": n, "source": source, "dim": int(data.shape[1]), "exact_p50_ms": exact_ms,
                         "annoy_p50_ms": last["p50_ms"], "annoy_search_k": last["search_k"],
                         "annoy_recall_at_10": last["recall_at_10"], "annoy_holds": last["holds"],
                         "annoy_build_s": round(build_s, 2)})
            annoy.index.unload()
            path.unlink()
            progress("Crossover", step + 1, len(sizes))
    faster = [row["n"] for row in rows if row["annoy_holds"] and row["annoy_p50_ms"] < row["exact_p50_ms"]]
    return {"n_items": int(len(vectors)), "dim": int(vectors.shape[1]), "n_trees": settings.n_trees,
            "latency": "search step p50, one BLAS thread, 200 of the subset's items as queries",
            "rows": rows, "crossover_n": faster[0] if faster else None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default=",".join(str(n) for n in SIZES), help="comma-separated N to measure")


def main(args: argparse.Namespace, settings: Settings, progress: Progress) -> dict:
    workspace = Workspace.open(settings, progress)
    sizes = tuple(int(n) for n in args.sizes.split(",") if n)
    vectors = np.asarray(workspace.embeddings, dtype=np.float32)
    return run_crossover(vectors, workspace.catalog.labels.astype(np.int64), workspace.settings, sizes, progress)
