"""Search by photo: a query from an upload, the camera or the catalogue → the most similar catalogue items; words
("blue, zip") re-rank or narrow them, or search the catalogue's text alone."""

import re

import numpy as np
import streamlit as st

import ui
from core.photo.query_steps import QueryError
from core.search import export
from core.search.workspace import HEAD_AND_VOTE, RERANK_POOL, RERANK_SURE, WORDS_MODES

UPLOAD, CAMERA, PASTE, ITEM, WORDS = "Upload a photo", "Take a photo", "Paste a photo", ui.ITEM_QUERY, "Words only"
WORDS_MODE_LABELS = dict(zip(WORDS_MODES, ("re-rank", "only items that mention them"), strict=True))
COLUMNS = 5

settings = ui.current_settings()
ws = ui.workspace(settings)
catalog = ws.catalog
state = st.session_state
state.setdefault("query_mode", UPLOAD)
if state.get("query_row", len(catalog)) >= len(catalog):  # first visit, or a smaller catalogue was picked
    state["query_row"] = int(np.random.default_rng().integers(len(catalog)))


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def random_item() -> None:
    ui.query_item(int(np.random.default_rng().integers(len(catalog))))


def _quoted(words: list[str]) -> str:
    return ", ".join(f"“{ui.plain(w)}”" for w in words)


def words_to_use(typed: str, alone: bool) -> str:
    """The typed words the search should use: none when no item mentions any of them (said, so that a photo's own
    results are not mistaken for filtered ones); the words some item mentions otherwise, the others named."""
    if not typed.strip():
        return ""
    index = ws.text_index
    if not index.query_words(typed):
        st.caption("Only common words (“the”, “with”…): nothing to match.")
        return ""
    unknown = index.unknown(typed)
    if len(unknown) == len(index.query_words(typed)):
        st.info(f"No item in this catalogue mentions {_quoted(unknown)}."
                + ("" if alone else " Showing the query's own results."))
        return ""
    if unknown:
        st.caption(f"No item mentions {_quoted(unknown)}; searching with the other words.")
    return typed


st.title("Search by photo")

with st.sidebar:
    st.header("Search")
    k = st.slider("Results (top K)", min_value=1, max_value=50, value=10, key="k")
    category = st.selectbox("Only this category", ["All categories", *catalog.categories], key="category")
    served = ws.index_choice
    if ws.index.name == "exact":  # small enough that the scan is served: the switch compares with the Annoy index
        switched = st.toggle("Annoy index instead", value=False, key="exact",
                             help=f"Off: exact search, served here ({served.summary() if served else ''}). "
                                  f"On: the Annoy index ({settings.n_trees} trees, search_k {settings.search_k}), "
                                  "approximate, to compare.")
        exact = False if switched else None
    else:
        switched = st.toggle("Exact search (brute force)", value=False, key="exact",
                             help=f"Off: the served index, {served.summary() if served else ws.index.name}. "
                                  "On: compare the query with every item; slower, the ground truth.")
        exact = True if switched else None
    rerank = st.toggle("Predicted category first", value=settings.category_rerank > 0, key="rerank",
                       help="When the model is sure of the photo's category (at least "
                            f"{settings.category_rerank or RERANK_SURE:.0%}), that category's items among the "
                            f"{RERANK_POOL} most similar come first. Off: pure similarity order.")

query_col, results_col = st.columns([2, 5], gap="large")

