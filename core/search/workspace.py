"""The one object the app, the CLI and the tests share: catalogue + embedder + embeddings + indexes.

``Workspace.open(settings)`` loads every artifact that is already on disk and verified, and builds (with
progress) whatever is missing or damaged. The app keeps one per (catalogue, model) in ``st.cache_resource``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
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

from core.artifacts import ArtifactDir, ReadOnlyArtifacts, atomic_path, fingerprint, save_npy, space_for
from core.catalog.base import Catalog
from core.catalog.registry import open_catalog
from core.catalog.shared_categories import shared_class
from core.catalog.splits import Splits
from core.catalog.thumbnails import missing_thumbnails, thumbnails_dir, write_thumbnails
from core.config import Settings
from core.embedding.embedder import Embedder, Heads, Projection, describe_model, model_key
from core.embedding.ray_runner import RayRunner, remove_shards
from core.embedding.sequential_runner import SequentialRunner, map_rows, remove_partial
from core.locks import exclusive
from core.model.runs import RunDir
from core.photo.decode import decode_image
from core.photo.query_steps import QuerySteps, prepare_query
from core.progress import Progress, no_progress
from core.search import shared_space
from core.search.embedding_map import (
    DEFAULT_METHOD,
    DEFAULT_SAMPLE,
    EmbeddingMap,
    default_sample,
    load_or_compute_map,
    map_silhouettes,
    sample_rows,
)
from core.search.index import AnnoySearcher, ExactSearcher, HNSWSearcher, Neighbours, Searcher
from core.search.metrics import nearest
from core.search.served import BUDGET_MS, TARGET_RECALL, IndexChoice, choose_index
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
# Re-ranking by the predicted category: this many nearest items are re-ordered, that category's first, when the
# prediction is at least ``Settings.category_rerank`` sure (RERANK_SURE when a caller asks for it and it is off).
HEAD_AND_VOTE = "the fine-tuned head and the vote of the 10 nearest items, averaged"
RERANK_POOL = 50
RERANK_SURE = 0.5


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
    reranked_by: str | None = None  # the predicted category whose items were put first (``category_rerank``)

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
                 tag_probs: np.ndarray | None = None, served: tuple[IndexChoice, Searcher] | None = None):
        self.settings, self.catalog, self.embedder = settings, catalog, embedder
        self.embeddings, self.store = embeddings, store
        self.category_probs = category_probs  # (N, C) from a fine-tuned run's head; None for ImageNet features
        self._tag_probs = tag_probs  # (N, T) from its tag head; None without one
        self.exact = ExactSearcher(embeddings)
        self.annoy = annoy  # the card's index, built for every catalogue
        # What searches use unless told otherwise (settings.index); without a measured choice, Annoy as built.
        self.index_choice, self.index = served or (None, annoy)
        self.read_only = False  # served from a folder that is not written (``Workspace.open``)
        self.shared: SharedSpace | None = None  # the shared-category space blended into the vectors (open)

    # ---------------------------------------------------------------- building / loading
    @classmethod
    def open(cls, settings: Settings, progress: Progress = no_progress,
             features: np.ndarray | None = None) -> "Workspace":
        """``features``: the model's features of every item when the caller already has them (a heads-only run's
        trainer: its embedding layer over its cached backbone features), used instead of an embedding pass."""
        progress("Loading catalogue", 0, 1)
        catalog = open_catalog(settings)
        settings = settings.for_catalog(catalog.domain.input_size, len(catalog.fit_rows()))
        progress("Loading catalogue", 1, 1)
        progress("Loading model", 0, 1)
        embedder = Embedder.from_settings(settings)
        embedder.heads = serving_heads(settings, catalog, embedder)
        if embedder.heads is not None and embedder.heads.categories != catalog.categories:
            raise ValueError(f"Run {settings.run} was trained on other categories ({embedder.heads.categories}) "
                             f"than catalogue {catalog.name!r} has; pick it with the catalogue it was trained on.")
        progress("Loading model", 1, 1)
        store = Workspace.store_for(settings, catalog)
        # Photos of other styles: the group's discriminant and this catalogue's ImageNet features (Workspaces of
        # their own, each built under its own lock) before this store's lock is taken.
        shared = None
        # a run trained on the group's catalogues together (core.catalog.union) learned its own shared space: it
        # is served as it was measured, without the discriminant's blend (BENCHMARKS.md, issue 28)
        if shared_space.active(settings, catalog.name) and not union_member(settings, catalog):
            projection, reference = shared_space.load_or_fit(settings, catalog.name, Workspace, progress)
            shared = SharedSpace(projection, reference.embedder, settings.shared_weight, reference.embeddings)
        vectors_store = shared.store_in(store) if shared else store  # where the served vectors and index live
        read_only = settings.read_only or not store.writable() or not vectors_store.writable()
        if read_only:  # replicas on a read-only volume: load what is there, without a lock nobody could take
            missing = [name for name in built_names(settings) if not store.verified(name, full_check=False)]
            missing += [f"{vectors_store.path.name}/{name}" for name in SHARED_NAMES
                        if shared and not vectors_store.verified(name, full_check=False)]
            if missing:
                raise ReadOnlyArtifacts(
                    f"{store.path} is read-only and lacks {', '.join(missing)} for {catalog.name!r} with this "
                    "model: prepare it where the folder is writable (python -m core prepare), then serve the copy.")
        # One builder at a time per store (sessions, threads, CLI runs): the others wait, then load its result.
        with contextlib.nullcontext() if read_only else store.lock(notify=lambda message: progress(message, 0, 1)):
            # What is missing must fit before it starts, and a write that runs out part-way says where and how
            # much: an ordinary error for the caller, never a dead process (core.artifacts.reserve).
            with space_for(store.path, build_bytes(store, catalog, embedder, settings),
                           f"the embeddings and index of {catalog.name!r}"):
                embeddings = load_or_build_embeddings(store, catalog, embedder, settings, progress, features)
                if shared:
                    embeddings = load_or_build_shared_vectors(vectors_store, store, embeddings, shared, progress)
                annoy = load_or_build_annoy(vectors_store, embeddings, settings, progress)
                served = load_or_choose_index(vectors_store, embeddings, settings, annoy, progress, read_only)
        single_threaded_blas()
        heads = embedder.heads
        probs = np.load(store.file(PROBS), mmap_mode="r") if heads is not None else None
        tag_probs = np.load(store.file(TAG_PROBS), mmap_mode="r") if heads is not None and heads.tags else None
        workspace = cls(settings, catalog, embedder, embeddings, annoy, vectors_store, probs, tag_probs, served)
        workspace.read_only, workspace.shared = read_only, shared
        return workspace

    @staticmethod
    def store_for(settings: Settings, catalog: Catalog | None = None) -> ArtifactDir:
        """Where this catalogue + model's artifacts live, without loading the model."""
        catalog = catalog or open_catalog(settings)
        settings = settings.for_catalog(catalog.domain.input_size, len(catalog.fit_rows()))
        return ArtifactDir(Path(settings.artifacts_dir) / catalog.key / model_key(describe_model(settings)))

    @staticmethod
    def is_built(settings: Settings) -> bool:
        """Cheap check (sizes, not checksums) that opening will load rather than build."""
        catalog = open_catalog(settings)
        store = Workspace.store_for(settings, catalog)
        settings = settings.for_catalog(catalog.domain.input_size, len(catalog.fit_rows()))
        if not all(store.verified(name, full_check=False) for name in built_names(settings)):
            return False
        if shared_space.active(settings, catalog.name):  # the served vectors and index are in a shared folder
            folders = [ArtifactDir(f) for f in store.path.glob(f"shared-*-w{settings.shared_weight:g}")]
            store = next((f for f in folders if f.verified("embeddings.npy", full_check=False)), None)
            if store is None:
                return False
        choice = _recorded_choice(store, settings)
        return choice is not None and (choice.kind != "hnsw" or store.verified(hnsw_name(settings), full_check=False))

    # ---------------------------------------------------------------- querying
    @property
    def isolates(self) -> bool:
        """Whether photos are isolated by default (``settings.isolate``: on, off, or auto = a fine-tuned model on a
        catalogue of cut-outs, the one case where it was measured to help)."""
        mode = self.settings.isolate.lower()
        return mode == "on" or (mode == "auto" and bool(self.settings.run) and self.catalog.domain.cutout)

    @property
    def compared(self) -> Searcher:
        """The index the Search page's switch compares exact search with: the served one, or the Annoy index
        where exact search itself is served."""
        return self.annoy if self.index.name == "exact" else self.index

    def searcher(self, exact: bool | None = None) -> Searcher:
        """None: the served index (``self.index``); True: exact search; False: ``compared``, the approximate index
        (the served one, or Annoy where exact search is served)."""
        if exact is None:
            return self.index
        return self.exact if exact else self.compared

    def embed_photo(self, photo: Image.Image, isolate: bool | None = None, box: Box | None = None
                    ) -> tuple[QuerySteps, np.ndarray, np.ndarray | None]:
        """A photo → (its query steps, its unit vector, category probabilities if the model has a head)."""
        steps, features = self._convert_and_embed(photo, isolate, box)
        probs = self.embedder.heads.category_probs(features)[0] if self.embedder.heads is not None else None
        return steps, self._query_vector(steps, features), probs

    def _query_vector(self, steps: QuerySteps, features: np.ndarray) -> np.ndarray:
        """The query's unit vector in the space the catalogue's vectors are in (the shared space blended in)."""
        own = self.embedder.vectors(features)[0]
        return own if self.shared is None else self.shared.query(own, steps.query)

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

    def search(self, query: Image.Image | bytes, k: int = 10, exact: bool | None = None, category: str | None = None,
               isolate: bool | None = None, box: Box | None = None, words: str = "",
               words_mode: str = "rerank", rerank: bool | None = None) -> SearchResult:
        """Search with a photo (PIL image, or raw upload bytes, which are decoded safely); ``words`` re-rank its
        results or narrow them to the items that mention them (``words_mode``, see WORDS_MODES). ``exact``: None
        searches with the served index, True by brute force, False with the approximate one (``searcher``)."""
        started = time.perf_counter()
        photo = decode_image(query) if isinstance(query, bytes) else query
        steps, vector, probs = self.embed_photo(photo, isolate, box)
        prepared = time.perf_counter()
        result = self._search_vector(vector, k, exact, category, exclude=None, probs=probs, words=words,
                                     words_mode=words_mode, rerank=rerank)
        result.query_image, result.steps = steps.query_image, steps
        result.timings_ms = {"convert + embed": (prepared - started) * 1e3, **result.timings_ms}
        return result

    def search_item(self, row: int, k: int = 10, exact: bool | None = None, category: str | None = None,
                    words: str = "", words_mode: str = "rerank", rerank: bool | None = None) -> SearchResult:
        """Search with a catalogue item's stored vector; the item itself is left out of its results."""
        probs = np.asarray(self.category_probs[row]) if self.category_probs is not None else None
        return self._search_vector(np.asarray(self.embeddings[row]), k, exact, category, exclude=row, probs=probs,
                                   words=words, words_mode=words_mode, rerank=rerank)

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

    def _search_vector(self, vector: np.ndarray, k: int, exact: bool | None, category: str | None,
                       exclude: int | None, probs: np.ndarray | None = None, words: str = "",
                       words_mode: str = "rerank", rerank: bool | None = None) -> SearchResult:
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
        rerank_at = self.rerank_threshold(rerank)
        started = time.perf_counter()
        if narrow:  # the photo's nearest among the items that mention a word: k of them whenever k exist
            mentions = text > 0 if allowed is None else allowed & (text > 0)
            found = searcher.search(vector, k + extra, mentions)
        else:
            wanted = max(k, VOTE_NEIGHBOURS) if text is None else max(k * 10, WORDS_POOL)
            found = searcher.search(vector, max(wanted, RERANK_POOL if rerank_at else 0) + extra, allowed)
        elapsed = (time.perf_counter() - started) * 1e3
        found = _drop(found, exclude)
        ranked = found
        text_started = time.perf_counter()
        if text is not None and not narrow:  # re-rank the photo's candidates; ``score`` stays the similarity
            combined = found.scores + WORDS_WEIGHT * text[found.indices]
            order = np.argsort(-combined, kind="stable")
            ranked = Neighbours(found.indices[order], found.scores[order])
        if probs is not None and self.shared is None:
            shares, predicted_by = probs, self.embedder.heads.source
        else:  # without a trained head, the category is the similarity-weighted vote of the nearest neighbours
            unfiltered = allowed is None and not narrow
            votes = found if unfiltered else _drop(searcher.search(vector, VOTE_NEIGHBOURS + extra), exclude)
            shares, predicted_by = self.vote(votes), "vote of the 10 nearest items"
            if probs is not None:  # the shared space: a photo of another style is judged by both
                shares, predicted_by = self.head_and_vote(probs, shares), HEAD_AND_VOTE
        reranked_by = None
        if rerank_at and not narrow and float(np.max(shares)) >= rerank_at:
            # the head (or the vote) is sure: that category's items first, each group in the order it had
            reranked_by = self.catalog.categories[int(np.argmax(shares))]
            other = self.catalog.labels[ranked.indices] != int(np.argmax(shares))
            order = np.argsort(other, kind="stable")
            ranked = Neighbours(ranked.indices[order], ranked.scores[order])
        hits = self._hits(ranked.indices[:k], ranked.scores[:k], text, words)
        timings = {f"search ({searcher.name})": elapsed}
        if text is not None:
            timings[WORDS_METHOD] = words_ms + (time.perf_counter() - text_started) * 1e3
        method = searcher.name if text is None else f"{searcher.name} + words"
        result = SearchResult(None, hits, self._ranked(shares), method, predicted_by=predicted_by,
                              timings_ms=timings, vector=np.asarray(vector), reranked_by=reranked_by)
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

    def rerank_threshold(self, rerank: bool | None) -> float:
        """How sure a prediction must be for its category to go first (0: no re-ranking). None follows the settings;
        True asks for it at the settings' threshold, or RERANK_SURE where the settings leave it off."""
        if rerank is None:
            return self.settings.category_rerank
        return (self.settings.category_rerank or RERANK_SURE) if rerank else 0.0

    @staticmethod
    def head_and_vote(probs: np.ndarray, vote: np.ndarray) -> np.ndarray:
        """A photo's category where the shared space serves: the head's probabilities and the vote of its 10 nearest
        items, averaged. The head knows only its own catalogue's style: across styles it was right for 0.40 of the
        phone photos searched against the shop and 0.52 the other way, the vote 0.82 and 0.90, the average 0.81 and
        0.90; at home the average costs the shop 3 of 66 test items (95.5 % → 90.9 %). BENCHMARKS.md has them."""
        return 0.5 * np.asarray(probs) + 0.5 * np.asarray(vote)

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
        # a union run carved its validation rows from the union: the member's test split is what it never saw
        if self.settings.run and not union_member(self.settings, self.catalog):
            return Splits.of(self.catalog, RunDir.of(self.settings).config()).val
        return self.catalog.query_rows()

    def predict(self, query: Image.Image | int) -> Prediction:
        """Category and tag probabilities for a photo or a catalogue row (what the Tags page shows)."""
        if isinstance(query, Image.Image):
            steps, features = self._convert_and_embed(query)
            if self.embedder.heads is not None:
                probs = self.embedder.heads.category_probs(features)[0]
                if self.shared is not None:  # as the Search page predicts a photo's category (head_and_vote)
                    vote = self.vote(self.index.search(self._query_vector(steps, features), VOTE_NEIGHBOURS))
                    probs = self.head_and_vote(probs, vote)
                return Prediction(probs, self.embedder.heads.tag_probs(features)[0], steps.query_image, steps)
            vector = self._query_vector(steps, features)
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
        # a file lock: the CLI's prepare and the app's sessions and background thread all take turns on it; a
        # read-only store writes no map (it is computed in memory where missing), so there is nothing to guard
        if self.read_only:
            return contextlib.nullcontext()
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
            "read_only": self.read_only,
            "index": self.index.name,  # what serves (settings.index), and how it measured when it was chosen
            "index_choice": self.index_choice.as_dict() if self.index_choice else None,
            "index_summary": self.index_choice.summary() if self.index_choice else None,
            "shared_space": self.shared.describe() if self.shared else None,
        }


