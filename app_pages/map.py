"""Embedding map: the whole catalogue as points, close where the model thinks items are alike."""

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

import ui
from core.catalog.montage import item_grid
from core.search.embedding_map import (
    DEFAULT_METHOD,
    METHODS,
    category_groups,
    category_palette,
    components_for,
    default_sample,
    explained_variance,
    kmeans_clusters,
    silhouette,
)
from core.search.export import csv_bytes, items_table

SAMPLES = [1_000, 2_000, 5_000, 10_000, 20_000, 0]  # 0 = the whole catalogue
COLOURS = ["category", "predicted category", "misclassified", "K-Means cluster"]
CARDS, CARD_COLUMNS = 24, 6  # a selection this small is shown as cards with "Search with this"

ui.follow_search_request()
settings = ui.current_settings()
ws = ui.workspace(settings)
catalog, state = ws.catalog, st.session_state
vocabulary = ws.embedder.heads.tags if ws.embedder.heads is not None else []

options = [n for n in SAMPLES if n < len(catalog)] + [0]
if state.get("map_sample") not in options:  # first visit (a shared link may ask: /map?points=20000), or a new catalogue
    asked = st.query_params.get("points", "")
    asked = int(asked) if asked.isascii() and asked.isdigit() and len(asked) < 10 else None
    state["map_sample"] = (min(options, key=lambda n: abs((n or len(catalog)) - asked)) if asked is not None
                           else default_sample(len(catalog)))  # the map prepare made (Workspace.prepare_map)

with st.sidebar:
    st.header("Map")
    method = st.radio("Projection", METHODS, index=METHODS.index(DEFAULT_METHOD), format_func=str.upper,
                      horizontal=True, key="map_method")
    sample = st.select_slider("Points", options, key="map_sample", format_func=lambda n: "all" if n == 0 else f"{n:,}",
                              help="A fixed random sample of the catalogue")
    three_d = st.toggle("3-D", key="map_3d")
    colour = st.selectbox("Colour by", COLOURS + [f"tag: {t}" for t in vocabulary], key="map_colour")
    k = st.slider("Clusters (k)", 2, 50, 10, key="map_k") if colour == "K-Means cluster" else 10

st.title("Embedding map")
KEEPS = {"umap": "UMAP keeps neighbourhoods (distances between far clusters mean little)",
         "pca": "PCA keeps the directions of largest variance"}
st.markdown("Every point is a catalogue item, placed so that items the model finds similar are close. "
            f"{KEEPS[method]}. " + ("Drag to turn the 3-D view; switch 3-D off to select items." if three_d else
                                   "Hover a point to see the item, click it to search with it; drag a box (or pick "
                                   "the lasso in the chart's toolbar) to see the items in it and download them."))

dims = 3 if three_d else 2
points = len(catalog) if sample == 0 else sample
with st.spinner(f"Projecting {points:,} items with {method.upper()}… (the first time takes up to a minute, then "
                "it is cached; the default map is made ahead, by `prepare` or right after the catalogue opens)"):
    emap = ui.cached_map(settings, method, sample, dims)
rows = emap.rows
frame = pd.DataFrame(emap.coords, columns=["x", "y", "z"][:dims])
frame["row"] = rows
# catalogue text reaches plotly, which reads a few HTML tags in labels: escaped, so it is shown, not interpreted
categories = [ui.plain_html(c) for c in catalog.categories]
# a colour per category, each readable on white; past 24 categories the largest keep theirs and the rest are "other"
counts = catalog.items["category"].value_counts()
groups = category_groups(categories, [int(counts.get(c, 0)) for c in catalog.categories])
palette = category_palette(categories, [int(counts.get(c, 0)) for c in catalog.categories])
frame["id"] = [ui.plain_html(v) for v in catalog.items["id"].to_numpy()[rows]]
frame["category"] = [ui.plain_html(v) for v in catalog.items["category"].to_numpy()[rows]]
needs_prediction = colour in ("predicted category", "misclassified")
if needs_prediction:
    probs = ui.cached_category_probs(ws, rows)
    frame["predicted category"] = np.asarray(categories)[probs.argmax(axis=1)]
    frame["misclassified"] = np.where(frame["predicted category"] != frame["category"], "misclassified", "right")
if colour == "K-Means cluster":
    clusters = kmeans_clusters(ws.embeddings, rows, k, settings.seed)
    frame["K-Means cluster"] = clusters.astype(str)
    cluster_order = [str(c) for c in sorted(set(clusters))]
colour_column = colour
if colour in ("category", "predicted category") and len(set(groups.values())) < len(groups):
    colour_column = f"{colour} (largest)"  # the column plotly colours by; the hover keeps the real category
    frame[colour_column] = frame[colour].map(groups)
