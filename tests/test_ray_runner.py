"""The Ray Data runner (core.embedding.ray_runner) on a local two-CPU cluster started here: the features of a photo-file
catalogue match the sequential runner's even when its embedding actor and a decode task are SIGKILLed mid-run;
an interrupted pass resumes by shard through `python -m core prepare --runner ray --ray-address …`; an in-memory
catalogue works too. The rest (shards on disk, actor planning, a missing Ray) needs no cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import ray  # requirements-scale.txt, which requirements-dev.txt installs: missing, these tests fail, not skip
from conftest import COLOURS, GARMENTS, garment_file_photo, synthetic_arrays, tiny_settings

from core.catalog.prepare import prepare_catalog
from core.catalog.registry import open_catalog
from core.catalog.sources import SourceSpec
from core.embedding.embedder import Embedder, Projection
from core.embedding.ray_runner import (
    ActorPlan,
    RayMissing,
    RayRunner,
    done_shards,
    import_ray,
    shard_dir,
    shard_name,
    shard_ranges,
)
from core.embedding.sequential_runner import SequentialRunner
from core.search.workspace import Workspace
from core.vectors import l2_normalize

PER_CATEGORY = 32  # 96 items: six shards of 16
SHARD, BATCH = 16, 16
# The model at 224 px takes ~0.2 s a batch on one thread, so a worker killed after the first shard still has
# most of the catalogue ahead of it (tiny photos are decoded long before the embedding actor has started).
IMAGE_SIZE = 224
# 600-px PNGs (no reduced-scale decode for PNG) take ~12 ms each: a decode task of 16 runs long enough to be seen.
PHOTO_PX = 600


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster for this module: two CPUs (one embedding actor, one decode slot), a small object store."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 << 20, logging_level="ERROR",
             log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A prepared folder catalogue of packshot files, its resolved settings and its sequential features."""
    root = tmp_path_factory.mktemp("ray")
    rng = np.random.default_rng(0)
    for category in GARMENTS:
        (root / "photos" / category).mkdir(parents=True)
        for i in range(PER_CATEGORY):
            photo = garment_file_photo(category, list(COLOURS)[i % 3], rng, size=PHOTO_PX)
            photo.save(root / "photos" / category / f"{i:02d}.png", compress_level=1)
    settings = tiny_settings(root, catalog="ray-photos", image_size=IMAGE_SIZE, batch_size=BATCH)
    prepare_catalog(SourceSpec(path=str(root / "photos")), settings, name="ray-photos", photo_size=64)
    catalog = open_catalog(settings)
    embedder = Embedder.from_settings(settings)
    sequential = SequentialRunner(embedder, BATCH, workers=2).run(catalog.pixels)
    return settings, catalog, embedder.feature_dim, sequential


@dataclass
class KilledRun:
    features: np.ndarray
    runner: RayRunner
    killed: dict[int, str]  # pid → process title
    done_at_kill: int
    actors_after: set[int]  # embedding actors seen after the kill
    partial: Path


@pytest.fixture(scope="module")
def killed_run(cluster, photos) -> KilledRun:
    """A pass over the catalogue into its store's partial file, whose embedding actor and running decode task
    are SIGKILLed as soon as the first shard has arrived."""
    settings, catalog, dim, _ = photos
    partial = Workspace.store_for(settings, catalog).file("features.partial.npy")
    killed: dict[int, str] = {}
    at_kill: list[int] = []
    actors_after: set[int] = set()

    def kill_after_the_first_shard(stage: str, done: int, total: int) -> None:
        if not at_kill and 0 < done < total:
            at_kill.append(done)
            for pid, title in ray_workers().items():
                if "EmbedActor" in title:
                    os.kill(pid, signal.SIGKILL)
                    killed[pid] = title
        elif at_kill:
            actors_after.update(pid for pid, title in ray_workers().items() if "EmbedActor" in title)

    runner = RayRunner(settings, dim, kill_after_the_first_shard, batch_size=BATCH, shard_rows=SHARD)
    stop = threading.Event()
    decode_killer = threading.Thread(target=kill_the_first_decode_task, args=(stop, killed))
    decode_killer.start()
    started = time.perf_counter()
    try:
        features = runner.run(catalog.pixels, out=partial)
    finally:
        stop.set()
        decode_killer.join()
    print(f"\nkilled {sorted(killed.values())} at row {at_kill} of {len(catalog)}; "
          f"the pass took {time.perf_counter() - started:.1f} s")
    return KilledRun(np.array(features), runner, killed, at_kill[0] if at_kill else -1, actors_after, partial)


