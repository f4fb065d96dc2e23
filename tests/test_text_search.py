"""Words with the photo: the TF-IDF index of the items' text, and the Workspace's re-rank, narrow and words-only
searches on the tiny catalogue (items tagged round/angular and dark/muted)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_photos

from core.catalog.base import Catalog
from core.photo.domain import FashionMnistDomain
from core.search.text_search import TextIndex, documents, stem
from core.search.workspace import WORDS_WEIGHT

DARK_DISC = 20  # a near-black disc: its nearest items are the other discs, dark and muted


def shop(**columns) -> Catalog:
    """A small shop catalogue with whatever text columns a test gives it."""
    n = len(next(iter(columns.values())))
    items = pd.DataFrame({"id": [f"item-{i}" for i in range(n)], "label": [0] * n, "category": ["Tops"] * n,
                          "split": ["train"] * n, **columns})
    return Catalog(name="shop", key="shop-test", items=items, categories=["Tops"], domain=FashionMnistDomain(),
                   pixels=np.zeros((n, 28, 28), np.uint8))


def mentions(hits: pd.DataFrame, word: str) -> np.ndarray:
    return np.array([word in tags for tags in hits["tags"]])


# ---------------------------------------------------------------------------------------------- the index itself
def test_documents_read_the_shops_text_columns_and_never_the_path():
    catalog = shop(name=["Ajax Hoodie", "Luma Tee"], description=["Soft fleece with a zip", "Cotton crew neck"],
                   colour=["Navy", "Red"], climate=["Cold", "Warm"], path=["/srv/images/secret-navy.jpg"] * 2,
                   price=[10.0, 12.0])
    index = TextIndex.of(catalog)
    assert "Ajax Hoodie" in documents(catalog)[0] and "Cold" in documents(catalog)[0]
    assert index.matched(0, "hoodie fleece zip navy cold tops") == ["hoodie", "fleece", "zip", "navy", "cold", "tops"]
    assert index.matched(1, "hoodie red warm cotton") == ["red", "warm", "cotton"]
    assert index.unknown("secret jpg srv") == ["secret", "jpg", "srv"]  # the image path is not the item's text
    assert not index.scores("secret").any()


def test_matching_ignores_case_accents_and_plurals():
    index = TextIndex.of(shop(name=["Blue Hoodie", "Crème dress"], description=["with zips", "café au lait"]))
    assert index.matched(0, "BLUE, Zip") == ["blue", "zip"]
    assert index.matched(0, "hoodies") == ["hoodies"]  # the query's word, as typed (lower-cased)
    assert index.matched(1, "creme Dresses CAFÉ") == ["creme", "dresses", "cafe"]
    assert stem("hoodies") == stem("hoodie") and stem("dresses") == stem("dress") and stem("zips") == "zip"
    assert stem("dress") == "dress" and stem("jeans") == stem("jean") and stem("shoes") == stem("shoe")


def test_scores_rank_the_items_that_mention_more_of_the_words_first():
    index = TextIndex.of(shop(name=["blue zip hoodie", "blue tee", "red zip jacket", "green dress"]))
    scores = index.scores("blue zip")
    assert scores.shape == (4,) and scores.dtype == np.float32
    assert scores[0] > max(scores[1], scores[2]) > 0 and scores[3] == 0
    assert np.all((scores >= 0) & (scores <= 1 + 1e-6))


def test_empty_stop_word_and_unknown_queries_score_zero_and_match_nothing():
    index = TextIndex.of(shop(name=["Blue Hoodie", "Red Tee"]))
    for words in ("", "   ", "the and of with", "xyzzy", "!!!"):
        assert not index.scores(words).any(), words
        assert index.matched(0, words) == [], words
    assert index.unknown("blue xyzzy") == ["xyzzy"]
    # the stop words a shopper means are kept: "top" is a garment, "back" a part of one
    assert index.matched(0, "back") == [] and TextIndex.of(shop(name=["Open back tank"])).matched(0, "back") == ["back"]


def test_a_catalogue_without_any_words_scores_zero():
    catalog = shop(name=["", "the"])
    catalog.items["category"] = ""
    index = TextIndex.of(catalog)
    assert not index.scores("blue").any() and index.matched(0, "blue") == []


def test_fitting_five_thousand_shop_items_is_quick():
    rng = np.random.default_rng(0)
    vocabulary = [f"word{i}" for i in range(3000)] + ["hoodie", "blue", "zip", "fleece", "pocket"]
    descriptions = [" ".join(rng.choice(vocabulary, 80)) for _ in range(5000)]
    catalog = shop(name=[f"Item {i} Hoodie" for i in range(5000)], description=descriptions)
    started = time.perf_counter()
    index = TextIndex.of(catalog)
    seconds = time.perf_counter() - started
    assert seconds < 3.0, f"{seconds:.2f} s to fit 5,000 items"  # about 0.2 s alone; generous for a busy box
    assert index.scores("blue zip").shape == (5000,)


# ---------------------------------------------------------------------------------------- the Workspace's searches
def test_words_rerank_moves_the_items_that_mention_them_first(shared_workspace):
    photos, _ = synthetic_photos()
    plain = shared_workspace.search(photos[DARK_DISC], k=10)
    assert "text_score" not in plain.hits and all(m == [] for m in plain.hits["matched"])
    assert mentions(plain.hits, "muted").sum() < 5  # a dark disc's nearest items are mostly dark
    result = shared_workspace.search(photos[DARK_DISC], k=10, words="Muted")
    assert mentions(result.hits, "muted").all()
    assert all(m == ["muted"] for m in result.hits["matched"])
    combined = result.hits["score"] + WORDS_WEIGHT * result.hits["text_score"]
    assert combined.is_monotonic_decreasing
    assert result.predicted == plain.predicted  # the category is still the photo's
    assert set(result.timings_ms) == {"convert + embed", f"search ({shared_workspace.index.name})", "words (TF-IDF)"}
    assert result.method == f"{shared_workspace.index.name} + words"


def test_rerank_keeps_the_photos_order_when_no_item_mentions_the_words(shared_workspace):
    photos, _ = synthetic_photos()
    plain = shared_workspace.search(photos[DARK_DISC], k=8, exact=True)
    for words in ("xyzzy", "the and"):
        result = shared_workspace.search(photos[DARK_DISC], k=8, exact=True, words=words)
        assert result.hits["row"].tolist() == plain.hits["row"].tolist(), words
        assert all(m == [] for m in result.hits["matched"])


def test_narrow_keeps_only_the_items_that_mention_the_words_in_the_photos_order(shared_workspace):
    photos, items = synthetic_photos()
    result = shared_workspace.search(photos[DARK_DISC], k=20, exact=True, words="muted round", words_mode="narrow")
    assert len(result.hits) == 20
    assert all(set(m) & {"muted", "round"} for m in result.hits["matched"])
    assert result.hits["score"].is_monotonic_decreasing
    # k of them even beyond the photo's nearest: 20 muted-or-round items out of the 48 in the catalogue
    wanted = (items["tags"].map(lambda t: "muted" in t or "round" in t)).to_numpy()
    truth = shared_workspace.exact.search(result.vector, 20, wanted)
    assert result.hits["row"].tolist() == truth.indices.tolist()
    assert shared_workspace.search(photos[DARK_DISC], k=5, words="xyzzy", words_mode="narrow").hits.empty
    ring = shared_workspace.search(photos[DARK_DISC], k=5, words="angular", words_mode="narrow", category="Ring")
    assert ring.hits.empty  # rings are round: none of them mentions "angular"


def test_search_item_with_words_leaves_the_item_out(shared_workspace):
    result = shared_workspace.search_item(DARK_DISC, k=10, words="dark", words_mode="narrow")
    assert DARK_DISC not in set(result.hits["row"]) and len(result.hits) == 10
    assert mentions(result.hits, "dark").all()
    reranked = shared_workspace.search_item(DARK_DISC, k=5, words="angular")
    assert DARK_DISC not in set(reranked.hits["row"]) and mentions(reranked.hits, "angular").all()


def test_words_alone_rank_by_text_ties_by_row(shared_workspace):
    result = shared_workspace.search_words("round DARK", k=20)
    assert result.method == "words (TF-IDF)" and result.predicted == [] and result.query_image is None
    hits = result.hits
    both = hits["matched"].map(lambda m: m == ["round", "dark"]).to_numpy()
    assert both[:16].all() and not both[16:].any()  # the 16 dark discs and rings, then items with one word
    assert hits["score"].is_monotonic_decreasing and np.allclose(hits["score"], hits["text_score"])
    assert hits["row"][:16].is_monotonic_increasing  # equal scores: catalogue order
    assert all(hits["matched"])
    squares = shared_workspace.search_words("dark", k=50, category="Square")
    assert len(squares.hits) == 8 and set(squares.hits["category"]) == {"Square"}
    assert shared_workspace.search_words("xyzzy", k=5).hits.empty
    assert shared_workspace.search_words("", k=5).hits.empty


def test_an_unknown_words_mode_is_refused(shared_workspace):
    with pytest.raises(ValueError, match="words_mode"):
        shared_workspace.search_item(0, words="dark", words_mode="filter")