if "tags" in catalog.items.columns:
    frame["tags"] = [ui.plain_html(", ".join(t)) for t in catalog.items["tags"].to_numpy()[rows]]
if colour.startswith("tag: "):
    tag = colour[len("tag: "):]
    probs = np.asarray(ws.tag_probs())[rows, vocabulary.index(tag)]
    frame[colour] = probs
# the hover box names the item (its picture is the hover card, ui.map_hover); the coordinates mean nothing alone
hover = {"id": True, "category": True, **{c: True for c in ("tags", "predicted category") if c in frame},
         **{axis: False for axis in ["x", "y", "z"][:dims]}}
plot = px.scatter_3d if three_d else px.scatter
order = [g for g in palette if g in set(groups.values())]
figure = plot(frame, **{axis: axis for axis in ["x", "y", "z"][:dims]}, color=colour_column, hover_data=hover,
              custom_data=["row"], height=640, opacity=0.75,
              category_orders={"category": categories, "predicted category": categories,
                               f"{colour} (largest)": order,
                               "K-Means cluster": cluster_order if colour == "K-Means cluster" else []},
              color_continuous_scale="Viridis" if colour.startswith("tag: ") else None,
              # categories: a colour each (core.search.embedding_map.category_palette); errors stand out in red;
              # clusters get a 24-colour palette so k up to 24 stays distinguishable
              color_discrete_map={**palette, "misclassified": "#d62728", "right": "#c7c7c7"},
              color_discrete_sequence=px.colors.qualitative.Dark24 if colour == "K-Means cluster" else None)
figure.update_traces(marker=dict(size=3 if three_d else 5))

query = state.get("map_query")
if query is not None and query.get("model") == ws.embedder.key and query.get("vector") is not None:
    placed = emap.place(query["vector"], ws.embeddings)[0]
    neighbours = [r for r in query["neighbours"] if r < len(catalog)]
    where = {int(r): i for i, r in enumerate(rows)}
    near = np.array([emap.coords[where[r]] if r in where else emap.place(ws.embeddings[r], ws.embeddings)[0]
                     for r in neighbours]) if neighbours else np.zeros((0, dims))
    extra = (dict(z=[placed[2]]), dict(z=near[:, 2])) if three_d else ({}, {})
    scatter = figure.add_scatter3d if three_d else figure.add_scatter
    scatter(x=near[:, 0], y=near[:, 1], mode="markers", name="its nearest items", **extra[1],
            marker=dict(size=8 if three_d else 13, color="rgba(0,0,0,0)", line=dict(color="black", width=2)))
    scatter(x=[placed[0]], y=[placed[1]], mode="markers", name=f"query: {ui.plain_html(query['label'])}", **extra[0],
            marker=dict(size=10 if three_d else 22, symbol="diamond" if three_d else "star", color="black"))
figure.update_layout(margin=dict(l=0, r=0, t=40, b=0), legend_title_text=colour,
                     dragmode="turntable" if three_d else "select")  # dragging on the 2-D map selects
event = st.plotly_chart(figure, width="stretch", key="map_chart", on_select="ignore" if three_d else "rerun",
                        selection_mode=("box", "lasso"))
if not three_d and (clicked := ui.map_hover("map_chart", ws, rows)) is not None:
    ui.search_with_item(clicked)  # a click on a point: its results, on the Search page
    ui.follow_search_request()
if query is None:
    st.caption("Search on the **Search by photo** page and the query appears here as a star, its nearest items ringed.")
elif query.get("model") != ws.embedder.key:
    st.caption("The latest search was made with another model, so it is not drawn on this map: search again on the "
               "**Search by photo** page with this model.")

selected = [int(p["customdata"][0]) for p in (event.selection.points if event and not three_d else [])
            if p.get("customdata")]
if len(selected) == 1:  # one item: it, and the way to its results
    row = selected[0]
    left, right = st.columns([1, 4])
    left.image(catalog.thumbnail(row), width="stretch")
    title, facts = catalog.headline(row)
    right.markdown(f"**{ui.plain(title)}**" + (f"  \n{ui.plain(facts)}" if facts else "") +
                   f"  \n{ui.plain(catalog.items.iloc[row]['id'])}")
    right.button("Search with this", key="map_search_item", on_click=ui.search_with_item, args=(row,),
                 type="primary", icon=":material/search:", help="Its most similar items, on the Search page")
