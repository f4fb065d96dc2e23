"""Descriptive tags: the multi-label binarisation every tag consumer shares (training, the Workspace, metrics).

A catalogue has tags when its items table has a ``tags`` column holding a list of strings per item.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def item_tags(items: pd.DataFrame) -> list[list[str]] | None:
    if "tags" not in items.columns:
        return None
    return [[str(t) for t in tags] if tags is not None else [] for tags in items["tags"]]


def vocabulary(items: pd.DataFrame) -> list[str]:
    """Every tag used, sorted; empty when the catalogue has no tags."""
    tags = item_tags(items)
    return sorted({t for row in tags for t in row}) if tags else []


def binarize(items: pd.DataFrame, vocab: list[str]) -> np.ndarray:
    """float32 (N, len(vocab)) with 1 where an item carries the tag; tags outside ``vocab`` are ignored."""
    from sklearn.preprocessing import MultiLabelBinarizer

    tags = item_tags(items) or [[] for _ in range(len(items))]
    if not vocab:
        return np.zeros((len(items), 0), np.float32)
    binarizer = MultiLabelBinarizer(classes=vocab)
    known = set(vocab)
    return binarizer.fit_transform([[t for t in row if t in known] for row in tags]).astype(np.float32)
