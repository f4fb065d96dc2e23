"""Model & index, for the data scientist: what is loaded, what is on disk, and how the retrieval methods compare."""

import pandas as pd
import plotly.express as px
import streamlit as st

import ui
from core.bench_retrieval import load_result, methods_table, run_retrieval_bench, save_result

METHOD_COLUMNS = {"build_s": "build (s)", "disk_mb": "disk (MB)", "memory_mb": "memory (MB)", "p50_ms": "p50 (ms)",
                  "p99_ms": "p99 (ms)", "speedup_vs_exact": "speed-up vs exact", "recall_at_10": "recall@10",
                  "precision_at_10": "precision@10", "map_at_10": "mAP@10"}

settings = ui.sidebar_settings()
ws = ui.workspace(settings)

st.title("Model & index")
info = ws.describe()
cols = st.columns(4)
cols[0].metric("Catalogue items", f"{info['items']:,}")
cols[1].metric("Backbone", info["model"]["backbone"].replace("efficientnet_", "").title(),
               help=f"{info['model']['backbone']}, {info['model']['image_size']} px input")
cols[2].metric("Vector size", info["dim"], help=info["model"]["embedding"])
cols[3].metric("Annoy", f"{info['n_trees']} trees", help=f"search_k {info['search_k']}")

with st.expander("Artifacts on disk", expanded=False):
    files = ws.store.meta().get("files", {})
    st.dataframe(
        pd.DataFrame([{"file": name, "MB": round(entry["bytes"] / 2**20, 2), "written": entry.get("written_at"),
                       "details": {k: v for k, v in entry.items() if k not in ("bytes", "checksum", "written_at")}}
                      for name, entry in files.items()]),
        hide_index=True, width="stretch",
    )
    st.caption(f"`{ws.store.path}` · catalogue key `{info['catalog_key']}` · model key `{info['model_key']}`")

st.header("Retrieval methods compared")
st.markdown(
    "Exact brute force is the ground truth; **K-Means** searches only the clusters closest to the query, **PCA** "
    "searches exactly on fewer dimensions, **Annoy** walks a forest of random-projection trees (what the search "
    "page uses). Latency is the search step alone; recall@10 is measured against exact search; precision@10 and "
    "mAP@10 count neighbours of the query's category."
)

with st.form("retrieval-bench"):
    left, middle, right = st.columns(3)
    n_queries = left.number_input("Queries", min_value=20, max_value=5000, value=300, step=50)
    sweep = middle.checkbox("Annoy sweep (n_trees × search_k)", value=True)
    scale = right.multiselect("Scale curve at N", [10_000, 100_000, 1_000_000], default=[10_000, 100_000],
                              format_func=lambda n: f"{n:,}", help="Sizes above the catalogue use synthetic vectors "
                              "drawn to match it; 1,000,000 takes several minutes on 2 cores.")
    run = st.form_submit_button("Run the comparison", type="primary", icon=":material/speed:")

if run:
    bar = st.progress(0.0, text="Building the four indexes…")

    def progress(stage: str, done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"{stage}: {done} / {total}")

    try:
        save_result(ws, run_retrieval_bench(ws, n_queries=int(n_queries), sweep=sweep, scale=tuple(sorted(scale)),
                                            progress=progress))
    except (MemoryError, OSError, ValueError) as exc:
        st.error(f"The comparison stopped: {type(exc).__name__}: {exc}. Try fewer queries or a smaller N.")
    finally:
        bar.empty()

result = load_result(ws)
if result is None:
    st.info("No comparison has been run for this catalogue and model yet. Run it above, or from the command line "
            "with `python -m core bench retrieval --json`.")
    st.stop()

measured_with = result.get("settings", {})
current = {key: getattr(settings, key) for key in measured_with}
if measured_with != current:
    st.warning(f"These figures were measured with {measured_with}; the current settings are {current}. "
               "Run the comparison again to update them.")
st.caption(f"{result['n_items']:,} items · {result['dim']}-d · {result['queries']} queries · {result['latency']}")
st.dataframe(methods_table(result).rename(columns=METHOD_COLUMNS), width="stretch")

if result.get("annoy_sweep"):
    st.subheader("Annoy: recall against latency")
    sweep_table = pd.DataFrame(result["annoy_sweep"])
    sweep_table["trees"] = sweep_table["n_trees"].astype(str)
    figure = px.line(sweep_table, x="p50_ms", y="recall_at_10", color="trees", markers=True,
                     hover_data=["search_k", "build_s", "disk_mb"], labels={"p50_ms": "p50 latency (ms)",
                                                                           "recall_at_10": "recall@10"})
    chosen = sweep_table[(sweep_table["n_trees"] == settings.n_trees) & (sweep_table["search_k"] == settings.search_k)]
    if not chosen.empty:
        figure.add_scatter(x=chosen["p50_ms"], y=chosen["recall_at_10"], mode="markers", name="default",
                           marker=dict(symbol="star", size=18, color="black"))
    figure.add_hline(y=0.95, line_dash="dot", annotation_text="recall 0.95")
    st.plotly_chart(figure, width="stretch")

if result.get("scale"):
    st.subheader("How each method grows with N")
    scale_table = pd.DataFrame(result["scale"]).sort_values(["method", "n"])
    left, right = st.columns(2)
    for column, y, title in ((left, "p50_ms", "p50 latency (ms)"), (right, "memory_mb", "memory (MB)")):
        figure = px.line(scale_table, x="n", y=y, color="method", markers=True, log_x=True, log_y=True,
                         hover_data=["source", "recall_at_10", "build_s"], labels={"n": "vectors", y: title})
        for trace in figure.data:  # open markers where the vectors are synthetic
            sources = scale_table.loc[scale_table["method"] == trace.name, "source"]
            trace.marker.symbol = ["circle" if src == "real" else "circle-open" for src in sources]
            trace.marker.size = 9
        column.plotly_chart(figure, width="stretch")
    if (scale_table["source"] == "synthetic").any():
        st.caption("Filled markers: the catalogue's own vectors. Open markers: synthetic vectors drawn from one "
                   "Gaussian per category, fitted to the catalogue's own vectors.")
