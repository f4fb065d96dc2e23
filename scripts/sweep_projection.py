"""Which vectors and Annoy settings to use: precision@10, Annoy recall@10 and speed-up over exact search for
PCA projections of the raw Lite0 features (plain and whitened) × n_trees × search_k.

    .venv/bin/python scripts/sweep_projection.py      (builds the raw-feature artifact first if missing)

Prints one line per configuration; BENCHMARKS.md holds the table this produced and the choice made from it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex
from sklearn.decomposition import PCA

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.config import Settings  # noqa: E402
from core.search.workspace import Workspace  # noqa: E402
from core.vectors import l2_normalize  # noqa: E402


def measure(vectors: np.ndarray, labels: np.ndarray, queries: np.ndarray, name: str) -> None:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    scores = vectors[queries] @ vectors.T
    scores[np.arange(len(queries)), queries] = -np.inf
    truth = np.argsort(-scores, axis=1)[:, :10]
    precision = (labels[truth] == labels[queries][:, None]).mean()
    exact_ms = min(_time_exact(vectors, queries) for _ in range(3))
    for n_trees in (32, 64):
        index = AnnoyIndex(vectors.shape[1], "angular")
        index.set_seed(0)
        for i, v in enumerate(vectors):
            index.add_item(i, v)
        index.build(n_trees, n_jobs=-1)
        for search_k in (1000, 1500, 2000, 3000):
            recalls, best = [], np.inf
            for _ in range(2):
                started = time.perf_counter()
                recalls = []
                for j, q in enumerate(queries):
                    got = [g for g in index.get_nns_by_vector(vectors[q], 11, search_k) if g != q][:10]
                    recalls.append(len(set(truth[j]) & set(got)) / 10)
                best = min(best, (time.perf_counter() - started) / len(queries) * 1e3)
            print(f"{name:8s} p@10 {precision:.3f} exact {exact_ms:.2f} ms | trees {n_trees:3d} search_k {search_k:5d} "
                  f"recall@10 {np.mean(recalls):.3f} annoy {best:.3f} ms speed-up {exact_ms / best:.1f}x", flush=True)


def _time_exact(vectors: np.ndarray, queries: np.ndarray) -> float:
    started = time.perf_counter()
    for q in queries:
        s = vectors @ vectors[q]
        top = np.argpartition(-s, 10)[:11]
        top[np.argsort(-s[top])]
    return (time.perf_counter() - started) / len(queries) * 1e3


def main() -> None:
    ws = Workspace.open(Settings.from_env(pca_dim=0))
    features = np.asarray(ws.embeddings)
    items = ws.catalog.items
    labels, train = items["label"].to_numpy(), items["split"].to_numpy() == "train"
    queries = np.random.default_rng(0).choice(np.flatnonzero(~train), 400, replace=False)
    measure(features, labels, queries, "raw1280")
    for dim in (256, 128):
        pca = PCA(dim, svd_solver="randomized", random_state=0).fit(features[train][::2])
        reduced = pca.transform(features)
        measure(l2_normalize(reduced), labels, queries, f"pca{dim}")
        scale = np.sqrt(pca.explained_variance_ + 1e-2 * pca.explained_variance_.mean())
        measure(l2_normalize(reduced / scale), labels, queries, f"pca{dim}w")


if __name__ == "__main__":
    main()
