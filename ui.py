"""Streamlit glue shared by the pages: sidebar settings, the cached Workspace, and query input.

Only this file and ``app_pages/`` import streamlit; everything they show comes from ``core``.
"""

from __future__ import annotations

import base64
import errno
import functools
import hashlib
import html
import logging
import re
import time
from pathlib import Path

import numpy as np
import streamlit as st
import streamlit.components.v2  # noqa: F401 - loads st.components.v2 (the hover card and the paste box)

from core.artifacts import DiskFullError, ReadOnlyArtifacts
from core.catalog.base import upscale
from core.catalog.fashion_mnist import MissingDataError
from core.catalog.registry import catalog_choices, open_catalog
from core.config import Settings
from core.model.backbone import BACKBONES, WeightsError
from core.model.runs import CheckpointError, RunDir, list_runs
from core.photo.decode import ACCEPTED_TYPES, ImageDecodeError, decode_image
from core.progress import Progress
from core.search.workspace import Workspace

MODEL_CHOICES = [name for name, spec in BACKBONES.items() if spec.has_weights]
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
log = logging.getLogger("fvs.app")  # the server log: details a visitor is not shown (paths, tracebacks)


def base_settings() -> Settings:
    """Environment settings (FVS_*), read once per session."""
    if "_base_settings" not in st.session_state:
        try:
            st.session_state["_base_settings"] = Settings.from_env()
        except ValueError as exc:  # a bad FVS_* value: say which, instead of a traceback on every page
            st.error(f"**The dashboard's settings are not usable.** {plain(str(exc))}\n\nFix the environment "
                     "variable and restart the dashboard.")
            st.stop()
    return st.session_state["_base_settings"]


# Inline Markdown, HTML tags and entities, Streamlit's directives (:red[…]) and its LaTeX ($…$); block markers
# (a heading, a list, a quote) only count at the start of a line, and catalogue text is made one line.
_INLINE_SPECIAL = re.compile(r"([\\`*_\[\]<>!~$&])")
_LEADING_BLOCK = re.compile(r"^(\d+)([.)])|^([#>+\-=])")
# GitHub-flavoured autolinks, which Streamlit renders from plain text after escapes are gone: "https://…", "www.…"
# and e-mail addresses. An invisible word joiner before the ":", the "." or the "@" keeps them text.
_AUTOLINK = re.compile(r"(?i)(?<=[a-z0-9])(?=://)|\b(?<=www)(?=\.)|(?<=[\w.+-])(?=@)"
                       # … and its icon and emoji codes, ":material/home:" or ":smile:"
                       r"|(?<=:)(?=[\w/+-]+:)")
WORD_JOINER = "\u2060"


def plain(text: object) -> str:
    """Catalogue text for st.markdown / st.caption, shown as the characters it holds and never interpreted: a
    description with ``![](https://…)`` must not make every viewer's browser fetch that address, nor show a link.
    Line breaks become spaces (a catalogue cell is one paragraph)."""
    escaped = _INLINE_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))
    escaped = _AUTOLINK.sub(WORD_JOINER, escaped)
    return _LEADING_BLOCK.sub(lambda m: f"{m[1]}\\{m[2]}" if m[1] else f"\\{m[3]}", escaped)


# An absolute path in a message (an OSError's, a checkpoint's): a slash after no letter, colon, dot or slash (so
# "https://…" and "a/b" stay), then at least two parts. What a visitor sees is its last part.
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.])/(?:[\w.@+-]+/)+([\w.@+-]+)/?")


def shown_path(path: Path | str, settings: Settings) -> str:
    """A server folder as a visitor may see it: relative to the artifacts folder (``artifacts/<catalogue
    key>/<model key>``) or to the shipped models (``models/<run>``), never the absolute path, which tells how the
    server is laid out (issue 29, item 3). Any other folder shows its name only; the operator knows the roots."""
    path = Path(path)
    for root, name in ((settings.artifacts_dir, "artifacts"), (settings.runs_dir, "runs"),
                       (settings.shipped_runs_dir, "models"), (settings.data_dir, "data")):
        if root is None:
            continue
        for candidate in (path, path.resolve()):
            for base in (Path(root), Path(root).resolve()):
                if candidate.is_relative_to(base):
                    return (Path(name) / candidate.relative_to(base)).as_posix()
    return path.name


