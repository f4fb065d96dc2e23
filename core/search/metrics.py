"""Retrieval metrics, defined once so the benchmark, the app and the tests agree on them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.text.tags import DEFAULT_THRESHOLD, decide


def recall_at_k(approx: Sequence[int], exact: Sequence[int], k: int) -> float:
    """Share of the true k nearest neighbours that the approximate search also returned in its top k."""
    truth = set(list(exact)[:k])
    if not truth:
        return 1.0
    return len(truth.intersection(list(approx)[:k])) / len(truth)


def precision_at_k(neighbour_labels: Sequence[int] | np.ndarray, query_label: int, k: int) -> float:
    """Share of the k neighbours (the query itself already excluded) that have the query's category.

    Fewer than k neighbours count as misses: a search that returns less is not rewarded for it."""
    labels = np.asarray(neighbour_labels)[:k]
    return float(np.sum(labels == query_label)) / k


def average_precision_at_k(neighbour_labels: Sequence[int] | np.ndarray, query_label: int, k: int,
                           n_relevant: int) -> float:
    """AP@k: the mean of precision@i over the ranks i ≤ k that hold a relevant item, divided by
    min(k, n_relevant) so that a list which misses relevant items it could have shown is penalised."""
    hits = np.asarray(neighbour_labels)[:k] == query_label
    if n_relevant <= 0:
        return 0.0
    precision_at_hits = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hits.sum() / min(k, n_relevant))


def top_k_accuracy(probabilities: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose true label is among the k highest scores and has a score above zero (ties broken
    towards the lower index)."""
    if len(labels) == 0:
        return 0.0
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    k = min(k, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    # A category with zero probability is not a guess (a neighbour vote gives most categories none).
    scored = probabilities[np.arange(len(labels)), labels] > 0
    return float(np.mean((top == labels[:, None]).any(axis=1) & scored))


def tag_f1(true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Multi-label F1 three ways, as in the source material: micro (every decision counts once), macro (every tag
    counts once), samples (every item counts once)."""
    true, predicted = np.asarray(true).astype(bool), np.asarray(predicted).astype(bool)
    if true.ndim == 1:
        true, predicted = true[:, None], predicted[:, None]
    # Counted here rather than by scikit-learn, which takes a one-tag vocabulary (the garment photos' "kids") for a
    # binary problem and refuses the samples average. As there: an item with no tags that is predicted to have none
    # is right (samples average: 1); a tag that never occurs and is never predicted earns nothing (macro: 0).
    hits, misses = (true & predicted), (true ^ predicted)

    def f1(tp, wrong, empty: float):
        denominator = 2 * tp + wrong
        return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), empty)

    return {"tag_f1_micro": float(f1(hits.sum(), misses.sum(), 0.0)),
            "tag_f1_macro": float(np.mean(f1(hits.sum(axis=0), misses.sum(axis=0), 0.0))) if true.shape[1] else 0.0,
            "tag_f1_samples": float(np.mean(f1(hits.sum(axis=1), misses.sum(axis=1), 1.0))) if len(true) else 0.0}


TAG_THRESHOLDS = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))


def best_tag_threshold(true: np.ndarray, probabilities: np.ndarray, default: float = DEFAULT_THRESHOLD,
                       families: list[str] | None = None) -> tuple[float, float]:
    """(threshold, micro-F1) of the one threshold that maximises micro-F1 on these items, ties going to the one
    nearest ``default``.

    A tag head's probabilities are not calibrated the same way on every catalogue (a few hundred shop items, tens of
    tags per item), so 0.5 is a guess; the run picks its threshold on its validation split and serves it."""
    true, probabilities = np.asarray(true).astype(bool), np.asarray(probabilities)
    if true.size == 0:
        return default, 0.0
    # decided as everywhere else (core.text.tags.decide: an exclusive family is one choice)
    scored = [(tag_f1(true, decide(probabilities, families, t))["tag_f1_micro"], -abs(t - default), float(t))
              for t in TAG_THRESHOLDS]
    f1, _, threshold = max(scored)
    return threshold, f1


def nearest(queries: np.ndarray, gallery: np.ndarray, k: int, query_rows: np.ndarray | None = None,
            chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k (unit vectors) as (indices, scores), best first; a query's own row in the gallery
    (``query_rows``) is left out. Chunked, so memory stays at chunk × gallery floats."""
    depth = min(k, len(gallery) - (1 if query_rows is not None else 0))
    gallery = np.asarray(gallery, np.float32)
    indices = np.zeros((len(queries), max(depth, 0)), np.int64)
    scores = np.zeros((len(queries), max(depth, 0)), np.float32)
    if depth <= 0:
        return indices, scores
    for start in range(0, len(queries), chunk):
        block = np.asarray(queries[start : start + chunk], dtype=np.float32) @ gallery.T
        if query_rows is not None:
            block[np.arange(len(block)), query_rows[start : start + chunk]] = -np.inf
        top = np.argpartition(-block, depth - 1, axis=1)[:, :depth]
        top_scores = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        indices[start : start + len(block)] = np.take_along_axis(top, order, axis=1)
        scores[start : start + len(block)] = np.take_along_axis(top_scores, order, axis=1)
    return indices, scores


def retrieval_scores(neighbour_labels: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                     k: int = 10, self_in_gallery: bool = True) -> dict[str, float]:
    """Mean precision@k and mAP@k over queries, from each query's ranked neighbour labels."""
    counts = np.bincount(np.asarray(gallery_labels), minlength=int(np.max(query_labels)) + 1)
    precisions = [precision_at_k(found, label, k) for found, label in zip(neighbour_labels, query_labels, strict=True)]
    # a query whose category has no other item in the gallery has nothing to find: it has no AP
    aps = [average_precision_at_k(found, label, k, counts[label] - int(self_in_gallery))
           for found, label in zip(neighbour_labels, query_labels, strict=True)
           if counts[label] - int(self_in_gallery) > 0]
    return {f"precision_at_{k}": float(np.mean(precisions)) if precisions else 0.0,
            f"map_at_{k}": float(np.mean(aps)) if aps else 0.0}


def evaluate_workspace(ws, k: int = 10) -> dict:
    """The test-split figures of the model a Workspace serves (``python -m core evaluate``): category top-1/3/5
    (from the fine-tuned head, or for ImageNet features the vote of the 10 nearest items), and precision@k and
    mAP@k of exact search over the whole catalogue with each test item as the query (itself left out)."""
    rows, labels = ws.catalog.query_rows(), ws.catalog.labels
    indices, scores = nearest(np.asarray(ws.embeddings)[rows], ws.embeddings, max(k, 10), query_rows=rows)
    if ws.category_probs is not None:
        probs = np.asarray(ws.category_probs)[rows]
        classifier = ws.embedder.heads.source.removeprefix("the ") if ws.embedder.heads else "fine-tuned category head"
    else:
        probs, classifier = ws.votes(indices, scores), "similarity-weighted vote of the 10 nearest items"
    tag_probs = ws.tag_probs()
    tags = None if tag_probs is None else (ws.tag_truth()[rows], ws.decide_tags(np.asarray(tag_probs)[rows]))
    return {"catalog": ws.catalog.name, "model_key": ws.embedder.key, "run": ws.settings.run or None,
            "split": "test" if (ws.catalog.items["split"].to_numpy() == "test").any() else "all",
            "queries": len(rows), "classifier": classifier,
            **({"tag_threshold": ws.tag_threshold} if tag_probs is not None else {}),
            **quality_figures(probs, labels[rows], labels[indices[:, :k]], labels, tags, k)}


def quality_figures(probs: np.ndarray, labels: np.ndarray, neighbour_labels: np.ndarray, gallery_labels: np.ndarray,
                    tags: tuple[np.ndarray, np.ndarray] | None = None, k: int = 10) -> dict[str, float]:
    """The figures every evaluation reports, defined once for validation (per epoch) and test: top-1/3/5 of the
    category probabilities, precision@k and mAP@k of the neighbours, tag F1 of (truth, predicted) when given."""
    out = {f"top{n}": top_k_accuracy(probs, labels, n) for n in (1, 3, 5)}
    out.update(retrieval_scores(neighbour_labels, labels, gallery_labels, k))
    if tags is not None:
        out.update(tag_f1(*tags))
    return out


def label_report(true: np.ndarray, predicted: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per label: categories (1-D label arrays) or tags (2-D 0/1 matrices)."""
    from sklearn.metrics import precision_recall_fscore_support

    true, predicted = np.asarray(true), np.asarray(predicted)
    if not names:
        return pd.DataFrame({"label": [], "precision": [], "recall": [], "f1": [], "support": []})
    if true.ndim == 2:
        # Counted here: scikit-learn reads a one-column 0/1 matrix (the garment photos' one tag) as binary labels and
        # returns two rows for one name. Each tag is its own "present" class, whatever the vocabulary's size.
        true, predicted = true.astype(bool), predicted.astype(bool)
        hits, guessed, support = (true & predicted).sum(axis=0), predicted.sum(axis=0), true.sum(axis=0)
        precision = np.where(guessed > 0, hits / np.maximum(guessed, 1), 0.0)
        recall = np.where(support > 0, hits / np.maximum(support, 1), 0.0)
        f1 = np.where(guessed + support > 0, 2 * hits / np.maximum(guessed + support, 1), 0.0)
    else:
        precision, recall, f1, support = precision_recall_fscore_support(
            true, predicted, labels=list(range(len(names))), average=None, zero_division=0)
    return pd.DataFrame({"label": names, "precision": precision, "recall": recall, "f1": f1,
                         "support": support.astype(int)})


def confusion_table(true: np.ndarray, predicted: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Counts of (true category, predicted category): rows are what an item is, columns what it was taken for,
    every category in ``names`` order on both axes (a category never predicted still gets its column)."""
    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(np.asarray(true), np.asarray(predicted), labels=list(range(len(names))))
    return pd.DataFrame(counts, index=pd.Index(names, name="category"), columns=pd.Index(names, name="taken for"))


def row_shares(counts: pd.DataFrame) -> pd.DataFrame:
    """Each row as shares of its total (rows normalised; an empty row stays 0)."""
    totals = counts.sum(axis=1).replace(0, 1)
    return counts.div(totals, axis=0)