SHARED_NAMES = ("embeddings.npy",)


@dataclass(frozen=True)
class SharedSpace:
    """The group's discriminant, the reference (ImageNet) embedder that feeds it, and the weight it gets."""

    projection: shared_space.SharedProjection
    reference: Embedder
    weight: float
    reference_vectors: np.ndarray  # the catalogue's own ImageNet vectors (the reference Workspace's)

    def store_in(self, store: ArtifactDir) -> ArtifactDir:
        """The served vectors and their index live beside the catalogue's own vectors, keyed by the projection and
        the weight (another weight, or a refitted projection, is another folder)."""
        return ArtifactDir(store.path / f"shared-{self.projection.key}-w{self.weight:g}")

    def query(self, own: np.ndarray, domain_query: np.ndarray) -> np.ndarray:
        reference = self.reference.vectors(self.reference.features(domain_query[None]))
        return shared_space.blend(own, self.projection(reference), self.weight)[0]

    def describe(self) -> dict:
        return {"weight": self.weight, "fitted_on": list(self.projection.fitted_on),
                "classes": len(self.projection.classes), "key": self.projection.key,
                "reference_model": self.reference.key}


def load_or_build_shared_vectors(store: ArtifactDir, own_store: ArtifactDir, own: np.ndarray, shared: SharedSpace,
                                 progress: Progress = no_progress) -> np.ndarray:
    """The catalogue's served vectors: its own (``own_store``'s) and the discriminant's, blended, in ``store`` (the
    shared folder). Keyed by the own vectors' checksum; the projection's key covers the reference vectors."""
    name = "embeddings.npy"
    built_from = fingerprint({"own": own_store.checksum(name) or "", "reference": shared.reference.key,
                              "projection": shared.projection.key, "weight": shared.weight})
    if store.verified(name) and store.meta().get("files", {}).get(name, {}).get("built_from") == built_from:
        try:
            vectors = np.load(store.file(name), mmap_mode="r")
            if vectors.shape[0] == len(own):
                return vectors
        except (OSError, ValueError):
            pass  # recorded but unreadable: made again below
    progress("Blending in the shared-category space", 0, 1)
    store.path.mkdir(parents=True, exist_ok=True)
    vectors = shared_space.blend(np.asarray(own), shared.projection(np.asarray(shared.reference_vectors)),
                                 shared.weight)
    save_npy(store.file(name), vectors)
    store.record(name, shape=list(vectors.shape), built_from=built_from, weight=shared.weight,
                 fitted_on=list(shared.projection.fitted_on))
    progress("Blending in the shared-category space", 1, 1)
    return np.load(store.file(name), mmap_mode="r")