def without_server_paths(message: object, settings: Settings) -> str:
    """An error's text for the page: the settings' folders named as ``shown_path`` names them and any other
    absolute path cut to its last part. Call ``log`` with the original: the operator's copy keeps the paths."""
    text = str(message)
    roots = [(r, n) for r, n in ((settings.artifacts_dir, "artifacts"), (settings.runs_dir, "runs"),
                                 (settings.shipped_runs_dir, "models"), (settings.data_dir, "data")) if r is not None]
    for root, name in sorted(((str(b), n) for r, n in roots for b in (Path(r), Path(r).resolve())),
                             key=lambda pair: -len(pair[0])):  # the longest first: runs inside artifacts
        text = text.replace(root, name)
    return _ABSOLUTE_PATH.sub(lambda m: f"…/{m[1]}", text)


def plain_html(text: object) -> str:
    """Catalogue text for plotly labels and hover boxes, which understand a few HTML tags (``<a href>``)."""
    return html.escape(str(text), quote=True)


RUN_PREFIX = "run:"
SWITCH_TO = "_switch_catalog"  # set to a catalogue name to select it on the next run


def switch_catalog(name: str) -> None:
    """Select ``name`` in the sidebar on the next rerun (a widget's state cannot change after it is drawn)."""
    st.session_state[SWITCH_TO] = name


def sidebar_settings() -> Settings:
    """Catalogue and model pickers; the result keys the cached Workspace. The models are the ImageNet backbones
    and every finished fine-tuned run of the chosen catalogue."""
    base = base_settings()
    with st.sidebar:
        st.header("Catalogue & model")
        labels = catalog_choices(base)
        catalogs = list(labels)
        if st.session_state.get(SWITCH_TO) in catalogs:  # a catalogue just prepared on the Home page
            st.session_state["catalog"] = st.session_state.pop(SWITCH_TO)
        if st.session_state.get("catalog") not in catalogs:  # deleted since
            st.session_state.pop("catalog", None)
        catalog = st.selectbox("Catalogue", catalogs, index=catalogs.index(base.catalog) if base.catalog in catalogs
                               else 0, format_func=labels.get, key="catalog",
                               help="The built-in catalogue, or one of yours (add it on the Home page, or with "
                                    "`python -m core prepare PATH`).")
        chosen = base.replace(catalog=catalog)
        runs = {RUN_PREFIX + run.id: run for run in finished_runs(chosen)}
        models = MODEL_CHOICES if base.backbone in MODEL_CHOICES else [base.backbone, *MODEL_CHOICES]
        models = [*runs, *models]  # newest fine-tuned first: it is what a trained catalogue should be searched with
        # FVS_RUN when set; otherwise the newest fine-tuned run (what a user who trained one expects to be served),
        # otherwise the ImageNet backbone.
        default = RUN_PREFIX + base.run if base.run else next(iter(runs), base.backbone)
        if default not in models:
            default = base.backbone
        if st.session_state.get("model") not in models:  # a new catalogue, or a run that was deleted:
            st.session_state["model"] = default  # set, not dropped, so the browser shows it too
        choice = st.selectbox("Model", models, index=models.index(default), key="model",
                              format_func=lambda v: runs[v].label() if v in runs else
                              (BACKBONES[v].label if v in BACKBONES else v),
                              help="ImageNet features, or a model fine-tuned on this catalogue (Model & index page). "
                                   "A model not embedded yet is embedded on first use (a few minutes on CPU).")
    if choice in runs:
        chosen = chosen.replace(run=runs[choice].id, backbone=runs[choice].info().get("backbone", base.backbone))
    else:
        chosen = chosen.replace(backbone=choice, run="")
    st.session_state["_current_settings"] = chosen
    return chosen


STATIC_DIR = Path(__file__).resolve().parent / "static"  # Streamlit serves it at app/static/ (.streamlit/config)
COMPONENTS_DIR = Path(__file__).resolve().parent / "components"


@functools.cache
def _map_hover_component():
    return st.components.v2.component("fvs_map_hover", js=(COMPONENTS_DIR / "map_hover.js").read_text(),
                                      isolate_styles=False)


