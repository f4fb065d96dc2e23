"""Nearest-neighbour search over unit-length embeddings: four methods behind one interface.

``ExactSearcher`` is the ground truth (one matrix-vector product). ``AnnoySearcher`` is the fast path the app uses:
an angular Annoy forest, saved to disk and memory-mapped on load, so every Streamlit session shares one read-only
copy in the page cache. ``KMeansSearcher`` (cluster, then search the closest clusters) and ``PCASearcher`` (exact
search on fewer dimensions) are the two classic alternatives, kept for the retrieval comparison.
Scores are cosine similarities (Annoy's angular distance d = sqrt(2 - 2 cos)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from annoy import AnnoyIndex


@dataclass(frozen=True)
class Neighbours:
    indices: np.ndarray  # int64 row numbers into the catalogue, best first
    scores: np.ndarray  # cosine similarity, same order


class Searcher(Protocol):
    name: str

    def search(self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Neighbours: ...

    @property
    def memory_bytes(self) -> int:
        """Bytes of the structures one query scans (shared embeddings included)."""
        ...


def top_k(scores: np.ndarray, k: int, rows: np.ndarray | None = None) -> Neighbours:
    """The k best of ``scores`` (optionally naming ``rows``), best first."""
    k = min(k, len(scores))
    if k <= 0:
        return Neighbours(np.empty(0, np.int64), np.empty(0, np.float32))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    indices = top if rows is None else rows[top]
    return Neighbours(indices.astype(np.int64), scores[top].astype(np.float32))


class ExactSearcher:
    name = "exact"

    def __init__(self, embeddings: np.ndarray):
        self.embeddings = embeddings

    def search(self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Neighbours:
        """Brute force; ``allowed`` (bool mask over rows) restricts the candidates, e.g. to one category."""
        rows = np.flatnonzero(allowed) if allowed is not None else None
        matrix = self.embeddings if rows is None else self.embeddings[rows]
        scores = matrix @ vector.astype(np.float32)
        return top_k(scores, k, rows)

    @property
    def memory_bytes(self) -> int:
        return int(self.embeddings.nbytes)


class AnnoySearcher:
    name = "annoy"

    def __init__(self, index: AnnoyIndex, search_k: int, fallback: ExactSearcher, path: Path | None = None):
        self.index, self.search_k, self.fallback, self.path = index, search_k, fallback, path

    @staticmethod
    def build(embeddings: np.ndarray, path: Path, n_trees: int, seed: int = 0) -> None:
        """Build the forest and save it to ``path`` (the caller makes this atomic)."""
        index = AnnoyIndex(embeddings.shape[1], "angular")
        index.set_seed(seed)
        for i, vector in enumerate(embeddings):
            index.add_item(i, vector)
        index.build(n_trees, n_jobs=-1)
        index.save(str(path))
        index.unload()

    @classmethod
    def load(cls, path: Path, embeddings: np.ndarray, search_k: int) -> "AnnoySearcher":
        index = AnnoyIndex(embeddings.shape[1], "angular")
        index.load(str(path), prefault=False)  # mmap: shared between sessions, paged in on demand
        if index.get_n_items() != len(embeddings):
            raise ValueError(f"{path} holds {index.get_n_items()} items, the embeddings {len(embeddings)}")
        return cls(index, search_k, ExactSearcher(embeddings), Path(path))

    def search(self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Neighbours:
        n_items = self.index.get_n_items()
        if allowed is None:
            ids, distances = self.index.get_nns_by_vector(vector, k, self.search_k, include_distances=True)
            return Neighbours(np.asarray(ids, np.int64), _cosine(distances))
        if not allowed.any():
            return Neighbours(np.empty(0, np.int64), np.empty(0, np.float32))
        # Filtered: over-fetch in proportion to how rare the allowed rows are; if the forest still does not
        # yield k of them, the subset is small enough for brute force to be cheap.
        share = max(float(allowed.mean()), 1e-6)
        n = min(n_items, int(k / share * 2) + k)
        ids, distances = self.index.get_nns_by_vector(vector, n, max(self.search_k, n * 4), include_distances=True)
        ids_arr = np.asarray(ids, np.int64)
        keep = allowed[ids_arr]
        if keep.sum() < k and keep.sum() < allowed.sum():
            return self.fallback.search(vector, k, allowed)
        return Neighbours(ids_arr[keep][:k], _cosine(np.asarray(distances)[keep][:k]))

    @property
    def memory_bytes(self) -> int:
        # The forest is memory-mapped: this is what the page cache holds once every node has been touched.
        return int(self.path.stat().st_size) if self.path else 0


def _cosine(distances: list[float] | np.ndarray) -> np.ndarray:
    d = np.asarray(distances, dtype=np.float32)
    return 1.0 - d * d / 2.0


class KMeansSearcher:
    """Cluster-then-search (an inverted file): score the query against the centroids, then search exactly
    inside the ``n_probe`` closest clusters only."""

    name = "kmeans"

    def __init__(self, embeddings: np.ndarray, centroids: np.ndarray, order: np.ndarray, offsets: np.ndarray,
                 n_probe: int):
        self.embeddings, self.centroids, self.order, self.offsets = embeddings, centroids, order, offsets
        self.n_probe = n_probe

    @classmethod
    def build(cls, embeddings: np.ndarray, n_clusters: int, n_probe: int, seed: int = 0) -> "KMeansSearcher":
        from sklearn.cluster import MiniBatchKMeans

        n_clusters = min(n_clusters, len(embeddings))
        kmeans = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=1, batch_size=4096)
        kmeans.fit(np.asarray(embeddings))
        centroids = l2_normalize(kmeans.cluster_centers_)
        # Assign by the same rule as at query time (highest cosine), in chunks: N × clusters can be gigabytes.
        labels = np.concatenate([np.argmax(np.asarray(embeddings[i : i + 16384]) @ centroids.T, axis=1)
                                 for i in range(0, len(embeddings), 16384)])
        order = np.argsort(labels, kind="stable").astype(np.int64)
        offsets = np.searchsorted(labels[order], np.arange(n_clusters + 1)).astype(np.int64)
        return cls(embeddings, centroids, order, offsets, n_probe)

    def save(self, path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez(fh, centroids=self.centroids, order=self.order, offsets=self.offsets)

    def search(self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Neighbours:
        vector = vector.astype(np.float32)
        probe = top_k(self.centroids @ vector, self.n_probe).indices
        rows = np.concatenate([self.order[self.offsets[c] : self.offsets[c + 1]] for c in probe])
        if allowed is not None:
            rows = rows[allowed[rows]]
        scores = self.embeddings[rows] @ vector
        return top_k(scores, k, rows)

    @property
    def memory_bytes(self) -> int:
        return int(self.embeddings.nbytes + self.centroids.nbytes + self.order.nbytes + self.offsets.nbytes)


class PCASearcher:
    """Exact search on vectors projected onto their top ``dim`` principal directions.

    The projection is a rotation without centring, so with ``dim`` equal to the full dimension it preserves every
    dot product and the answer is exactly brute force's; fewer dimensions trade recall for a smaller scan."""

    name = "pca"

    def __init__(self, components: np.ndarray, reduced: np.ndarray):
        self.components, self.reduced = components, reduced

    @classmethod
    def build(cls, embeddings: np.ndarray, dim: int, seed: int = 0, max_rows: int = 50_000) -> "PCASearcher":
        from sklearn.decomposition import PCA

        rows = np.random.default_rng(seed).permutation(len(embeddings))[:max_rows]
        sample = np.asarray(embeddings)[np.sort(rows)]
        dim = min(dim, *sample.shape)
        pca = PCA(n_components=dim, svd_solver="full" if dim == sample.shape[1] else "randomized",
                  random_state=seed).fit(sample)
        components = pca.components_.astype(np.float32)
        return cls(components, l2_normalize(np.asarray(embeddings) @ components.T))

    def save(self, path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez(fh, components=self.components, reduced=self.reduced)

    def search(self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Neighbours:
        query = l2_normalize((vector.astype(np.float32) @ self.components.T)[None])[0]
        rows = np.flatnonzero(allowed) if allowed is not None else None
        matrix = self.reduced if rows is None else self.reduced[rows]
        scores = matrix @ query
        return top_k(scores, k, rows)

    @property
    def memory_bytes(self) -> int:
        return int(self.components.nbytes + self.reduced.nbytes)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows to unit length (cosine similarity becomes a dot product); all-zero rows stay zero."""
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
