"""Page logic through Streamlit's AppTest: what a user sees after each action, on the tiny catalogue."""

from __future__ import annotations

import base64
import json
import os

from pathlib import Path

import numpy as np
import pytest
from conftest import encoded, synthetic_photos
from streamlit.testing.v1 import AppTest
from test_images import bomb_png

from core.model.runs import load_checkpoint


def search_page(app: AppTest) -> AppTest:
    app.run()
    app.switch_page("app_pages/search.py").run()
    assert not app.exception, app.exception
    return app


def result_images(app: AppTest) -> int:
    return len(app.get_by_key("results").get("image")) if _has_results(app) else 0


def _has_results(app: AppTest) -> bool:
    try:
        app.get_by_key("results")
        return True
    except (KeyError, IndexError, AttributeError):
        return False


def cluster_names(spec: str) -> list[str]:
    """The K-Means clusters a map figure is coloured by: plotly draws one trace per cluster, named by its number."""
    return [trace["name"] for trace in json.loads(spec)["data"] if str(trace.get("name", "")).isdigit()]


def upload(app: AppTest, name: str, data: bytes, mime: str = "image/png") -> AppTest:
    app.file_uploader(key="upload").set_value((name, data, mime)).run()
    assert not app.exception, app.exception
    return app


def test_home_shows_what_the_app_does_and_the_catalogue(app):
    app.run()
    assert not app.exception, app.exception
    assert app.title[0].value == "Fashion visual search"
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Catalogue items"] == "64" and metrics["Categories"] == "4"
    assert metrics["Served index"] == "exact search"
    assert len(app.get("image")) >= 1  # the category montage


def test_uploading_a_photo_shows_k_results_and_the_converted_query(app):
    search_page(app)
    assert result_images(app) == 0 and app.info  # nothing searched yet: an invitation, not an error
    photos, items = synthetic_photos()
    upload(app, "disc.jpg", encoded(photos[20], "JPEG"), "image/jpeg")
    assert result_images(app) == 10
    captions = [caption for image in app.get("image") for caption in image.captions]
    assert "Your photo" in captions and "As the catalogue sees it" in captions
    metrics = {m.label: m for m in app.metric}
    assert metrics["Predicted category"].value == items.loc[20, "category"]
    assert metrics["Search latency"].value.endswith("ms")


def test_top_k_slider_and_category_filter(app):
    search_page(app)
    photos, _ = synthetic_photos()
    upload(app, "square.png", encoded(photos[0]))
    app.slider(key="k").set_value(7).run()
    assert result_images(app) == 7
    app.selectbox(key="category").set_value("Ring").run()
    texts = " ".join(m.value for m in app.get_by_key("results").get("markdown"))
    assert texts.count("**Ring**") == 7 and "**Square**" not in texts


def test_exact_switch_changes_the_method(app):
    search_page(app)
    photos, _ = synthetic_photos()
    upload(app, "bar.png", encoded(photos[40]))
    # 64 items: exact search serves (settings.exact_max_items), and the switch compares it with the Annoy index
    assert {m.label: m for m in app.metric}["Search latency"].delta == "exact"
    captions = [c.value.replace("\u2060", "") for c in app.caption]  # the word joiner that keeps "@" text
    assert any(c.startswith("Served index: exact search, recall@10 1.000") for c in captions), captions
    assert app.toggle(key="exact").label == "Annoy index instead"
    app.toggle(key="exact").set_value(True).run()
    assert {m.label: m for m in app.metric}["Search latency"].delta == "annoy"
    assert result_images(app) == 10


