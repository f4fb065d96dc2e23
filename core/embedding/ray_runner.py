"""Embedding a whole catalogue on a Ray cluster (``settings.runner == "ray"``), beside
``core.embedding.sequential_runner``'s ``SequentialRunner`` and with its interface: ``run(pixels, out) -> features``,
``resumed_from``, progress.

The pipeline is Ray Data: the items' rows (row id, path, box) as a dataset → ``map_batches`` decode tasks on CPUs
(``FileImages.item``: the same decode, box and domain as everywhere else) → ``map_batches`` embedding actors, one
per GPU (or CPU actors without GPUs), each building ``Embedder.from_settings`` once → the driver, which files the
features it receives by row id into shards of ``settings.ray_shard_rows`` rows. Ray may finish blocks in any
order, and a retried task may finish late: order comes from the row ids, never from scheduling.

A shard is written (atomically) as ``features-<start>-<stop>.npy`` once all its rows have arrived; a shard on
disk is done, which is the resume rule: a pass killed part-way recomputes only the shards it had not written.
Killed workers are retried by Ray (a bounded number of times, ``RETRIES``). Ray is imported only when a pass
runs, so the dashboard does not need it installed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.artifacts import reserve, save_npy
from core.catalog.item_files import FileImages
from core.config import Settings
from core.photo.domain import Domain
from core.progress import Progress, no_progress

STAGE = "Embedding catalogue"
# Retries of a killed decode task, restarts of a killed embedding actor and retries of its calls. Finite, unlike
# Ray Data's default (-1, forever): a worker that always dies (out of memory on some input) must fail the pass
# with Ray's error, not turn it into a hang.
RETRIES = 5
# A local cluster's object store: decoded batches are small and streamed, and CI machines have little /dev/shm.
LOCAL_OBJECT_STORE_BYTES = 256 << 20
BLOCK_BATCHES = 4  # rows per decode task: this many embedding batches (a few MB of decoded pixels per block)
MISSING_RAY = ("runner 'ray' needs Ray Data, which is not installed here ({error}). Install it with "
               "`pip install -r requirements-scale.txt`, or use runner 'sequential'.")
BOX_COLUMNS = ("box_x1", "box_y1", "box_x2", "box_y2")  # an item's box in the rows' table (-1: none)


class RayMissing(RuntimeError):
    pass


def import_ray() -> Any:
    """The ``ray`` module with Ray Data loaded, or a message saying what is missing and how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the pipeline's half of Ray, a separate extra ("ray[data]")
    except ImportError as exc:
        raise RayMissing(MISSING_RAY.format(error=exc)) from exc
    return ray


# ------------------------------------------------------------------------------------------------ shards on disk
def shard_dir(out: Path) -> Path:
    """Where the shards of ``out`` go: beside it, so they live (and are cleaned up) with the partial file."""
    return Path(out).with_suffix(".shards")


def remove_shards(out: Path) -> None:
    shutil.rmtree(shard_dir(out), ignore_errors=True)


def shard_ranges(n: int, rows: int) -> list[tuple[int, int]]:
    return [(start, min(start + rows, n)) for start in range(0, n, rows)]


def shard_name(start: int, stop: int, n: int) -> str:
    """Zero-padded so that a folder listing sorts in row order (at least 9 digits: up to a billion rows)."""
    width = max(9, len(str(n)))
    return f"features-{start:0{width}d}-{stop:0{width}d}.npy"


def done_shards(folder: Path, ranges: list[tuple[int, int]], n: int, dim: int) -> set[tuple[int, int]]:
    """The row ranges whose shard file is on disk with the right shape. Files of another layout (the shard size
    changed) or of another shape are left to be recomputed: a shard counts only if it is exactly what this pass
    would write."""
    done = set()
    for start, stop in ranges:
        path = folder / shard_name(start, stop, n)
        try:
            shard = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            continue
        if shard.shape == (stop - start, dim) and shard.dtype == np.float32:
            done.add((start, stop))
    return done


def assemble(folder: Path, ranges: list[tuple[int, int]], n: int, dim: int, out: Path) -> np.ndarray:
    """The shards, in row order, in one memory-mapped ``out`` file (what the sequential runner leaves)."""
    # A sequential pass's row count for ``out`` would vouch for rows this overwrites: it goes first.
    Path(out).with_suffix(".json").unlink(missing_ok=True)
    features = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n, dim))
    reserve(out)  # allocated before the shards are copied in: a full disk is ENOSPC, not SIGBUS
    for start, stop in ranges:
        features[start:stop] = np.load(folder / shard_name(start, stop, n), mmap_mode="r")
    features.flush()
    return features