def ray_workers() -> dict[int, str]:
    """This test process's Ray worker processes (pid → title, e.g. ``ray::MapWorker(MapBatches(EmbedActor))``):
    descendants of this process, so another Ray on the machine is never touched."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            title = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        table[int(stat.parent.name)] = (ppid, title)
    mine: dict[int, str] = {}
    parents = {os.getpid()}
    while parents:
        parents = {pid for pid, (ppid, _) in table.items() if ppid in parents and pid not in mine}
        mine.update({pid: table[pid][1] for pid in parents})
    return {pid: title for pid, title in mine.items() if title.startswith("ray::")}


def kill_the_first_decode_task(stop: threading.Event, killed: dict[int, str]) -> None:
    """SIGKILL the first worker seen running a decode task (its title names the task while it runs)."""
    while not stop.is_set():
        running = [pid for pid, title in ray_workers().items() if "decode_rows" in title]
        if running:
            os.kill(running[0], signal.SIGKILL)
            killed[running[0]] = "decode task"
            return
        time.sleep(0.005)


def compare(features: np.ndarray, expected: np.ndarray) -> float:
    difference = float(np.abs(np.asarray(features) - expected).max())
    print(f"max abs difference to the sequential runner: {difference:.3g}")
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    return difference


def test_killed_workers_are_retried_and_the_features_match_the_sequential_runner(killed_run, photos):
    _, catalog, dim, sequential = photos
    run = killed_run
    assert any("EmbedActor" in title for title in run.killed.values()), f"no embedding actor: {ray_workers()}"
    assert "decode task" in run.killed.values(), "no decode task was seen running"
    assert 0 < run.done_at_kill <= len(catalog) // 2  # killed with most of the catalogue still to embed
    assert run.actors_after - set(run.killed), "the killed embedding actor was not restarted"
    assert run.features.shape == (len(catalog), dim)
    compare(run.features, sequential)
    assert sorted(p.name for p in shard_dir(run.partial).iterdir()) == [
        shard_name(start, stop, len(catalog)) for start, stop in shard_ranges(len(catalog), SHARD)]
    assert run.runner.resumed_from == 0 and run.runner.plan == ActorPlan(count=1, num_cpus=1, num_gpus=0, threads=1)


def test_an_interrupted_pass_resumes_by_shard_through_the_command_line(killed_run, photos, cluster):
    settings, catalog, dim, sequential = photos
    store = Workspace.store_for(settings, catalog)
    shards = sorted(shard_dir(killed_run.partial).glob("features-*.npy"))
    for shard in shards[2:]:  # a pass that died after writing its first two shards
        shard.unlink()
    command = [sys.executable, "-m", "core", "prepare", "--catalog", "ray-photos", "--data-dir",
               str(settings.data_dir), "--artifacts-dir", str(settings.artifacts_dir), "--backbone",
               settings.backbone, "--image-size", str(IMAGE_SIZE), "--pca-dim", str(settings.pca_dim),
               "--pca-min-fit-items", "0", "--n-trees", str(settings.n_trees), "--search-k", str(settings.search_k),
               "--batch-size", str(BATCH),
               "--runner", "ray", "--ray-address", cluster, "--ray-shard-rows", str(SHARD)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FVS_")}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    print(f"\nprepare --runner ray: {time.perf_counter() - started:.1f} s")
    assert done.returncode == 0, done.stderr[-3000:]
    record = store.meta()["files"]["embeddings.npy"]
    assert record["resumed_from"] == 2 * SHARD  # the shards on disk were not embedded again
    assert not shard_dir(killed_run.partial).exists() and not killed_run.partial.exists()  # cleaned up
    expected = l2_normalize(Projection.load(store.file("projection.npz"))(sequential))
    np.testing.assert_allclose(np.load(store.file("embeddings.npy")), expected, rtol=1e-5, atol=1e-5)


def test_an_in_memory_catalogue_gives_the_sequential_features(cluster, tmp_path):
    pixels, _ = synthetic_arrays()
    settings = tiny_settings(tmp_path, batch_size=BATCH)
    embedder = Embedder.from_settings(settings)
    runner = RayRunner(settings, embedder.feature_dim, batch_size=BATCH, shard_rows=SHARD)
    compare(runner.run(pixels), SequentialRunner(embedder, BATCH).run(pixels))


# ------------------------------------------------------------------------------------------- without a cluster
def test_only_shards_of_this_layout_and_shape_count_as_done(tmp_path):
    n, dim = 40, 8
    ranges = shard_ranges(n, 16)
    assert ranges == [(0, 16), (16, 32), (32, 40)]
    np.save(tmp_path / shard_name(0, 16, n), np.zeros((16, dim), np.float32))
    np.save(tmp_path / shard_name(16, 32, n), np.zeros((16, dim + 1), np.float32))  # another model's width
    np.save(tmp_path / shard_name(32, 48, n), np.zeros((16, dim), np.float32))  # another shard size
    (tmp_path / shard_name(32, 40, n)).write_bytes(b"\x93NUMPY truncated")
    assert done_shards(tmp_path, ranges, n, dim) == {(0, 16)}


def test_a_pass_with_every_shard_on_disk_starts_no_cluster(tmp_path, monkeypatch):
    pixels, _ = synthetic_arrays()
    out = tmp_path / "features.npy"
    expected = np.random.default_rng(0).random((len(pixels), 8), dtype=np.float32)
    for start, stop in shard_ranges(len(pixels), SHARD):
        shard_dir(out).mkdir(exist_ok=True)
        np.save(shard_dir(out) / shard_name(start, stop, len(pixels)), expected[start:stop])
    monkeypatch.setattr("core.embedding.ray_runner.import_ray", lambda: pytest.fail("Ray was started"))
    runner = RayRunner(tiny_settings(tmp_path), 8, shard_rows=SHARD)
    np.testing.assert_array_equal(runner.run(pixels, out=out), expected)
    assert runner.resumed_from == len(pixels) and runner.plan is None


def test_actor_plan_leaves_cpus_to_decode_tasks():
    assert ActorPlan.for_cluster({"CPU": 2}) == ActorPlan(1, 1, 0, 1)
    assert ActorPlan.for_cluster({"CPU": 1}) == ActorPlan(1, 0, 0, 1)  # a 0-CPU actor: decode tasks still run
    assert ActorPlan.for_cluster({"CPU": 16}) == ActorPlan(3, 4, 0, 4)
    assert ActorPlan.for_cluster({"CPU": 64, "GPU": 4}) == ActorPlan(4, 4, 1, 4)
    assert ActorPlan.for_cluster({"CPU": 16}, num_threads=2) == ActorPlan(6, 2, 0, 2)


def test_a_missing_ray_is_a_message_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    with pytest.raises(RayMissing, match=r"pip install -r requirements-scale\.txt"):
        import_ray()
