"""Which catalogue rows a fine-tuning run trains on, validates on and is tested on.

Both the trainer and the workspace (the Tags page's per-label figures) need the same rows, so they live here:
the validation rows are carved from the catalogue's train split with the recipe's seed, whole groups at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.catalog.base import Catalog
from core.config import TrainConfig


@dataclass(frozen=True)
class Splits:
    """Row numbers into the catalogue. ``val`` is carved from the train split with the recipe's seed; the test
    split is only ever used for the final figures."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @classmethod
    def of(cls, catalog: Catalog, config: TrainConfig) -> "Splits":
        split = catalog.items["split"].to_numpy()
        train = np.flatnonzero(split == "train")
        if len(train) < 4:
            raise ValueError(f"The catalogue has {len(train)} train items; fine-tuning needs at least 4.")
        rng = np.random.default_rng(config.seed)
        n_val = max(1, round(len(train) * config.val_fraction))
        if "group" not in catalog.items.columns:
            shuffled = rng.permutation(train)
            return cls(np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val]), np.flatnonzero(split == "test"))
        # whole groups go to validation (colour variants of one product never straddle it), until it is full
        groups = catalog.items["group"].astype(str).to_numpy()[train]
        names, counts = np.unique(groups, return_counts=True)
        order = rng.permutation(len(names))
        taken = order[: int(np.searchsorted(np.cumsum(counts[order]), n_val)) + 1]
        in_val = np.isin(groups, names[taken])
        if in_val.all():
            raise ValueError("Every train item is in one group; fine-tuning needs at least two groups.")
        return cls(train[~in_val], train[in_val], np.flatnonzero(split == "test"))
