"""``python -m core bench runners``: one generated catalogue of N photo files embedded twice on this machine, by the
sequential runner (this process, DataLoader workers decoding) and by the Ray Data runner (a local cluster:
decode tasks and embedding actors), with the images/s of each, their ratio, and how far their features differ.

On one machine Ray pays its start-up (the cluster, then each actor importing torch and building the model) and
its data movement through the object store; what it buys is the same pass spread over many machines. This
measures the price on one, so the figure a cluster gives can be read against it. The cluster start is timed
apart; the actors' start is part of the Ray pass, as it is of every pass.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from core.bench.stream import write_photos
from core.catalog.prepare import prepare_catalog
from core.catalog.registry import open_catalog
from core.catalog.sources import SourceSpec
from core.config import Settings
from core.embedding.embedder import Embedder, describe_model, model_key
from core.embedding.ray_runner import RayRunner, cluster, remove_shards
from core.embedding.sequential_runner import remove_partial
from core.progress import Progress, no_progress
from core.search.workspace import catalogue_runner
from core.threads import loader_workers

SERVED = False  # makes a catalogue of its own


def run_runners_bench(settings: Settings, items: int, directory: Path, progress: Progress = no_progress) -> dict:
    root = write_photos(Path(directory) / f"photos-{items}", items, progress=progress)
    name = f"bench-runners-{items}"
    prepare_catalog(SourceSpec(path=str(root)), settings, name=name, workers=loader_workers(settings),
                    progress=progress)
    catalog = open_catalog(settings.replace(catalog=name))
    resolved = settings.replace(catalog=name).for_catalog(catalog.domain.input_size,
                                                                    len(catalog.fit_rows()))
    embedder = Embedder.from_settings(resolved)
    sequential, sequential_s = _sequential_pass(embedder, resolved, catalog.pixels, Path(directory), progress)
    started = time.perf_counter()
    with cluster(resolved):  # started here (or joined: FVS_RAY_ADDRESS), so that its start is timed apart
        cluster_s = time.perf_counter() - started
        runner, ray_features, ray_s = _ray_pass(embedder, resolved, catalog.pixels, Path(directory), progress)
    return {
        "items": len(catalog), "cores": os.cpu_count(), "model": model_key(describe_model(resolved)),
        "image_size": resolved.image_size, "batch_size": resolved.batch_size, "shard_rows": runner.shard_rows,
        "workers": loader_workers(resolved), "ray_actors": vars(runner.plan) if runner.plan else None,
        "sequential_s": round(sequential_s, 2), "sequential_images_per_s": round(len(catalog) / sequential_s, 1),
        "ray_cluster_start_s": round(cluster_s, 2), "ray_s": round(ray_s, 2),
        "ray_images_per_s": round(len(catalog) / ray_s, 1),
        "ray_vs_sequential": round(sequential_s / ray_s, 3),  # > 1: Ray was faster
        "max_abs_difference": float(np.abs(ray_features - sequential).max()),
    }


def _sequential_pass(embedder: Embedder, settings: Settings, pixels, directory: Path, progress: Progress
                     ) -> tuple[np.ndarray, float]:
    """A cold pass into a resumable file, as ``prepare`` makes it (its workers and streams; a leftover file is
    removed first)."""
    out = directory / "sequential.partial.npy"
    remove_partial(out)
    started = time.perf_counter()
    runner = catalogue_runner(embedder, settings.replace(runner="sequential"), _named(progress, "sequential"))
    features = np.array(runner.run(pixels, out=out))
    seconds = time.perf_counter() - started
    remove_partial(out)
    return features, seconds


def _ray_pass(embedder: Embedder, settings: Settings, pixels, directory: Path, progress: Progress
              ) -> tuple[RayRunner, np.ndarray, float]:
    """A cold pass into shards and their assembled file, as ``prepare --runner ray`` makes it."""
    out = directory / "ray.partial.npy"
    remove_partial(out)
    remove_shards(out)
    started = time.perf_counter()
    runner = RayRunner(settings, embedder.feature_dim, _named(progress, "ray"))
    features = np.array(runner.run(pixels, out=out))
    seconds = time.perf_counter() - started
    remove_partial(out)
    remove_shards(out)
    return runner, features, seconds


def _named(progress: Progress, runner: str) -> Progress:
    """Each pass its own stage (and bar): the second pass would otherwise report to the first's finished one."""
    return lambda stage, done, total: progress(f"{stage} ({runner})", done, total)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--items", type=int, default=10_000, help="photo files to generate and embed")
    parser.add_argument("--dir", type=Path, default=Path("artifacts/bench-runners"), help="where the photos go")
    parser.add_argument("--ray-shard-rows", type=int, help="rows per shard file (default: the ray_shard_rows "
                        "setting, 4096)")


def main(args: argparse.Namespace, settings: Settings, progress: Progress) -> dict:
    return run_runners_bench(settings, args.items, args.dir, progress=progress)
