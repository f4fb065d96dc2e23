"""Home: what the app does, and the catalogue at a glance."""

import plotly.express as px
import streamlit as st

import ui
from core.backbone import BACKBONES
from core.gallery import category_montage
from core.runs import RunDir

settings = ui.current_settings()
ws = ui.workspace(settings)
catalog = ws.catalog

st.title("Fashion visual search")
st.markdown(
    "Upload a photo of a garment and this dashboard finds the most similar items in the catalogue, using a "
    "neural network that turns every image into a vector and an index that compares them in milliseconds. "
    "Try it on **Search by photo**, or browse a few items from each category below."
)
st.page_link("app_pages/search.py", label="Search by photo", icon=":material/search:")

summary = catalog.summary()
cols = st.columns(4)
cols[0].metric("Catalogue items", f"{len(catalog):,}")
cols[1].metric("Categories", len(catalog.categories))
if settings.run:
    model_label = RunDir.of(settings).label()
else:
    model_label = BACKBONES[settings.backbone].label if settings.backbone in BACKBONES else settings.backbone
cols[2].metric("Vector size", ws.embeddings.shape[1],
               help=f"{model_label}, {ws.embedder.transform.size} px input")
cols[3].metric("Annoy index", f"{settings.n_trees} trees", help=f"search_k {settings.search_k}")

left, right = st.columns([3, 2])
with left:
    st.subheader("A few items from each category")
    st.image(category_montage(catalog, per_category=10, seed=settings.seed), width="stretch")
with right:
    st.subheader("Items per category")
    long = summary.drop(columns="total").reset_index().melt(id_vars="category", var_name="split", value_name="items")
    figure = px.bar(long, x="items", y="category", color="split", orientation="h", height=420,
                    category_orders={"category": list(summary.index)})
    figure.update_layout(margin=dict(l=0, r=0, t=10, b=0), legend_title_text="")
    st.plotly_chart(figure, width="stretch")
    st.caption(f"Catalogue key `{catalog.key}` · model key `{ws.embedder.key}` · artifacts in `{ws.store.path}`")
