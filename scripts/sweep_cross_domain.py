"""Which vectors carry a photo across styles: the levers of issue 26 measured on the cross-domain benchmark's queries.

    .venv/bin/python scripts/sweep_cross_domain.py [--photos ../shared/photos]

For each target catalogue it embeds every query once with the served (fine-tuned) model and with ImageNet features
(raw pooled features, no projection), then scores, with exact search and the benchmark's rule (top-10 share in an
accepted category, ``core.bench.cross_domain``):
- each model alone; blends of the two (cosine = (1 - w) · fine-tuned + w · ImageNet, by concatenating the unit
  vectors scaled by sqrt(1 - w) and sqrt(w));
- re-ranking by the served head's predicted category where it is sure (≥ 0.5);
- a linear discriminant in shared classes fitted on both catalogues' train splits (ImageNet features), alone and
  blended 50/50 with the raw features: what a user with a shop catalogue and a folder of customer photos can fit.
Each variant also gets the target catalogue's own test-split precision@10 (its held-out items against the rest), so
a lever that helps across styles and hurts at home shows it. Prints one JSON object; BENCHMARKS.md holds the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.bench.cross_domain import (  # noqa: E402
    AS_TAKEN,
    CROPPED,
    CUTOUT,
    K,
    catalogue_queries,
    model_settings,
    smoke_queries,
)
from core.catalog.registry import open_catalog  # noqa: E402
from core.catalog.shared_categories import GARMENT_PHOTOS, SHOP  # noqa: E402
from core.config import Settings  # noqa: E402
from core.progress import tqdm_progress  # noqa: E402
from core.search.workspace import Workspace  # noqa: E402
from core.vectors import l2_normalize  # noqa: E402

# One shared class per category, for the discriminant only (the benchmark scores with the accepted map).
SHARED = {"T-Shirt": "tee", "Polo": "tee", "Tees": "tee", "Hoodie": "hoodie", "Hoodies & Sweatshirts": "hoodie",
          "Outwear": "jacket", "Blazer": "jacket", "Jackets": "jacket", "Undershirt": "tank", "Tanks": "tank",
          "Bras & Tanks": "tank", "Top": "tank"}
BLENDS = (0.25, 0.5, 0.75)
RERANK_AT = 0.5


def query_sets(settings: Settings, target: str, photos: Path | None) -> dict[str, list]:
    cache = Path(settings.artifacts_dir) / "bench-cross-domain" / "styled"
    source = SHOP if target == GARMENT_PHOTOS else GARMENT_PHOTOS
    catalog = open_catalog(settings.replace(catalog=source))
    third = CROPPED if target == GARMENT_PHOTOS else CUTOUT
    sets = {f"{source} → {target}": catalogue_queries(catalog, target, AS_TAKEN, 0, None),
            f"{source} {third} → {target}": catalogue_queries(catalog, target, third, 240, cache)}
    if photos is not None:
        sets[f"smoke → {target}"] = smoke_queries(photos, target)
    return sets


def shares(catalogue: np.ndarray, queries: np.ndarray, categories: np.ndarray, accepted: list[tuple[str, ...]],
           rerank: np.ndarray | None = None) -> float:
    """Mean top-K share in an accepted category, exact search; ``rerank`` (per query: a category or None) puts that
    category's items first among the 50 nearest."""
    scores = queries @ catalogue.T
    order = np.argsort(-scores, axis=1)[:, :50]
    out = []
    for i, rows in enumerate(order):
        hits = categories[rows]
        if rerank is not None and rerank[i] is not None:
            hits = hits[np.argsort(hits != rerank[i], kind="stable")]
        out.append(np.mean([h in accepted[i] for h in hits[:K]]))
    return round(float(np.mean(out)), 3)


def own_precision(vectors: np.ndarray, catalog) -> float:
    """Precision@10 of the catalogue's test items against every other item (itself left out)."""
    rows = catalog.query_rows()
    scores = vectors[rows] @ vectors.T
    scores[np.arange(len(rows)), rows] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :K]
    return round(float((catalog.labels[top] == catalog.labels[rows][:, None]).mean()), 3)