def test_exact_switch_compares_a_served_index_with_exact_search(app, monkeypatch):
    monkeypatch.setenv("FVS_INDEX", "annoy")
    search_page(app)
    photos, _ = synthetic_photos()
    upload(app, "bar.png", encoded(photos[40]))
    assert {m.label: m for m in app.metric}["Search latency"].delta == "annoy"
    assert app.toggle(key="exact").label == "Exact search (brute force)"
    assert "Annoy (search_k 200)" in app.toggle(key="exact").help
    app.toggle(key="exact").set_value(True).run()
    assert {m.label: m for m in app.metric}["Search latency"].delta == "exact"


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("notes.jpg", b"this is a text file, not a photo\n", "not an image"),
        ("empty.png", b"", "empty"),
        ("half.jpg", None, "damaged or incomplete"),
        ("bomb.png", None, "too large"),
    ],
)
def test_bad_uploads_get_a_message_and_the_app_keeps_working(app, name, data, message):
    photos, _ = synthetic_photos()
    if name == "half.jpg":
        full = encoded(photos[5].resize((600, 600)).effect_spread(3), "JPEG")
        data = full[: len(full) // 2]
    elif name == "bomb.png":
        data = bomb_png()
    search_page(app)
    upload(app, name, data)
    assert any(message in e.value for e in app.error), [e.value for e in app.error]
    assert result_images(app) == 0
    upload(app, "good.png", encoded(photos[5]))  # and the next upload works
    assert not app.error and result_images(app) == 10


def test_catalogue_item_query_and_search_with_this_item(app):
    search_page(app)
    app.radio(key="query_mode").set_value("Catalogue item").run()
    assert result_images(app) == 10
    first_hit = app.get_by_key("results").get("button")[0]
    target_row = int(first_hit.key.split("-")[1])
    first_hit.click().run()
    assert not app.exception
    assert app.session_state["query_row"] == target_row
    assert app.radio(key="query_mode").value == "Catalogue item"
    assert result_images(app) == 10


def test_a_bad_setting_is_a_message_not_a_traceback(app, monkeypatch):
    monkeypatch.setenv("FVS_N_TREES", "0")
    app.run()
    assert not app.exception, app.exception
    shown = [e.value.replace("\\", "") for e in app.error]  # the message is escaped as Markdown text
    assert any("n_trees must be at least 1" in text and "FVS_N_TREES" in text for text in shown), shown


def test_missing_catalogue_gets_instructions_not_a_traceback(app, monkeypatch, tmp_path):
    from core.catalog import fashion_mnist

    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("FVS_CATALOG", "fashion-mnist")
    monkeypatch.setenv("FVS_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("FVS_BACKBONE", "efficientnet_lite0")
    app.run()
    assert not app.exception
    assert any("Fashion-MNIST is not on this machine" in e.value and "core prepare" in e.value for e in app.error)


def test_camera_photo_is_searched_like_an_upload(app):
    search_page(app)
    app.radio(key="query_mode").set_value("Take a photo").run()
    photos, items = synthetic_photos()
    app.camera_input(key="camera").set_value(("shot.jpg", encoded(photos[50], "JPEG"), "image/jpeg")).run()
    assert not app.exception, app.exception
    assert result_images(app) == 10
    assert {m.label: m for m in app.metric}["Predicted category"].value == items.loc[50, "category"]


def test_model_page_runs_the_retrieval_comparison_and_charts_it(app):
    app.run()
    app.switch_page("app_pages/model.py").run()
    assert not app.exception, app.exception
    assert any("No comparison has been run" in i.value for i in app.info)
    app.number_input(key="bench_queries").set_value(20)
    app.multiselect(key="bench_scale").set_value([10_000])
    app.button(key="bench_run").click().run()  # the form's submit button
    assert not app.exception, app.exception
    table = app.dataframe[-1].value
    assert list(table.index) == ["exact", "kmeans", "pca", "annoy", "hnsw"]
    assert table.loc["exact", "recall@10"] == 1.0
    charts = [c for c in app.get("plotly_chart") if c.key != "test_confusion"]
    assert len(charts) == 4  # Annoy sweep, HNSW sweep, scale latency, scale memory


@pytest.fixture
def trained_app(app, tmp_path_factory, monkeypatch):
    """The app with one fine-tuned run of the tiny catalogue, in an artifacts directory of its own (a finished run
    becomes the sidebar's default model, which the other tests must not get)."""
    from test_train import TINY_RECIPE

    from core.config import Settings
    from core.training.trainer import train

    root = tmp_path_factory.getbasetemp() / "app-trained-artifacts"
    monkeypatch.setenv("FVS_ARTIFACTS_DIR", str(root))
    run = train(Settings.from_env(), TINY_RECIPE.replace(epochs=4))  # the other FVS_* from the app fixture
    return app, run


def test_the_sidebar_serves_a_fine_tuned_run(trained_app):
    app, run = trained_app
    app.run()
    assert not app.exception, app.exception
    model = app.selectbox(key="model")
    assert model.options[0].startswith("tiny test network (random weights) fine-tuned · 32 px · 4 ep, test ")
    assert model.value == f"run:{run.id}"  # the newest finished run is served by default
    app.switch_page("app_pages/search.py").run()
    assert not app.exception, app.exception
    photos, items = synthetic_photos()
    upload(app, "ring.png", encoded(photos[60]))
    metrics = {m.label: m for m in app.metric}
    assert "probability" in metrics["Predicted category"].delta
    assert result_images(app) == 10


def test_model_page_lists_runs_with_curves_and_test_figures(trained_app):
    app, run = trained_app
    app.run()
    app.switch_page("app_pages/model.py").run()
    assert not app.exception, app.exception
    runs = next(d.value for d in app.dataframe if "run" in d.value.columns)
    assert list(runs["run"]) == [run.id] and runs.loc[0, "state"] == "done" and runs.loc[0, "epochs"] == "4/4"
    labels = {m.label: m.value for m in app.metric}
    assert labels["Test top-1"].endswith("%") and float(labels["precision@10"]) > 0
    # the synthetic catalogue has tags: their test F1 and the threshold the run chose on validation
    assert float(labels["Tag F1 micro"]) == pytest.approx(run.test_figures()["tag_f1_micro"], abs=5e-4)
    assert float(labels["Tag threshold"]) == pytest.approx(run.test_figures()["tag_threshold"])
    assert len(app.get("plotly_chart")) >= 2  # loss and validation curves
    assert app.get("form")  # the train form is there, collapsed


def test_tags_page_with_imagenet_features_predicts_categories(app):
    app.run()
    app.switch_page("app_pages/tags.py").run()
    assert not app.exception, app.exception
    assert any("no tag head" in i.value for i in app.info)  # the catalogue has tags; this model cannot predict them
    assert {m.label for m in app.metric} >= {"Category accuracy"}
    report = next(d.value for d in app.dataframe if "label" in d.value.columns)
    assert list(report["label"]) == ["Square", "Disc", "Bar", "Ring"] and report["support"].sum() == 16
    assert sum("Predicted:" in m.value for m in app.markdown) == 12  # the validation gallery
    photos, items = synthetic_photos()
    app.file_uploader(key="tags_upload").set_value(("disc.png", encoded(photos[20]), "image/png")).run()
    assert not app.exception, app.exception
    top = [m.label for m in app.metric][:3]
    assert top[0] == items.loc[20, "category"] and len(set(top)) == 3


def test_tags_page_with_a_fine_tuned_run_shows_tags_and_f1(trained_app):
    app, run = trained_app
    app.run()
    app.switch_page("app_pages/tags.py").run()
    app.selectbox(key="model").set_value(f"run:{run.id}").run()
    assert not app.exception, app.exception
    metrics = {m.label: m.value for m in app.metric}
    assert {"F1 micro", "F1 macro", "F1 samples", "Category accuracy"} <= set(metrics)
    tags = next(d.value for d in app.dataframe if "label" in d.value.columns and "round" in set(d.value["label"]))
    assert list(tags["label"]) == ["angular", "dark", "muted", "round"]
    app.radio(key="tags_mode").set_value("Evaluation item").run()
    assert any(m.value.startswith("**Predicted vs real:**") for m in app.markdown)
    assert app.get_by_key("tag_bars")  # the probability bar chart
    before = float(metrics["F1 micro"])
    assert before > 0  # the tag head learned something: a 0.000 here would make the check below say nothing
    slider = next(s for s in app.slider if s.label == "Tag threshold")
    chosen = load_checkpoint(run.best)["tag_threshold"]
    assert slider.value == pytest.approx(chosen)  # it starts where the run's validation put it
    slider.set_value(0.95 if chosen < 0.9 else 0.05).run()
    assert not app.exception, app.exception
    assert float({m.label: m.value for m in app.metric}["F1 micro"]) != before  # the threshold is applied


def test_tags_page_says_plainly_when_a_catalogue_has_no_tags(app, monkeypatch):
    monkeypatch.setenv("FVS_CATALOG", "synthetic-untagged")
    app.run()
    app.switch_page("app_pages/tags.py").run()
    assert not app.exception, app.exception
    assert any("has no descriptive tags" in i.value for i in app.info)
    assert not any(m.label.startswith("F1") for m in app.metric)


def test_map_page_draws_the_catalogue_and_the_latest_query(app):
    search_page(app)
    photos, _ = synthetic_photos()
    upload(app, "bar.png", encoded(photos[36]))
    app.switch_page("app_pages/map.py").run()
    assert not app.exception, app.exception
    spec = app.get_by_key("map_chart").proto.spec
    assert "query: your photo" in spec and "its nearest items" in spec
    labels = {m.label for m in app.metric}
    assert {"Silhouette of the map", "Silhouette of the embeddings"} <= labels
    for method, colour in (("pca", "K-Means cluster"), ("umap", "misclassified")):
        app.radio(key="map_method").set_value(method).run()
        app.selectbox(key="map_colour").set_value(colour).run()
        assert not app.exception, app.exception
        if colour == "K-Means cluster":  # its own slider: the number of clusters, and the map is coloured by them
            app.slider(key="map_k").set_value(3).run()
            assert not app.exception, app.exception
            assert len(set(cluster_names(app.get_by_key("map_chart").proto.spec))) == 3
    app.toggle(key="map_3d").set_value(True).run()
    assert not app.exception, app.exception
    assert "scatter3d" in app.get_by_key("map_chart").proto.spec


def test_map_page_compares_the_fine_tuned_model_with_the_baseline(trained_app):
    app, run = trained_app
    app.run()
    app.switch_page("app_pages/map.py").run()
    assert not app.exception, app.exception
    app.selectbox(key="map_colour").set_value("tag: round").run()  # a tag colour, from the run's tag head
    app.toggle(key="map_compare").set_value(True).run()
    assert not app.exception, app.exception
    titles = [app.get_by_key(f"compare-{name}").proto.spec for name in ("ImageNet baseline", "fine-tuned")]
    assert all("silhouette" in spec for spec in titles)


def test_the_chosen_model_stays_chosen_across_pages(trained_app):
    app, run = trained_app
    app.run()
    app.selectbox(key="model").set_value("test_efficientnet").run()  # back to the untrained baseline
    for page in ("app_pages/tags.py", "app_pages/map.py", "app_pages/search.py"):
        app.switch_page(page).run()
        assert not app.exception, app.exception
        assert app.selectbox(key="model").value == "test_efficientnet", page
    assert any("no tag head" in i.value for i in app.switch_page("app_pages/tags.py").run().info)


def test_words_narrow_a_photos_results_and_search_alone(app):
    search_page(app)
    photos, _ = synthetic_photos()
    upload(app, "disc.png", encoded(photos[20]))  # a dark disc: its nearest items are mostly dark
    app.text_input(key="words").input("Muted").run()
    app.radio(key="words_mode").set_value("narrow").run()
    assert not app.exception, app.exception
    assert result_images(app) == 10
    captions = [c.value for c in app.get_by_key("results").get("caption")]
    assert sum(c == "matches: muted" for c in captions) == 10  # every card says which word it matched
    assert app.get_by_key("results_csv")  # the results' CSV download
    app.text_input(key="words").input("xyzzy").run()  # a word no item has: said, and the photo's own results
    assert any("No item in this catalogue mentions" in i.value for i in app.info)
    assert result_images(app) == 10
    app.radio(key="query_mode").set_value("Words only").run()
    app.text_input(key="words").input("round").run()
    assert not app.exception, app.exception
    assert result_images(app) == 10
    captions = [c.value for c in app.get_by_key("results").get("caption")]
    assert sum(c == "matches: round" for c in captions) == 10
    assert {m.label: m for m in app.metric}["Search latency"].delta == "words (TF-IDF)"


def test_model_page_shows_where_the_model_fails(app):
    """The test split's confusion heatmap (rows normalised, counts on hover), and the cross-domain figures' place."""
    app.run()
    app.switch_page("app_pages/model.py").run()
    assert not app.exception, app.exception
    heatmap = json.loads(app.get_by_key("test_confusion").proto.spec)["data"][0]
    z = heatmap["z"]  # plotly sends arrays base64-encoded (dtype, bdata, shape)
    if isinstance(z, dict):
        shape = [int(n) for n in str(z["shape"]).split(",")]
        rows = np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape).astype(float)
    else:
        rows = np.array(z, dtype=float)
    assert np.allclose(rows.sum(axis=1)[rows.sum(axis=1) > 0], 1.0)  # each row's shares add to 1
    assert any("python -m core bench cross-domain" in i.value for i in app.info)  # not measured in this folder
    saved = Path(os.environ["FVS_ARTIFACTS_DIR"]) / "bench-cross-domain" / "cross-domain.json"
    counts = {"Square": {"Square": 3, "Disc": 1}}
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"k": 10, "queries_are": "held out", "rows": {"a → b": {"served": {
        "queries": 4, "top10_share": 0.75, "confusion": counts}}}, "models": {"b / served": {"run": "run-x"}}}))
    try:
        app.run()
        assert not app.exception, app.exception
        assert any("its served column is run-x" in c.value for c in app.caption)  # which model the figures are of
        assert app.selectbox(key="cross_domain_direction").options == ["a → b"]
    finally:
        saved.unlink()


