"""Tag predictions: what the model says a garment is (category, and descriptive tags where the catalogue has them),
and how right it is on the validation split."""

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

import ui
from core.search.metrics import label_report, tag_f1
from core.text.tags import from_photo

UPLOAD, CAMERA, ITEM = "Upload a photo", "Take a photo", "Evaluation item"
READ_FROM = {True: "the photo", False: "the item's facts"}  # from_photo(family) -> where the tag is read from
GALLERY = 12

settings = ui.current_settings()
ws = ui.workspace(settings)
catalog, state = ws.catalog, st.session_state
vocabulary = ws.embedder.heads.tags if ws.embedder.heads is not None else []
val_rows = ws.validation_rows()
split_word = "validation" if settings.run else "test"  # a fine-tuned run's own validation split, else the test split
has_head = ws.category_probs is not None
families = ws.tag_families  # each tag's family: colour, pattern, garment words, parts, material, climate, gender…
photo_families = sorted({f for f in families if from_photo(f)})
fact_families = sorted({f for f in families if not from_photo(f)})
catalog_has_tags = "tags" in catalog.items.columns


def random_item() -> None:
    state["tags_row"] = int(np.random.default_rng().choice(val_rows))


if state.get("tags_row") not in set(val_rows.tolist()):  # first visit, or another model's split
    random_item()

st.title("Tag predictions")
if not catalog_has_tags:
    st.info(f"**{catalog.name} has no descriptive tags**, only categories: its items come with a category label and "
            "no description to mine tags from. This page shows the predicted category and how well categories are "
            "predicted; a catalogue with descriptions or a tags column gets tag predictions here too.")
elif not vocabulary:
    st.info("This catalogue has tags, but the selected model has no tag head: fine-tune a model on the Model & index "
            "page and pick it in the sidebar to get tag predictions.")
if not has_head:
    st.caption("The ImageNet model has no category head: its category is the similarity-weighted vote of the 10 "
               "nearest catalogue items. A fine-tuned model (sidebar) predicts with its own head.")

threshold = ws.tag_threshold
if vocabulary:
    with st.sidebar:
        st.header("Tags")
        # keyed by the model, so picking another model starts from the threshold that model chose on validation
        threshold = st.slider("Tag threshold", 0.05, 0.95, ws.tag_threshold, 0.05,
                              key=f"tag_threshold_{ws.embedder.key}",
                              help="A tag is predicted when its probability reaches this value. It starts at "
                                   f"{ws.tag_threshold:.2f}, the threshold the model's run found best on its "
                                   "validation split")

query_col, result_col = st.columns([2, 3], gap="large")
with query_col:
    mode = st.radio("Query", [UPLOAD, CAMERA, ITEM], key="tags_mode", horizontal=True)
    photo, problem, row = None, None, None
    if mode in (UPLOAD, CAMERA):
        photo, problem = ui.photo_input(camera=mode == CAMERA, prefix="tags_")
    else:
        row = state["tags_row"]
        st.button(f"Random {split_word} item", icon=":material/casino:", on_click=random_item)
    if problem:
        st.error(problem)

prediction = ws.predict(photo) if photo is not None else (ws.predict(row) if row is not None else None)
with query_col:
    if photo is not None:
        ui.query_steps(prediction.steps)
        ui.garment_colours(prediction.steps.colours)
    elif row is not None:
        item = catalog.items.iloc[row]
        st.image(catalog.thumbnail(row), caption=f"{ui.plain(item['id'])} · {ui.plain(item['category'])}", width=168)
        ui.garment_colours(catalog.photo_colours(row))
        if "description" in (details := catalog.details(row)):
            st.caption(f"“{ui.plain(details['description'])}”")

