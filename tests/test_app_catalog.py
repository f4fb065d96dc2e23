"""A user adds their own catalogue in the app, switches to it, and sees its metadata in search results."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import APP, TIMEOUT, encoded, garment_file_photo, write_photo_records
from streamlit.testing.v1 import AppTest
from test_app import result_images


@pytest.fixture
def fresh_app(tmp_path, monkeypatch) -> AppTest:
    """The app on the synthetic catalogue with artifacts of its own, so added catalogues do not leak."""
    for name, value in {"CATALOG": "synthetic", "BACKBONE": "test_efficientnet", "IMAGE_SIZE": "32",
                        "PCA_DIM": "16", "PCA_MIN_FIT_ITEMS": "0", "N_TREES": "4", "SEARCH_K": "200", "WORKERS": "0",
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


def add_from_page(app: AppTest, source: str, name: str) -> AppTest:
    """Pick ``source`` (as the page lists it, relative to the catalogue folder) and add it under ``name``."""
    app.selectbox(key="new_catalog_source").select(next(o for o in app.selectbox(key="new_catalog_source").options
                                                        if o == source))
    app.text_input(key="new_catalog_name").set_value(name)
    return click(app, "Check and add")


def test_adding_a_catalogue_lists_its_problems_and_switches_to_it(fresh_app, tmp_path):
    shop_table(tmp_path / "catalogs" / "shop")
    app = fresh_app
    app.run()
    add_from_page(app, "catalogs/shop/products.csv", "shop")
    assert any("**shop**: 11 items in 3 categories; 1 entries skipped" in s.value for s in app.success)
    problems = app.dataframe[0].value
    assert list(problems["where"]) == ["line 6"] and "leaves the catalogue folder" in problems["problem"][0]
    click(app, "Search shop")
    assert app.selectbox(key="catalog").value == "shop"
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Catalogue items"] == "11" and metrics["Categories"] == "3"


def test_the_page_reaches_only_the_catalogue_folders(fresh_app, tmp_path):
    """A server file outside the catalogue folder cannot be listed, read or quoted, not even through a link."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "users.csv").write_text("user,password,image\nalice,s3cr3t-Alice!,x.jpg\n")
    garment_file_photo("Shirt", "navy", np.random.default_rng(0)).save(secret / "x.jpg")
    catalogs = tmp_path / "catalogs"
    shop_table(catalogs / "shop")
    (catalogs / "leak.csv").symlink_to(secret / "users.csv")
    (catalogs / "leak").symlink_to(secret)
    app = fresh_app
    app.run()
    options = app.selectbox(key="new_catalog_source").options
    assert options == ["catalogs/shop/", "catalogs/shop/products.csv"]
    # the table's image column may name files outside only to be refused, without quoting the other cells
    (catalogs / "shop" / "evil.csv").write_text(f"image,note\n{secret / 'x.jpg'},s3cr3t-Bob\n../../secret/x.jpg,"
                                                f"s3cr3t-Eve\n")
    app.run()
    add_from_page(app, "catalogs/shop/evil.csv", "evil")
    shown = " ".join(e.value for e in app.error)
    assert "could not be added" in shown and "s3cr3t" not in shown
    assert app.selectbox(key="catalog").value == "synthetic"
    assert {m.label: m.value for m in app.metric}["Catalogue items"] == "64"


def test_an_empty_catalogue_folder_says_where_to_put_one(fresh_app):
    app = fresh_app
    app.run()
    assert not app.exception, app.exception
    assert any("No catalogue to add yet" in i.value and "catalogs" in i.value for i in app.info)


def test_search_results_show_brand_price_description_and_extra_columns(fresh_app, tmp_path):
    from core.catalog.prepare import prepare_catalog
    from core.catalog.sources import SourceSpec
    from core.config import Settings

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
    assert "cotton" in shown and "relaxed fit" in shown and "**colour**: red" in shown  # the table's own column


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
    root = tmp_path / "catalogs" / "shop"
    for per_category in (6, 3):  # the same table, edited between the two adds
        records = write_photo_records(root, per_category=per_category)
        pd.DataFrame(records).to_csv(root / "products.csv", index=False)
        app.switch_page("app_pages/home.py").run()
        add_from_page(app, "catalogs/shop/products.csv", "shop")
        click(app, "Search shop")
        app.switch_page("app_pages/map.py").run()
        assert not app.exception, app.exception
        spec = json.loads(app.get_by_key("map_chart").proto.spec)
        assert sum(points(trace) for trace in spec["data"]) == 3 * per_category