def test_the_maps_first_draw_reads_what_prepare_made(app, monkeypatch, tmp_path):
    """``python -m core prepare`` makes the default map and its thumbnails (Workspace.prepare_map); the first Map
    visit then reads them instead of projecting (the page says "cached") or making a thumbnail."""
    from core.config import Settings
    from core.search.workspace import Workspace

    monkeypatch.setenv("FVS_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("FVS_STATIC_DIR", str(tmp_path / "static"))
    ws = Workspace.open(Settings.from_env())
    emap = ws.prepare_map()

    def cached() -> dict:
        files = [*ws.store.path.glob("map-*.npz"), *ws.store.path.glob("silhouettes-*.json"),
                 *ws.thumbnails_folder.glob("*.jpg")]
        return {p: p.stat().st_mtime_ns for p in files}

    made = cached()
    assert len(made) == 2 + len(emap.rows) == 2 + len(ws.catalog)  # the map, its silhouettes, a thumbnail per point
    app.run()
    app.switch_page("app_pages/map.py").run()
    assert not app.exception, app.exception
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Projection time"] == "cached"
    assert float(metrics["Silhouette of the map"]) == pytest.approx(ws.map_silhouettes(emap)[0], abs=5e-4)
    assert cached() == made  # nothing projected, measured or written again
    app.toggle(key="map_variance").set_value(True).run()  # the PCA curve, made only when asked
    assert not app.exception, app.exception
    assert app.get_by_key("variance_chart")