def _drop(found: Neighbours, row: int | None) -> Neighbours:
    if row is None:
        return found
    keep = found.indices != row
    return Neighbours(found.indices[keep], found.scores[keep])


def load_or_build_embeddings(store: ArtifactDir, catalog: Catalog, embedder: Embedder, settings: Settings,
                             progress: Progress = no_progress, known: np.ndarray | None = None) -> np.ndarray:
    """Sets ``embedder.projection`` as a side effect: the query path must project exactly like the catalogue.
    ``known``: the model's features of every item, already computed (else a runner embeds the catalogue)."""
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
    started = time.perf_counter()
    if known is not None and known.shape == (len(catalog), embedder.feature_dim):
        runner, features = None, np.asarray(known, np.float32)
    else:
        runner = catalogue_runner(embedder, settings, progress)
        features = runner.run(catalog.pixels, out=partial)
    embedder.projection = None
    if embedder.pca_dim:
        embedder.projection = Projection.fit(features, embedder.pca_dim, whiten=embedder.pca_whiten,
                                             seed=settings.seed, rows=catalog.fit_rows())
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
    resumed_from = runner.resumed_from if runner is not None else 0
    embedded = len(embeddings) - resumed_from
    store.record(name, shape=list(embeddings.shape), seconds=round(seconds, 2), resumed_from=resumed_from,
                 images_per_s=round(embedded / max(seconds, 1e-9), 1), inference=embedder.runtime,
                 runner=settings.runner if runner is not None else "the trainer's features of every item")
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


