"""Model & index, for the data scientist: what is loaded, what is on disk, and how the retrieval methods compare."""

from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

import ui
from core.bench.cross_domain import saved_results as saved_cross_domain
from core.bench.photos import LabelsError, run_photo_bench
from core.bench.retrieval import load_result, methods_table, run_retrieval_bench, save_result
from core.catalog.prepare import confined
from core.config import FREEZE_POLICIES, TrainConfig
from core.model.runs import list_runs, runs_table, stop_job
from core.search.metrics import confusion_table, row_shares
from core.text.tags import DEFAULT_THRESHOLD
from core.training.trainer import start_training

METHOD_COLUMNS = {"build_s": "build (s)", "disk_mb": "disk (MB)", "memory_mb": "memory (MB)", "p50_ms": "p50 (ms)",
                  "p99_ms": "p99 (ms)", "speedup_vs_exact": "speed-up vs exact", "recall_at_10": "recall@10",
                  "precision_at_10": "precision@10", "map_at_10": "mAP@10"}

settings = ui.current_settings()
ws = ui.workspace(settings)

st.title("Model & index")
info = ws.describe()
cols = st.columns(4)
cols[0].metric("Catalogue items", f"{info['items']:,}")
cols[1].metric("Backbone", info["model"]["backbone"].replace("efficientnet_", "").title(),
               help=f"{info['model']['backbone']}, {info['model']['image_size']} px input")
cols[2].metric("Vector size", info["dim"], help=info["model"]["embedding"])
served = ws.index_choice
cols[3].metric("Served index", served.label if served else info["index"],
               f"recall@10 {served.recall_at_10:.3f} · p50 {served.p50_ms:.2f} ms" if served else None,
               delta_color="off", delta_arrow="off",
               help=(served.summary() if served else "") + f". The Annoy index ({info['n_trees']} trees) is built for "
               "every catalogue; FVS_INDEX picks auto, exact, annoy or hnsw.")
if info["shared_space"]:
    shared = info["shared_space"]
    st.caption(":material/join: **Photos of other styles:** the vectors blend this model's own "
               f"({1 - shared['weight']:.0%} of the similarity) with a discriminant in {shared['classes']} shared "
               f"garment classes ({shared['weight']:.0%}), fitted on the ImageNet features of the train splits of "
               f"{' and '.join(shared['fitted_on'])}: a phone photo finds the shop's garment and a shop photo the "
               "phone photos' (BENCHMARKS.md, \"Across photo styles\"; `FVS_SHARED_WEIGHT=0` turns it off).")
if served is not None:
    with st.expander("How the served index was chosen", expanded=False):
        st.markdown(ui.plain(served.summary()))
        st.dataframe(pd.DataFrame(served.tried), hide_index=True, width="stretch")
if ws.read_only:
    st.info("**Served read-only.** The artifacts folder cannot be written (a read-only volume, or "
            "`FVS_READ_ONLY`): searches use what was prepared there, and anything that would be written (a new "
            "map projection, a fine-tuning run, another model's index) needs a writable copy.",
            icon=":material/lock:")

with st.expander("Artifacts on disk", expanded=False):
    files = ws.store.meta().get("files", {})
    st.dataframe(
        pd.DataFrame([{"file": name, "MB": round(entry["bytes"] / 2**20, 2), "written": entry.get("written_at"),
                       "details": {k: v for k, v in entry.items() if k not in ("bytes", "checksum", "written_at")}}
                      for name, entry in files.items()]),
        hide_index=True, width="stretch",
    )
    st.caption(f"`{ui.shown_path(ws.store.path, settings)}` · catalogue key `{info['catalog_key']}` · "
               f"model key `{info['model_key']}`")

st.header("Fine-tuning")
st.markdown(
    "ImageNet features know shapes and textures, not this catalogue's categories. Fine-tuning trains the backbone, "
    "a 512-d embedding layer (the vectors the index holds) and a category head on the catalogue's train split; "
    "the figures below are measured on its test split, which training never sees. A finished run appears in the "
    "sidebar's **Model** list."
)
runs = list_runs(settings, ws.catalog.key)


