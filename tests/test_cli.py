"""The CLI does what the pages do: search a photo file, and print the benchmark as one JSON object."""

from __future__ import annotations

import json

import pytest
from conftest import encoded, synthetic_photos

from core.__main__ import main
from core.config import Settings

TINY = ["--catalog", "synthetic", "--backbone", "test_efficientnet", "--image-size", "32", "--pca-dim", "16",
        "--pca-min-fit-items", "0", "--n-trees", "4", "--search-k", "200"]


def test_search_prints_ranked_results(tmp_path, capsys):
    photos, items = synthetic_photos()
    photo = tmp_path / "ring.jpg"
    photo.write_bytes(encoded(photos[50], "JPEG"))
    assert main(["search", str(photo), "-k", "3", "--artifacts-dir", str(tmp_path / "a"), *TINY]) == 0
    out = capsys.readouterr().out
    assert f"): {items.loc[50, 'category']}" in out.splitlines()[0] and out.startswith("predicted (")
    lines = out.strip().splitlines()  # "predicted: …", the table header, then one row per result
    assert len(lines) == 5 and lines[1].split() == ["id", "category", "split", "score"]


def test_search_isolates_a_photo_when_asked(tmp_path, capsys):
    photos, items = synthetic_photos()
    photo = tmp_path / "ring.jpg"
    photo.write_bytes(encoded(photos[50], "JPEG"))
    for flag in ("--isolate", "--no-isolate"):  # the photo's isolation, not the isolate setting (text)
        assert main(["search", str(photo), "-k", "3", flag, "--artifacts-dir", str(tmp_path / "a"), *TINY]) == 0
        assert capsys.readouterr().out.startswith("predicted (")


def test_search_with_a_bad_file_is_an_error_message_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "notes.jpg"
    bad.write_text("hello")
    assert main(["search", str(bad), "--artifacts-dir", str(tmp_path / "a"), *TINY]) == 2
    assert "not an image" in capsys.readouterr().err


def test_bench_json_has_the_promised_figures(tmp_path, capsys):
    assert main(["bench", "--json", "--queries", "20", "--artifacts-dir", str(tmp_path / "a"), *TINY]) == 0
    figures = json.loads(capsys.readouterr().out)
    for key in ("cold_build_s", "warm_load_s", "embed_images_per_s", "query_p50_ms", "query_p99_ms",
                "exact_query_p50_ms", "recall_at_10", "precision_at_10", "rss_mb"):
        assert isinstance(figures[key], (int, float)), key
    assert 0 <= figures["recall_at_10"] <= 1 and figures["n_items"] == 64


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("FVS_N_TREES", "7")
    monkeypatch.setenv("FVS_PCA_WHITEN", "true")
    monkeypatch.setenv("FVS_ARTIFACTS_DIR", "/tmp/somewhere")
    settings = Settings.from_env(search_k=99)
    assert settings.n_trees == 7 and settings.pca_whiten is True and settings.search_k == 99
    assert str(settings.artifacts_dir) == "/tmp/somewhere"
    monkeypatch.setenv("FVS_N_TREES", "many")
    with pytest.raises(ValueError, match="FVS_N_TREES"):
        Settings.from_env()


@pytest.mark.parametrize("field, value, expected", [
    ("isolate", "sometimes", "isolate must be one of auto, on, off"), ("n_trees", 0, "n_trees must be at least 1"),
    ("workers", -2, "workers must be at least -1"), ("image_size", 4096, "image_size must be at most 1024"),
    ("search_k", "2000", "search_k must be a whole number"), ("pca_whiten", "yes", "pca_whiten must be true or false"),
    ("catalog", " ", "catalog must not be empty"), ("run", "../elsewhere", "run must be a run id")])
def test_every_setting_is_checked_when_made(field, value, expected):
    with pytest.raises(ValueError, match=f"{expected}.*FVS_{field.upper()}"):
        Settings(**{field: value})
    assert Settings(data_dir="/tmp/x").data_dir.__class__.__name__ == "PosixPath"  # a path given as text


def test_each_benchmark_has_its_own_options(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("search", "retrieval", "load", "map", "stream", "photos", "hostile"))
    with pytest.raises(SystemExit):
        main(["bench", "stream", "--help"])
    stream = capsys.readouterr().out
    assert "--kill-at" in stream and "--no-sweep" not in stream and "--threads" not in stream
    with pytest.raises(SystemExit):  # another benchmark's option is refused, not silently ignored
        main(["bench", "stream", "--no-sweep"])
    assert "unrecognized arguments: --no-sweep" in capsys.readouterr().err
    from core.__main__ import _bench_argv

    assert _bench_argv(["bench", "--json", "--warm"]) == ["bench", "search", "--json", "--warm"]
    assert _bench_argv(["bench", "--json", "retrieval"]) == ["bench", "retrieval", "--json"]  # as the flat parser


