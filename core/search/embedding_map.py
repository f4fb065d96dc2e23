"""The catalogue as a 2-D (or 3-D) map of its embeddings: PCA or UMAP of a sample, cached on disk.

UMAP runs on a PCA-reduced input (50 components): the neighbour graph is cheaper and less noisy there, which is
umap-learn's own advice for high-dimensional data. A query (an upload, or the item searched last) is placed on a
UMAP map at the similarity-weighted mean of its nearest mapped items, which is how UMAP's own ``transform``
initialises new points; on a PCA map it is projected exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass

import numpy as np

from core.artifacts import ArtifactDir, atomic_path, fingerprint

log = logging.getLogger(__name__)

METHODS = ("umap", "pca")
UMAP_INPUT_DIM = 50
QUERY_NEIGHBOURS = 10
# The map a first visit draws (the Map page's defaults), which ``Workspace.prepare_map`` makes ahead of it: UMAP of a
# fixed 5,000-item sample, or of the whole catalogue when it has no more items than that.
DEFAULT_METHOD = "umap"
DEFAULT_SAMPLE = 5_000
# Category colours: plotly's Dark24, every one dark enough to read on the page's white background (the theme's
# 10-colour palette gave Blazer and Shirt the same red, and Outwear a near-white grey). Past 24 categories the
# largest 23 keep a colour each and the rest share OTHER_COLOUR.
CATEGORY_COLOURS = ("#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#222A2A", "#B68100", "#750D86",
                    "#EB663B", "#511CFB", "#00A08B", "#FB00D1", "#FC0080", "#B2828D", "#6C7C32", "#778AAE",
                    "#862A16", "#A777F1", "#620042", "#1616A7", "#DA60CA", "#6C4516", "#0D2A63", "#AF0038")
OTHER = "other categories"
OTHER_COLOUR = "#8C8C8C"


def default_sample(n_items: int) -> int:
    """The first visit's sample size: DEFAULT_SAMPLE items, or 0 (all of them) for a catalogue no larger."""
    return DEFAULT_SAMPLE if n_items > DEFAULT_SAMPLE else 0


def category_groups(categories: list[str], counts: list[int]) -> dict[str, str]:
    """What each category is coloured as: itself when every category gets a colour of its own, else the largest
    ``len(CATEGORY_COLOURS) - 1`` keep their name and the rest become OTHER (ties: catalogue order)."""
    if len(categories) <= len(CATEGORY_COLOURS):
        return {c: c for c in categories}
    order = sorted(range(len(categories)), key=lambda i: (-counts[i], i))
    kept = {categories[i] for i in order[: len(CATEGORY_COLOURS) - 1]}
    return {c: c if c in kept else OTHER for c in categories}


def category_palette(categories: list[str], counts: list[int]) -> dict[str, str]:
    """A colour per shown group (``category_groups``), distinct from each other and readable on white; the
    categories keep their catalogue order through the palette, so a category keeps its colour across models."""
    groups = category_groups(categories, counts)
    shown = [c for c in categories if groups[c] == c]
    palette = dict(zip(shown, CATEGORY_COLOURS, strict=False))
    if OTHER in groups.values():
        palette[OTHER] = OTHER_COLOUR
    return palette