def map_hover(chart_key: str, ws: Workspace, rows) -> int | None:
    """Thumbnails on hover for the plotly chart drawn with ``key=chart_key`` (made by ``prepare`` or the background
    thread; made here for ``rows`` if still missing, with a progress bar), and the row of a point the user clicked,
    if any (once per click)."""
    catalog = ws.catalog
    if not st.get_option("server.enableStaticServing"):  # started without .streamlit/config.toml: no hover card
        return None
    folder = ws.thumbnails_folder
    if folder.parent.parent.resolve() != STATIC_DIR:  # FVS_STATIC_DIR elsewhere: Streamlit does not serve it
        return None
    status = st.empty()
    try:
        ws.map_thumbnails(rows, progress_bar(status, unit="thumbnails"))
    except OSError as exc:  # a read-only checkout: the map works, without pictures on hover
        log.warning("no hover thumbnails in %s: %s", folder, exc)
        st.caption("No hover thumbnails: the app's thumbnail folder is read-only" if exc.errno in READ_ONLY_ERRNOS
                   else "No hover thumbnails: they could not be written (the server log says why).")
        return None
    finally:
        status.empty()
    result = _map_hover_component()(data={"chartKey": chart_key, "thumbs": f"app/static/thumbs/{catalog.key}"},
                                     key=f"{chart_key}_hover", on_clicked_change=lambda: None)
    clicked = getattr(result, "clicked", None)  # sent by the browser: checked, not trusted
    return clicked if isinstance(clicked, int) and 0 <= clicked < len(catalog) else None


SEARCH_PAGE, BROWSE_PAGE = "app_pages/search.py", "app_pages/browse.py"
ITEM_QUERY = "Catalogue item"  # the Search page's query mode for a catalogue item (its radio, key "query_mode")
_GO_SEARCH = "_search_item_now"


def query_item(row: int) -> None:
    """Make catalogue item ``row`` the Search page's query (its radio and row; set before they are drawn)."""
    st.session_state["query_mode"], st.session_state["query_row"] = ITEM_QUERY, int(row)


def search_with_item(row: int) -> None:
    """Button callback on another page: search with catalogue item ``row`` on the Search page (the switch happens
    on the rerun, in ``follow_search_request``: a callback cannot change pages)."""
    query_item(row)
    st.session_state[_GO_SEARCH] = True


def follow_search_request() -> None:
    """At the top of a page with "Search with this" buttons: go to the Search page if one was pressed."""
    if st.session_state.pop(_GO_SEARCH, False):
        st.switch_page(SEARCH_PAGE)


def browse_category(category: str) -> None:
    """Open the Browse page on one category (the Home page's links into it)."""
    for key in [k for k in st.session_state if str(k).startswith("browse_")]:
        del st.session_state[key]  # a fresh browse: only this category
    st.session_state["browse_categories"] = [category]
    st.switch_page(BROWSE_PAGE)


def forget_catalogues() -> None:
    """Drop cached catalogues and workspaces: a catalogue prepared again under the same name has new items."""
    for cached in (_catalog_key, _open_workspace, _check_built):
        cached.clear()


def current_settings() -> Settings:
    """The settings the sidebar chose in this run (the entry script draws the sidebar before the page runs)."""
    return st.session_state.get("_current_settings") or sidebar_settings()


def finished_runs(settings: Settings) -> list[RunDir]:
    """Complete fine-tuned runs of the settings' catalogue (none when the catalogue cannot be opened)."""
    try:
        key = _catalog_key(settings.replace(run="", backbone=base_settings().backbone))
    except (MissingDataError, FileNotFoundError, ValueError):
        return []
    return [run for run in list_runs(settings, key) if run.is_complete()]


@st.cache_resource(show_spinner=False, max_entries=16)
def _catalog_key(settings: Settings) -> str:
    return open_catalog(settings).key


@st.cache_resource(show_spinner="Loading catalogue, model and index…", max_entries=4)
def _open_workspace(settings: Settings) -> Workspace:
    ws = Workspace.open(settings)
    if not ws.read_only:  # a read-only store keeps no map: a visit computes it for itself
        ws.prepare_map_in_background()  # the first Map visit then finds its map made (or waits for it, never twice)
    return ws


class _NotBuilt(Exception):
    pass


@st.cache_resource(show_spinner=False)
def _check_built(settings: Settings) -> bool:
    """Remembered only once true (an exception is not cached), so reruns skip the disk check."""
    if not Workspace.is_built(settings):
        raise _NotBuilt
    return True


