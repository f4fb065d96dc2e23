"""Vectors that keep other photo styles: a discriminant in shared garment classes, fitted on every catalogue of a
group, blended into the served vectors.

A model fitted on one catalogue learns that catalogue's style: the shop's fine-tuned head sends a phone photo of a
T-shirt anywhere but its Tees (the cross-domain benchmark: 0.36 of the top 10 right), and a PCA fitted on a few
hundred items keeps only their span. A linear discriminant over the backbone's ImageNet features, fitted on the train
splits of both built-in catalogues with one label per garment (``core.catalog.shared_categories.SHARED_CLASS``),
learns which directions tell garments apart in either style. The served vectors are the catalogue's own unit vectors
and the discriminant's, concatenated with weights sqrt(1 - w) and sqrt(w), so a cosine between two of them is
(1 - w) × the own cosine + w × the discriminant's: the fine-tuned model's precision at home is kept, and photos of
another style find their garment. Measured in BENCHMARKS.md ("Across photo styles").

The discriminant is fitted once per group and cached, keyed by every catalogue's key and features (change one,
it is refitted); each catalogue's ImageNet features come from an ordinary Workspace of raw features (no PCA).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.artifacts import ArtifactDir, atomic_path, fingerprint
from core.catalog.registry import open_catalog
from core.catalog.shared_categories import SHARED_CLASS, shared_class, shared_group
from core.config import Settings
from core.progress import Progress, no_progress
from core.vectors import l2_normalize

VERSION = 1  # bump when the fit changes: cached projections are refitted


@dataclass(frozen=True)
class SharedProjection:
    """``(x - mean) @ components``, unit length: the discriminant's space for ImageNet features."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (d, k)
    classes: tuple[str, ...]
    key: str  # what it was fitted on (the cache key)
    fitted_on: tuple[str, ...]  # catalogue names

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return l2_normalize((np.asarray(features, np.float32) - self.mean) @ self.components)

    @classmethod
    def fit(cls, features: np.ndarray, labels: list[str], key: str, fitted_on: tuple[str, ...]) -> "SharedProjection":
        """Shrinkage LDA (scikit-learn's eigen solver, Ledoit-Wolf): stable with ~1,300 dimensions and a few thousand
        items, where a plain within-class covariance is singular."""
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(features, labels)
        k = min(len(lda.classes_) - 1, features.shape[1])
        # the eigen solver's transform is x @ scalings (no centring): kept as measured
        return cls(np.zeros(features.shape[1], np.float32), lda.scalings_[:, :k].astype(np.float32),
                   tuple(str(c) for c in lda.classes_), key, fitted_on)

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, mean=self.mean, components=self.components, classes=np.array(self.classes),
                 fitted_on=np.array(self.fitted_on), key=np.array(self.key))
        path.write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> "SharedProjection":
        with np.load(path) as data:
            return cls(data["mean"], data["components"], tuple(data["classes"].tolist()), str(data["key"]),
                       tuple(data["fitted_on"].tolist()))


def active(settings: Settings, catalogue: str) -> bool:
    """Whether ``catalogue`` is served with the shared space: a weight is set and it belongs to a group."""
    return settings.shared_weight > 0 and len(shared_group(catalogue)) > 1


def reference_settings(settings: Settings, catalogue: str) -> Settings:
    """The Workspace whose vectors feed the discriminant: the same backbone's raw ImageNet features (no PCA, no run,
    no shared space of its own)."""
    return settings.replace(catalog=catalogue, run="", pca_dim=0, shared_weight=0.0)


def blend(own: np.ndarray, shared: np.ndarray, weight: float) -> np.ndarray:
    """Unit vectors whose cosine is (1 - weight) × the own cosine + weight × the shared one."""
    own, shared = np.atleast_2d(own), np.atleast_2d(shared)
    return np.hstack([np.sqrt(1 - weight) * own, np.sqrt(weight) * shared]).astype(np.float32)


def load_or_fit(settings: Settings, catalogue: str, workspaces: Any, progress: Progress = no_progress,
                ) -> tuple[SharedProjection, Any]:
    """The group's discriminant (cached under ``<artifacts>/shared-projections/``) and ``catalogue``'s reference
    Workspace. ``workspaces`` is the Workspace class, passed in because it imports this module (an import back would
    be a circle). Only this catalogue's reference is opened; the others' are read from their stores (and built
    first where missing), so serving one catalogue does not load the other's model."""
    own = workspaces.open(reference_settings(settings, catalogue), progress)
    members = {}
    for name in shared_group(catalogue):
        if name == catalogue:
            members[name] = (own.catalog, own.store)
            continue
        member = reference_settings(settings, name)
        if not workspaces.is_built(member):
            workspaces.open(member, progress)
        members[name] = (open_catalog(member), workspaces.store_for(member))
    inputs = {name: {"catalog": catalog.key, "store": store.path.name,
                     "embeddings": store.checksum("embeddings.npy") or ""}
              for name, (catalog, store) in members.items()}
    key = fingerprint({"version": VERSION, "catalogues": inputs, "classes": SHARED_CLASS})
    store = ArtifactDir(Path(settings.artifacts_dir) / "shared-projections")
    name = f"discriminant-{key}.npz"
    if store.verified(name):
        try:
            return SharedProjection.load(store.file(name)), own
        except (OSError, ValueError, KeyError):
            pass  # recorded but unreadable: fitted again below
    progress("Fitting the shared-category projection", 0, 1)
    features, labels = [], []
    for group_name, (catalog, member_store) in members.items():
        rows = catalog.fit_rows()
        features.append(np.asarray(np.load(member_store.file("embeddings.npy"), mmap_mode="r")[rows]))
        names = catalog.items["category"].astype(str).to_numpy()[rows]
        labels.extend(shared_class(group_name, n) for n in names)
    projection = SharedProjection.fit(np.vstack(features), labels, key, tuple(members))
    if store.writable():  # a read-only folder serves what it holds; a projection fitted here is used, not kept
        with store.lock():
            with atomic_path(store.file(name)) as tmp:
                projection.save(tmp)
            store.record(name, fitted_on=list(members), items=int(sum(len(f) for f in features)),
                         classes=len(projection.classes))
    progress("Fitting the shared-category projection", 1, 1)
    return projection, own
