"""Which model serves a catalogue, and how a finished run comes to ship with the project.

A catalogue is served by the run asked for, else by its newest complete fine-tuned run (one trained here, or the
one that ships in ``models/`` with a built-in catalogue), else by the backbone's ImageNet features. The CLI and
the benchmarks use ``served_settings``; the dashboard's sidebar offers the same runs, newest first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from core.catalog.registry import open_catalog
from core.config import Settings
from core.embedding.embedder import Embedder
from core.model.runs import CheckpointError, RunDir, list_runs, runs_root
from core.search.workspace import serving_heads

IMAGENET = "imagenet"  # run "imagenet": the backbone's ImageNet features, even where a fine-tuned model is served


def served_run(settings: Settings, catalog_key: str) -> RunDir | None:
    """The model the dashboard serves a catalogue with when none is chosen: its newest complete fine-tuned run
    (one trained here, or the one that ships with a built-in catalogue), else None (ImageNet features)."""
    return next((run for run in list_runs(settings, catalog_key) if run.is_complete()), None)


def served_settings(settings: Settings) -> Settings:
    """``settings`` with the model the dashboard would serve: the run asked for, else the catalogue's newest
    fine-tuned run (a built-in catalogue ships one), else ImageNet features."""
    if settings.run.lower() == IMAGENET:
        return settings.replace(run="")
    if settings.run:
        return settings
    run = served_run(settings, open_catalog(settings).key)
    return settings.replace(run=run.id, backbone=run.info().get("backbone", settings.backbone)) if run else settings


SHIPPED_FILES = ("run.json", "checkpoint-best.pt", "test.json", "status.json")
CHECK_FILE = "check.json"


def ship_run(settings: Settings, run_id: str, n_check: int = 64) -> Path:
    """Copy a finished run into the shipped runs folder (what ``python -m core ship RUN`` does): its recipe, best
    checkpoint and figures, and ``check.json``, the category head's predictions for the first ``n_check`` test
    items, which a test reproduces offline on any machine."""
    run = RunDir(runs_root(settings) / run_id)
    if not run.is_complete():
        raise CheckpointError(f"Run {run_id} is not finished (no best checkpoint and test figures under {run.path}).")
    target = Path(settings.shipped_runs_dir) / run_id
    target.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        shutil.copy2(run.path / name, target / name)
    served = settings.replace(run=run_id, backbone=run.info().get("backbone", settings.backbone),
                              catalog=run.info().get("catalog_name", settings.catalog))
    members = run.info().get("members", {})
    if members:  # a run trained on several catalogues: what it predicts on each one it serves
        check = {"members": {name: _check(served.replace(catalog=name), n_check) for name in members}}
    else:
        check = _check(served, n_check)
    (target / CHECK_FILE).write_text(json.dumps(check, indent=1) + "\n")
    return target


def _check(served: Settings, n_check: int) -> dict:
    """The category predictions of the heads serving ``served.catalog`` for its first ``n_check`` test items."""
    catalog, embedder = open_catalog(served), Embedder.from_settings(served)
    heads = serving_heads(served, catalog, embedder)
    rows = catalog.query_rows()[:n_check]
    probs = heads.category_probs(embedder.features(catalog.domain_batch(rows)))
    return {"catalog": catalog.key, "ids": catalog.items["id"].to_numpy()[rows].tolist(),
            "predicted": [catalog.categories[i] for i in np.argmax(probs, axis=1)],
            "probability": [round(float(p), 4) for p in probs.max(axis=1)]}
