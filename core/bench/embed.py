"""``python -m core bench embed``: where a photo catalogue's embedding time goes, and what each option buys.

In one run on the same cores, on a prepared photo catalogue (the served one by default):

- **stages**: per photo, single-threaded: reading the file, decoding it as an upload is (up to ``WORKING_SIZE``)
  and at the reduced scale the model input needs (Pillow's ``draft``), and the catalogue's conversion;
- **model**: images/s of the backbone alone on a batch, for each runtime: eager PyTorch (also channels-last),
  the frozen TorchScript trace, ONNX Runtime and, where installed, OpenVINO, each with its cosine to eager;
- **end_to_end**: the whole pass (``SequentialRunner``: DataLoader workers decoding, the model, the features file)
  for the baseline (eager, full decode), the previous default (TorchScript), ONNX Runtime on one stream, the
  adopted path (``auto``, with its streams: ``core.threads.embedding_streams``) and the drafted decode, with peak
  memory; then workers × batch size × streams for the adopted runtime;
- **agreement**: the adopted path's vectors against the baseline's: per-item cosine, and the share of test-split
  queries whose top 10 (served vectors: the same PCA applied to both) are the same items.

``speedup`` is the adopted path's end-to-end images/s over the baseline's; ``speedup_vs_torchscript`` over the
default it replaced.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from core.catalog.item_files import FileImages
from core.catalog.registry import open_catalog
from core.config import Settings
from core.embedding.embedder import Embedder, Projection
from core.embedding.runtimes import OnnxNetwork, export_onnx, onnx_file
from core.embedding.sequential_runner import SequentialRunner
from core.photo.decode import WORKING_SIZE, decode_image, read_image_file
from core.progress import Progress, no_progress
from core.search.metrics import nearest
from core.threads import configure_threads, embedding_streams, loader_workers
from core.vectors import l2_normalize

SERVED = True  # measures the catalogue's served model
K = 10


def stage_times(images: FileImages, rows: np.ndarray) -> dict:
    """Median ms per photo of each step, one thread, on ``rows``."""
    timings: dict[str, list[float]] = {"read": [], "decode": [], "decode_draft": [], "convert": []}
    for row in rows:
        path = str(images.paths[row])
        started = time.perf_counter()
        data = read_image_file(path)
        read = time.perf_counter()
        photo = decode_image(data, name=path)
        decoded = time.perf_counter()
        decode_image(data, name=path, draft_to=images.domain.decode_side or WORKING_SIZE)
        drafted = time.perf_counter()
        images.domain.convert(photo)
        converted = time.perf_counter()
        for name, seconds in (("read", read - started), ("decode", decoded - read), ("decode_draft", drafted - decoded),
                              ("convert", converted - drafted)):
            timings[name].append(seconds * 1e3)
    return {f"{name}_ms": round(float(np.median(values)), 2) for name, values in timings.items()}


def _openvino(model: bytes, threads: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    compiled = core.compile_model(core.read_model(model=model, weights=b""), "CPU",
                                  {"INFERENCE_NUM_THREADS": threads})
    return lambda x: torch.from_numpy(compiled(x.numpy())[0])


def runtimes(eager: torch.nn.Module, torchscript: torch.nn.Module, size: int, onnx_path: Path
             ) -> dict[str, Callable]:
    """Every runtime the model table compares, each a callable from a float batch to features: the eager and
    TorchScript embedders' own networks, and the rest made from the eager one."""
    threads = torch.get_num_threads()
    model = export_onnx(eager, size, onnx_path)
    last = _channels_last_copy(eager)
    found = {
        "eager": eager,
        "eager_channels_last": lambda x: last(x.contiguous(memory_format=torch.channels_last)),
        "torchscript": torchscript,
        "onnx": OnnxNetwork(model, threads),
    }
    openvino = _openvino(model, threads)
    if openvino is not None:
        found["openvino"] = openvino
    return found