def workspace(settings: Settings) -> Workspace:
    """The shared Workspace for these settings; stops the page with a clear message when data or weights are
    missing. Missing artifacts are built first, outside the cache, so the build can drive a progress bar."""
    try:
        try:
            _check_built(settings)
        except _NotBuilt:
            _build_with_progress(settings)
        return _open_workspace(settings)
    except ReadOnlyArtifacts as exc:
        log.error("%s", exc)
        st.error("**This catalogue is not prepared for this model, and the server's artifacts folder is read-only**, "
                 "so it cannot be built here. Pick another model or catalogue; the operator finds the details in "
                 "the server log.")
        st.stop()
    except DiskFullError as exc:  # the build stopped with what it finished kept; other catalogues keep serving
        log.error("%s", exc)
        st.error(f"**The search index could not be built.** {plain(exc.visitor_message())}")
        st.button("Try again", icon=":material/refresh:", key="retry_build")  # a rerun retries: errors are not cached
        st.stop()
    except (MissingDataError, WeightsError, CheckpointError, FileNotFoundError, ValueError) as exc:
        log.error("the catalogue or model could not be loaded: %s", exc)
        st.error(f"**The catalogue or model could not be loaded.**\n\n{without_server_paths(exc, settings)}")
        st.stop()


def _build_with_progress(settings: Settings) -> None:
    status = st.empty()
    try:
        Workspace.open(settings, progress_bar(status))
    finally:
        status.empty()


def progress_bar(status, unit: str = "images") -> Progress:
    """A core ``Progress`` drawn as a Streamlit bar with the rate and time left of each stage."""
    started: dict[str, tuple[float, int]] = {}

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        t0, first = started.setdefault(stage, (now, done))  # a resumed pass starts part-way: rate from there
        text = f"{stage}…"
        if total > 1:
            text = f"{stage}… {done:,} / {total:,} {unit}"
            if done > first and now - t0 > 1.0:
                rate = (done - first) / (now - t0)
                text += f" · {rate:,.0f}/s · {_duration((total - done) / rate)} left"
        status.progress(min(1.0, done / total) if total else 0.0, text=text)

    return progress


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min" if seconds >= 3600 else (
        f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s")


def photo_input(camera: bool, prefix: str = "") -> tuple[object | None, str | None]:
    """The upload (or camera) widget of a query: (PIL image, None), (None, message) or (None, None) when empty.
    Widget keys are ``<prefix>upload`` / ``<prefix>camera``, so each page keeps its own query."""
    if camera:
        given = st.camera_input("Garment photo", key=f"{prefix}camera")
    else:
        given = st.file_uploader("Garment photo", type=UPLOAD_TYPES, key=f"{prefix}upload",
                                 help="JPEG, PNG or WebP; a garment on a plain background works best.")
    return read_upload(given) if given is not None else (None, None)


PASTE_MAX_MB = 25  # as .streamlit/config.toml's maxUploadSize: a pasted photo is an upload by another door
PASTE_NAME_CHARS = 120  # a pasted file's name as shown


@functools.cache
def _paste_component():
    return st.components.v2.component("fvs_paste_photo", js=(COMPONENTS_DIR / "paste_photo.js").read_text(),
                                      isolate_styles=False)


def paste_input(prefix: str = "") -> tuple[object | None, str | None]:
    """A photo pasted from the clipboard, as ``photo_input`` returns one: decoded with the same checks as an upload
    (its bytes are untrusted), kept while the Paste mode stays on."""
    result = _paste_component()(
        data={"maxBytes": PASTE_MAX_MB * 2**20, "prompt": "Paste a photo here: copy an image, then press Ctrl+V (⌘V)",
              "notImage": "The clipboard holds no image; copy a photo first.", "pasted": "Pasted",
              "tooBig": f"That image is over {PASTE_MAX_MB} MB"},
        key=f"{prefix}paste", on_photo_change=lambda: None)
    pasted = getattr(result, "photo", None)
    if not isinstance(pasted, dict) or not isinstance(pasted.get("data"), str):
        return None, None
    return read_pasted(pasted["data"], str(pasted.get("name") or "pasted image"))