class ShardCollector:
    """Rows arriving in any order, filed by row id; a shard is handed on once every one of its rows is in.

    Rows come back roughly in input order, so only the shards being worked on are held in memory."""

    def __init__(self, ranges: list[tuple[int, int]], dim: int, n: int, folder: Path | None,
                 result: np.ndarray | None):
        self.starts = np.array([start for start, _ in ranges], dtype=np.int64)
        self.ranges, self.dim, self.n = ranges, dim, n
        self.folder, self.result = folder, result
        self.pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # shard index → (features, rows arrived)
        self.finished: set[int] = set()
        self.rows_done = 0

    def add(self, rows: np.ndarray, features: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        shards = np.searchsorted(self.starts, rows, side="right") - 1
        for shard in np.unique(shards):
            self._fill(int(shard), rows[shards == shard], features[shards == shard])

    def _fill(self, shard: int, rows: np.ndarray, features: np.ndarray) -> None:
        if shard in self.finished:
            return  # a late duplicate of a retried task: the shard is already written
        start, stop = self.ranges[shard]
        if not ((rows >= start) & (rows < stop)).all():
            raise RuntimeError(f"Ray returned rows outside the shards of this pass ({rows.min()}–{rows.max()}).")
        buffer, arrived = self.pending.setdefault(
            shard, (np.empty((stop - start, self.dim), np.float32), np.zeros(stop - start, bool)))
        local = rows - start
        self.rows_done += int((~arrived[local]).sum())
        buffer[local], arrived[local] = features, True
        if arrived.all():
            self._write(shard, buffer)

    def _write(self, shard: int, buffer: np.ndarray) -> None:
        start, stop = self.ranges[shard]
        if self.folder is not None:
            save_npy(self.folder / shard_name(start, stop, self.n), buffer)
        if self.result is not None:
            self.result[start:stop] = buffer
        del self.pending[shard]
        self.finished.add(shard)

    def check_complete(self) -> None:
        missing = len(self.ranges) - len(self.finished)
        if missing:
            raise RuntimeError(f"The Ray pipeline ended with {missing} of {len(self.ranges)} shards incomplete "
                               f"({self.rows_done} rows arrived); nothing was lost, run it again to finish them.")


# ------------------------------------------------------------------------------------------- what workers run
@dataclass(frozen=True)
class FileSource:
    """What a decode task needs besides its rows' paths and boxes: the catalogue's domain and allowed folders."""

    domain: Domain
    roots: tuple[Path, ...] | None

    def decode(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        boxes = np.stack([batch[c] for c in BOX_COLUMNS], axis=1) if BOX_COLUMNS[0] in batch else None
        images = FileImages(np.asarray(batch["path"]), boxes, self.domain, self.roots)
        decoded = np.zeros((len(images), *self.domain.shape), np.uint8)
        for i in range(len(images)):  # one at a time: the task holds one CPU
            decoded[i] = images.item(i)
        return decoded


@dataclass(frozen=True)
class ArraySource:
    """An in-memory catalogue (the built-in Fashion-MNIST): the array is put in the object store once, and each
    task slices its rows from it (zero-copy on the node that holds it)."""

    ref: Any  # an ObjectRef of the uint8 array; wrapped, so Ray does not resolve it before the task runs

    def decode(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        import ray

        return np.asarray(ray.get(self.ref)[np.asarray(batch["row"])])


def decode_rows(batch: dict[str, np.ndarray], source: FileSource | ArraySource) -> dict[str, np.ndarray]:
    """One decode task: its rows' domain arrays, with their row ids carried along."""
    return {"row": np.asarray(batch["row"], dtype=np.int64), "pixels": source.decode(batch)}


class EmbedActor:
    """One embedding worker: the model is built once, when the actor starts (or restarts after being killed)."""

    def __init__(self, settings: Settings):
        from core.embedding.embedder import Embedder

        self.embedder = Embedder.from_settings(settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"row": np.asarray(batch["row"], dtype=np.int64),
                "features": self.embedder.features(batch["pixels"]).astype(np.float32, copy=False)}


@dataclass(frozen=True)
class ActorPlan:
    """How many embedding actors, and what each reserves: one per GPU on a cluster with GPUs; otherwise CPU actors
    on about three quarters of the cores, leaving the rest (at least one core) to the decode tasks, which would
    never be scheduled if the actors held every CPU."""

    count: int
    num_cpus: float
    num_gpus: int
    threads: int  # torch / ONNX Runtime threads inside each actor

    @classmethod
    def for_cluster(cls, resources: dict[str, float], num_threads: int = 0) -> "ActorPlan":
        cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
        if gpus:
            threads = num_threads or max(1, min(4, cpus // (2 * gpus)))
            return cls(gpus, min(threads, max(cpus - gpus, 0) / gpus), 1, threads)
        embed_cpus = max(1, cpus - max(1, cpus // 4))
        threads = min(num_threads or 4, embed_cpus)
        return cls(max(1, embed_cpus // threads), min(threads, max(cpus - 1, 0)), 0, threads)


# ------------------------------------------------------------------------------------------------- the runner
class RayRunner:
    """Embed every item with Ray Data, shard by shard; with ``out`` given, resumable by shard and assembled into
    a memory-mapped ``out`` file at the end (what ``load_or_build_embeddings`` reads, as with the sequential
    runner). ``settings`` are the resolved settings the embedder was made from: every actor rebuilds the same
    Embedder from them."""

    def __init__(self, settings: Settings, feature_dim: int, progress: Progress = no_progress,
                 batch_size: int | None = None, shard_rows: int | None = None):
        self.settings, self.feature_dim, self.progress = settings, feature_dim, progress
        self.batch_size = batch_size or settings.batch_size
        self.shard_rows = shard_rows or settings.ray_shard_rows
        self.resumed_from = 0  # rows of the shards found on disk
        self.plan: ActorPlan | None = None  # the actors of the last pass (None: every shard was on disk)

    def run(self, pixels, out: Path | None = None) -> np.ndarray:
        """Raw features (N, feature_dim) float32 for every item, in row order."""
        n, dim = len(pixels), self.feature_dim
        ranges = shard_ranges(n, self.shard_rows)
        folder = shard_dir(out) if out is not None else None
        done = done_shards(folder, ranges, n, dim) if folder is not None else set()
        self.resumed_from = sum(stop - start for start, stop in done)
        self.progress(STAGE, self.resumed_from, n)
        todo = [r for r in ranges if r not in done]
        result = np.empty((n, dim), np.float32) if folder is None else None
        if todo:
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
            self._embed(pixels, todo, ShardCollector(todo, dim, n, folder, result))
        return result if folder is None else assemble(folder, ranges, n, dim, Path(out))

    def _embed(self, pixels, todo: list[tuple[int, int]], collector: ShardCollector) -> None:
        with cluster(self.settings) as ray:
            self.plan = ActorPlan.for_cluster(ray.cluster_resources(), self.settings.num_threads)
            source, rows = _source(ray, pixels), _row_blocks(pixels, todo, self.batch_size * BLOCK_BATCHES)
            features = self._pipeline(ray, rows, source)
            for batch in features.iter_batches(batch_size=None, batch_format="numpy"):
                collector.add(batch["row"], batch["features"])
                self.progress(STAGE, self.resumed_from + collector.rows_done, collector.n)
            collector.check_complete()

    def _pipeline(self, ray: Any, blocks: list, source: FileSource | ArraySource) -> Any:
        plan = self.plan
        with warnings.catch_warnings():
            # Ray 2.60 takes the retry counts only as plain remote arguments, which it says 2.64 will rename
            # (requirements-scale.txt pins 2.60).
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            decoded = ray.data.from_arrow(blocks).map_batches(
                decode_rows, fn_kwargs={"source": source}, batch_size=None, batch_format="numpy", num_cpus=1,
                max_retries=RETRIES)
            return decoded.map_batches(
                EmbedActor, fn_constructor_kwargs={"settings": self.settings.replace(num_threads=plan.threads)},
                batch_size=self.batch_size,
                batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=plan.count), num_cpus=plan.num_cpus,
                num_gpus=plan.num_gpus or None, max_restarts=RETRIES, max_task_retries=RETRIES)


def _source(ray: Any, pixels) -> FileSource | ArraySource:
    if isinstance(pixels, FileImages):
        return FileSource(pixels.domain, pixels.roots)
    try:
        array = np.ascontiguousarray(pixels, dtype=np.uint8)
    except TypeError as exc:
        raise TypeError(f"The Ray runner embeds a file catalogue or a uint8 array, not {type(pixels).__name__}."
                        ) from exc
    return ArraySource(ray.put(array))


def _row_blocks(pixels, todo: list[tuple[int, int]], block_rows: int) -> list:
    """The rows to embed as Arrow tables of ``block_rows`` (a block never straddles two shards, so a shard's
    rows travel together): row id, and for a file catalogue its path and box."""
    import pyarrow as pa

    blocks = []
    for start, stop in todo:
        for first in range(start, stop, block_rows):
            rows = np.arange(first, min(first + block_rows, stop), dtype=np.int64)
            columns: dict[str, Any] = {"row": rows}
            if isinstance(pixels, FileImages):
                columns["path"] = pa.array([str(p) for p in pixels.paths[rows]], pa.string())
                if pixels.boxes is not None:
                    boxes = np.asarray(pixels.boxes[rows], dtype=np.int64)
                    columns.update({name: boxes[:, i] for i, name in enumerate(BOX_COLUMNS)})
            blocks.append(pa.table(columns))
    return blocks


# ------------------------------------------------------------------------------------------------ the cluster
@contextlib.contextmanager
def cluster(settings: Settings) -> Iterator[Any]:
    """Ray, connected: to the process's existing connection if there is one (left open), else to
    ``settings.ray_address``, else to a local cluster started here on this machine's cores (shut down after)."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(**init_args(settings))
    quiet_ray_data(ray)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def init_args(settings: Settings) -> dict[str, Any]:
    args: dict[str, Any] = {"address": settings.ray_address or None, "ignore_reinit_error": True,
                            "logging_level": logging.ERROR, "log_to_driver": False}
    if not settings.ray_address:  # these size a cluster we start; joining one, they are the cluster's own
        args.update(num_cpus=os.cpu_count() or 1, include_dashboard=False,
                    object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    return args


def quiet_ray_data(ray: Any) -> None:
    """Our progress callback reports the pass; Ray Data's own bars and INFO lines would interleave with it."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled", each pass
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