def built_names(settings: Settings) -> list[str]:
    """The files a served store holds."""
    names = ["embeddings.npy", annoy_name(settings)] + (["projection.npz"] if projection_dim(settings) else [])
    if settings.run:
        names += [PROBS] + ([TAG_PROBS] if RunDir.of(settings).info().get("tags") else [])
    return names


def union_member(settings: Settings, catalog: Catalog) -> bool:
    """Whether the settings' run was trained on several catalogues (core.catalog.union), ``catalog`` among them."""
    return bool(settings.run) and catalog.key in RunDir.of(settings).info().get("members", {}).values()


def serving_heads(settings: Settings, catalog: Catalog, embedder: Embedder) -> Heads | None:
    """The heads that serve ``catalog``: the run's own, or for a run trained on several catalogues
    (core.catalog.union) and served on one of them, that member's own head where the run fitted one, else its
    shared-class head mapped back to the member's categories (its embedding layer gives the vectors either way)."""
    if embedder.heads is None or not union_member(settings, catalog):
        return embedder.heads
    own = embedder.member_heads.get(catalog.name)
    if own is None or sorted(catalog.categories) != own.categories:
        return member_heads(embedder.heads, catalog)
    return _in_order(own, catalog.categories)


def _in_order(head: Heads, categories: list[str]) -> Heads:
    """A head's rows put in the catalogue's category order (labels index ``categories``)."""
    rows = [head.categories.index(c) for c in categories]
    return dataclasses.replace(head, categories=list(categories), category_w=head.category_w[rows],
                               category_b=head.category_b[rows])


