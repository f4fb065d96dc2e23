"""``python -m core bench stream``: a generated catalogue of N photo files, prepared, embedded, killed part-way
(SIGKILL, as a power cut would) and resumed, with throughput and peak memory of each step.

Memory bounded by the batch means the peak RSS of the embedding process barely moves with N; resumable means
the second process starts at the row the first had committed, not at zero. Both are printed, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from core.catalog.prepare import prepare_catalog
from core.catalog.registry import open_catalog
from core.catalog.sources import SourceSpec
from core.config import Settings
from core.embedding.embedder import describe_model, model_key
from core.progress import Progress, no_progress
from core.search.workspace import Workspace
from core.threads import loader_workers

CATEGORIES = ("tops", "trousers", "dresses", "bags")
SERVED = False  # makes a catalogue of its own


def write_photos(root: Path, n: int, seed: int = 0, progress: Progress = no_progress) -> Path:
    """N product-like JPEGs (400×300, a coloured garment shape on a light background) in category folders;
    files already there are kept, so a second run reuses them."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        category = CATEGORIES[i % len(CATEGORIES)]
        path = root / category / f"{i:07d}.jpg"
        colour, background = tuple(int(v) for v in rng.integers(0, 256, 3)), int(rng.integers(215, 256))
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.new("RGB", (300, 400), (background,) * 3)
        draw = ImageDraw.Draw(image)
        w, h = rng.integers(90, 140), rng.integers(120, 180)
        box = [150 - w, 200 - h, 150 + w, 200 + h]
        [draw.rectangle, draw.ellipse, draw.rounded_rectangle, draw.chord][i % 4](
            *([box, 30, 330] if i % 4 == 3 else [box]), fill=colour)
        image.save(path, quality=88)
        if i % 500 == 0:
            progress("Writing photos", i, n)
    progress("Writing photos", n, n)
    return root


def _watch(process: subprocess.Popen, state: Path, target_row: float | None, peaks: dict[str, int]) -> int:
    """Wait for ``process``, sampling its memory into ``peaks``; with ``target_row``, SIGKILL it when its
    extraction is estimated to pass that row, and return the estimate.

    Only commits (every 10 s) are visible from outside, so the rate between two commits predicts when the
    target row is reached; the kill then lands between commits, as a real crash would."""
    seen: list[tuple[float, int]] = []
    while process.poll() is None:
        _sample_memory(process.pid, peaks)
        try:
            done = json.loads(state.read_text())["done"]
        except (OSError, ValueError, KeyError):
            done = 0
        now = time.perf_counter()
        if done and (not seen or done != seen[-1][1]):
            seen.append((now, done))
        if target_row is not None and len(seen) >= 2:
            (t1, d1), (t2, d2) = seen[-2], seen[-1]
            estimate = d2 + (d2 - d1) / (t2 - t1) * (now - t2)
            if estimate >= target_row:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return int(estimate)
        time.sleep(0.05)
    return 0


def _sample_memory(pid: int, peaks: dict[str, int]) -> None:
    """Peak anonymous memory (the process's own: tensors, batches, arrays) and file-backed resident memory (mapped
    pages of libraries and of the features file, which the kernel can drop), in MB, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            peaks[key] = max(peaks.get(key, 0), int(value.split()[0]) // 1024)


def run_stream_bench(settings: Settings, items: int, directory: Path, kill_at: float = 0.6,
                     progress: Progress = no_progress) -> dict:
    root = write_photos(directory / f"photos-{items}", items, progress=progress)
    name = f"bench-stream-{items}"
    started = time.perf_counter()
    report = prepare_catalog(SourceSpec(path=str(root)), settings, name=name, workers=loader_workers(settings),
                             progress=progress)
    check_s = time.perf_counter() - started
    settings = settings.replace(catalog=name)
    catalog = open_catalog(settings)
    store = Workspace.store_for(settings, catalog)
    resolved = settings.for_catalog(catalog.domain.input_size, len(catalog.fit_rows()))
    for leftover in ("embeddings.npy", "features.partial.npy", "features.partial.json"):
        store.file(leftover).unlink(missing_ok=True)  # a cold extraction every time
    command = [sys.executable, "-m", "core", "prepare", "--catalog", name, "--artifacts-dir",
               str(settings.artifacts_dir), "--backbone", settings.backbone]
    state = store.file("features.partial.json")
    peaks: dict[str, int] = {}
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.perf_counter()
    killed_at = _watch(first, state, kill_at * items, peaks)
    first_s = time.perf_counter() - t0
    committed = json.loads(state.read_text())["done"] if state.is_file() else 0  # where the second one starts
    t1 = time.perf_counter()
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    _watch(second, state, None, peaks)
    second_s = time.perf_counter() - t1
    if second.returncode:
        raise RuntimeError(f"the resumed extraction failed (exit status {second.returncode})")
    record = store.meta()["files"]["embeddings.npy"]
    return {
        "items": items, "skipped": len(report.problems), "cores": os.cpu_count(),
        "workers": loader_workers(settings), "model": model_key(describe_model(resolved)),
        "image_size": resolved.image_size,
        "check_images_s": round(check_s, 1), "check_images_per_s": round(items / check_s, 1),
        "killed_after_s": round(first_s, 1), "killed_at_estimated_row": killed_at,
        "rows_committed_at_kill": committed, "resumed_from_row": record.get("resumed_from"),
        "resume_process_s": round(second_s, 1),
        "resume_embedding_s": record.get("seconds"), "embedding_images_per_s": record.get("images_per_s"),
        # the extraction process (not its DataLoader workers): anonymous and file-backed resident memory
        "peak_anon_rss_mb": peaks.get("RssAnon"), "peak_file_rss_mb": peaks.get("RssFile"),
        # the largest single process among the two extractions and their workers, all memory
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "embeddings": json.loads(second.stdout.read())["artifacts"],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--items", type=int, default=10_000, help="photo files to generate and embed")
    parser.add_argument("--dir", type=Path, default=Path("artifacts/bench-stream"), help="where the photos go")
    parser.add_argument("--kill-at", type=float, default=0.6, help="SIGKILL the extraction at this share")


def main(args: argparse.Namespace, settings: Settings, progress: Progress) -> dict:
    return run_stream_bench(settings, args.items, args.dir, kill_at=args.kill_at, progress=progress)
