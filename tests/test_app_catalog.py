"""A user adds their own catalogue in the app, switches to it, and sees its metadata in search results."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import encoded, garment_file_photo, write_photo_records
from conftest import APP, TIMEOUT
from test_app import result_images

import numpy as np


@pytest.fixture
def fresh_app(tmp_path, monkeypatch) -> AppTest:
    """The app on the synthetic catalogue with artifacts of its own, so added catalogues do not leak."""
    for name, value in {"CATALOG": "synthetic", "BACKBONE": "test_efficientnet", "IMAGE_SIZE": "32",
                        "PCA_DIM": "16", "N_TREES": "4", "SEARCH_K": "200", "WORKERS": "0",
                        "ARTIFACTS_DIR": str(tmp_path / "artifacts"), "DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(f"FVS_{name}", value)
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def shop_table(root: Path) -> Path:
    records = write_photo_records(root)
    records[4]["image"] = "../../etc/passwd"
    pd.DataFrame(records).to_csv(root / "products.csv", index=False)
    return root / "products.csv"


def click(app: AppTest, label: str) -> AppTest:
    next(b for b in app.button if b.label == label).click().run()
    assert not app.exception, app.exception
    return app


def test_adding_a_catalogue_lists_its_problems_and_switches_to_it(fresh_app, tmp_path):
    app = fresh_app
    app.run()
    app.text_input(key="new_catalog_path").set_value(str(shop_table(tmp_path / "shop")))
    app.text_input(key="new_catalog_name").set_value("shop")
    click(app, "Check and add")
    assert any("**shop**: 11 items in 3 categories; 1 entries skipped" in s.value for s in app.success)
    problems = app.dataframe[0].value
    assert list(problems["where"]) == ["line 6"] and "leaves the catalogue folder" in problems["problem"][0]
    click(app, "Search shop")
    assert app.selectbox(key="catalog").value == "shop"
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Catalogue items"] == "11" and metrics["Categories"] == "3"


def test_a_bad_path_gets_a_message_and_the_app_keeps_working(fresh_app, tmp_path):
    app = fresh_app
    app.run()
    app.text_input(key="new_catalog_path").set_value(str(tmp_path / "nowhere"))
    click(app, "Check and add")
    assert any("could not be added" in e.value and "does not exist" in e.value for e in app.error)
    assert app.selectbox(key="catalog").value == "synthetic"
    assert {m.label: m.value for m in app.metric}["Catalogue items"] == "64"


def test_search_results_show_brand_price_description_and_extra_columns(fresh_app, tmp_path):
    from core.prepare import prepare_catalog
    from core.config import Settings
    from core.sources import SourceSpec

    prepare_catalog(SourceSpec(path=str(shop_table(tmp_path / "shop"))), Settings.from_env(), name="shop",
                    photo_size=64)
    app = fresh_app
    app.run()
    app.selectbox(key="catalog").set_value("shop").run()
    app.switch_page("app_pages/search.py").run()
    photo = garment_file_photo("Skirt", "navy", np.random.default_rng(3))
    app.file_uploader(key="upload").set_value(("skirt.png", encoded(photo), "image/png")).run()
    assert not app.exception, app.exception
    assert result_images(app) == 10
    shown = " ".join(m.value for m in app.markdown) + " ".join(c.value for c in app.caption)
    assert "Acme · 11.50" in shown or "Zed · 10.50" in shown
    assert "cotton" in shown and "relaxed fit" in shown and "colour: " in shown  # the table's own column


def points(trace: dict) -> int:
    """Points in a plotly trace, whose coordinates may be sent as typed binary arrays."""
    x = trace.get("x", [])
    if isinstance(x, dict):
        return len(base64.b64decode(x["bdata"])) // np.dtype(x["dtype"]).itemsize
    return len(x)


def test_preparing_a_catalogue_again_redraws_its_map(fresh_app, tmp_path):
    """The in-memory map of the old content must not be served for the new content (same name, fewer items)."""
    app = fresh_app
    app.run()
    for root, per_category in ((tmp_path / "v1", 6), (tmp_path / "v2", 3)):
        records = write_photo_records(root, per_category=per_category)
        pd.DataFrame(records).to_csv(root / "products.csv", index=False)
        app.switch_page("app_pages/home.py").run()
        app.text_input(key="new_catalog_path").set_value(str(root / "products.csv"))
        app.text_input(key="new_catalog_name").set_value("shop")
        click(app, "Check and add")
        click(app, "Search shop")
        app.switch_page("app_pages/map.py").run()
        assert not app.exception, app.exception
        spec = json.loads(app.get_by_key("map_chart").proto.spec)
        assert sum(points(trace) for trace in spec["data"]) == 3 * per_category
