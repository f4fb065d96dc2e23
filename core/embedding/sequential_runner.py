"""Embedding a whole catalogue, the clip-retrieval way: a reader (``read_batches``) yields batches of domain arrays
(sliced from memory, or decoded from files by DataLoader workers), the ``Embedder`` (the mapper,
``core.embedding.embedder``) turns a batch into features, and a runner collects them into a resumable memory-mapped
file.

``SequentialRunner`` does this in one process; a distributed runner (Ray Data, Spark) is an adapter beside it that
calls the same Embedder on shards and writes one such file per shard for the index builder to read (README,
"Scale beyond one machine").
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from core.artifacts import atomic_path, reserve
from core.catalog.item_files import FileImages, ItemDataset
from core.embedding.embedder import Embedder
from core.locks import die_with_parent
from core.progress import Progress, no_progress


def read_batches(pixels, batch_size: int, start: int = 0, workers: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, uint8 batch) from ``start`` on. An in-memory array is sliced; a file catalogue is decoded by a
    DataLoader's worker processes, a few batches ahead of the model, so memory is bounded by the batch."""
    if not isinstance(pixels, FileImages) or workers <= 0:
        for offset in range(start, len(pixels), batch_size):
            yield offset, np.asarray(pixels[offset : offset + batch_size])
        return
    loader = torch.utils.data.DataLoader(ItemDataset(pixels, start), batch_size=batch_size, num_workers=workers,
                                         collate_fn=np.stack, prefetch_factor=4, worker_init_fn=die_with_parent)
    offset = start
    for batch in loader:
        yield offset, batch
        offset += len(batch)


class SequentialRunner:
    """Embed every batch in this process, reporting progress after each; with ``out`` given, resumable.

    Resumable means: features go straight into a memory-mapped ``out`` file, and every ``commit_every_s`` the
    rows done so far are flushed and counted in ``out``'s ``.json`` companion. A pass killed at 60 % starts again
    at the last committed row (at most ``commit_every_s`` of work lost), not at zero. This is the seam a
    distributed runner replaces (README, "Scale beyond one machine"): it would call the same ``Embedder`` on
    shards of rows and write one such file per shard.
    """

    def __init__(self, embedder: Embedder, batch_size: int, progress: Progress = no_progress, workers: int = 0,
                 commit_every_s: float = 10.0, streams: tuple[int, int] = (1, 0)):
        self.embedder, self.batch_size, self.progress = embedder, batch_size, progress
        self.workers, self.commit_every_s = workers, commit_every_s
        self.streams = streams  # (batches in flight, threads each), core.threads.embedding_streams
        self.resumed_from = 0  # the committed row a resumed pass started at

    def run(self, pixels, out: Path | None = None) -> np.ndarray:
        """Raw features for every item (the projection is fitted on them afterwards)."""
        n, dim = len(pixels), self.embedder.feature_dim
        if out is None:
            features, start = np.empty((n, dim), dtype=np.float32), 0
        else:
            features, start = _open_partial(Path(out), n, dim)
        self.resumed_from = start
        self.progress("Embedding catalogue", start, n)
        last_commit = time.monotonic()
        # Streams share the batch: two of 16 hold what one of 32 holds, so memory still follows batch_size.
        size = max(1, self.batch_size // self._stream_count())
        for offset, batch in self._embedded(read_batches(pixels, size, start, self.workers)):
            features[offset : offset + len(batch)] = batch
            done = offset + len(batch)
            if out is not None and (time.monotonic() - last_commit > self.commit_every_s or done == n):
                _commit_partial(Path(out), features, done)
                last_commit = time.monotonic()
            self.progress("Embedding catalogue", done, n)
        return features

    def _stream_count(self) -> int:
        """Streams need a runtime that can make single-stream copies of its network (ONNX Runtime)."""
        return self.streams[0] if hasattr(self.embedder.network, "with_threads") else 1

    def _embedded(self, batches: Iterable[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray]]:
        """(offset, features) in order. With more than one stream, that many batches are embedded at once, each
        by its own single-stream copy of the network (ONNX Runtime releases the GIL while it runs)."""
        count, threads = self._stream_count(), self.streams[1]
        if count <= 1:
            for offset, batch in batches:
                yield offset, self.embedder.features(batch)
            return
        copies = [dataclasses.replace(self.embedder, network=self.embedder.network.with_threads(threads))
                  for _ in range(count)]
        in_flight: deque = deque()
        with ThreadPoolExecutor(count, thread_name_prefix="embed-stream") as pool:
            for i, (offset, batch) in enumerate(batches):
                in_flight.append((offset, pool.submit(copies[i % count].features, batch)))
                if len(in_flight) == count:
                    yield _oldest(in_flight)
            while in_flight:
                yield _oldest(in_flight)


def _oldest(in_flight: deque) -> tuple[int, np.ndarray]:
    offset, result = in_flight.popleft()
    return offset, result.result()


def _open_partial(path: Path, n: int, dim: int) -> tuple[np.ndarray, int]:
    """The features file of an interrupted pass and its committed row count, or a new one at row 0."""
    state_path = path.with_suffix(".json")
    try:
        state = json.loads(state_path.read_text())
        if state.get("shape") == [n, dim] and path.is_file():
            reserve(path)  # a file left sparse must not SIGBUS when its remaining pages are written
            return np.lib.format.open_memmap(path, mode="r+"), int(state["done"])
    except (OSError, ValueError, KeyError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    state_path.unlink(missing_ok=True)
    features = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    try:
        reserve(path)  # every page allocated before one is written: a full disk is ENOSPC here, not SIGBUS later
    except OSError:
        del features
        path.unlink(missing_ok=True)
        raise
    _commit_partial(path, features, 0)
    return features, 0


def _commit_partial(path: Path, features: np.ndarray, done: int) -> None:
    if isinstance(features, np.memmap):
        features.flush()  # rows are on disk before the count that vouches for them
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({"shape": list(features.shape), "done": done}))


def remove_partial(path: Path) -> None:
    Path(path).unlink(missing_ok=True)
    Path(path).with_suffix(".json").unlink(missing_ok=True)


def map_rows(fn: Callable[[np.ndarray], np.ndarray], rows: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """``fn`` applied to ``rows`` a chunk at a time: a memory-mapped features file is never read whole."""
    parts = [fn(np.asarray(rows[start : start + chunk])) for start in range(0, len(rows), chunk)]
    return np.concatenate(parts) if parts else fn(np.asarray(rows[:0]))