elif selected:
    st.subheader(f"{len(selected):,} selected items")
    left, right = st.columns([1, 2])
    counts = catalog.items["category"].to_numpy()[selected]
    left.dataframe(pd.Series(counts).value_counts().rename_axis("category").reset_index(name="items"),
                   hide_index=True, width="stretch")
    left.download_button("Download the selection (CSV)", csv_bytes(items_table(catalog, selected)),
                         file_name=f"{catalog.name}-map-selection.csv", mime="text/csv", key="map_csv",
                         icon=":material/download:", width="stretch",
                         help="Every selected item with every column the catalogue has; the map itself downloads "
                              "as PNG from the chart's toolbar (camera icon)")
    picked = None if len(selected) <= CARDS else left.selectbox(
        "Search with one of them", [None, *selected], key="map_pick",
        format_func=lambda r: "Choose an item…" if r is None else
        f"{catalog.items.iloc[r]['id']} · {catalog.items.iloc[r]['category']}")
    if picked is not None:
        left.button("Search with this", key="map_search_picked", on_click=ui.search_with_item, args=(picked,),
                    icon=":material/search:", width="stretch")
    if len(selected) <= CARDS:  # few enough to show as cards, each one click from its results
        with right:
            for start in range(0, len(selected), CARD_COLUMNS):
                for col, row in zip(st.columns(CARD_COLUMNS), selected[start : start + CARD_COLUMNS], strict=False):
                    col.image(catalog.thumbnail(row), width="stretch")
                    col.caption(f"{ui.plain(catalog.headline(row)[0])} · {ui.plain(catalog.items.iloc[row]['id'])}")
                    col.button("Search", key=f"map-search-{row}", on_click=ui.search_with_item, args=(row,),
                               icon=":material/search:", width="stretch", help="Search with this item")
    else:
        shown = selected if len(selected) <= 200 else np.random.default_rng(0).choice(selected, 200, replace=False)
        right.image(item_grid(catalog, sorted(shown, key=lambda r: (catalog.labels[r], r))), width="stretch",
                    caption=f"200 of the {len(selected):,} selected items, at random" if len(selected) > 200 else None)

cols = st.columns(3)
map_score, raw_score = ws.map_silhouettes(emap)  # made with the default map by prepare, then cached
cols[0].metric("Silhouette of the map", "—" if map_score is None else f"{map_score:.3f}",
               help="By category, on this map's coordinates: 1 = categories perfectly apart, 0 = mixed")
cols[1].metric("Silhouette of the embeddings", "—" if raw_score is None else f"{raw_score:.3f}",
               help="By category, on the raw vectors (cosine distance)")
cols[2].metric("Projection time", f"{emap.seconds:.1f} s" if emap.seconds else "cached")
if not emap.cached:
    st.caption("This map could not be saved: the artifacts folder is read-only (or full), so it is computed again "
               "after each restart.")

with st.expander("PCA explained variance"):
    # a PCA of the whole sample: seconds at 5,000 points, so only when asked, not on every visit
    if st.toggle("Show the PCA explained variance of this sample", key="map_variance"):
        curve = explained_variance(ws.embeddings, rows, seed=settings.seed)
        needed = components_for(curve, 0.9)
        variance = px.line(x=np.arange(1, len(curve) + 1), y=curve, height=300,
                           labels={"x": "components", "y": "cumulative share"})
        variance.add_hline(y=0.9, line_dash="dot")
        st.plotly_chart(variance, width="stretch", key="variance_chart")
        st.caption(f"{needed} components explain 90 % of the variance." if needed else
                   f"The first {len(curve)} components explain {curve[-1]:.0%} of the variance.")

if settings.run and not three_d:
    with st.expander("What fine-tuning did: ImageNet baseline beside this model", icon=":material/compare:"):
        baseline_settings = settings.replace(run="", backbone=ui.base_settings().backbone)
        if st.toggle("Show the baseline map (builds the baseline's embeddings if they are missing)",
                     key="map_compare"):
            ui.workspace(baseline_settings)
            base_map = ui.cached_map(baseline_settings, method, sample, 2)
            left, right = st.columns(2)
            for column, name, m in ((left, "ImageNet baseline", base_map), (right, "fine-tuned", emap)):
                side = pd.DataFrame(m.coords, columns=["x", "y"])
                side["category"] = [ui.plain_html(v) for v in catalog.items["category"].to_numpy()[m.rows]]
                score = silhouette(m.coords, side["category"].to_numpy(), seed=settings.seed)
                side["shown"] = side["category"].map(groups)
                chart = px.scatter(side, x="x", y="y", color="shown", height=420, opacity=0.7,
                                   category_orders={"shown": order}, color_discrete_map=palette,
                                   labels={"shown": "category"},
                                   title=f"{name} · silhouette {score:.3f}" if score is not None else name)
                chart.update_traces(marker=dict(size=4))
                chart.update_layout(margin=dict(l=0, r=0, t=40, b=0), showlegend=column is right)
                column.plotly_chart(chart, width="stretch", key=f"compare-{name}")