active_runs = [run.id for run in runs if run.is_active()]


@st.fragment(run_every=2.0 if active_runs else None)
def live_runs() -> None:
    """Re-drawn every 2 s, without rerunning the page, while a run trains in the background; when one finishes
    the whole page reruns so that the runs table and the sidebar's model list show it."""
    current = list_runs(settings, ws.catalog.key)
    still_active = {run.id for run in current if run.is_active()}
    if set(st.session_state.get("_active_runs", [])) - still_active:
        st.session_state["_active_runs"] = sorted(still_active)
        st.rerun(scope="app")
    st.session_state["_active_runs"] = sorted(still_active)
    for run in current:
        status = run.status()
        if run.id not in still_active:
            problem = status.problem(run.id)
            if problem:
                level, message = problem
                (st.warning if level == "warning" else st.error)(message)
            continue
        epochs = status.epochs or run.config().epochs  # the recipe's, until the trainer reports its own
        left, right = st.columns([5, 1])
        left.progress(status.fraction(epochs), text=status.progress_text(run.id, epochs))
        right.button("Stop", key=f"stop-{run.id}", on_click=stop_job, args=(run,), icon=":material/stop:",
                     help="Stops within seconds; training the same recipe again resumes from its last whole epoch.")
        history = status.history
        if history:
            left.caption(" · ".join(f"epoch {h['epoch']}: val top-1 {h['val_top1']:.1%}, "
                                    f"precision@10 {h['val_precision_at_10']:.3f}" for h in history[-3:]))
            curves = pd.DataFrame(history).set_index("epoch")[["val_top1", "val_precision_at_10", "train_loss"]]
            left.line_chart(curves, height=220, x_label="epoch")


live_runs()

with st.expander("Train a new model", expanded=not runs, icon=":material/model_training:"):
    defaults = TrainConfig()
    with st.form("train"):
        c1, c2, c3, c4 = st.columns(4)
        epochs = c1.number_input("Epochs", 1, 200, defaults.epochs)
        image_size = c2.select_slider("Image size (px)", [32, 48, 64, 96, 128, 160, 224], defaults.image_size)
        freeze = c3.selectbox("What learns", FREEZE_POLICIES, index=FREEZE_POLICIES.index(defaults.freeze),
                              format_func={"full": "everything",
                                           "last": f"last {defaults.trainable_blocks} stages + heads",
                                           "heads": "heads only (cached features)"}.get)
        embedding_dim = c4.select_slider("Embedding size", [64, 128, 256, 512, 1024], defaults.embedding_dim)
        c1, c2, c3, c4 = st.columns(4)
        lr = c1.number_input("Learning rate", 1e-5, 1e-1, defaults.lr, format="%.4f")
        batch_size = c2.number_input("Batch size", 8, 1024, defaults.batch_size, step=8)
        triplet = c3.number_input("Triplet loss weight", 0.0, 5.0, defaults.triplet_weight, step=0.1,
                                  help="Batch-hard triplet margin loss on the embeddings, added to cross-entropy")
        augment = c4.checkbox("Augment (shift, scale, flip)", value=defaults.augment)
        submitted = st.form_submit_button(  # a run writes checkpoints beside the artifacts: not on a read-only folder
            "Train", type="primary", icon=":material/play_arrow:", key="train_run", disabled=ws.read_only,
            help="The artifacts folder is read-only: train on a writable copy" if ws.read_only else None)
    st.caption(f"Backbone: {settings.backbone} with its ImageNet weights. On Fashion-MNIST the default recipe reached "
               "93.8 % test accuracy after 13.5 minutes of training on 2 CPU cores (BENCHMARKS.md); a GPU is used "
               "when there is one. The same from the command line: "
               "`python -m core train --epochs … --image-size …`.")
    if submitted:
        try:
            recipe = defaults.replace(epochs=int(epochs), image_size=int(image_size), freeze=freeze,
                                      embedding_dim=int(embedding_dim), lr=float(lr), batch_size=int(batch_size),
                                      triplet_weight=float(triplet), augment=augment)
            run = start_training(settings.replace(run=""), recipe)
        except (ValueError, OSError, RuntimeError) as exc:
            st.error(f"Training could not start: {ui.without_server_paths(exc, settings)}")
        else:
            if run.is_complete():
                st.info(f"This recipe was trained already: run `{run.id}` (below, and in the sidebar).")
            else:
                st.toast(f"Training `{run.id}` in the background", icon=":material/model_training:")
                st.rerun()