def _channels_last_copy(network: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(network).to(memory_format=torch.channels_last)


@torch.inference_mode()
def model_speeds(found: dict[str, Callable], batch: torch.Tensor, repeats: int) -> dict:
    """images/s of each runtime on ``batch`` (after two warm-up calls) and its worst cosine to eager."""
    reference = found["eager"](batch).float().numpy()
    out = {}
    for name, run in found.items():
        for _ in range(2):
            features = run(batch).float().numpy()
        started = time.perf_counter()
        for _ in range(repeats):
            run(batch)
        seconds = time.perf_counter() - started
        out[name] = {"images_per_s": round(len(batch) * repeats / seconds, 1),
                     "min_cosine_to_eager": round(float(_cosines(features, reference).min()), 7)}
    return out


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (l2_normalize(a) * l2_normalize(b)).sum(axis=1)


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from the current RSS
    except OSError:
        pass


def _peak_rss_mb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def end_to_end(embedder: Embedder, pixels, batch_size: int, workers: int, streams: tuple[int, int] = (1, 0)
               ) -> tuple[np.ndarray, dict]:
    """One whole pass as the app makes it, and its figures."""
    _reset_peak_rss()
    runner = SequentialRunner(embedder, batch_size, workers=workers, streams=streams)
    started = time.perf_counter()
    features = runner.run(pixels)
    seconds = time.perf_counter() - started
    return features, {"images_per_s": round(len(pixels) / seconds, 1), "seconds": round(seconds, 1),
                      "batch_size": batch_size, "workers": workers, "streams": streams[0],
                      "peak_rss_mb": _peak_rss_mb()}


def agreement(reference: np.ndarray, candidate: np.ndarray, test_rows: np.ndarray, train_rows: np.ndarray,
              settings: Settings) -> dict:
    """Per-item cosine of the raw features, and top-10 identity of the served vectors (one PCA, the reference's)."""
    cosines = _cosines(candidate, reference)
    projection = (Projection.fit(reference, settings.pca_dim, settings.pca_whiten, seed=settings.seed,
                                 rows=train_rows) if settings.pca_dim else None)

    def served(features: np.ndarray) -> np.ndarray:
        return l2_normalize(projection(features) if projection is not None else features).astype(np.float32)

    vectors_a, vectors_b = served(reference), served(candidate)
    top_a = nearest(vectors_a[test_rows], vectors_a, K, query_rows=test_rows)[0]
    top_b = nearest(vectors_b[test_rows], vectors_b, K, query_rows=test_rows)[0]
    same = [set(a) == set(b) for a, b in zip(top_a, top_b)]
    overlap = [len(set(a) & set(b)) / K for a, b in zip(top_a, top_b)]
    return {"min_cosine": round(float(cosines.min()), 7), "mean_cosine": round(float(cosines.mean()), 7),
            "items_below_0999": int((cosines < 0.999).sum()), "queries": len(test_rows),
            "same_top10_share": round(float(np.mean(same)), 4), "top10_overlap": round(float(np.mean(overlap)), 4)}


def run_embed_bench(settings: Settings, items: int = 2000, stage_items: int = 200, batch_sizes=(16, 32, 64),
                    worker_counts=(1, 2), repeats: int = 4, progress: Progress = no_progress) -> dict:
    catalog = open_catalog(settings)
    if not isinstance(catalog.pixels, FileImages):
        raise ValueError(f"{settings.catalog!r} is not a catalogue of photo files; name one (--catalog).")
    resolved = settings.for_catalog(catalog.domain.input_size, len(catalog.fit_rows()))
    configure_threads(resolved)
    n = min(items or len(catalog), len(catalog))
    rows = np.arange(n)
    pixels = _head(catalog.pixels, n)
    drafted = dataclasses.replace(pixels, draft=True)
    workers = loader_workers(resolved)
    progress("Timing the stages", 0, 4)
    stages = stage_times(pixels, rows[:: max(1, n // stage_items)][:stage_items])

    embedders = {name: Embedder.from_settings(resolved.replace(inference=name))
                 for name in ("eager", "torchscript", "auto")}
    adopted = embedders["auto"]
    base = embedders["eager"]
    progress("Timing the runtimes", 1, 4)
    batch = base.transform(pixels[: resolved.batch_size])
    models = model_speeds(runtimes(base.network, embedders["torchscript"].network, resolved.image_size,
                                   onnx_file(resolved.artifacts_dir, base.key, resolved.image_size)), batch, repeats)

    progress("Embedding end to end", 2, 4)
    for path in pixels.paths:  # the first pass must not pay for a cold page cache alone
        Path(path).read_bytes()
    passes, features = {}, {}
    streams = embedding_streams(resolved, adopted.runtime)
    for label, embedder, images, how in (("baseline (eager, full decode)", base, pixels, (1, 0)),
                                         ("torchscript, full decode", embedders["torchscript"], pixels, (1, 0)),
                                         (f"{adopted.runtime}, one stream", adopted, pixels, (1, 0)),
                                         (f"adopted ({adopted.runtime}, {streams[0]} streams)", adopted, pixels,
                                          streams),
                                         (f"{adopted.runtime}, {streams[0]} streams, draft decode", adopted, drafted,
                                          streams)):
        features[label], passes[label] = end_to_end(embedder, images, resolved.batch_size, workers, how)
    grid = [end_to_end(adopted, _head(pixels, 1000), b, w, how)[1] for w in worker_counts for b in batch_sizes
            for how in dict.fromkeys([(1, 0), streams])]

    progress("Comparing vectors", 3, 4)
    split = catalog.items["split"].to_numpy()[:n]
    test_rows, train_rows = np.flatnonzero(split == "test"), np.flatnonzero(split == "train")
    if not len(test_rows):
        test_rows = rows[:: max(1, n // 500)]
    if not len(train_rows):
        train_rows = rows
    baseline, previous, _, adopted_label, draft_label = list(passes)
    result = {
        "catalog": settings.catalog, "items": n, "image_size": resolved.image_size, "backbone": resolved.backbone,
        "threads": torch.get_num_threads(), "workers": workers, "batch_size": resolved.batch_size,
        "adopted_runtime": adopted.runtime,
        "stages": stages, "model": models, "end_to_end": passes, "grid": grid,
        "speedup": round(passes[adopted_label]["images_per_s"] / passes[baseline]["images_per_s"], 2),
        "speedup_vs_torchscript": round(passes[adopted_label]["images_per_s"] / passes[previous]["images_per_s"], 2),
        "agreement": agreement(features[baseline], features[adopted_label], test_rows, train_rows, resolved),
        "draft_agreement": agreement(features[baseline], features[draft_label], test_rows, train_rows, resolved),
    }
    progress("Comparing vectors", 4, 4)
    return result


def _head(pixels: FileImages, n: int) -> FileImages:
    return dataclasses.replace(pixels, paths=pixels.paths[:n], boxes=None if pixels.boxes is None else pixels.boxes[:n])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--items", type=int, default=2000, help="catalogue items embedded per pass (0 = all)")
    parser.add_argument("--stage-items", type=int, default=200, help="photos timed stage by stage")
    parser.add_argument("--batch-sizes", default="16,32,64", help="batch sizes tried with the adopted runtime")
    parser.add_argument("--worker-counts", default="1,2", help="DataLoader worker counts tried with it")


def main(args: argparse.Namespace, settings: Settings, progress: Progress) -> dict:
    return run_embed_bench(settings, items=args.items, stage_items=args.stage_items,
                           batch_sizes=tuple(int(v) for v in args.batch_sizes.split(",") if v),
                           worker_counts=tuple(int(v) for v in args.worker_counts.split(",") if v),
                           progress=progress)