def member_heads(heads: Heads, catalog: Catalog) -> Heads:
    """A union run's shared-class head as a head over a member catalogue's own categories: each category gets its
    shared class's probability times its share of that class among the member's train items (add-one smoothed),
    so "T-Shirt" and "Polo" split the class "tee" the way the garment photos do. The union's tag head serves as it
    is: its vocabulary holds every member's tags."""
    in_train = (catalog.items["split"] == "train").to_numpy()
    counts = catalog.items[in_train if in_train.any() else slice(None)]["category"].astype(str).value_counts()
    classes = [shared_class(catalog.name, c) for c in catalog.categories]
    own = np.array([counts.get(c, 0) + 1.0 for c in catalog.categories])
    per_class = {k: sum(own[i] for i, c in enumerate(classes) if c == k) for k in set(classes)}
    prior = np.array([own[i] / per_class[c] for i, c in enumerate(classes)])
    return heads.mapped(catalog.categories, classes, prior,
                        "the shared-class head of a run trained on several catalogues, mapped to this "
                        "catalogue's categories")


def build_bytes(store: ArtifactDir, catalog: Catalog, embedder: Embedder, settings: Settings) -> int:
    """About how many bytes building what ``store`` lacks will write (0 when it lacks nothing): checked against the
    free space before a build starts. The resumable features file (less what an interrupted pass already
    allocated), the vectors and head outputs, each written beside its final name first, and the Annoy forest
    (measured: 1.34 × the vectors for 32 trees at 256 dimensions, 1.16 × at 512; estimated 3 × for 32 trees)."""
    if all(store.verified(name, full_check=False) for name in built_names(settings)):
        return 0
    n, dim = len(catalog), embedder.pca_dim or embedder.feature_dim
    partial = store.file("features.partial.npy")
    allocated = partial.stat().st_blocks * 512 if partial.is_file() else 0
    heads = embedder.heads
    outputs = len(heads.categories) + len(heads.tags or []) if heads is not None else 0
    annoy = n * (dim * 4 + 16) * (1 + settings.n_trees / 16)
    return int(max(0, n * embedder.feature_dim * 4 - allocated) + 2 * n * (dim + outputs) * 4 + annoy + (1 << 20))


