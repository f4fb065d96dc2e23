"""Words with the photo: a TF-IDF index of every item's text (category, tags, name, colour, material, description…).

A photo says what a garment looks like; words say what a shopper means by it ("blue", "zip", "fleece"). The
Workspace re-ranks or narrows a photo's neighbours by these scores, or searches by words alone. The scorer is
scikit-learn's (TfidfVectorizer's two halves, CountVectorizer and TfidfTransformer: sublinear tf, L2 rows, so a
score is a cosine in [0, 1]); what this module adds is only what goes into a document and how a word is normalised,
so that "Blue" finds "blue" and "hoodies" finds "Hoodie". scikit-learn is imported on first use, not with the
Workspace.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

import numpy as np

from core.catalog.base import Catalog, is_text_column
from core.text.lexicon import FASHION_WORDS

# The text a shop gives an item beyond its category and tags; any other string column it brought is read too.
TEXT_COLUMNS = ("name", "description", "colour", "color", "material", "pattern", "brand")
NEVER = {"path", "id", "split", "group", "label"}  # file names and bookkeeping, not words about the garment
PROSE = ("description",)  # free text, where a word may be about something else ("pairs well with a blue tee")
# A word among an item's own attributes (category, tags, name, colour, material…) counts this many times one in its
# prose: a red hoodie whose description mentions "blue heather" ranks below the blue ones for "blue hoodie".
ATTRIBUTE_WEIGHT = 2.0
TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern
# The Unicode blocks of combining diacritics: what strip_accents="unicode" removes after NFKD, as one regex pass
COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def normalise(text: str) -> str:
    """Lower-cased, accents stripped ("Café" → "cafe"): scikit-learn's ``strip_accents="unicode"`` in one regex
    pass instead of a Python loop over characters, which was most of the fitting time on long descriptions."""
    text = text.lower()
    return text if text.isascii() else COMBINING.sub("", unicodedata.normalize("NFKD", text))


@cache
def stop_words() -> frozenset[str]:
    """English stop words, except those a shopper means: "top", "bottom", "back", "front", "down" (a filling)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS - FASHION_WORDS)


def stem(token: str) -> str:
    """A plural-folding stem, the same for documents and queries: "dresses" → "dress", "zips" → "zip",
    "hoodies"/"hoodie"/"hoody" → "hoodi". Deliberately small (no verb or adjective forms): an unexpected conflation
    would put items under words they do not mention, and the stem is never shown (``matched`` shows the query's
    words). A dictionary lemmatiser does not know shop words ("hoodies" is not in LemmInflect's lexicon)."""
    word = token
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        if word.endswith("sses"):
            word = word[:-2]
        elif word.endswith(("xes", "ches", "shes", "zzes")):
            word = word[:-2]
        elif word.endswith("ies") and len(word) > 4:
            word = word[:-3] + "i"
        else:
            word = word[:-1]
    if len(word) > 3 and word.endswith("ie"):
        word = word[:-1]
    elif len(word) > 3 and word.endswith("y") and word[-2] not in "aeiouy":
        word = word[:-1] + "i"
    return word


def text_columns(catalog: Catalog) -> list[str]:
    """The item table's columns that hold words about the garment: the shop's text columns it has, then every other
    string column it brought (``gender``, ``climate``…); never the image path or bookkeeping."""
    items = catalog.items
    named = [c for c in TEXT_COLUMNS if c in items.columns]
    others = [c for c in catalog.extra_columns() if c not in named and is_text_column(items[c])]
    return [c for c in [*named, *others] if c not in NEVER]


def fields(catalog: Catalog) -> tuple[list[str], list[str]]:
    """Per item, (its attributes: category, tags when the catalogue has them, name, colour, material… ; its prose:
    the description), each as one string."""
    items = catalog.items
    columns = text_columns(catalog)
    attributes = [items["category"].astype(str).tolist()]
    if "tags" in items.columns:
        attributes.append([" ".join(str(t) for t in tags) if _is_list(tags) else _cell(tags)
                           for tags in items["tags"]])
    attributes += [[_cell(v) for v in items[c].tolist()] for c in columns if c not in PROSE]
    prose = [[_cell(v) for v in items[c].tolist()] for c in columns if c in PROSE] or [[""] * len(items)]
    return _joined(attributes), _joined(prose)


def _joined(parts: list[list[str]]) -> list[str]:
    return [" ".join(p for p in row if p) for row in zip(*parts, strict=True)]


