"""The Browse page: filters over every column, "Search with this", and the CSV of what passes the filters."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.catalog.base import Catalog
from core.photo.domain import PhotoDomain
from core.search.browse import ItemFilter, facet_values, filter_rows, price_range, tag_values
from core.search.export import items_table


def browse(app):
    app.run()
    app.switch_page("app_pages/browse.py").run()
    assert not app.exception, app.exception
    return app


def test_filters_narrow_the_grid_and_search_with_this_opens_its_results(app):
    browse(app)
    assert app.subheader[0].value == "64 of 64 items"
    app.multiselect(key="browse_categories").set_value(["Disc"]).run()
    app.multiselect(key="browse_tags").set_value(["dark"]).run()
    assert not app.exception, app.exception
    assert app.subheader[0].value == "8 of 64 items"  # the dark discs: every other one of 16
    buttons = [b for b in app.button if str(b.key).startswith("browse-search-")]
    assert len(buttons) == 8
    row = int(buttons[2].key.rsplit("-", 1)[1])
    buttons[2].click().run()
    assert not app.exception, app.exception
    assert app.radio(key="query_mode").value == "Catalogue item" and app.session_state["query_row"] == row
    assert any("most similar items" in s.value for s in app.subheader)  # the Search page, with its results


def test_the_csv_holds_exactly_the_filtered_items(app, monkeypatch):
    from core.search import export

    written = []

    def recording(table: pd.DataFrame) -> bytes:
        written.append(table)
        return real(table)

    real = export.csv_bytes
    monkeypatch.setattr(export, "csv_bytes", recording)
    browse(app)
    app.multiselect(key="browse_tags").set_value(["round", "muted"]).run()
    assert not app.exception, app.exception
    table = written[-1]
    assert app.subheader[0].value == f"{len(table)} of 64 items" and len(table) == 16
    assert set(table["category"]) == {"Disc", "Ring"} and all("muted" in t for t in table["tags"])
    assert "path" not in table.columns  # the server's file names stay on the server


def test_a_category_on_the_home_page_opens_the_browser_on_it(app):
    app.run()
    pills = app.get_by_key("home_browse")
    assert len(pills.options) == 4  # one per category
    pills.set_value("Ring").run()
    assert not app.exception, app.exception
    assert app.multiselect(key="browse_categories").value == ["Ring"]
    assert app.subheader[0].value == "16 of 64 items"


def shop() -> Catalog:
    items = pd.DataFrame({
        "id": [f"p{i}" for i in range(6)], "path": [f"/srv/{i}.jpg" for i in range(6)], "label": [0, 0, 1, 1, 1, 0],
        "category": ["Tees", "Tees", "Jackets", "Jackets", "Jackets", "Tees"], "split": "train",
        "name": ["Zip Tee", "Crew Tee", "Fleece Jacket", "Zip Fleece", "Rain Shell", "Logo Tee"],
        "description": ["soft cotton", "organic cotton", "warm polar fleece", "full zip, warm", "waterproof", ""],
        "colour": ["Blue", "Red", "Blue", "Black", "Blue|Black", "White"], "price": [10, 12, 50, 60, 80, 15.5],
        "tags": [["basic"], ["basic"], ["warm"], ["warm", "zip"], [], ["basic"]]})
    pixels = np.zeros((6, 32, 32, 3), np.uint8)
    return Catalog("shop", "shop-k", items, ["Tees", "Jackets"], PhotoDomain(size=32), pixels)


def test_every_column_is_a_filter():
    catalog = shop()
    assert facet_values(catalog) == {"colour": ["Black", "Blue", "Red", "White"]}  # "Blue|Black" counts as both
    assert tag_values(catalog)[0] == "basic" and price_range(catalog) == (10.0, 80.0)
    assert list(filter_rows(catalog, ItemFilter(facets={"colour": ("Black",)}))) == [3, 4]
    assert list(filter_rows(catalog, ItemFilter(categories=("Jackets",), facets={"colour": ("Blue",)}))) == [2, 4]
    assert list(filter_rows(catalog, ItemFilter(tags=("warm", "zip")))) == [3]
    assert list(filter_rows(catalog, ItemFilter(price=(11, 50)))) == [1, 2, 5]
    assert list(filter_rows(catalog, ItemFilter(words="ZIP warm"))) == [3]  # every word, name or description
    assert list(filter_rows(catalog, ItemFilter(words="cotton", categories=("Jackets",)))) == []


def test_the_export_has_every_column_but_the_server_paths():
    catalog = shop()
    table = items_table(catalog, [4, 0], scores=[0.9, 0.5])
    assert list(table["id"]) == ["p4", "p0"] and list(table["score"]) == [0.9, 0.5]
    assert {"name", "description", "colour", "price", "tags", "split"} <= set(table.columns)
    assert "path" not in table.columns and "label" not in table.columns
    assert list(table["tags"]) == ["", "basic"]
    catalog.items.loc[4, "name"] = '=HYPERLINK("http://x.example","win")'  # untrusted text a spreadsheet would run
    assert items_table(catalog, [4])["name"][0].startswith("'=")


def test_a_click_on_a_map_point_searches_with_it_once(app, monkeypatch):
    import ui

    clicks = iter([7])  # the component reports one click (a trigger value), then nothing
    monkeypatch.setattr(ui, "map_hover", lambda *args, **kwargs: next(clicks, None))
    app.run()
    app.switch_page("app_pages/map.py").run()
    assert not app.exception, app.exception
    assert app.radio(key="query_mode").value == "Catalogue item" and app.session_state["query_row"] == 7
    app.switch_page("app_pages/map.py").run()  # back to the map: it stays there
    assert not app.exception, app.exception
    assert any(m.label == "Silhouette of the map" for m in app.metric)