if runs:
    table = runs_table(runs)
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        col: st.column_config.NumberColumn(format="percent" if "top-1" in col else "%.3f")
        for col in ("best val top-1", "test top-1", "test precision@10", "test mAP@10")})
    chosen = st.selectbox("Run", [r.id for r in runs], key="run_detail",
                          index=next((i for i, r in enumerate(runs) if r.id == settings.run), 0))
    run = next(r for r in runs if r.id == chosen)
    history = pd.DataFrame(run.history())
    if not history.empty:
        left, right = st.columns(2)
        losses = history.melt(id_vars="epoch", value_vars=["train_loss"], var_name="curve")
        left.plotly_chart(px.line(losses, x="epoch", y="value", color="curve", markers=True, height=300,
                                  title="Training loss"), width="stretch")
        quality = history.melt(id_vars="epoch", value_vars=[c for c in ("val_top1", "val_precision_at_10",
                                                                        "val_map_at_10", "val_tag_f1_micro_tuned")
                                                            if c in history],
                               var_name="curve")
        right.plotly_chart(px.line(quality, x="epoch", y="value", color="curve", markers=True, height=300,
                                   title="Validation"), width="stretch")
    figures = run.test_figures()
    if figures:
        st.caption("**Test split** (never trained on, never used to choose anything): the run's final figures.")
        cols = st.columns(5)
        for col, (key, label) in zip(cols, (("top1", "Test top-1"), ("top3", "Top-3"), ("top5", "Top-5"),
                                            ("precision_at_10", "precision@10"), ("map_at_10", "mAP@10")), strict=True):
            col.metric(label, f"{figures[key]:.1%}" if key.startswith("top") else f"{figures[key]:.3f}",
                       help="On the test split, which training never sees")
        if "tag_f1_micro" in figures:
            cols = st.columns(5)
            for col, average in zip(cols, ("micro", "macro", "samples"), strict=False):
                col.metric(f"Tag F1 {average}", f"{figures[f'tag_f1_{average}']:.3f}",
                           help="On the test split, at the tag threshold beside it (the Tags page shows the "
                                "validation split's, at the threshold you choose there)")
            cols[3].metric("Tag threshold", f"{figures.get('tag_threshold', DEFAULT_THRESHOLD):.2f}",
                           help="Chosen on the run's validation split: the threshold with the best micro-F1")
    with st.expander("Recipe and files"):
        st.json(run.info().get("recipe", {}))
        st.caption(f"`{ui.shown_path(run.path, settings)}`")

st.header("Real photos")
st.caption("How well photos from the real world land in this catalogue. Name a folder of photos with a "
           "`labels.csv` (`file,accepted`; `accepted` lists the categories a person would accept, separated by "
           "`|`): each photo is searched (exact), and the share of its 10 nearest items in an accepted category and "
           "whether its predicted category is accepted are measured, with the model served here. The same as "
           f"`python -m core bench photos DIR --json{' --run ' + settings.run if settings.run else ''}`.")
with st.form("photo-bench"):
    left, right = st.columns([3, 1])
    folder = left.text_input("Folder of photos", key="photo_folder", placeholder="/data/test-photos")
    isolate = right.checkbox("Isolate the garment", value=ws.isolates, key="photo_isolate")
    measure = st.form_submit_button("Measure", icon=":material/photo_library:", key="photo_run")
