"""Tag families: what kind of fact a tag is, whether a photo can show it, and an exclusive family (gender) decided
as one choice wherever tags are decided."""

from __future__ import annotations

import numpy as np

from core.search.metrics import best_tag_threshold
from core.text.tags import decide, from_photo, tag_families, tag_family


def test_families_come_from_the_shops_columns_and_the_lexicon():
    sources = {"Blue": "colour", "Fleece": "material", "Men": "gender", "Cold": "climate", "zip": "description",
               "hoodie": "description", "teal": "description", "cotton": "description", "round": "tags"}
    assert tag_families(list(sources), sources) == ["colour", "material", "gender", "climate", "parts",
                                                    "garment words", "colour", "material", "garment words"]
    assert tag_family("Striped", "pattern") == "pattern" and tag_family("striped") == "pattern"
    assert [from_photo(f) for f in ("colour", "pattern", "garment words", "parts", "gender")] == [True] * 5
    assert not from_photo("material") and not from_photo("climate")


def test_an_exclusive_family_is_one_choice_and_colours_are_not():
    families = ["gender", "gender", "colour", "colour"]
    probs = np.array([[0.7, 0.6, 0.8, 0.55],  # a man's black-and-white shirt: Men, not Men and Women
                      [0.3, 0.2, 0.1, 0.9],  # neither gender reaches the threshold: none
                      [0.45, 0.52, 0.5, 0.5]])
    assert decide(probs, families, 0.5).tolist() == [[True, False, True, True], [False, False, False, True],
                                                     [False, True, True, True]]
    assert decide(probs[0], families, 0.5).tolist() == [True, False, True, True]  # one item, 1-D
    assert decide(probs, None, 0.5).tolist() == (probs >= 0.5).tolist()  # no families: independent tags


def test_the_threshold_is_chosen_on_the_decided_tags():
    families = ["gender", "gender"]
    truth = np.array([[1, 0], [0, 1]], bool)
    probs = np.array([[0.6, 0.5], [0.7, 0.8]])
    # as independent tags no one threshold separates them (the second item's wrong 0.7 beats the first's right
    # 0.6); as one choice, every threshold up to 0.6 is right
    assert best_tag_threshold(truth, probs)[1] < 0.9
    assert best_tag_threshold(truth, probs, families=families)[1] == 1.0