def blend(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    return np.hstack([np.sqrt(1 - w) * a, np.sqrt(w) * b]).astype(np.float32)


def variants(served: np.ndarray, imagenet: np.ndarray, lda: LinearDiscriminantAnalysis) -> dict[str, np.ndarray]:
    """Every combination measured, for the catalogue's vectors and the queries' alike."""
    out = {"served": served, "imagenet": imagenet, "discriminant": l2_normalize(lda.transform(imagenet))}
    for w in BLENDS:
        out[f"blend {w}"] = blend(served, imagenet, w)
        out[f"served + discriminant {w}"] = blend(served, out["discriminant"], w)
    out["discriminant + raw 50/50"] = blend(out["discriminant"], imagenet, 0.5)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=Path, default=None)
    args = parser.parse_args()
    settings = Settings.from_env().replace(shared_weight=0.0)  # each model's own vectors: the levers are built here
    progress = tqdm_progress()
    workspaces = {}
    for target in (GARMENT_PHOTOS, SHOP):
        workspaces[target, "served"] = Workspace.open(model_settings(settings, target, "served"), progress)
        # raw ImageNet features for both (the discriminant needs one space for both catalogues)
        raw = model_settings(settings, target, "imagenet").replace(pca_dim=0)
        workspaces[target, "imagenet"] = Workspace.open(raw, progress)
    # the discriminant: shared classes, both catalogues' train splits, ImageNet features
    fit_x, fit_y = [], []
    for target in (GARMENT_PHOTOS, SHOP):
        ws = workspaces[target, "imagenet"]
        rows = ws.catalog.fit_rows()
        names = ws.catalog.items["category"].astype(str).to_numpy()[rows]
        fit_x.append(np.asarray(ws.embeddings)[rows])
        fit_y.extend(SHARED.get(n, f"{target}:{n}") for n in names)
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(np.vstack(fit_x), fit_y)
    results = {}
    for target in (GARMENT_PHOTOS, SHOP):
        served, imagenet = workspaces[target, "served"], workspaces[target, "imagenet"]
        catalog = served.catalog
        categories = catalog.items["category"].astype(str).to_numpy()
        cat_vectors = variants(np.asarray(served.embeddings), np.asarray(imagenet.embeddings), lda)
        own = {name: own_precision(v, catalog) for name, v in cat_vectors.items()}
        for set_name, queries in query_sets(settings, target, args.photos).items():
            cache = Path(settings.artifacts_dir) / "bench-cross-domain" / "sweep" / (
                f"{set_name.replace(' ', '_').replace('→', 'to')}-{served.embedder.key}-{imagenet.embedder.key}.npz")
            if cache.is_file():
                with np.load(cache) as saved:
                    q = {"served": saved["served"], "imagenet": saved["imagenet"]}
                    probs = saved["probs"]
            else:
                embedded = [(served.embed_photo(q.photo), imagenet.embed_photo(q.photo)) for q in queries]
                q = {"served": np.stack([s[1] for s, _ in embedded]),
                     "imagenet": np.stack([i[1] for _, i in embedded])}
                probs = np.stack([s[2] for s, _ in embedded])
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cache, served=q["served"], imagenet=q["imagenet"], probs=probs)
            q = variants(q["served"], q["imagenet"], lda)
            accepted = [query.accepted for query in queries]
            row = {name: shares(cat_vectors[name], q[name], categories, accepted) for name in q}
            sure = [catalog.categories[int(np.argmax(p))] if np.max(p) >= RERANK_AT else None for p in probs]
            for name in ("served", "blend 0.5", "discriminant", "served + discriminant 0.5"):
                row[f"{name} + rerank by head"] = shares(cat_vectors[name], q[name], categories, accepted,
                                                         np.array(sure, dtype=object))
            results[set_name] = {"queries": len(queries), **row}
            print(set_name, json.dumps(row), file=sys.stderr)
        results[f"{target} own test precision@10"] = own
        print(target, "own p@10", json.dumps(own), file=sys.stderr)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