if measure:
    st.session_state.pop("photo_bench", None)  # old figures must not stand under a new folder's error
    if not folder.strip():
        st.error("Name a folder first.")
    else:
        try:
            with st.spinner("Searching with every photo…"):
                # a browser user reaches the catalogue folders only (core.catalog.prepare.confined), as on the Home page
                photos = confined(Path(folder.strip()), settings.allowed_catalog_roots(), "Photos are measured")
                figures, sheet = run_photo_bench(ws, photos, isolate=isolate)
            st.session_state["photo_bench"] = {"model": ws.embedder.key, "folder": folder.strip(),
                                               "figures": figures, "sheet": sheet}
        except (LabelsError, OSError, ValueError, RuntimeError) as exc:
            st.error(f"**These photos could not be measured.**\n\n{ui.plain(ui.without_server_paths(exc, settings))}")
measured = st.session_state.get("photo_bench")
if measured and measured["model"] == ws.embedder.key:
    figures = measured["figures"]
    st.caption(f"`{measured['folder']}`, {'isolated' if figures['isolate'] else 'not isolated'}")
    left, middle, right = st.columns(3)
    left.metric("Top 10 in an accepted category", f"{figures['top10_accepted']:.0%}")
    middle.metric("Predicted category accepted", f"{figures['vote_accuracy']:.0%}")
    right.metric("Photos", figures["photos"], help="isolated" if figures["isolate"] else "not isolated")
    st.dataframe(pd.DataFrame(figures["per_photo"]), hide_index=True, width="stretch")
    st.image(measured["sheet"], caption="Each photo, the query the model saw, and its top 5 (green: an accepted "
                                        "category)", width="stretch")

st.header("Where it fails")


def confusion_heatmap(counts: pd.DataFrame, key: str, rows_are: str) -> None:
    """Rows normalised (each row's shares add to 1), counts on hover: which categories are taken for which."""
    shares = row_shares(counts)
    figure = px.imshow(shares, color_continuous_scale="Blues", zmin=0, zmax=1, aspect="auto",
                       labels={"x": "taken for", "y": rows_are, "color": "share of the row"},
                       height=max(320, 28 * len(shares) + 120))
    figure.update_traces(customdata=counts.to_numpy(), hovertemplate="%{y} taken for %{x}: %{z:.0%} "
                                                                     "(%{customdata} items)<extra></extra>")
    figure.update_layout(margin=dict(l=0, r=0, t=10, b=0))
    st.plotly_chart(figure, width="stretch", key=key)


test_rows = ws.catalog.query_rows()
test_predicted = ui.cached_category_probs(ws, test_rows).argmax(axis=1)
st.subheader(f"Test split: {len(test_rows):,} items, category taken for")
predictor = "the fine-tuned head" if ws.category_probs is not None else "the vote of the 10 nearest items"
st.caption("Each row is a category of the test split; each cell the share of its items whose predicted category "
           f"is the column ({predictor}). Off the diagonal: the categories this model mixes up.")
confusion_heatmap(confusion_table(ws.catalog.labels[test_rows], test_predicted, ws.catalog.categories),
                  "test_confusion", "category")

st.subheader("Across photo styles")
crossed = saved_cross_domain(settings)
if crossed is None:
    st.info("Not measured yet: `python -m core bench cross-domain --json --photos DIR` searches the held-out photos "
            "of each built-in catalogue against the other (and in third styles no fit has seen) with the served "
            "models and ImageNet features, and its figures appear here.")
else:
    measured = sorted({m.get("run") or "ImageNet features" for name, m in crossed.get("models", {}).items()
                       if name.endswith("/ served")})
    st.caption(f"Share of each query's top {crossed['k']} in a category a person accepts; queries are "
               f"{crossed['queries_are']}. Measured with `python -m core bench cross-domain`; its served column "
               f"is {', '.join(measured) or 'unrecorded'}.")
    if ws.settings.run and measured and ws.settings.run not in measured:
        st.warning(f"These figures are of {', '.join(measured)}, not of the model served now ({ws.settings.run}): "
                   "run the benchmark again to measure it.")
    table = pd.DataFrame([{"queries": name, "n": next(iter(models.values()))["queries"],
                           **{f"{model}": figures[f"top{crossed['k']}_share"] for model, figures in models.items()}}
                          for name, models in crossed["rows"].items()])
    st.dataframe(table, hide_index=True, width="stretch", key="cross_domain_table")
    direction = st.selectbox("Confusion of", list(crossed["rows"]), key="cross_domain_direction")
    model = st.radio("Model", list(crossed["rows"][direction]), horizontal=True, key="cross_domain_model")
    counts = pd.DataFrame(crossed["rows"][direction][model]["confusion"]).T.fillna(0).astype(int)
    if counts.empty:
        st.caption("No query in this row.")
    else:
        confusion_heatmap(counts.reindex(sorted(counts.columns), axis=1), "cross_domain_confusion",
                          "query category (its top hit's category across)")

