"""The figures the README promises, measured end to end on the real catalogue (``python -m core bench``).

Query latency is measured the way a user feels it: upload bytes → decode → catalogue conversion → model forward
→ ranked results. Search-only latencies are reported beside it so the served index (``Settings.index``: exact,
Annoy or HNSW, core/search/served.py) and exact search can be compared without the (shared) forward pass hiding
the difference.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from core import artifacts
from core.catalog import builtin, fashion_mnist, prepare, prepared_layout
from core.config import Settings
from core.embedding.embedder import Embedder
from core.model.runs import runs_root
from core.progress import Progress, no_progress
from core.search.metrics import precision_at_k, recall_at_k
from core.search.workspace import Workspace, hnsw_name

SERVED = True  # measures the catalogue's served model


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def query_photos(workspace: Workspace, n: int, seed: int) -> list[bytes]:
    """Test-split items made to look like uploads: un-negated, upscaled, JPEG-encoded."""
    rng = np.random.default_rng(seed)
    test_rows = workspace.catalog.query_rows()
    out = []
    for row in rng.choice(test_rows, size=min(n, len(test_rows)), replace=False):
        image = Image.fromarray(255 - workspace.catalog.domain_batch([row])[0]).resize((280, 280))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


@contextlib.contextmanager
def checksum_time() -> Iterator[list[float]]:
    """[seconds, bytes] spent in core.artifacts.file_checksum while the block runs (every artifact check uses it)."""
    spent, real = [0.0, 0.0], artifacts.file_checksum

    def timed(path: Path) -> str:
        started = time.perf_counter()
        try:
            return real(path)
        finally:
            spent[0] += time.perf_counter() - started
            spent[1] += Path(path).stat().st_size

    modules = (artifacts, builtin, fashion_mnist, prepare, prepared_layout)  # each calls it by the name it imported
    for module in modules:
        module.file_checksum = timed
    try:
        yield spent
    finally:
        for module in modules:
            module.file_checksum = real


def run_bench(settings: Settings, n_queries: int = 200, cold: bool = True, progress: Progress = no_progress) -> dict:
    results: dict = {"settings": {"catalog": settings.catalog, "backbone": settings.backbone, "run": settings.run,
                                  "image_size": settings.image_size, "n_trees": settings.n_trees,
                                  "search_k": settings.search_k, "catalog_limit": settings.catalog_limit}}
    if cold:
        # Cold = from nothing, in a scratch artifacts directory (the user's own artifacts are left alone), which
        # then serves the warm figures too.
        scratch = tempfile.TemporaryDirectory(prefix="fvs-bench-")
        settings = settings.replace(artifacts_dir=Path(scratch.name), runs_dir=runs_root(settings))
        started = time.perf_counter()
        workspace = Workspace.open(settings, progress)
        results["cold_build_s"] = round(time.perf_counter() - started, 2)
        files = workspace.store.meta().get("files", {})
        results["embed_images_per_s"] = files.get("embeddings.npy", {}).get("images_per_s")
        results["annoy_build_s"] = files.get(f"annoy-{settings.n_trees}trees.ann", {}).get("seconds")
        results["hnsw_build_s"] = files.get(hnsw_name(workspace.settings), {}).get("seconds")
        results["index_choice_s"] = workspace.index_choice.seconds if workspace.index_choice else None
    with checksum_time() as checked:
        started = time.perf_counter()
        workspace = Workspace.open(settings)
        results["warm_load_s"] = round(time.perf_counter() - started, 2)
    # what verifying every artifact against its recorded checksum costs of that warm start
    results["warm_checksums_s"], results["warm_checksummed_mb"] = round(checked[0], 3), round(checked[1] / 2**20, 1)
    results["settings"]["image_size"] = workspace.embedder.transform.size  # a fine-tuned run's own size
    if "embed_images_per_s" not in results:
        results["embed_images_per_s"] = round(_embed_rate(workspace), 1)

    uploads = query_photos(workspace, n_queries, settings.seed)
    workspace.search(uploads[0], k=10)  # warm-up: first call pays lazy initialisation
    results["index"] = workspace.index.name
    results["index_summary"] = workspace.index_choice.summary() if workspace.index_choice else None
    for exact, key in ((None, "query"), (True, "exact_query")):
        totals, searches = [], []
        for data in uploads:
            started = time.perf_counter()
            result = workspace.search(data, k=10, exact=exact)
            totals.append((time.perf_counter() - started) * 1e3)
            searches.append(result.timings_ms[f"search ({result.method})"])
        results[f"{key}_p50_ms"] = round(_percentile(totals, 50), 2)
        results[f"{key}_p99_ms"] = round(_percentile(totals, 99), 2)
        results[f"{'exact' if exact else 'index'}_search_p50_ms"] = round(_percentile(searches, 50), 3)
    results["index_speedup_vs_exact"] = round(results["exact_search_p50_ms"] / results["index_search_p50_ms"], 1)

    results.update(retrieval_quality(workspace, n_queries=1000, seed=settings.seed))
    results["rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    results["n_items"] = len(workspace.catalog)
    results["dim"] = int(workspace.embeddings.shape[1])
    if cold:
        scratch.cleanup()
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warm", action="store_true", help="skip the cold build (reuse artifacts)")
    parser.add_argument("--queries", type=int, default=200, help="number of queries")


def main(args: argparse.Namespace, settings: Settings, progress: Progress) -> dict:
    return run_bench(settings, n_queries=args.queries, cold=not args.warm, progress=progress)


def retrieval_quality(workspace: Workspace, n_queries: int, seed: int, k: int = 10) -> dict:
    """recall@k of the served index against exact search (and of the index the Search page compares with, Annoy
    where exact search is served), and precision@k by category, for test-split items as queries."""
    rng = np.random.default_rng(seed)
    test_rows = workspace.catalog.query_rows()
    rows = rng.choice(test_rows, size=min(n_queries, len(test_rows)), replace=False)
    labels = workspace.catalog.labels
    recalls, compared, precisions = [], [], []
    for row in rows:
        vector = np.asarray(workspace.embeddings[row])
        exact = [i for i in workspace.exact.search(vector, k + 1).indices if i != row][:k]
        served = [i for i in workspace.index.search(vector, k + 1).indices if i != row][:k]
        other = [i for i in workspace.compared.search(vector, k + 1).indices if i != row][:k]
        recalls.append(recall_at_k(served, exact, k))
        compared.append(recall_at_k(other, exact, k))
        precisions.append(precision_at_k(labels[exact], labels[row], k))
    return {"recall_at_10": round(float(np.mean(recalls)), 4), "precision_at_10": round(float(np.mean(precisions)), 4),
            "compared": workspace.compared.name, "compared_recall_at_10": round(float(np.mean(compared)), 4),
            "quality_queries": len(rows)}


def _embed_rate(workspace: Workspace, n: int = 2048) -> float:
    pixels = workspace.catalog.domain_batch(slice(0, n))
    embedder: Embedder = workspace.embedder
    started = time.perf_counter()
    for offset in range(0, len(pixels), workspace.settings.batch_size):
        embedder(pixels[offset : offset + workspace.settings.batch_size])
    return len(pixels) / (time.perf_counter() - started)
