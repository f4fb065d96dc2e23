"""Home: what the app does, and the catalogue at a glance."""

from pathlib import Path

import plotly.express as px
import streamlit as st

import ui
from core.catalog.montage import category_montage
from core.catalog.prepare import prepare_catalog, sources_under
from core.catalog.sources import LAYOUTS, CatalogError, SourceSpec, TableColumns
from core.model.backbone import BACKBONES
from core.model.runs import RunDir
from core.threads import loader_workers

settings = ui.current_settings()
state = st.session_state


def _shown(path: Path, roots: list[Path]) -> str:
    """A source as the list shows it: relative to its catalogue folder, a folder marked with a slash."""
    root = next(r for r in roots if path.is_relative_to(r))
    return f"{root.name}/{path.relative_to(root).as_posix()}{'/' if path.is_dir() else ''}"


@st.cache_data(max_entries=8, show_spinner="Drawing the catalogue…")
def montage(catalog_key: str, seed: int, _catalog):
    """Cached per catalogue: a file catalogue's montage decodes hundreds of photos."""
    return category_montage(_catalog, per_category=10, seed=seed)


def add_catalogue() -> None:
    """Validate and register a catalogue from the operator's catalogue folders (core.catalog.prepare), then offer to
    switch to it. A browser user picks from what lies there: no other path on the server can be read or probed."""
    roots = settings.allowed_catalog_roots()
    sources = sources_under(roots)
    folders = ", ".join(f"`{root.name}/`" for root in roots)  # by name, as the list below names them: no server layout
    if not sources:
        st.info(f"No catalogue to add yet. Put a folder of category subfolders, a CSV or Parquet table beside its "
                f"images, or a DeepFashion folder into {folders} on the server, then open this again. "
                "(The operator chooses these folders with `FVS_CATALOG_ROOTS`.)")
        return
    limit = f"; up to {settings.page_max_items:,} items" if settings.page_max_items else ""
    with st.form("add_catalogue", border=False):
        st.markdown(f"Catalogues on the server, in {folders}: a folder whose subfolders are categories, a CSV or "
                    "Parquet table (an `image` column with paths relative to the table, and optional `id`, "
                    "`category`, `description`, `tags`, `brand`, `price` columns), or a DeepFashion folder. "
                    f"Images stay where they are{limit}.")
        source = st.selectbox("Catalogue", sources, key="new_catalog_source",
                              format_func=lambda path: _shown(path, roots))
        c1, c2 = st.columns(2)
        name = c1.text_input("Name (optional)", key="new_catalog_name", placeholder="from the file or folder name")
        layout = c2.selectbox("Layout", LAYOUTS, key="new_catalog_layout")
        with st.expander("Table columns and DeepFashion options"):
            columns = {}
            for i, field in enumerate(TableColumns.__dataclass_fields__):
                if i % 4 == 0:
                    row = st.columns(4)
                columns[field] = row[i % 4].text_input(f"{field.capitalize()} column", field,
                                                       key=f"new_catalog_{field}_column")
            kinds = st.text_input("DeepFashion: categories or garment types to keep", key="new_catalog_categories",
                                  placeholder="upper, lower, full, or names: Blouse, Tee")
            per_category = st.number_input("DeepFashion: items per category (0: all)", 0, 100_000, 0, step=100,
                                           key="new_catalog_per_category")
        submitted = st.form_submit_button("Check and add", type="primary", icon=":material/add:")
    if submitted:
        spec = SourceSpec(path=str(source), layout=layout,
                          columns=TableColumns(**{k: v.strip() or k for k, v in columns.items()}),
                          categories=tuple(k.strip() for k in kinds.split(",") if k.strip()),
                          per_category=int(per_category), seed=settings.seed)
        bar = st.empty()
        try:
            report = prepare_catalog(spec, settings, name=name.strip(), workers=loader_workers(settings),
                                     progress=ui.progress_bar(bar), confine_to=roots,
                                     max_items=settings.page_max_items, replace=False)
            state["_prepared"] = report.summary()
            ui.forget_catalogues()
        except (CatalogError, OSError, ValueError, RuntimeError) as exc:  # whatever the files hold: a message
            state.pop("_prepared", None)
            st.error(f"**This catalogue could not be added.**\n\n{ui.plain(ui.without_server_paths(exc, settings))}")
        finally:
            bar.empty()
    summary = state.get("_prepared")
    if summary:
        st.success(f"**{summary['catalog']}**: {summary['items']:,} items in {len(summary['categories'])} "
                   f"categories; {summary['skipped']} entries skipped, {summary['repaired']} repaired.")
        st.caption("Tags: " + (ui.plain(", ".join(summary["tags"])) or "none (no tags or descriptions)"))
        if summary["problems"]:
            st.dataframe(summary["problems"], hide_index=True, width="stretch", height=180)
        if st.button(f"Search {summary['catalog']}", icon=":material/arrow_forward:", key="use_new_catalog"):
            ui.switch_catalog(summary["catalog"])
            state.pop("_prepared")
            st.rerun()


def pick_category() -> None:
    """The pill's callback: remember the category and clear the pill (back on Home, nothing is picked)."""
    state["_browse_to"], state["home_browse"] = state.get("home_browse"), None


if state.get("_browse_to"):
    ui.browse_category(state.pop("_browse_to"))

st.title("Fashion visual search")
st.markdown(
    "Upload a photo of a garment and this dashboard finds the most similar items in the catalogue, using a "
    "neural network that turns every image into a vector and an index that compares them in milliseconds. "
    "Try it on **Search by photo**, or browse a few items from each category below."
)
st.page_link("app_pages/search.py", label="Search by photo", icon=":material/search:")
with st.expander("Add your own catalogue", icon=":material/add_photo_alternate:",
                 expanded=bool(state.get("_prepared"))):
    add_catalogue()

ws = ui.workspace(settings)
catalog = ws.catalog

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
cols[3].metric("Served index", ws.index_choice.label if ws.index_choice else ws.index.name,
               help=ws.index_choice.summary() if ws.index_choice else None)

left, right = st.columns([3, 2])
with left:
    st.subheader("A few items from each category")
    st.image(montage(catalog.key, settings.seed, catalog), width="stretch")
    st.pills("Browse a category", catalog.categories, key="home_browse", format_func=ui.plain, on_change=pick_category,
             help="Opens the Browse page on that category: every item, with filters and Search with this")
with right:
    st.subheader("Items per category")
    long = summary.drop(columns="total").reset_index().melt(id_vars="category", var_name="split", value_name="items")
    figure = px.bar(long, x="items", y="category", color="split", orientation="h", height=420,
                    category_orders={"category": list(summary.index)})
    figure.update_layout(margin=dict(l=0, r=0, t=10, b=0), legend_title_text="")
    st.plotly_chart(figure, width="stretch")
    st.caption(f"Catalogue key `{catalog.key}` · model key `{ws.embedder.key}` · "
               f"artifacts in `{ui.shown_path(ws.store.path, settings)}`")