st.header("Retrieval methods compared")
st.markdown(
    "Exact brute force is the ground truth; **K-Means** searches only the clusters closest to the query, **PCA** "
    "searches exactly on fewer dimensions, **Annoy** walks a forest of random-projection trees (what the search "
    "page uses), **HNSW** walks a layered graph of near neighbours (hnswlib). Latency is the search step alone; "
    "recall@10 is measured against exact search; precision@10 and mAP@10 count neighbours of the query's category."
)

with st.form("retrieval-bench"):
    left, middle, right = st.columns(3)
    n_queries = left.number_input("Queries", min_value=20, max_value=5000, value=300, step=50, key="bench_queries")
    sweep = middle.checkbox("Sweeps (Annoy, HNSW)", value=True, help="Annoy: n_trees × search_k; HNSW: M × ef")
    scale = right.multiselect("Scale curve at N", [10_000, 100_000, 1_000_000], default=[10_000, 100_000],
                              key="bench_scale",
                              format_func=lambda n: f"{n:,}", help="Sizes above the catalogue use synthetic vectors "
                              "drawn to match it; 1,000,000 takes several minutes on 2 cores.")
    run_bench = st.form_submit_button("Run the comparison", type="primary", icon=":material/speed:",
                                      key="bench_run")

if run_bench:
    bar = st.progress(0.0, text="Building the five indexes…")

    def progress(stage: str, done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"{stage}: {done} / {total}")

    try:
        save_result(ws, run_retrieval_bench(ws, n_queries=int(n_queries), sweep=sweep, scale=tuple(sorted(scale)),
                                            progress=progress))
    except (MemoryError, OSError, ValueError) as exc:
        st.error(f"The comparison stopped: {type(exc).__name__}: {ui.without_server_paths(exc, settings)}. "
                 "Try fewer queries or a smaller N.")
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


def sweep_chart(rows: list[dict], line: str, legend: str, knob: str, default: dict, hover: list[str]) -> None:
    """Recall against latency: one line per build-time setting ``line``, its points the query-time ``knob``;
    the current settings starred, so a change of default can be judged against its neighbours."""
    table = pd.DataFrame(rows)
    chosen = table[(table[list(default)] == pd.Series(default)).all(axis=1)]
    table[legend] = table[line].astype(str)
    figure = px.line(table, x="p50_ms", y="recall_at_10", color=legend, markers=True, hover_data=[knob, *hover],
                     labels={"p50_ms": "p50 latency (ms)", "recall_at_10": "recall@10"})
    if not chosen.empty:
        figure.add_scatter(x=chosen["p50_ms"], y=chosen["recall_at_10"], mode="markers", name="default",
                           marker=dict(symbol="star", size=18, color="black"))
    figure.add_hline(y=0.95, line_dash="dot", annotation_text="recall 0.95")
    st.plotly_chart(figure, width="stretch")


if result.get("annoy_sweep"):
    st.subheader("Annoy: recall against latency")
    sweep_chart(result["annoy_sweep"], "n_trees", "trees", "search_k",
                {"n_trees": settings.n_trees, "search_k": settings.search_k}, ["build_s", "disk_mb"])

if result.get("hnsw_sweep"):
    st.subheader("HNSW: recall against latency")
    sweep_chart(result["hnsw_sweep"], "m", "M", "ef",
                {"m": settings.hnsw_m, "ef": settings.hnsw_ef, "ef_construction": settings.hnsw_ef_construction},
                ["build_s", "memory_mb"])

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
