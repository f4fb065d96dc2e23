"""Nearest-neighbour search over unit-length embeddings: five methods behind one interface.

``ExactSearcher`` is the ground truth (one matrix-vector product), served to small catalogues. ``AnnoySearcher`` is
the fast path the app serves above them: an angular Annoy forest, saved to disk and memory-mapped on load, so every
Streamlit session shares one read-only copy in the page cache. ``KMeansSearcher`` (cluster, then search the closest
clusters) and ``PCASearcher`` (exact search on fewer dimensions) are the two classic alternatives, in the retrieval
lab, and ``HNSWSearcher`` (an hnswlib graph) the usual modern one, served where Annoy cannot hold its recall
(core/search/served.py chooses).
Scores are cosine similarities (Annoy's angular distance d = sqrt(2 - 2 cos); hnswlib's inner-product distance
d = 1 - cos).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from annoy import AnnoyIndex

from core.vectors import l2_normalize

if TYPE_CHECKING:  # imported where an HNSW index is built or loaded: the app's search path does not need it
    import hnswlib


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


class HNSWSearcher:
    """A hierarchical navigable small-world graph (hnswlib) over inner products, which on unit-length vectors are
    cosines. Unlike Annoy's file, hnswlib loads the whole graph, with its own copy of the vectors, into each
    process's memory: the app serves it only where Annoy cannot hold recall 0.95 within 2 ms (core/search/served.py),
    and the lab compares it."""

    name = "hnsw"

    def __init__(self, index: "hnswlib.Index", ef: int, fallback: ExactSearcher):
        self.index, self.fallback = index, fallback
        self.ef = ef

    @property
    def ef(self) -> int:
        return self._ef

    @ef.setter
    def ef(self, ef: int) -> None:
        # The candidate list kept while walking the graph: hnswlib searches with max(ef, k) itself, so a query for
        # more than ef neighbours still gets its k. Set once here and not per query, because ef is state of the
        # shared index (a per-query change would race between threads searching it).
        self._ef = int(ef)
        self.index.set_ef(self._ef)

    @classmethod
    def build(cls, embeddings: np.ndarray, m: int, ef_construction: int, ef: int, seed: int = 0,
              num_threads: int = -1) -> "HNSWSearcher":
        """Insert every row (row i gets label i). Builds on all cores by default (``num_threads=-1``), and then
        the graph depends on the threads' interleaving, not only on ``seed``; ``num_threads=1`` makes it
        reproducible at the cost of the build time."""
        import hnswlib

        data = np.ascontiguousarray(embeddings, dtype=np.float32)
        index = hnswlib.Index(space="ip", dim=data.shape[1])
        index.init_index(max_elements=max(len(data), 1), M=m, ef_construction=ef_construction, random_seed=seed)
        index.add_items(data, np.arange(len(data)), num_threads=num_threads)
        return cls(index, ef, ExactSearcher(embeddings))

    def save(self, path: Path) -> None:
        self.index.save_index(str(path))

    @classmethod
    def load(cls, path: Path, embeddings: np.ndarray, ef: int) -> "HNSWSearcher":
        import hnswlib

        index = hnswlib.Index(space="ip", dim=embeddings.shape[1])
        index.load_index(str(path), max_elements=len(embeddings))
        if index.get_current_count() != len(embeddings):
            raise ValueError(f"{path} holds {index.get_current_count()} items, the embeddings {len(embeddings)}")
        # hnswlib's file does not say its dimension and loads at any: compare stored vectors with the rows instead
        # (never the last row, which a too-large dimension would read past).
        sample = np.unique([0, len(embeddings) // 2])
        if len(embeddings) and not np.allclose(index.get_items(sample), embeddings[sample], atol=1e-6):
            raise ValueError(f"{path} holds other vectors than the embeddings (another model, or another dimension)")
        return cls(index, ef, ExactSearcher(embeddings))

    def search(self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Neighbours:
        vector = np.asarray(vector, dtype=np.float32)
        n_items = self.index.get_current_count()
        if allowed is None:
            return self._walk(vector, min(k, n_items), None)
        n_allowed = int(np.count_nonzero(allowed))
        k = min(k, n_allowed)
        # With a filter the walk stops only once it holds max(ef, k) allowed rows, so it expands about that many
        # nodes divided by the allowed share, scoring up to 2·M neighbours at each, and asks Python about every
        # row it meets; brute force over the allowed rows scores each once. When the walk would score more rows
        # than that (n_allowed² ≤ 2·M·ef·N), brute force is cheaper, and exact.
        if n_allowed * n_allowed <= 2 * self.index.M * max(self.ef, k) * n_items:
            return self.fallback.search(vector, k, allowed)
        return self._walk(vector, k, allowed)

    def _walk(self, vector: np.ndarray, k: int, allowed: np.ndarray | None) -> Neighbours:
        if k <= 0:
            return Neighbours(np.empty(0, np.int64), np.empty(0, np.float32))
        try:
            labels, distances = self.index.knn_query(vector, k=k, num_threads=1,
                                                     filter=None if allowed is None else allowed.__getitem__)
        except RuntimeError:  # hnswlib's "cannot return the results": the walk reached fewer than k (allowed) rows
            return self.fallback.search(vector, k, allowed)
        return Neighbours(labels[0].astype(np.int64), (1.0 - distances[0]).astype(np.float32))

    @property
    def memory_bytes(self) -> int:
        # Graph links and hnswlib's own copy of the vectors (what its file holds, and what each process keeps in
        # memory); the shared embeddings behind the exact fallback are not counted, as for Annoy.
        return int(self.index.index_file_size())
