"""Streamlit glue shared by the pages: sidebar settings, the cached Workspace, and query input.

Only this file and ``app_pages/`` import streamlit; everything they show comes from ``core``.
"""

from __future__ import annotations

import streamlit as st

from core.backbone import BACKBONES, WeightsError
from core.catalog import SOURCE_LABELS
from core.config import Settings
from core.fashion_mnist import MissingDataError
from core.images import ACCEPTED_TYPES, ImageDecodeError, decode_image
from core.workspace import Workspace

MODEL_CHOICES = [name for name, spec in BACKBONES.items() if spec.has_weights]


def base_settings() -> Settings:
    """Environment settings (FVS_*), read once per session."""
    if "_base_settings" not in st.session_state:
        st.session_state["_base_settings"] = Settings.from_env()
    return st.session_state["_base_settings"]


def sidebar_settings() -> Settings:
    """Catalogue and model pickers; the result keys the cached Workspace."""
    base = base_settings()
    with st.sidebar:
        st.header("Catalogue & model")
        catalogs = list(SOURCE_LABELS)
        catalog = st.selectbox("Catalogue", catalogs, index=catalogs.index(base.catalog) if base.catalog in catalogs
                               else 0, format_func=SOURCE_LABELS.get, key="catalog")
        models = MODEL_CHOICES if base.backbone in MODEL_CHOICES else [base.backbone, *MODEL_CHOICES]
        backbone = st.selectbox("Model", models, index=models.index(base.backbone), key="backbone",
                                format_func=lambda name: BACKBONES[name].label if name in BACKBONES else name,
                                help="A model not built yet is embedded on first use (a few minutes on CPU).")
    return base.replace(catalog=catalog, backbone=backbone)


@st.cache_resource(show_spinner="Loading catalogue, model and index…", max_entries=4)
def _open_workspace(settings: Settings) -> Workspace:
    return Workspace.open(settings)


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
    except (MissingDataError, WeightsError, FileNotFoundError, ValueError) as exc:
        st.error(f"**The catalogue or model could not be loaded.**\n\n{exc}")
        st.stop()


def _build_with_progress(settings: Settings) -> None:
    status = st.empty()

    def progress(stage: str, done: int, total: int) -> None:
        text = f"{stage}… {done:,} / {total:,} images" if total > 1 else f"{stage}…"
        status.progress(done / total if total else 0.0, text=text)

    try:
        Workspace.open(settings, progress)
    finally:
        status.empty()


def read_upload(uploaded) -> tuple[object | None, str | None]:
    """(PIL image, None) or (None, message) for a Streamlit UploadedFile; never raises on bad bytes."""
    try:
        return decode_image(uploaded.getvalue(), name=f"“{uploaded.name}”"), None
    except ImageDecodeError as exc:
        return None, str(exc)


UPLOAD_TYPES = list(ACCEPTED_TYPES)