def read_pasted(data_url: str, name: str) -> tuple[object | None, str | None]:
    """(PIL image, None) or (None, message) for a ``data:image/…;base64,…`` URL; never raises on bad input."""
    # the file's name is the browser's text, shown in Markdown: cut first (an 18 M-character name cost 7.7 s a rerun)
    name = plain(name[:PASTE_NAME_CHARS] + ("…" if len(name) > PASTE_NAME_CHARS else ""))
    header, comma, payload = data_url.partition(",")
    if (not comma or not header.startswith("data:") or ";base64" not in header
            or len(payload) > PASTE_MAX_MB * 2**20 * 4 // 3 + 4):
        return None, f"“{name}” is not a pasted image this page can read (at most {PASTE_MAX_MB} MB)."
    try:
        return decode_image(base64.b64decode(payload, validate=True), name=f"“{name}”"), None
    except (ValueError, ImageDecodeError) as exc:  # binascii.Error is a ValueError
        return None, str(exc) if isinstance(exc, ImageDecodeError) else f"“{name}” is not valid base64 data."


def read_upload(uploaded) -> tuple[object | None, str | None]:
    """(PIL image, None) or (None, message) for a Streamlit UploadedFile; never raises on bad bytes."""
    try:
        return decode_image(uploaded.getvalue(), name=f"“{uploaded.name}”"), None
    except ImageDecodeError as exc:
        return None, str(exc)


UPLOAD_TYPES = list(ACCEPTED_TYPES)


def cached_category_probs(ws: Workspace, rows: np.ndarray) -> np.ndarray:
    """Category probabilities of catalogue rows, remembered per model (the ImageNet vote costs a search each)."""
    return _category_probs(ws.embedder.key, ws.catalog.key, rows, ws)


@st.cache_data(max_entries=16, show_spinner="Predicting categories…")
def _category_probs(model_key: str, catalog_key: str, rows, _ws: Workspace):
    return _ws.category_probs_for(rows)


def cached_map(settings: Settings, method: str, sample: int, dims: int):
    """The embedding map (disk-cached by core; kept in memory here so a revisit redraws at once)."""
    ws = _open_workspace(settings)
    return _map(ws.catalog.key, ws.embedder.key, method, sample, dims, ws)


@st.cache_resource(max_entries=8, show_spinner=False)
def _map(catalog_key: str, model_key: str, method: str, sample: int, dims: int, _ws: Workspace):
    """Keyed by what the map is of: a catalogue prepared again under the same name gets a new map."""
    return _ws.embedding_map(method, sample, dims)


def query_steps(steps) -> None:
    """A photo's way to the query, left to right: the photo, the garment the mask kept, what the model sees."""
    shown = [(steps.photo, "Your photo")]
    if steps.isolation is not None and steps.isolation.found:
        shown.append((steps.cutout, "The garment found"))
    elif steps.user_box is not None:
        shown.append((steps.crop, "Your crop" if steps.isolation is None else "No garment separated: your crop"))
    elif steps.isolation is not None:
        shown.append((steps.crop, "No garment separated: whole photo"))
    shown.append((upscale(steps.query_image, 168), "As the catalogue sees it"))
    for column, (image, caption) in zip(st.columns(len(shown)), shown, strict=True):
        column.image(image, caption=caption, width="stretch")


def tag_with_source(catalog):
    """A tag as lists show it, with where it came from: "Blue · colour from the photo", "zip · description"."""
    def label(tag: str) -> str:
        source = catalog.tag_sources.get(tag)
        return f"{tag} · {source}" if source and source != "tags" else tag

    return label


def garment_colours(colours) -> None:
    """The garment's colours read from the photo (``core.photo.colour``): their swatches, then their names and
    shares, with where they come from."""
    if colours is None or not colours.names:
        return
    swatch, words = st.columns([1, 3], vertical_alignment="center")
    swatch.image(colours.swatches_image(), width="content")
    words.caption(f"{colours.describe()} · colour from the photo")


def crop_box(photo, proposed: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A box the user drags on the photo (streamlit-cropper), starting at ``proposed``: (left, top, right, bottom)."""
    from streamlit_cropper import st_cropper

    left, top, right, bottom = proposed
    digest = hashlib.blake2b(photo.tobytes(), digest_size=6).hexdigest()  # a new photo gets a new box
    rect = st_cropper(photo, realtime_update=True, default_coords=(left, right, top, bottom), box_color="#e4572e",
                      return_type="box", key=f"crop-{digest}")
    x, y = int(rect["left"]), int(rect["top"])
    box = (x, y, x + max(1, int(rect["width"])), y + max(1, int(rect["height"])))
    # the component reports the box of its resized canvas scaled back: within a few pixels of the proposal
    # means the user has not moved it
    return proposed if max(abs(a - b) for a, b in zip(box, proposed, strict=True)) <= 3 else box
