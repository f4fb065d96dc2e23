"""Vector arithmetic that the embedder, the indexes and the benchmarks share (kept below all of them)."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows to unit length (cosine similarity becomes a dot product); all-zero rows stay zero."""
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