@dataclass(frozen=True)
class EmbeddingMap:
    method: str
    rows: np.ndarray  # catalogue rows that are drawn, sorted
    coords: np.ndarray  # (len(rows), dims) float32
    mean: np.ndarray  # PCA centre, (dim,)
    components: np.ndarray  # PCA axes used for the map (PCA) or its input (UMAP), (k, dim)
    seconds: float  # time to compute it (0 when it came from the cache)
    cached: bool = True  # False: the artifacts folder could not keep it (read-only or full)

    @property
    def dims(self) -> int:
        return int(self.coords.shape[1])

    def place(self, vectors: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        """Coordinates for new unit vectors (queries): exact for PCA, neighbour-weighted for UMAP."""
        vectors = np.atleast_2d(vectors).astype(np.float32)
        if self.method == "pca":
            return (vectors - self.mean) @ self.components[: self.dims].T
        sims = vectors @ np.asarray(embeddings, np.float32)[self.rows].T
        nearest = np.argsort(-sims, axis=1)[:, :QUERY_NEIGHBOURS]
        weights = np.clip(np.take_along_axis(sims, nearest, axis=1), 1e-6, None)
        return np.einsum("qk,qkd->qd", weights, self.coords[nearest]) / weights.sum(axis=1, keepdims=True)


def sample_rows(n_items: int, size: int, seed: int) -> np.ndarray:
    """A fixed random sample (the whole catalogue when ``size`` ≥ it), sorted; the same for every model."""
    if size <= 0 or size >= n_items:
        return np.arange(n_items)
    return np.sort(np.random.default_rng(seed).choice(n_items, size=size, replace=False))


def compute_map(embeddings: np.ndarray, rows: np.ndarray, method: str, dims: int = 2, seed: int = 0
                ) -> EmbeddingMap:
    from sklearn.decomposition import PCA

    if method not in METHODS:
        raise ValueError(f"Unknown map method {method!r}; use one of {', '.join(METHODS)}.")
    if len(rows) < max(dims + 2, 4):
        raise ValueError(f"A map needs at least {max(dims + 2, 4)} items; this sample has {len(rows)}.")
    started = time.perf_counter()
    x = np.asarray(embeddings, np.float32)[rows]
    pca = PCA(n_components=min(UMAP_INPUT_DIM if method == "umap" else dims, *x.shape), random_state=seed).fit(x)
    reduced = pca.transform(x).astype(np.float32)
    if method == "pca":
        coords = reduced[:, :dims]
    else:
        import umap  # imported here: numba's start-up costs seconds, and only this map needs it

        # n_neighbors below the sample size (tiny catalogues); a fixed random_state makes the map reproducible.
        reducer = umap.UMAP(n_components=dims, n_neighbors=min(15, len(rows) - 1), min_dist=0.1,
                            random_state=seed, n_jobs=1, init="spectral" if len(rows) > dims + 1 else "random")
        coords = reducer.fit_transform(reduced).astype(np.float32)
    return EmbeddingMap(method, np.asarray(rows), coords, pca.mean_.astype(np.float32),
                        pca.components_.astype(np.float32), round(time.perf_counter() - started, 2))


def load_or_compute_map(store: ArtifactDir, embeddings: np.ndarray, rows: np.ndarray, method: str, dims: int = 2,
                        seed: int = 0) -> EmbeddingMap:
    """Cached in the model's artifact directory, keyed by the embeddings' checksum and every map setting."""
    built_from = store.checksum("embeddings.npy") or ""
    rows_hash = hashlib.blake2b(np.asarray(rows, np.int64).tobytes(), digest_size=8).hexdigest()
    key = fingerprint({"embeddings": built_from, "method": method, "dims": dims, "seed": seed, "rows": rows_hash})
    name = f"map-{method}-{dims}d-{len(rows)}-{key}.npz"
    if store.verified(name):
        try:
            with np.load(store.file(name)) as data:
                return EmbeddingMap(method, data["rows"], data["coords"], data["mean"], data["components"], 0.0)
        except (OSError, ValueError, KeyError):
            pass  # unreadable: compute again
    result = compute_map(embeddings, rows, method, dims, seed)
    buffer = io.BytesIO()
    np.savez(buffer, rows=result.rows, coords=result.coords, mean=result.mean, components=result.components)
    try:
        with atomic_path(store.file(name)) as tmp:
            tmp.write_bytes(buffer.getvalue())
        store.record(name, method=method, dims=dims, points=len(rows), seconds=result.seconds)
    except OSError as exc:  # a read-only or full artifacts folder: the map is shown, computed again next time
        log.warning("the map could not be cached in %s (%s); it is computed on each start", store.path, exc)
        result = dataclasses.replace(result, cached=False)
    return result


def map_silhouettes(store: ArtifactDir, emap: EmbeddingMap, embeddings: np.ndarray, labels: np.ndarray,
                    seed: int = 0) -> tuple[float | None, float | None]:
    """By category: (silhouette on the map's coordinates, on the raw vectors by cosine), cached beside the map.
    The Map page shows both, and at 5,000 points they cost seconds a first visit should not wait for
    (``Workspace.prepare_map`` makes them with the map)."""
    labels = np.asarray(labels).astype(str)
    digest = hashlib.blake2b(digest_size=8)
    for part in (np.asarray(emap.rows, np.int64), np.ascontiguousarray(emap.coords, np.float32)):
        digest.update(part.tobytes())
    digest.update("\0".join(labels).encode())
    built_from = store.checksum("embeddings.npy") or ""
    name = f"silhouettes-{fingerprint({'map': digest.hexdigest(), 'embeddings': built_from, 'seed': seed})}.json"
    if store.verified(name):
        try:
            values = json.loads(store.file(name).read_text())
            return values["map"], values["embeddings"]
        except (OSError, ValueError, KeyError):
            pass  # unreadable: compute again
    values = {"map": silhouette(emap.coords, labels, seed=seed),
              "embeddings": silhouette(np.asarray(embeddings, np.float32)[emap.rows], labels, metric="cosine",
                                       seed=seed)}
    try:
        with atomic_path(store.file(name)) as tmp:
            tmp.write_text(json.dumps(values))
        store.record(name, method=emap.method, points=len(emap.rows))
    except OSError as exc:  # a read-only or full artifacts folder: the figures are shown, computed again next time
        log.warning("silhouettes not cached in %s: %s", store.path, exc)
    return values["map"], values["embeddings"]


def explained_variance(embeddings: np.ndarray, rows: np.ndarray, max_components: int = 128, seed: int = 0
                       ) -> np.ndarray:
    """Cumulative share of variance explained by the first 1..k principal components of the sample."""
    from sklearn.decomposition import PCA

    x = np.asarray(embeddings, np.float32)[rows]
    pca = PCA(n_components=min(max_components, *x.shape), random_state=seed).fit(x)
    return np.cumsum(pca.explained_variance_ratio_)


def components_for(cumulative: np.ndarray, share: float = 0.9) -> int | None:
    """How many components reach ``share`` of the variance (None if the curve stops short of it)."""
    reached = np.flatnonzero(cumulative >= share)
    return int(reached[0]) + 1 if len(reached) else None


def kmeans_clusters(embeddings: np.ndarray, rows: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Cluster label per sampled row (MiniBatch K-Means on the unit vectors: seconds for the whole catalogue)."""
    from sklearn.cluster import MiniBatchKMeans

    x = np.asarray(embeddings, np.float32)[rows]
    k = max(1, min(k, len(rows)))
    return MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=2048).fit_predict(x)


def silhouette(points: np.ndarray, labels: np.ndarray, metric: str = "euclidean", max_points: int = 5000,
               seed: int = 0) -> float | None:
    """How well categories separate (-1..1) on a subsample; None when there are fewer than two categories."""
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2:
        return None
    size = min(max_points, len(points))
    return float(silhouette_score(points, labels, metric=metric, sample_size=size, random_state=seed))
