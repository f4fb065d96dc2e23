"""Descriptive tags: the multi-label binarisation every tag consumer shares (training, the Workspace, metrics),
and tags mined from product descriptions for catalogues that have text but no tags.

A catalogue has tags when its items table has a ``tags`` column holding a list of strings per item.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.text.lexicon import FASHION_WORDS, KINDS


def item_tags(items: pd.DataFrame) -> list[list[str]] | None:
    if "tags" not in items.columns:
        return None
    return [[str(t) for t in tags] if tags is not None else [] for tags in items["tags"]]


def vocabulary(items: pd.DataFrame) -> list[str]:
    """Every tag used, sorted; empty when the catalogue has no tags."""
    tags = item_tags(items)
    return sorted({t for row in tags for t in row}) if tags else []


def binarize(items: pd.DataFrame, vocab: list[str]) -> np.ndarray:
    """float32 (N, len(vocab)) with 1 where an item carries the tag; tags outside ``vocab`` are ignored."""
    from sklearn.preprocessing import MultiLabelBinarizer

    tags = item_tags(items) or [[] for _ in range(len(items))]
    if not vocab:
        return np.zeros((len(items), 0), np.float32)
    binarizer = MultiLabelBinarizer(classes=vocab)
    known = set(vocab)
    return binarizer.fit_transform([[t for t in row if t in known] for row in tags]).astype(np.float32)


# ------------------------------------------------------------------------------------- tag families
# A tag's family says what kind of fact it is and whether a photo can show it. A shop's own columns are families
# by name (``Catalog.tag_sources``: colour, pattern, material, climate, gender); a word mined from a description is
# sorted by the garment lexicon's kinds. Material and climate are rarely visible in a photo: they stay the item's
# facts (Browse filters, result cards), and the Tags page says the model's guesses at them are not read from the
# photo. A family whose values exclude each other (a shop item is for men or for women, never both) is decided as
# one choice; a garment's colours are not one of them (a striped tee is black and white).
GARMENT_WORDS = "garment words"
FAMILY_OF_KIND = {"garment type": GARMENT_WORDS, "fit": GARMENT_WORDS, "use": GARMENT_WORDS, "part": "parts",
                  "material": "material", "colour": "colour", "pattern": "pattern"}
FACT_FAMILIES = frozenset({"material", "climate"})
EXCLUSIVE_FAMILIES = frozenset({"gender"})
WORD_SOURCES = ("description", "tags", "")  # sources whose tags are words, sorted into families by the lexicon


def tag_family(tag: str, source: str = "") -> str:
    """The family of one tag: its source column's name, or for a word (mined, or from a tags column) the kind
    the lexicon gives it (garment words when it has none)."""
    if source not in WORD_SOURCES:
        return source
    word = tag.lower()
    return next((FAMILY_OF_KIND[kind] for kind, words in KINDS.items() if word in words), GARMENT_WORDS)


def tag_families(vocab: list[str], sources: dict[str, str]) -> list[str]:
    """``tag_family`` of each tag of ``vocab``, with ``sources`` the catalogue's tag -> source."""
    return [tag_family(t, sources.get(t, "")) for t in vocab]


def from_photo(family: str) -> bool:
    """Whether a model can read tags of this family from a photo (not material or climate: those are facts)."""
    return family not in FACT_FAMILIES


def decide(probs: np.ndarray, families: list[str] | None, threshold: float) -> np.ndarray:
    """Which tags are predicted, (…, T) bool: each tag whose probability reaches ``threshold``, except in an
    exclusive family (EXCLUSIVE_FAMILIES), where only the family's most probable value can be, and only if it
    reaches the threshold. Every place that turns tag probabilities into tags calls this."""
    probs = np.asarray(probs)
    chosen = probs >= threshold
    for family in EXCLUSIVE_FAMILIES & set(families or []):
        columns = [i for i, f in enumerate(families) if f == family]
        if len(columns) < 2:
            continue
        block = probs[..., columns]
        best = np.zeros(block.shape, bool)
        np.put_along_axis(best, block.argmax(axis=-1)[..., None], True, axis=-1)
        chosen[..., columns] = best & (block >= threshold)
    return chosen


# ------------------------------------------------------------------------------------- tags mined from text
# A catalogue with descriptions but no tags gets them the way the source material did: per item, the nouns and
# adjectives of its description ranked by TF-IDF, keep the top ``per_item``; the vocabulary is the ``nouns`` most
# frequent nouns plus the ``adjectives`` most frequent adjectives among those. Part of speech comes from
# LemmInflect's English lexicon (installed with the package, nothing downloaded at run time) plus two context
# rules, instead of a statistical tagger whose model would have to be fetched (NLTK's and spaCy's are not on the
# package registry): see ``part_of_speech``.
# Where a tag head's probability counts as a predicted tag when its run chose no threshold of its own (runs from
# before each run picked one on validation: core.search.metrics.best_tag_threshold).
DEFAULT_THRESHOLD = 0.5

WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


@dataclass(frozen=True)
class TagMining:
    nouns: int = 25
    adjectives: int = 25
    per_item: int = 10
    min_length: int = 3
    # Only words a shopper filters by (core.text.lexicon) become tags; None keeps every noun and adjective.
    lexicon: frozenset[str] | None = FASHION_WORDS


@dataclass
class MinedTags:
    nouns: list[str]
    adjectives: list[str]
    item_tags: list[list[str]]  # each item's tags, in its TF-IDF order, restricted to the vocabulary

    @property
    def vocabulary(self) -> list[str]:
        return sorted({*self.nouns, *self.adjectives})


def _lexicon(word: str) -> dict[str, tuple[str, ...]]:
    import lemminflect

    return lemminflect.getAllLemmas(word)


def part_of_speech(word: str, following: str | None) -> tuple[str, str] | None:
    """("NOUN" | "ADJ", lemma) or None. The lexicon lists what a word *can* be; context settles the ambiguous
    ones the way descriptions are written: a word that can be either is an adjective before a noun ("black
    dress", "slim fit") and a noun otherwise ("a dress in black"); past participles before a noun describe it
    ("printed dress"); words the lexicon does not know (fabric and brand coinages) are nouns, as a tagger would
    guess; hyphenated compounds take the part of speech of their last part ("v-neck", "short-sleeved")."""
    head = word.rsplit("-", 1)[-1]
    lemmas = _lexicon(word) or _lexicon(head)
    noun, adjective = "NOUN" in lemmas, "ADJ" in lemmas
    participle = not adjective and "VERB" in lemmas and head.endswith(("ed", "en"))
    if not lemmas:
        return "NOUN", word
    before_noun = following is not None and (not _lexicon(following) or "NOUN" in _lexicon(following))
    if (adjective or participle) and (not noun or before_noun):
        return "ADJ", word
    if noun:
        singular = lemmas["NOUN"][0] if word == head else word
        return "NOUN", singular
    return None


def candidate_words(description: str, min_length: int = 3) -> list[tuple[str, str]]:
    """(lemma, part of speech) for each noun and adjective of a description, stop words left out."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = [w for w in WORD.findall(description.lower())]
    out = []
    for i, word in enumerate(words):
        if len(word) < min_length or word in ENGLISH_STOP_WORDS:
            continue
        following = words[i + 1] if i + 1 < len(words) and words[i + 1] not in ENGLISH_STOP_WORDS else None
        tagged = part_of_speech(word, following)
        if tagged is not None:
            out.append((tagged[1], tagged[0]))
    return out


def mine_tags(descriptions: list[str], mining: TagMining = TagMining()) -> MinedTags:
    from sklearn.feature_extraction.text import TfidfVectorizer

    tagged = [candidate_words(text or "", mining.min_length) for text in descriptions]
    if mining.lexicon is not None:
        tagged = [[(lemma, pos) for lemma, pos in words if lemma in mining.lexicon] for words in tagged]
    parts: dict[str, Counter] = {}
    for words in tagged:
        for lemma, pos in words:
            parts.setdefault(lemma, Counter())[pos] += 1
    if not parts:
        return MinedTags([], [], [[] for _ in descriptions])
    vectorizer = TfidfVectorizer(analyzer=lambda words: [lemma for lemma, _ in words])
    matrix = vectorizer.fit_transform(tagged).tocsr()
    terms = vectorizer.get_feature_names_out()
    top_lists = []
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        columns, scores = matrix.indices[start:end], matrix.data[start:end]
        order = sorted(range(len(columns)), key=lambda j: (-scores[j], terms[columns[j]]))[: mining.per_item]
        top_lists.append([str(terms[columns[j]]) for j in order])
    frequency = Counter(term for top in top_lists for term in top)
    ranked = sorted(frequency, key=lambda t: (-frequency[t], t))
    pos_of = {term: parts[term].most_common(1)[0][0] for term in ranked}
    nouns = [t for t in ranked if pos_of[t] == "NOUN"][: mining.nouns]
    adjectives = [t for t in ranked if pos_of[t] == "ADJ"][: mining.adjectives]
    keep = {*nouns, *adjectives}
    return MinedTags(nouns, adjectives, [[t for t in top if t in keep] for top in top_lists])
