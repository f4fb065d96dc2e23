"""`python -m core bench map`: how long the embedding map takes, cold and warm, and how well it separates categories.

Cold is a UMAP computed from nothing in this process (numba compiles umap-learn's kernels on first use, which a
user's first visit also pays); warm is what a revisit does: read the cached map back from disk.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from core.artifacts import ArtifactDir
from core.config import Settings
from core.progress import Progress
from core.search.embedding_map import compute_map, load_or_compute_map, sample_rows, silhouette
from core.search.workspace import Workspace

SERVED = True  # measures the catalogue's served model


def run_map_bench(ws: Workspace, points: int = 10_000, method: str = "umap") -> dict:
    rows = sample_rows(len(ws.catalog), points, ws.settings.seed)
    labels = ws.catalog.labels[rows]
    with tempfile.TemporaryDirectory(prefix="fvs-map-") as scratch:
        store = ArtifactDir(Path(scratch))  # the user's cached maps are left alone
        started = time.perf_counter()
        emap = load_or_compute_map(store, ws.embeddings, rows, method, 2, ws.settings.seed)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        load_or_compute_map(store, ws.embeddings, rows, method, 2, ws.settings.seed)
        warm = time.perf_counter() - started
    pca = compute_map(ws.embeddings, rows, "pca", 2, ws.settings.seed)
    return {
        "model": ws.embedder.key, "run": ws.settings.run or None, "points": int(len(rows)), "method": method,
        "cold_s": round(cold, 2), "warm_s": round(warm, 4), "pca_s": pca.seconds,
        "silhouette_map": round(silhouette(emap.coords, labels, seed=ws.settings.seed), 4),
        "silhouette_pca_map": round(silhouette(pca.coords, labels, seed=ws.settings.seed), 4),
        "silhouette_embeddings": round(silhouette(np.asarray(ws.embeddings)[rows], labels, metric="cosine",
                                                  seed=ws.settings.seed), 4),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--points", type=int, default=10_000, help="items in the UMAP")


def main(args: argparse.Namespace, settings: Settings, progress: Progress) -> dict:
    return run_map_bench(Workspace.open(settings, progress), points=args.points)