def test_the_recipe_flags_set_the_recipe_and_the_settings_flags_the_settings():
    import argparse

    from core.__main__ import _recipe, _recipe_args, _settings, _source_args

    parser = argparse.ArgumentParser()
    _source_args(parser)
    _recipe_args(parser)
    args = parser.parse_args(["--image-size", "96", "--seed", "3", "--catalog", "luma-shop"])
    assert _recipe(args).image_size == 96 and _recipe(args).seed == 3
    settings = _settings(args)
    assert settings.catalog == "luma-shop" and settings.image_size == 0 and settings.seed == 0


def test_retrieval_bench_compares_the_five_methods(tmp_path, capsys):
    assert main(["bench", "retrieval", "--json", "--queries", "16", "--scale", "40,200", "--artifacts-dir",
                 str(tmp_path / "a"), *TINY]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_items"] == 64 and set(report["methods"]) == {"exact", "kmeans", "pca", "annoy", "hnsw"}
    for figures in report["methods"].values():
        for key in ("build_s", "disk_mb", "memory_mb", "p50_ms", "p99_ms", "recall_at_10", "precision_at_10",
                    "map_at_10"):
            assert isinstance(figures[key], (int, float)), key
    assert report["methods"]["exact"]["recall_at_10"] == 1.0
    assert len(report["annoy_sweep"]) == 24
    assert [(row["m"], row["ef"]) for row in report["hnsw_sweep"]] == [(m, ef) for m in (8, 16, 32)
                                                                       for ef in (16, 32, 64, 128, 256)]
    assert report["methods"]["hnsw"]["recall_at_10"] >= 0.9  # 64 items: the graph reaches nearly every one
    assert report["settings"]["hnsw_m"] == Settings().hnsw_m
    sources = {(row["n"], row["source"]) for row in report["scale"]}
    assert sources == {(40, "real"), (200, "synthetic")}
    assert {row["method"] for row in report["scale"]} == {"exact", "kmeans", "pca", "annoy", "hnsw"}


def test_load_script_runs_briefly_with_concurrent_users(tmp_path, capsys):
    assert main(["bench", "load", "--json", "--threads", "4", "--seconds", "1.5", "--artifacts-dir",
                 str(tmp_path / "a"), *TINY]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["threads"] == 4 and report["requests"] > 4
    assert report["error_count"] == 0
    assert report["loaded_p50_ms"] > 0 and report["throughput_per_s"] > 0


TRAIN = ["--catalog", "synthetic", "--backbone", "test_efficientnet", "--image-size", "32", "--epochs", "4",
         "--freeze", "full",
         "--batch-size", "8", "--lr", "0.003", "--embedding-dim", "16", "--warmup-epochs", "1"]


def test_train_then_evaluate_prints_test_figures(tmp_path, capsys):
    artifacts = ["--artifacts-dir", str(tmp_path / "a")]
    assert main(["train", "--json", *TRAIN, *artifacts]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["history"]) == 4 and out["test"]["split"] == "test"
    assert {"top1", "top3", "top5", "precision_at_10", "map_at_10", "tag_f1_micro"} <= set(out["test"])
    # evaluate serves the run it names and prints the same test figures
    serve = ["--run", out["run"], "--catalog", "synthetic", "--n-trees", "4", *artifacts]
    assert main(["evaluate", "--json", *serve]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["run"] == out["run"] and figures["top1"] == out["test"]["top1"]
    assert figures["precision_at_10"] == pytest.approx(out["test"]["precision_at_10"])
    # and the ImageNet-style baseline is evaluated the same way, its category from a neighbour vote
    assert main(["evaluate", "--json", *TINY, *artifacts, "--run", "imagenet"]) == 0  # else the run is served
    baseline = json.loads(capsys.readouterr().out)
    assert baseline["run"] is None and baseline["classifier"].startswith("similarity-weighted vote")


def test_train_with_a_bad_recipe_is_an_error_message(tmp_path, capsys):
    assert main(["train", "--freeze", "everything", "--artifacts-dir", str(tmp_path)]) == 2
    assert "freeze must be one of full, last, heads" in capsys.readouterr().err
    assert main(["evaluate", "--run", "missing-run", "--artifacts-dir", str(tmp_path)]) == 2
    assert "No fine-tuned run 'missing-run'" in capsys.readouterr().err


def test_prepare_names_the_inference_runtime_it_was_asked_for(tmp_path, capsys):
    for runtime in ("torchscript", "onnx"):
        assert main(["prepare", "--inference", runtime, "--artifacts-dir", str(tmp_path / "a"), *TINY]) == 0
        assert json.loads(capsys.readouterr().out)["inference"] == runtime
