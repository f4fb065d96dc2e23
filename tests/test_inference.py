"""The inference runtimes give the same vectors (the model key does not depend on them), the ONNX export is cached
and rebuilt when damaged, and a missing runtime is a message, not a traceback."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from core.catalog.item_files import FileImages
from core.catalog.prepare import prepare_catalog
from core.catalog.registry import open_catalog
from core.catalog.sources import SourceSpec
from core.embedding import runtimes
from core.embedding.embedder import Embedder
from core.embedding.runtimes import InferenceError, OnnxNetwork, resolve_runtime
from tests.conftest import tiny_settings, write_photo_records

RUNTIMES = ("onnx", "torchscript", "eager")


def _batch(size: int = 32, n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_every_runtime_gives_the_eager_vectors_under_one_model_key(tmp_path):
    embedders = {rt: Embedder.from_settings(tiny_settings(tmp_path, inference=rt)) for rt in RUNTIMES}
    assert {rt: e.runtime for rt, e in embedders.items()} == {rt: rt for rt in RUNTIMES}
    assert isinstance(embedders["onnx"].network, OnnxNetwork)
    assert len({e.key for e in embedders.values()}) == 1
    eager = embedders["eager"].features(_batch())
    for runtime in ("onnx", "torchscript"):
        got = embedders[runtime].features(_batch())
        assert got.shape == eager.shape and got.dtype == np.float32
        assert _cosines(got, eager).min() > 0.99999
        np.testing.assert_allclose(got, eager, rtol=1e-3, atol=1e-4)
    single = embedders["onnx"].features(_batch(n=1))  # a query is a batch of one: the batch axis is free
    np.testing.assert_allclose(single[0], embedders["onnx"].features(_batch())[0], rtol=1e-4, atol=1e-5)


def test_auto_is_onnx_where_onnx_runtime_is_installed(tmp_path):
    assert resolve_runtime("auto") == "onnx"
    assert Embedder.from_settings(tiny_settings(tmp_path)).runtime == "onnx"


def test_the_export_is_cached_by_model_and_rebuilt_when_damaged(tmp_path):
    settings = tiny_settings(tmp_path, inference="onnx")
    first = Embedder.from_settings(settings)
    [path] = (tmp_path / "artifacts" / "onnx").glob("*.onnx")
    assert path.name.startswith(first.key) and "32px" in path.name
    stamp = path.stat().st_mtime_ns
    Embedder.from_settings(settings)
    assert path.stat().st_mtime_ns == stamp  # read, not exported again
    path.write_bytes(b"not an onnx model")
    again = Embedder.from_settings(settings)
    assert isinstance(again.network, OnnxNetwork) and path.stat().st_size > 1000
    np.testing.assert_allclose(again.features(_batch()), first.features(_batch()), rtol=1e-5, atol=1e-6)


def test_missing_onnx_runtime_falls_back_under_auto_and_explains_under_onnx(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert resolve_runtime("auto") == "torchscript"
    with pytest.raises(InferenceError, match="pip install -r requirements.txt"):
        resolve_runtime("onnx")


def test_a_network_that_cannot_be_exported_runs_with_torchscript(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(runtimes.torch.onnx, "export", refuse)
    with pytest.warns(UserWarning, match="ONNX export failed"):
        embedder = Embedder.from_settings(tiny_settings(tmp_path, inference="onnx"))
    assert not isinstance(embedder.network, OnnxNetwork)
    assert embedder.features(_batch()).shape[0] == 6


def test_after_a_failed_export_the_prepare_summary_names_torchscript(tmp_path, monkeypatch, capsys):
    """The summary said ``"inference": "onnx"`` after the export had fallen back to TorchScript (issue 29, 9)."""
    import json

    from core.__main__ import main
    from core.search.workspace import Workspace

    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(runtimes.torch.onnx, "export", refuse)
    settings = tiny_settings(tmp_path, inference="onnx")
    with pytest.warns(UserWarning, match="ONNX export failed"):
        assert main(["prepare", "--catalog", "synthetic", "--backbone", "test_efficientnet", "--image-size", "32",
                     "--pca-dim", "16", "--pca-min-fit-items", "0", "--n-trees", "4", "--inference", "onnx",
                     "--run", "imagenet", "--artifacts-dir", str(settings.artifacts_dir),
                     "--data-dir", str(settings.data_dir)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["inference"] == "torchscript"
    with pytest.warns(UserWarning, match="ONNX export failed"):
        assert Workspace.open(settings).describe()["inference"] == "torchscript"
    assert not list((tmp_path / "artifacts" / "onnx").glob("*.onnx"))  # nothing exported was cached either


def test_a_bad_runtime_name_is_refused_when_the_settings_are_made(tmp_path):
    with pytest.raises(ValueError, match="inference must be one of auto, cuda, onnx, torchscript, eager"):
        tiny_settings(tmp_path, inference="tensorrt")


@pytest.fixture(scope="module")
def photo_shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed-bench")
    pd.DataFrame(write_photo_records(root / "data", per_category=6)).to_csv(root / "data" / "items.csv", index=False)
    settings = tiny_settings(root, catalog="bench-shop", image_size=0, batch_size=8)
    prepare_catalog(SourceSpec(path=str(root / "data" / "items.csv")), settings, name="bench-shop", photo_size=64)
    return settings


def test_draft_decoding_keeps_small_photos_as_they_are(photo_shop):
    """Files no larger than the model input needs decode the same with and without draft (the built-in ones)."""
    images = open_catalog(photo_shop).pixels
    assert isinstance(images, FileImages)
    drafted = FileImages(images.paths, images.boxes, images.domain, images.roots, draft=True)
    np.testing.assert_array_equal(drafted[:4], images[:4])


def test_embed_bench_reports_speedup_and_agreement(photo_shop):
    from core.bench.embed import run_embed_bench

    result = run_embed_bench(photo_shop, items=0, stage_items=5, batch_sizes=(8,), worker_counts=(0,), repeats=1)
    assert result["adopted_runtime"] == "onnx" and result["items"] == len(open_catalog(photo_shop))
    assert {"eager", "eager_channels_last", "torchscript", "onnx"} <= set(result["model"])
    assert all(v["min_cosine_to_eager"] > 0.9999 for v in result["model"].values())
    assert len(result["end_to_end"]) == 5 and all(p["images_per_s"] > 0 for p in result["end_to_end"].values())
    assert result["speedup"] > 0 and set(result["stages"]) == {"read_ms", "decode_ms", "decode_draft_ms",
                                                                 "convert_ms"}
    assert result["agreement"]["min_cosine"] > 0.9999 and result["agreement"]["same_top10_share"] == 1.0
    assert result["agreement"]["queries"] > 0


def test_a_large_jpeg_is_decoded_only_as_large_as_its_crop_needs(tmp_path):
    from PIL import Image

    from core.catalog.item_files import load_photo

    path = tmp_path / "big.jpg"
    Image.new("RGB", (2400, 1800), (200, 30, 40)).save(path, quality=90)
    assert load_photo(str(path)).size == (1024, 768)  # an upload's working size
    drafted = load_photo(str(path), min_side=256)
    assert 256 <= min(drafted.size) < 768 and drafted.size == (600, 450)  # decoded at 1/4 scale
    boxed = load_photo(str(path), box=(0, 0, 600, 600), min_side=256)  # a small box needs more of the photo
    assert boxed.size == (256, 256)


def test_the_device_wrapper_hands_features_back_on_the_cpu(tmp_path):
    """What the cuda runtime runs, exercised on the CPU device (CI has no GPU)."""
    import torch

    from core.embedding.runtimes import DeviceNetwork

    eager = Embedder.from_settings(tiny_settings(tmp_path, inference="eager"))
    wrapped = DeviceNetwork(eager.network, 32, torch.device("cpu"))
    batch = eager.transform(_batch())
    out = wrapped(batch)
    assert out.device.type == "cpu" and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), eager.features(_batch()), rtol=1e-3, atol=1e-4)


def test_cuda_without_a_gpu_is_a_message(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InferenceError, match="needs a CUDA GPU"):
        resolve_runtime("cuda")
    assert resolve_runtime("auto") == "onnx"
