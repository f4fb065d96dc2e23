"""How many threads and processes the work gets, decided in one place for the embedder, the trainer and the
image checks."""

from __future__ import annotations

import os

import torch

from core.config import Settings


def configure_threads(settings: Settings) -> None:
    """Torch's intra-op pool: ``settings.num_threads``, or every core."""
    torch.set_num_threads(settings.num_threads or os.cpu_count() or 1)


def loader_workers(settings: Settings) -> int:
    """DataLoader worker processes that decode a file catalogue's images: ``settings.workers``, or min(8, cores)."""
    return settings.workers if settings.workers >= 0 else min(8, os.cpu_count() or 1)


def embedding_streams(settings: Settings, runtime: str) -> tuple[int, int]:
    """(batches embedded at once, threads each) for a catalogue pass. ONNX Runtime's threads wait for each other
    at every layer, and the DataLoader workers decoding beside them keep taking a core away: two batches in
    flight on half the threads each keep both cores busy (67 → 77 images/s on 2 cores, BENCHMARKS.md). The
    streams share the batch, so memory still follows ``batch_size``. Queries keep one session on every thread
    (lowest latency for one image)."""
    cores = settings.num_threads or os.cpu_count() or 1
    if runtime != "onnx" or cores < 2:
        return 1, cores
    return 2, cores // 2


def single_threaded_blas() -> None:
    """Numpy's BLAS on one thread, set once for the process when serving queries: a search's matrix-vector scan
    is memory-bound, and idle-spinning BLAS threads would otherwise steal the cores from the next query's model
    forward (measured: exact end-to-end p50 20 ms → 12.5 ms). Torch's own thread pool is not affected."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