with result_col:
    if prediction is None:
        st.info(f"Upload a garment photo, take one, or pick a {split_word} item to see what the model predicts.")
    else:
        order = np.argsort(-prediction.categories, kind="stable")[:3]
        st.subheader("Category")
        cols = st.columns(3)
        for col, index in zip(cols, order, strict=True):
            col.metric(ui.plain(catalog.categories[index]), f"{prediction.categories[index]:.0%}")
        if row is not None:
            real = catalog.items.iloc[row]["category"]
            right_first = catalog.categories[order[0]] == real
            (st.success if right_first else st.error)(f"Real category: **{ui.plain(real)}**"
                                                      + ("" if right_first else " (the prediction differs)"))
        if prediction.tags is not None and len(prediction.tags):
            st.subheader("Tags")
            decided = ws.decide_tags(prediction.tags, threshold)  # an exclusive family (gender) is one choice
            st.caption(f"Read from the photo: **{', '.join(photo_families) or 'none'}**."
                       + (f" Facts of the item, rarely visible in a photo and given by its description or the shop's "
                          f"columns: **{', '.join(fact_families)}**; the model's guess at them is not read from the "
                          "photo." if fact_families else ""))
            # each tag with where it came from: the shop's own column (colour, material, …) or its description
            sources = [catalog.tag_sources.get(t, "") for t in vocabulary]
            bars = pd.DataFrame({"tag": [ui.plain_html(f"{t} · {s}" if s else t) for t, s in zip(vocabulary, sources,
                                                                                            strict=True)],
                                 "probability": prediction.tags, "source": sources,
                                 "read from": [READ_FROM[from_photo(f)] for f in families]})
            bars["predicted"] = np.where(decided, "predicted", "not predicted")
            if row is not None:
                real_tags = set(catalog.items.iloc[row]["tags"])
                bars["real"] = ["real tag" if t in real_tags else "" for t in vocabulary]
            bars = bars.sort_values("probability", ascending=False)
            figure = px.bar(bars, x="probability", y="tag", orientation="h", color="predicted",
                            color_discrete_map={"predicted": "#c2185b", "not predicted": "#cfcfcf"},
                            height=max(220, 24 * len(bars)),
                            hover_data=[c for c in ("real", "source", "read from") if c in bars])
            figure.add_vline(x=threshold, line_dash="dot")
            figure.update_layout(yaxis={"categoryorder": "total ascending"}, margin=dict(l=0, r=0, t=10, b=0),
                                 legend_title_text="")
            st.plotly_chart(figure, width="stretch", key="tag_bars")
            if row is not None:
                predicted = {t for t, chosen in zip(vocabulary, decided, strict=True) if chosen}
                real_tags = set(catalog.items.iloc[row]["tags"]) & set(vocabulary)
                marks = [f":green[:material/check: {ui.plain(t)}]" if t in real_tags and t in predicted else
                         (f":red[:material/add: ~~{ui.plain(t)}~~]" if t in predicted else
                          f":orange[:material/help: {ui.plain(t)}]")
                         for t in sorted(predicted | real_tags)]
                st.markdown("**Predicted vs real:** " + (" · ".join(marks) or "no tags"))
                st.caption("green: right · red, struck through: predicted but not real · orange: real but missed")

st.header(f"On the {split_word} split")
split_name = "validation split (never trained on)" if settings.run else "test split"
probs = ui.cached_category_probs(ws, val_rows)
predicted_labels = probs.argmax(axis=1)
true_labels = catalog.labels[val_rows]
if vocabulary:
    truth = ws.tag_truth()[val_rows] > 0.5
    guessed = ws.decide_tags(np.asarray(ws.tag_probs())[val_rows], threshold)
    f1 = tag_f1(truth, guessed)
    cols = st.columns(5)
    cols[0].metric("Items", f"{len(val_rows):,}", help=split_name)
    for col, average in zip(cols[1:4], ("micro", "macro", "samples"), strict=True):
        col.metric(f"F1 {average}", f"{f1[f'tag_f1_{average}']:.3f}",
                   help=f"{split_name}, at threshold {threshold:.2f}; the Model & index page gives the test split's")
    visible = np.array([from_photo(f) for f in families])
    if visible.any():
        visible_f1 = tag_f1(truth[:, visible], guessed[:, visible])["tag_f1_micro"]
        cols[4].metric("F1 micro, from the photo", f"{visible_f1:.3f}",
                       help=f"{split_name}: only the tags a photo can show ({', '.join(photo_families)})")
    st.caption(f"Figures on the **{split_name}**, at threshold {threshold:.2f}.")
    rows_by_family = []
    for family in dict.fromkeys(families):
        columns = np.array([f == family for f in families])
        rows_by_family.append({"family": family, "read from": READ_FROM[from_photo(family)],
                               "tags": int(columns.sum()),
                               "F1 micro": tag_f1(truth[:, columns], guessed[:, columns])["tag_f1_micro"]})
    by_family = pd.DataFrame(rows_by_family)
    st.dataframe(by_family.sort_values(["read from", "family"], ascending=[False, True]), hide_index=True,
                 width="stretch", key="tag_families")
    report = label_report(truth, guessed, vocabulary)
    report.insert(1, "family", families)
    st.dataframe(report, hide_index=True, width="stretch", key="tag_report")
cols = st.columns(2)
cols[0].metric("Category accuracy", f"{np.mean(predicted_labels == true_labels):.1%}",
               help=f"{len(val_rows):,} items of the {split_name}")
st.dataframe(label_report(true_labels, predicted_labels, catalog.categories), hide_index=True, width="stretch",
             key="category_report")

st.subheader(f"{split_word.title()} gallery")
sample = np.random.default_rng(settings.seed).choice(len(val_rows), size=min(GALLERY, len(val_rows)), replace=False)
columns = st.columns(6)
for i, index in enumerate(sample):
    item_row, guess = int(val_rows[index]), catalog.categories[predicted_labels[index]]
    real = catalog.items.iloc[item_row]["category"]
    caption = f"Predicted: {ui.plain(guess)}  \nReal: {ui.plain(real)}"
    if vocabulary:
        scores = np.asarray(ws.tag_probs())[item_row]
        guessed_tags = [t for t, chosen in zip(vocabulary, ws.decide_tags(scores, threshold), strict=True) if chosen]
        real_tags = ", ".join(catalog.items.iloc[item_row]["tags"])
        caption += f"  \nTags: {ui.plain(', '.join(guessed_tags)) or '—'}  \nReal: {ui.plain(real_tags)}"
    with columns[i % 6]:
        st.image(catalog.thumbnail(item_row, 112), width="stretch")
        st.markdown((":green[:material/check:] " if guess == real else ":red[:material/close:] ") + caption)