with query_col:
    mode = st.radio("Query", [UPLOAD, CAMERA, PASTE, ITEM, WORDS], key="query_mode", horizontal=False)
    photo, problem, result = None, None, None
    chosen_category = None if category == "All categories" else category
    if mode in (UPLOAD, CAMERA):
        photo, problem = ui.photo_input(camera=mode == CAMERA)
    elif mode == PASTE:
        photo, problem = ui.paste_input()
    elif mode == ITEM:
        row = state["query_row"]
        st.button("Random catalogue item", icon=":material/casino:", on_click=random_item, width="stretch")
        st.image(catalog.thumbnail(row), caption=f"{ui.plain(catalog.items.iloc[row]['id'])} · "
                                                 f"{ui.plain(catalog.items.iloc[row]['category'])}", width=168)
        ui.garment_colours(catalog.photo_colours(row))
    # the same label, placeholder and help in every mode: the typed words stay when the query mode changes
    typed = st.text_input("Words", key="words", placeholder="blue, zip, fleece",
                          help="Words from the items' names, descriptions, tags, colours and materials: alone "
                               "(Words only), or with a photo or an item, to re-rank its most similar items or keep "
                               "only those that mention them.")
    words_mode = WORDS_MODES[0]
    if mode != WORDS:
        words_mode = st.radio("Use the words to", WORDS_MODES, format_func=WORDS_MODE_LABELS.get, key="words_mode",
                              horizontal=True, persist_state="page")
    words = words_to_use(typed or "", alone=mode == WORDS)
    if mode == WORDS:
        if words:
            result = ws.search_words(words, k=k, category=chosen_category)
    elif mode == ITEM:
        result = ws.search_item(row, k=k, exact=exact, category=chosen_category, words=words, words_mode=words_mode,
                                rerank=rerank)

    if problem:
        st.error(problem)
    if photo is not None:
        filters = dict(k=k, exact=exact, category=chosen_category, words=words, words_mode=words_mode, rerank=rerank)
        if state.get("_isolate_model") != ws.embedder.key:  # another model: its own default (auto)
            state["_isolate_model"], state["isolate"] = ws.embedder.key, ws.isolates
        isolate = st.toggle("Isolate the garment", key="isolate",
                            help="Separate the garment from the floor, the wall or the person wearing it (GrabCut) "
                                 "before converting it like the catalogue's items. On by default for fine-tuned "
                                 "models, where it helps most (BENCHMARKS.md).")
        result = ws.search(photo, isolate=isolate, **filters)
        proposed = result.steps.box or (0, 0, photo.width, photo.height)
        if st.toggle("Adjust the crop", key="adjust_crop",
                     help="Drag the box around the garment you mean (for a whole outfit, pick one piece); the "
                          "search runs again on every change."):
            box = ui.crop_box(photo, proposed)
            if box != proposed:
                try:
                    result = ws.search(photo, isolate=isolate, box=box, **filters)
                except QueryError as exc:  # a box dragged down to nothing: say so, keep the uncropped results
                    st.warning(str(exc))
        ui.query_steps(result.steps)
        ui.garment_colours(result.steps.colours)

    if result is not None and result.vector is not None:  # the map page draws the latest query and its neighbours
        label = "your photo" if photo is not None else catalog.items.iloc[state["query_row"]]["id"]
        state["map_query"] = {"model": ws.embedder.key, "vector": result.vector, "label": label,
                              "neighbours": result.hits["row"].tolist()}
    if result is not None and result.predicted:
        top, share = result.predicted[0]
        unit = ("of neighbour votes" if ws.category_probs is None else
                "head and votes" if result.predicted_by == HEAD_AND_VOTE else "probability")
        st.metric("Predicted category", top, f"{share:.0%} {unit}", delta_color="off", delta_arrow="off",
                  help=f"From {result.predicted_by}")
        st.caption(" · ".join(f"{ui.plain(name)} {value:.0%}" for name, value in result.predicted[1:4]))
        if result.reranked_by:
            st.caption(f":material/sort: Results re-ranked: **{ui.plain(result.reranked_by)}** items first (the "
                       "model is sure of it); switch off *Predicted category first* for pure similarity.")
    if result is not None:
        st.metric("Search latency", f"{result.latency_ms:.1f} ms", result.method, delta_color="off",
                  delta_arrow="off")
        st.caption(" · ".join(f"{stage} {ms:.1f} ms" for stage, ms in result.timings_ms.items()))
        if served is not None and result.method.split(" + ")[0] == ws.index.name:
            st.caption(ui.plain(f"Served index: {served.label}, recall@10 {served.recall_at_10:.3f} against exact "
                                f"search (measured on {served.queries} of the catalogue's items when it was chosen)."))