def _built_from_these_embeddings(store: ArtifactDir, name: str) -> bool:
    """An index file is trusted when it is what meta.json recorded and was built from the embeddings now there."""
    return store.verified(name) and store.meta()["files"][name].get("embeddings") == store.checksum("embeddings.npy")


def annoy_name(settings: Settings) -> str:
    return f"annoy-{settings.n_trees}trees.ann"


def load_or_build_annoy(store: ArtifactDir, embeddings: np.ndarray, settings: Settings,
                        progress: Progress = no_progress) -> AnnoySearcher:
    name = annoy_name(settings)
    built_from = store.checksum("embeddings.npy")
    if _built_from_these_embeddings(store, name):
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


def hnsw_name(settings: Settings) -> str:
    return f"hnsw-M{settings.hnsw_m}-efc{settings.hnsw_ef_construction}.bin"


def load_or_build_hnsw(store: ArtifactDir, embeddings: np.ndarray, settings: Settings,
                       progress: Progress = no_progress) -> HNSWSearcher:
    """The HNSW graph, kept like the Annoy index: written atomically, recorded with the embeddings it was built
    from, checked on every load and rebuilt when it does not match. Built only where it is served."""
    name = hnsw_name(settings)
    built_from = store.checksum("embeddings.npy")
    if _built_from_these_embeddings(store, name):
        try:
            return HNSWSearcher.load(store.file(name), embeddings, settings.hnsw_ef)
        except (OSError, ValueError, RuntimeError):
            pass  # verified but unloadable: rebuild below
    progress("Building HNSW graph", 0, 1)
    started = time.perf_counter()
    hnsw = HNSWSearcher.build(embeddings, settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef,
                              seed=settings.seed)
    seconds = time.perf_counter() - started
    with atomic_path(store.file(name)) as tmp:
        hnsw.save(tmp)
    store.record(name, m=settings.hnsw_m, ef_construction=settings.hnsw_ef_construction, seconds=round(seconds, 2),
                 embeddings=built_from)
    progress("Building HNSW graph", 1, 1)
    return hnsw