def documents(catalog: Catalog) -> list[str]:
    """One document per item, all its words: its attributes, then its description."""
    return _joined(list(fields(catalog)))


def _is_list(value: object) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _cell(value: object) -> str:
    return value if isinstance(value, str) else ""


class TextIndex:
    """Every item's document as a TF-IDF row over word stems; fitted once per catalogue, then each query is one
    sparse matrix-vector product.

    Built from scikit-learn pieces so that fitting stays fast (5,000 shop descriptions in a fraction of a second):
    a CountVectorizer tokenizes (lower-cased, accents stripped, stop words out), each distinct word of its
    vocabulary is stemmed once and its column summed into its stem's, and a TfidfTransformer weighs the stem counts
    (sublinear tf, smooth idf, L2 rows)."""

    def __init__(self, docs: list[str], prose: list[str] | None = None):
        """``docs``: each item's attributes (or all its text); ``prose``: its description, whose words count
        1 / ATTRIBUTE_WEIGHT as much."""
        from scipy import sparse
        from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

        self._n = n = len(docs)
        prose = prose if prose is not None else [""] * n
        self.counter = CountVectorizer(preprocessor=normalise, token_pattern=TOKEN.pattern,
                                       stop_words=sorted(stop_words()), dtype=np.float32)
        self._analyze = self.counter.build_analyzer()  # the same preprocessing, tokens and stop words for queries
        self.tfidf = TfidfTransformer(sublinear_tf=True)
        self.stems: dict[str, int] = {}  # stem -> column of ``matrix``
        try:
            both = self.counter.fit_transform([*docs, *prose])  # one vocabulary, one tokenizing pass
        except ValueError:  # no item has a single word (an empty vocabulary): every query scores zero
            self.matrix = None
            return
        words = self.counter.get_feature_names_out()
        columns = np.array([self.stems.setdefault(stem(str(w)), len(self.stems)) for w in words], dtype=np.int64)
        merge = sparse.csr_matrix((np.ones(len(words), np.float32), (np.arange(len(words)), columns)),
                                  shape=(len(words), len(self.stems)))
        counts = ATTRIBUTE_WEIGHT * both[:n] + both[n:]
        self.matrix = self.tfidf.fit_transform(counts @ merge).astype(np.float32).tocsr()

    @classmethod
    def of(cls, catalog: Catalog) -> "TextIndex":
        return cls(*fields(catalog))

    def __len__(self) -> int:
        return self._n

    def query_words(self, words: str) -> list[tuple[str, str]]:
        """The query's (word, stem) pairs after the documents' analyzer, each word once, in the order typed."""
        seen, out = set(), []
        for word in self._analyze(words or ""):
            if word not in seen:
                seen.add(word)
                out.append((word, stem(word)))
        return out

    def _columns(self, words: str) -> list[tuple[str, int | None]]:
        return [(word, self.stems.get(term)) for word, term in self.query_words(words)]

    def unknown(self, words: str) -> list[str]:
        """The query's words no item mentions (the page says so instead of showing a silent no-op)."""
        return [word for word, column in self._columns(words) if column is None]

    def scores(self, words: str) -> np.ndarray:
        """(N,) float32 cosine between the query and every item, in [0, 1]; zeros for an empty or stop-word-only
        query, or for words no item mentions."""
        from scipy import sparse

        known = [column for _, column in self._columns(words) if column is not None]
        if self.matrix is None or not known:
            return np.zeros(self._n, np.float32)
        counts = np.bincount(np.asarray(known), minlength=len(self.stems)).astype(np.float32)[None]
        query = self.tfidf.transform(sparse.csr_matrix(counts))
        return np.asarray((self.matrix @ query.T).toarray(), dtype=np.float32).ravel()

    def matched(self, row: int, words: str) -> list[str]:
        """The query's words (lower-cased, as typed) that the item's document mentions, up to plural: what a
        result card shows so that a re-ranked item says why it moved."""
        return self.matched_rows(np.array([row]), words)[0]

    def matched_rows(self, rows: np.ndarray | list[int], words: str) -> list[list[str]]:
        """``matched`` for many rows, the query analysed once."""
        columns = [(w, c) for w, c in self._columns(words) if c is not None]
        if self.matrix is None or not columns:
            return [[] for _ in rows]
        out = []
        for row in np.asarray(rows, dtype=np.int64):
            start, end = self.matrix.indptr[row], self.matrix.indptr[row + 1]
            present = set(self.matrix.indices[start:end].tolist())
            out.append([word for word, column in columns if column in present])
        return out