with results_col:
    if result is None:
        if not problem and not (mode == WORDS and typed):  # typed words that match nothing were answered above
            if mode == WORDS:
                st.info("Type words to search the catalogue's names, descriptions and tags, e.g. “blue hoodie”.")
            else:
                st.info("Upload a garment photo, take one with your camera, or pick a catalogue item to search.")
                st.button("Try a random catalogue item", on_click=random_item, type="primary")
    elif result.hits.empty:
        if words and (mode == WORDS or words_mode == "narrow"):
            st.warning(f"No item {'in this category ' if chosen_category else ''}mentions "
                       f"{_quoted([w for w, _ in ws.text_index.query_words(words)])}.")
        else:
            st.warning("No catalogue item matches this filter.")
    else:
        if mode == WORDS:
            st.subheader(f"{len(result.hits)} items that best match the words")
        elif words and words_mode == "narrow":
            st.subheader(f"{len(result.hits)} most similar items that mention the words")
        else:
            st.subheader(f"{len(result.hits)} most similar items" + (", re-ranked by the words" if words else ""))
        with st.container(key="results"):
            for start in range(0, len(result.hits), COLUMNS):
                row_hits = result.hits.iloc[start : start + COLUMNS].iterrows()
                for col, (_, hit) in zip(st.columns(COLUMNS), row_hits, strict=False):  # last row may be short
                    with col:
                        item_row = int(hit["row"])
                        st.image(catalog.thumbnail(item_row), width="stretch")
                        title, facts = catalog.headline(item_row)
                        # catalogue text is shown as text (ui.plain), never interpreted as Markdown or HTML
                        st.markdown(f"**{ui.plain(title)}**" + (f"  \n{ui.plain(facts)}" if facts else ""))
                        details = catalog.details(item_row)
                        if "description" in details:
                            st.caption(ui.plain(_short(details["description"])))
                        if tags := catalog.item_tags(item_row):
                            st.markdown(" ".join(f":gray-badge[{ui.plain(t)}]" for t in tags))
                        if hit["matched"]:
                            st.caption("matches: " + ", ".join(ui.plain(w) for w in hit["matched"]))
                        if mode == WORDS:
                            scores = f"words {hit['score']:.3f}"
                        else:
                            scores = f"similarity {hit['score']:.3f}"
                            scores += f" · words {hit['text_score']:.3f}" if "text_score" in hit.index else ""
                        st.caption(f"{scores} · {ui.plain(hit['id'])}")
                        if details:
                            with st.popover("Details", width="stretch"):
                                st.markdown("  \n".join(f"**{ui.plain(k)}**: {ui.plain(v)}"
                                                         for k, v in details.items()))
                        st.button("Similar", key=f"more-{hit['row']}", on_click=ui.query_item, args=(int(hit["row"]),),
                                  icon=":material/search:", width="stretch", help="Search with this item")
        extra = {}
        if words:  # what each item matched, and its text score, beside the catalogue's columns
            extra = {"matched": result.hits["matched"].tolist(),
                     "text_score": result.hits["text_score"].astype(float).round(4)}
        table = export.items_table(catalog, result.hits["row"].to_numpy(), result.hits["score"].to_numpy(), **extra)
        name = re.sub(r"[^\w.-]+", "-", catalog.name).strip("-") or "catalogue"
        st.download_button("Download these results (CSV)", data=export.csv_bytes(table),
                           file_name=f"{name}-search-results.csv", mime="text/csv", key="results_csv",
                           on_click="ignore", icon=":material/download:",
                           help="Every column the catalogue has for these items, with their scores.")