def _policy(settings: Settings) -> dict:
    """Every setting the choice of index reads (core/search/served.py)."""
    return {"index": settings.index, "exact_max_items": settings.exact_max_items, "search_k": settings.search_k,
            "n_trees": settings.n_trees, "hnsw_m": settings.hnsw_m, "hnsw_ef": settings.hnsw_ef,
            "hnsw_ef_construction": settings.hnsw_ef_construction, "target_recall": TARGET_RECALL,
            "budget_ms": BUDGET_MS, "seed": settings.seed}


def index_choice_name(settings: Settings) -> str:
    """One record per policy, so sessions with other index settings on the same store keep their own."""
    return f"index-{settings.index}-{fingerprint(_policy(settings), 8)}.json"


def _choice_inputs(store: ArtifactDir, settings: Settings) -> dict:
    """What a recorded choice depends on: the vectors, the Annoy file it measured, and the policy's settings.
    Another value of any of them chooses (and measures) again."""
    return {"embeddings": store.checksum("embeddings.npy"), "annoy": store.checksum(annoy_name(settings)),
            **_policy(settings)}


def _recorded_choice(store: ArtifactDir, settings: Settings, full_check: bool = False) -> IndexChoice | None:
    """The choice on disk if it is intact and was made from these inputs, else None."""
    name = index_choice_name(settings)
    entry = store.meta().get("files", {}).get(name, {})
    if entry.get("inputs") != _choice_inputs(store, settings) or not store.verified(name, full_check):
        return None
    try:
        return IndexChoice.from_dict(json.loads(store.file(name).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_or_choose_index(store: ArtifactDir, embeddings: np.ndarray, settings: Settings, annoy: AnnoySearcher,
                         progress: Progress = no_progress, read_only: bool = False) -> tuple[IndexChoice, Searcher]:
    """The served index (``settings.index``, core/search/served.py) and its measured figures: loaded when a choice
    made from the same inputs is on disk, chosen and measured (a few seconds; HNSW's build where HNSW is served)
    otherwise. An HNSW graph rebuilt since its choice was measured is measured again, so the recorded recall is
    always the served graph's."""
    if read_only:  # a choice made elsewhere is used; without one it is measured (and any graph built) in memory
        return _choose_in_memory(store, embeddings, settings, annoy, progress)
    choice = _recorded_choice(store, settings, full_check=True)
    if choice is not None:
        if choice.kind == "exact":
            return choice, ExactSearcher(embeddings)
        if choice.kind == "annoy":
            return choice, AnnoySearcher(annoy.index, int(choice.search_k), annoy.fallback, annoy.path)
        graph = store.checksum(hnsw_name(settings))
        hnsw = load_or_build_hnsw(store, embeddings, settings, progress)
        if store.checksum(hnsw_name(settings)) == graph:
            hnsw.ef = int(choice.ef)
            return choice, hnsw
    choice, searcher = choose_index(embeddings, settings, annoy,
                                    lambda: load_or_build_hnsw(store, embeddings, settings, progress), progress)
    name = index_choice_name(settings)
    with atomic_path(store.file(name)) as tmp:
        tmp.write_text(json.dumps(choice.as_dict(), indent=2))
    store.record(name, inputs=_choice_inputs(store, settings), kind=choice.kind)
    return choice, searcher


def _choose_in_memory(store: ArtifactDir, embeddings: np.ndarray, settings: Settings, annoy: AnnoySearcher,
                      progress: Progress = no_progress) -> tuple[IndexChoice, Searcher]:
    """The served index on a store that cannot be written: the recorded choice where one is there (with its HNSW
    graph, if intact), else chosen and measured now, kept in memory only."""
    choice = _recorded_choice(store, settings, full_check=True)
    if choice is not None and choice.kind == "exact":
        return choice, ExactSearcher(embeddings)
    if choice is not None and choice.kind == "annoy":
        return choice, AnnoySearcher(annoy.index, int(choice.search_k), annoy.fallback, annoy.path)
    name = hnsw_name(settings)

    def graph() -> HNSWSearcher:
        if _built_from_these_embeddings(store, name):
            return HNSWSearcher.load(store.file(name), embeddings, settings.hnsw_ef)
        return HNSWSearcher.build(embeddings, settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef,
                                  seed=settings.seed)

    if choice is not None:
        hnsw = graph()
        hnsw.ef = int(choice.ef)
        return choice, hnsw
    return choose_index(embeddings, settings, annoy, graph, progress)
