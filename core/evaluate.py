"""Retrieval metrics, defined once so the benchmark, the app and the tests agree on them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
