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


def single_threaded_blas() -> None:
    """Numpy's BLAS on one thread, set once for the process when serving queries: a search's matrix-vector scan
    is memory-bound, and idle-spinning BLAS threads would otherwise steal the cores from the next query's model
    forward (measured: exact end-to-end p50 20 ms → 12.5 ms). Torch's own thread pool is not affected."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
