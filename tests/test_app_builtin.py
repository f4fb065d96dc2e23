"""The dashboard as a newcomer finds it: it opens on the garment photos, served by their shipped fine-tuned model,
and the shop's Tags page shows each tag with where it came from. Real weights, real built-in catalogues."""

from __future__ import annotations

import json

import pytest
from conftest import APP
from streamlit.testing.v1 import AppTest

TIMEOUT = 400  # the shop's first open embeds it (440 photos at 224 px)


@pytest.fixture
def newcomer(builtin_env) -> AppTest:
    """Only the artifacts are elsewhere (the session's, prepared as `prepare` does on a fresh clone): every other
    setting is the default a fresh clone has."""
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


@pytest.mark.slow
def test_the_app_opens_on_the_garment_photos_with_their_fine_tuned_model_and_the_shop_shows_tag_sources(newcomer):
    newcomer.run()
    assert not newcomer.exception, newcomer.exception
    assert newcomer.selectbox(key="catalog").value == "garment-photos"
    assert newcomer.selectbox(key="model").value.startswith("run:")  # the shipped run, not ImageNet features
    metrics = {m.label: m.value for m in newcomer.metric}
    assert metrics["Catalogue items"] == "5,096" and metrics["Categories"] == "17"
    # the same session: the shop's Tags page shows each tag with its source
    newcomer.selectbox(key="catalog").set_value("luma-shop").run()
    newcomer.switch_page("app_pages/tags.py").run()
    assert not newcomer.exception, newcomer.exception
    newcomer.radio(key="tags_mode").set_value(newcomer.radio(key="tags_mode").options[-1]).run()  # an item
    assert not newcomer.exception, newcomer.exception
    bars = json.loads(newcomer.get_by_key("tag_bars").proto.spec)
    labels = {label for trace in bars["data"] for label in trace["y"]}
    assert {"Blue · colour", "Fleece · material", "zip · description", "Men · gender"} <= labels
