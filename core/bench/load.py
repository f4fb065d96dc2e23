"""Concurrent searches against one shared Workspace, the way Streamlit serves several sessions.

Streamlit runs each session's script in its own thread and hands all of them the one ``st.cache_resource``
Workspace, so "8 users searching at once" is 8 threads calling ``Workspace.search`` on the same object: the same
model, the same memory-mapped Annoy index. This measures what each of them waits, against one user alone.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from core.bench.search import query_photos
from core.config import Settings
from core.progress import Progress
from core.search.workspace import Workspace

SERVED = True  # measures the catalogue's served model


def _latencies(workspace: Workspace, uploads: list[bytes], seconds: float, max_requests: int,
               exact: bool, out: list[float], errors: list[str]) -> None:
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline and i < max_requests:
        started = time.perf_counter()
        try:
            result = workspace.search(uploads[i % len(uploads)], k=10, exact=exact or None)
            if len(result.hits) != 10:
                errors.append(f"{len(result.hits)} results instead of 10")
        except Exception as exc:  # noqa: BLE001 - a load test reports every failure instead of stopping
            errors.append(repr(exc))
        out.append((time.perf_counter() - started) * 1e3)
        i += 1


def run_load(workspace: Workspace, threads: int = 8, seconds: float = 10.0, max_requests: int = 10_000,
             exact: bool = False) -> dict:
    """Bounded in time and count. Returns p50/p99 per request alone and under ``threads`` concurrent users."""
    uploads = query_photos(workspace, 50, workspace.settings.seed)
    workspace.search(uploads[0])  # warm-up
    alone: list[float] = []
    errors: list[str] = []
    _latencies(workspace, uploads, min(seconds, 3.0), max_requests, exact, alone, errors)
    per_thread: list[list[float]] = [[] for _ in range(threads)]
    workers = [threading.Thread(target=_latencies, args=(workspace, uploads[t:] + uploads[:t], seconds,
                                                         max_requests, exact, per_thread[t], errors))
               for t in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    loaded = np.concatenate([np.asarray(x) for x in per_thread if x]) if any(per_thread) else np.zeros(1)
    return {
        "threads": threads,
        "method": workspace.searcher(exact or None).name,
        "alone_p50_ms": round(float(np.percentile(alone, 50)), 2),
        "alone_p99_ms": round(float(np.percentile(alone, 99)), 2),
        "loaded_p50_ms": round(float(np.percentile(loaded, 50)), 2),
        "loaded_p99_ms": round(float(np.percentile(loaded, 99)), 2),
        "requests": int(sum(len(x) for x in per_thread)),
        "throughput_per_s": round(sum(len(x) for x in per_thread) / wall, 1),
        "errors": errors[:10],
        "error_count": len(errors),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=8, help="concurrent users")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration")
    parser.add_argument("--exact", action="store_true", help="exact search instead of the served index")


def main(args: argparse.Namespace, settings: Settings, progress: Progress) -> dict:
    return run_load(Workspace.open(settings, progress), threads=args.threads, seconds=args.seconds, exact=args.exact)
