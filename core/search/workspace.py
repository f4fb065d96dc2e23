"""The one object the app, the CLI and the tests share: catalogue + embedder + embeddings + indexes.

``Workspace.open(settings)`` loads every artifact that is already on disk and verified, and builds (with
progress) whatever is missing or damaged. The app keeps one per (catalogue, model) in ``st.cache_resource``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core.artifacts import ArtifactDir, atomic_path, save_npy
from core.catalog.base import Catalog
from core.catalog.registry import open_catalog
from core.catalog.splits import Splits
from core.catalog.thumbnails import missing_thumbnails, thumbnails_dir, write_thumbnails
from core.config import Settings
from core.embedding.embedder import Embedder, Projection, describe_model, model_key
from core.embedding.ray_runner import RayRunner, remove_shards
from core.embedding.sequential_runner import SequentialRunner, map_rows, remove_partial
from core.locks import exclusive
from core.model.runs import RunDir
from core.photo.decode import decode_image
from core.photo.query_steps import QuerySteps, prepare_query
from core.progress import Progress, no_progress
from core.search.embedding_map import (DEFAULT_METHOD, DEFAULT_SAMPLE, EmbeddingMap, default_sample,
                                       load_or_compute_map, map_silhouettes, sample_rows)
from core.search.index import AnnoySearcher, ExactSearcher, Neighbours, Searcher
from core.search.metrics import nearest
from core.search.text_search import TextIndex
from core.text import tags
from core.threads import embedding_streams, loader_workers, single_threaded_blas

Box = tuple[int, int, int, int]

VOTE_NEIGHBOURS = 10
PROBS = "category_probs.npy"  # a fine-tuned run's category head on every item
TAG_PROBS = "tag_probs.npy"  # … and its tag head, when the catalogue has tags
# Words with a photo: "rerank" orders the photo's nearest items by similarity + WORDS_WEIGHT × text score (a cosine
# in [0, 1]), "narrow" keeps only the items that mention a word, in the photo's order.
WORDS_MODES = ("rerank", "narrow")
WORDS_WEIGHT = 1.0
WORDS_POOL = 100  # at least this many of the photo's nearest items are re-ranked (or 10 × k, whichever is more)
WORDS_METHOD = "words (TF-IDF)"


def projection_dim(settings: Settings) -> int:
    """The PCA the vectors get: fine-tuned embeddings are used as they are."""
    return 0 if settings.run else settings.pca_dim


@dataclass
class SearchResult:
    """What a search shows: the query as the model saw it, the ranked hits, and how long it took."""

    query_image: Image.Image | None  # the query after the catalogue's conversion (None for catalogue items)
    hits: pd.DataFrame  # catalogue rows + ``row``, ``score`` (similarity, or a words-only text score), ``matched``
    predicted: list[tuple[str, float]]  # (category, probability or share of neighbour votes), best first
    method: str
    predicted_by: str = "vote of the 10 nearest items"
    timings_ms: dict[str, float] = field(default_factory=dict)
    vector: np.ndarray | None = None  # the query's unit vector (the embedding map places it)
    steps: QuerySteps | None = None  # a photo's way to the query: crop, mask, converted

    @property
    def latency_ms(self) -> float:
        return sum(self.timings_ms.values())


@dataclass
class Prediction:
    categories: np.ndarray  # probability (or vote share) per catalogue category
    tags: np.ndarray | None  # probability per tag of the model's vocabulary; None without a tag head
    query_image: Image.Image | None = None  # a photo after the catalogue's conversion
    steps: QuerySteps | None = None


class Workspace:
    def __init__(self, settings: Settings, catalog: Catalog, embedder: Embedder, embeddings: np.ndarray,
                 annoy: AnnoySearcher, store: ArtifactDir, category_probs: np.ndarray | None = None,
                 tag_probs: np.ndarray | None = None):
        self.settings, self.catalog, self.embedder = settings, catalog, embedder
        self.embeddings, self.store = embeddings, store
        self.category_probs = category_probs  # (N, C) from a fine-tuned run's head; None for ImageNet features
        self._tag_probs = tag_probs  # (N, T) from its tag head; None without one
        self.exact = ExactSearcher(embeddings)
        self.annoy = annoy

    # ---------------------------------------------------------------- building / loading
    @classmethod
    def open(cls, settings: Settings, progress: Progress = no_progress) -> "Workspace":
        progress("Loading catalogue", 0, 1)
        catalog = open_catalog(settings)
        settings = settings.for_catalog(catalog.domain.input_size)
        progress("Loading catalogue", 1, 1)
        progress("Loading model", 0, 1)
        embedder = Embedder.from_settings(settings)
        if embedder.heads is not None and embedder.heads.categories != catalog.categories:
            raise ValueError(f"Run {settings.run} was trained on other categories ({embedder.heads.categories}) "
                             f"than catalogue {catalog.name!r} has; pick it with the catalogue it was trained on.")
        progress("Loading model", 1, 1)
        store = Workspace.store_for(settings, catalog)
        # One builder at a time per store (sessions, threads, CLI runs): the others wait, then load its result.
        with store.lock(notify=lambda message: progress(message, 0, 1)):
            embeddings = load_or_build_embeddings(store, catalog, embedder, settings, progress)
            annoy = load_or_build_annoy(store, embeddings, settings, progress)
        single_threaded_blas()
        heads = embedder.heads
        probs = np.load(store.file(PROBS), mmap_mode="r") if heads is not None else None
        tag_probs = np.load(store.file(TAG_PROBS), mmap_mode="r") if heads is not None and heads.tags else None
        return cls(settings, catalog, embedder, embeddings, annoy, store, probs, tag_probs)

    @staticmethod
    def store_for(settings: Settings, catalog: Catalog | None = None) -> ArtifactDir:
        """Where this catalogue + model's artifacts live, without loading the model."""
        catalog = catalog or open_catalog(settings)
        settings = settings.for_catalog(catalog.domain.input_size)
        return ArtifactDir(Path(settings.artifacts_dir) / catalog.key / model_key(describe_model(settings)))

    @staticmethod
    def is_built(settings: Settings) -> bool:
        """Cheap check (sizes, not checksums) that opening will load rather than build."""
        store = Workspace.store_for(settings)
        names = ["embeddings.npy", annoy_name(settings)] + (["projection.npz"] if projection_dim(settings) else [])
        if settings.run:
            names += [PROBS] + ([TAG_PROBS] if RunDir.of(settings).info().get("tags") else [])
        return all(store.verified(name, full_check=False) for name in names)

    # ---------------------------------------------------------------- querying
    @property
    def isolates(self) -> bool:
        """Whether photos are isolated by default (``settings.isolate``: on, off, or auto = a fine-tuned model on a
        catalogue of cut-outs, the one case where it was measured to help)."""
        mode = self.settings.isolate.lower()
        return mode == "on" or (mode == "auto" and bool(self.settings.run) and self.catalog.domain.cutout)

    def searcher(self, exact: bool) -> Searcher:
        return self.exact if exact else self.annoy

    def embed_photo(self, photo: Image.Image, isolate: bool | None = None, box: Box | None = None
                    ) -> tuple[QuerySteps, np.ndarray, np.ndarray | None]:
        """A photo → (its query steps, its unit vector, category probabilities if the model has a head)."""
        steps, features = self._convert_and_embed(photo, isolate, box)
        probs = self.embedder.heads.category_probs(features)[0] if self.embedder.heads is not None else None
        return steps, self.embedder.vectors(features)[0], probs

    def _convert_and_embed(self, photo: Image.Image, isolate: bool | None = None, box: Box | None = None
                           ) -> tuple[QuerySteps, np.ndarray]:
        """A photo → (its query steps, the model's raw features of the query, shape (1, feature_dim)).
        ``isolate`` None follows ``settings.isolate``; ``box`` is a user's crop (left, top, right, bottom)."""
        steps = prepare_query(photo, self.catalog.domain, self.isolates if isolate is None else isolate, box)
        return steps, self.embedder.features(steps.query[None])

    @cached_property
    def text_index(self) -> TextIndex:
        """The catalogue's words (category, tags, name, description…) as TF-IDF, built on first use: a fraction of
        a second, and only sessions that type words pay it. Two sessions racing build the same index twice."""
        return TextIndex.of(self.catalog)

    def search(self, query: Image.Image | bytes, k: int = 10, exact: bool = False, category: str | None = None,
               isolate: bool | None = None, box: Box | None = None, words: str = "",
               words_mode: str = "rerank") -> SearchResult:
        """Search with a photo (PIL image, or raw upload bytes, which are decoded safely); ``words`` re-rank its
        results or narrow them to the items that mention them (``words_mode``, see WORDS_MODES)."""
        started = time.perf_counter()
        photo = decode_image(query) if isinstance(query, bytes) else query
        steps, vector, probs = self.embed_photo(photo, isolate, box)
        prepared = time.perf_counter()
        result = self._search_vector(vector, k, exact, category, exclude=None, probs=probs, words=words,
                                     words_mode=words_mode)
        result.query_image, result.steps = steps.query_image, steps
        result.timings_ms = {"convert + embed": (prepared - started) * 1e3, **result.timings_ms}
        return result

    def search_item(self, row: int, k: int = 10, exact: bool = False, category: str | None = None,
                    words: str = "", words_mode: str = "rerank") -> SearchResult:
        """Search with a catalogue item's stored vector; the item itself is left out of its results."""
        probs = np.asarray(self.category_probs[row]) if self.category_probs is not None else None
        return self._search_vector(np.asarray(self.embeddings[row]), k, exact, category, exclude=row, probs=probs,
                                   words=words, words_mode=words_mode)

    def search_words(self, words: str, k: int = 10, category: str | None = None) -> SearchResult:
        """Words alone: the items that mention them, best TF-IDF score first (ties in catalogue order), for a
        shopper with no photo. Nothing is predicted: there is no garment to predict a category for."""
        started = time.perf_counter()
        text = self.text_index.scores(words)
        candidates = text > 0
        if category:
            candidates &= (self.catalog.items["category"] == category).to_numpy()
        rows = np.flatnonzero(candidates)
        rows = rows[np.lexsort((rows, -text[rows]))][:k]
        hits = self._hits(rows, text[rows], text, words)
        return SearchResult(None, hits, [], WORDS_METHOD, predicted_by="",
                            timings_ms={WORDS_METHOD: (time.perf_counter() - started) * 1e3})

    def _search_vector(self, vector: np.ndarray, k: int, exact: bool, category: str | None,
                       exclude: int | None, probs: np.ndarray | None = None, words: str = "",
                       words_mode: str = "rerank") -> SearchResult:
        if words_mode not in WORDS_MODES:
            raise ValueError(f"words_mode must be one of {WORDS_MODES}, not {words_mode!r}")
        searcher = self.searcher(exact)
        allowed = None
        if category:
            allowed = (self.catalog.items["category"] == category).to_numpy()
        extra = 1 if exclude is not None else 0
        text, words_ms = None, 0.0
        if words and self.text_index.query_words(words):  # words with something to match (not only "and", "the")
            text_started = time.perf_counter()
            text = self.text_index.scores(words)
            words_ms = (time.perf_counter() - text_started) * 1e3
        narrow = text is not None and words_mode == "narrow"
        started = time.perf_counter()
        if narrow:  # the photo's nearest among the items that mention a word: k of them whenever k exist
            mentions = text > 0 if allowed is None else allowed & (text > 0)
            found = searcher.search(vector, k + extra, mentions)
        else:
            wanted = max(k, VOTE_NEIGHBOURS) if text is None else max(k * 10, WORDS_POOL)
            found = searcher.search(vector, wanted + extra, allowed)
        elapsed = (time.perf_counter() - started) * 1e3
        found = _drop(found, exclude)
        ranked = found
        text_started = time.perf_counter()
        if text is not None and not narrow:  # re-rank the photo's candidates; ``score`` stays the similarity
            combined = found.scores + WORDS_WEIGHT * text[found.indices]
            order = np.argsort(-combined, kind="stable")
            ranked = Neighbours(found.indices[order], found.scores[order])
        hits = self._hits(ranked.indices[:k], ranked.scores[:k], text, words)
        timings = {f"search ({searcher.name})": elapsed}
        if text is not None:
            timings[WORDS_METHOD] = words_ms + (time.perf_counter() - text_started) * 1e3
        method = searcher.name if text is None else f"{searcher.name} + words"
        result = SearchResult(None, hits, [], method, timings_ms=timings, vector=np.asarray(vector))
        if probs is not None:
            result.predicted, result.predicted_by = self._ranked(probs), "the fine-tuned category head"
        else:  # without a trained head, the category is the similarity-weighted vote of the nearest neighbours
            unfiltered = allowed is None and not narrow
            votes = found if unfiltered else _drop(searcher.search(vector, VOTE_NEIGHBOURS + extra), exclude)
            result.predicted = self._ranked(self.vote(votes))
        return result

    def _hits(self, rows: np.ndarray, scores: np.ndarray, text: np.ndarray | None, words: str) -> pd.DataFrame:
        """The rows' catalogue records with ``row`` and ``score``, and ``matched`` (the query's words each item
        mentions; empty lists without words) plus ``text_score`` when words were given."""
        hits = self.catalog.items.iloc[rows].copy()
        hits.insert(0, "row", rows)
        hits["score"] = scores
        if text is not None:
            hits["text_score"] = text[rows]
            hits["matched"] = self.text_index.matched_rows(rows, words)
        else:
            hits["matched"] = [[] for _ in range(len(rows))]
        return hits.reset_index(drop=True)

    def vote(self, found: Neighbours) -> np.ndarray:
        """Similarity-weighted shares of the categories among the nearest neighbours, one per category."""
        labels = self.catalog.labels[found.indices[:VOTE_NEIGHBOURS]]
        weights = np.clip(found.scores[:VOTE_NEIGHBOURS], 1e-6, None)
        totals = np.bincount(labels, weights=weights, minlength=len(self.catalog.categories))
        return totals / max(totals.sum(), 1e-12)

    def votes(self, indices: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """``vote`` for many queries at once: (Q, k) neighbour rows and scores → (Q, C) shares."""
        if not len(indices):
            return np.zeros((0, len(self.catalog.categories)))
        return np.stack([self.vote(Neighbours(i, s)) for i, s in zip(indices, scores, strict=True)])

    def _ranked(self, shares: np.ndarray) -> list[tuple[str, float]]:
        order = np.argsort(-shares, kind="stable")
        return [(self.catalog.categories[i], float(shares[i])) for i in order if shares[i] > 0]

    def category_probs_for(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), C) category probabilities of catalogue items: the fine-tuned head's, or for ImageNet features
        the similarity-weighted vote of each item's 10 nearest other items (exact search)."""
        rows = np.asarray(rows)
        if self.category_probs is not None:
            return np.asarray(self.category_probs[rows])
        indices, scores = nearest(np.asarray(self.embeddings)[rows], self.embeddings, VOTE_NEIGHBOURS, query_rows=rows)
        return self.votes(indices, scores)

    def validation_rows(self) -> np.ndarray:
        """Where per-label figures are measured: a fine-tuned run's validation split (never trained on, never
        used for its test figures), else the catalogue's test split."""
        if self.settings.run:
            return Splits.of(self.catalog, RunDir.of(self.settings).config()).val
        return self.catalog.query_rows()

    def predict(self, query: Image.Image | int) -> Prediction:
        """Category and tag probabilities for a photo or a catalogue row (what the Tags page shows)."""
        if isinstance(query, Image.Image):
            steps, features = self._convert_and_embed(query)
            if self.embedder.heads is not None:
                return Prediction(self.embedder.heads.category_probs(features)[0],
                                  self.embedder.heads.tag_probs(features)[0], steps.query_image, steps)
            vector = self.embedder.vectors(features)[0]
            return Prediction(self.vote(self.exact.search(vector, VOTE_NEIGHBOURS)), None, steps.query_image, steps)
        tag_probs = self.tag_probs()
        return Prediction(self.category_probs_for(np.array([query]))[0],
                          None if tag_probs is None else np.asarray(tag_probs[query]), None)

    def embedding_map(self, method: str = DEFAULT_METHOD, sample: int = DEFAULT_SAMPLE, dims: int = 2
                      ) -> EmbeddingMap:
        """A 2-D/3-D map of a fixed sample of the catalogue (the same rows for every model), cached on disk. Made
        under the map lock, so a visit while ``prepare_map`` works on the same map waits for it and reads its
        result instead of computing it a second time."""
        rows = sample_rows(len(self.catalog), sample, self.settings.seed)
        with self._map_lock():
            return load_or_compute_map(self.store, self.embeddings, rows, method, dims, self.settings.seed)

    def map_silhouettes(self, emap: EmbeddingMap) -> tuple[float | None, float | None]:
        """By category, on the map and on the raw vectors (``embedding_map.map_silhouettes``, cached on disk)."""
        labels = self.catalog.items["category"].to_numpy()[emap.rows]
        with self._map_lock():
            return map_silhouettes(self.store, emap, self.embeddings, labels, self.settings.seed)

    def _map_lock(self, notify: Callable[[str], None] | None = None) -> AbstractContextManager[None]:
        # a file lock: the CLI's prepare and the app's sessions and background thread all take turns on it
        return exclusive(self.store.file(".map.lock"), notify=notify or (lambda message: None))

    @property
    def thumbnails_folder(self) -> Path:
        """Where this catalogue's hover thumbnails are (``settings.static_dir``, served to the browser)."""
        return thumbnails_dir(self.settings.static_dir, self.catalog)

    def map_thumbnails(self, rows: np.ndarray, progress: Progress = no_progress) -> Path:
        """The map's hover thumbnails for ``rows``, made where missing (under the map lock: a background
        ``prepare_map`` finishes them first); returns their folder."""
        folder = self.thumbnails_folder
        with self._map_lock(notify=lambda message: progress("Waiting for the map's thumbnails", 0, 1)):
            missing = missing_thumbnails(folder, rows)
            if missing:
                write_thumbnails(self.catalog, missing, folder, progress=progress)
        return folder

    def prepare_map(self, progress: Progress = no_progress) -> EmbeddingMap:
        """The map a first Map visit draws, and its hover thumbnails, made now (``python -m core prepare``, or the
        app's background thread) so that visit only reads them. Cheap when both are already there."""
        progress("Projecting the embedding map", 0, 1)
        emap = self.embedding_map(DEFAULT_METHOD, default_sample(len(self.catalog)))
        self.map_silhouettes(emap)
        progress("Projecting the embedding map", 1, 1)
        self.map_thumbnails(emap.rows, progress)
        return emap

    def prepare_map_in_background(self) -> threading.Thread:
        """``prepare_map`` in a daemon thread, for a catalogue or model opened in the app: no page waits for it
        except a Map visit, which waits on the lock rather than doing the work twice. A failure is logged; the
        Map page then meets it again in the foreground and says so."""
        def work() -> None:
            try:
                self.prepare_map()
            except Exception:  # noqa: BLE001 - a background thread has no caller to raise to
                logging.getLogger(__name__).exception("Preparing the embedding map of %s failed", self.store.path)

        thread = threading.Thread(target=work, name=f"prepare-map-{self.catalog.key}", daemon=True)
        thread.start()
        return thread

    def tag_probs(self) -> np.ndarray | None:
        """(N, T) tag probabilities of every item from a fine-tuned tag head; None without one."""
        return self._tag_probs

    @property
    def tag_threshold(self) -> float:
        """Where a tag head's probability counts as a predicted tag: the threshold its run chose on validation."""
        return self.embedder.heads.tag_threshold if self.embedder.heads is not None else tags.DEFAULT_THRESHOLD

    @cached_property
    def tag_families(self) -> list[str]:
        """The family of each tag of the model's vocabulary (core.text.tags.tag_family)."""
        return tags.tag_families(self.embedder.heads.tags if self.embedder.heads else [], self.catalog.tag_sources)

    def decide_tags(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Tag probabilities (…, T) → predicted tags, bool: ``tags.decide`` at ``threshold`` (default: the
        run's), so an exclusive family is one choice here as everywhere."""
        return tags.decide(probs, self.tag_families, self.tag_threshold if threshold is None else threshold)

    def tag_truth(self) -> np.ndarray:
        """The items' own tags against the model's tag vocabulary, (N, T) 0/1."""
        return tags.binarize(self.catalog.items, self.embedder.heads.tags if self.embedder.heads else [])

    def describe(self) -> dict:
        return {
            "catalog": self.catalog.name,
            "catalog_key": self.catalog.key,
            "items": len(self.catalog),
            "model_key": self.embedder.key,
            "run": self.settings.run or None,
            "model": self.embedder.description,
            "inference": self.embedder.runtime,
            "dim": int(self.embeddings.shape[1]),
            "artifacts": str(self.store.path),
            "n_trees": self.settings.n_trees,
            "search_k": self.settings.search_k,
        }


def _drop(found: Neighbours, row: int | None) -> Neighbours:
    if row is None:
        return found
    keep = found.indices != row
    return Neighbours(found.indices[keep], found.scores[keep])


def load_or_build_embeddings(store: ArtifactDir, catalog: Catalog, embedder: Embedder, settings: Settings,
                             progress: Progress = no_progress) -> np.ndarray:
    """Sets ``embedder.projection`` as a side effect: the query path must project exactly like the catalogue."""
    name, projection_name = "embeddings.npy", "projection.npz"
    needed = [name] + ([projection_name] if embedder.pca_dim else [])
    if embedder.heads is not None:
        needed += [PROBS] + ([TAG_PROBS] if embedder.heads.tags else [])
    if all(store.verified(n) for n in needed):
        try:
            embedder.projection = Projection.load(store.file(projection_name)) if embedder.pca_dim else None
            embeddings = np.load(store.file(name), mmap_mode="r")
            if embeddings.shape == (len(catalog), embedder.dim):
                return embeddings
        except (OSError, ValueError, KeyError):
            pass  # recorded but unreadable: rebuild below
    # Features stream into a resumable file beside the artifacts: a pass killed at 60 % continues from there.
    partial = store.file("features.partial.npy")
    runner = catalogue_runner(embedder, settings, progress)
    started = time.perf_counter()
    features = runner.run(catalog.pixels, out=partial)
    embedder.projection = None
    if embedder.pca_dim:
        train = catalog.items["split"].to_numpy() == "train"
        fit_rows = np.flatnonzero(train) if train.any() else np.arange(len(features))
        embedder.projection = Projection.fit(features, embedder.pca_dim, whiten=embedder.pca_whiten,
                                             seed=settings.seed, rows=fit_rows)
        with atomic_path(store.file(projection_name)) as tmp:
            embedder.projection.save(tmp)
        store.record(projection_name, dim=embedder.projection.dim, whiten=embedder.pca_whiten,
                     fitted_on="train split")
    if embedder.heads is not None:
        save_npy(store.file(PROBS), map_rows(embedder.heads.category_probs, features))
        store.record(PROBS, categories=embedder.heads.categories)
        if embedder.heads.tags:
            save_npy(store.file(TAG_PROBS), map_rows(embedder.heads.tag_probs, features))
            store.record(TAG_PROBS, tags=embedder.heads.tags)
    embeddings = map_rows(embedder.vectors, features)
    seconds = time.perf_counter() - started
    save_npy(store.file(name), embeddings)
    embedded = len(embeddings) - runner.resumed_from
    store.record(name, shape=list(embeddings.shape), seconds=round(seconds, 2), resumed_from=runner.resumed_from,
                 images_per_s=round(embedded / max(seconds, 1e-9), 1), inference=embedder.runtime,
                 runner=settings.runner)
    del features
    remove_partial(partial)
    remove_shards(partial)  # the Ray runner's resumable shards, whichever runner finished the pass
    store.update_meta(catalog=catalog.key, model=embedder.description)
    return np.load(store.file(name), mmap_mode="r")


def catalogue_runner(embedder: Embedder, settings: Settings, progress: Progress) -> SequentialRunner | RayRunner:
    """Who embeds the whole catalogue (``settings.runner``): this process, or Ray Data on a cluster."""
    if settings.runner == "ray":
        return RayRunner(settings, embedder.feature_dim, progress)
    return SequentialRunner(embedder, settings.batch_size, progress, workers=loader_workers(settings),
                            streams=embedding_streams(settings, embedder.runtime))


def annoy_name(settings: Settings) -> str:
    return f"annoy-{settings.n_trees}trees.ann"


def load_or_build_annoy(store: ArtifactDir, embeddings: np.ndarray, settings: Settings,
                        progress: Progress = no_progress) -> AnnoySearcher:
    name = annoy_name(settings)
    files = store.meta().get("files", {})
    built_from = files.get("embeddings.npy", {}).get("checksum")
    if store.verified(name) and files.get(name, {}).get("embeddings") == built_from:
        try:
            return AnnoySearcher.load(store.file(name), embeddings, settings.search_k)
        except (OSError, ValueError):
            pass  # verified but unloadable: rebuild below
    progress("Building Annoy index", 0, 1)
    started = time.perf_counter()
    with atomic_path(store.file(name)) as tmp:
        AnnoySearcher.build(np.asarray(embeddings), tmp, settings.n_trees, seed=settings.seed)
    store.record(name, n_trees=settings.n_trees, seconds=round(time.perf_counter() - started, 2),
                 embeddings=built_from)
    progress("Building Annoy index", 1, 1)
    return AnnoySearcher.load(store.file(name), embeddings, settings.search_k)
