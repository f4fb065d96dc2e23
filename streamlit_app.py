"""Entry point: ``streamlit run streamlit_app.py``. Navigation and page chrome only; pages do the rest."""

import logging
import sys

import streamlit as st

st.set_page_config(page_title="Fashion visual search", page_icon=":material/checkroom:", layout="wide")

pages = [
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("app_pages/search.py", title="Search by photo", icon=":material/search:", url_path="search"),
    st.Page("app_pages/browse.py", title="Browse the catalogue", icon=":material/grid_view:", url_path="browse"),
    st.Page("app_pages/tags.py", title="Tag predictions", icon=":material/sell:", url_path="tags"),
    st.Page("app_pages/map.py", title="Embedding map", icon=":material/scatter_plot:", url_path="map"),
    st.Page("app_pages/model.py", title="Model & index", icon=":material/tune:", url_path="model"),
]
# The navigation needs only the pages' files: drawn first, the sidebar and the page's title show at once, while the
# first run of a process imports PyTorch and the library (seconds; a blank page with a spinner before).
navigation = st.navigation(pages)
if "ui" not in sys.modules:
    frame = st.empty()
    with frame.container():
        st.title("Fashion visual search" if navigation.url_path == "" else navigation.title)  # as the page does
        line = st.progress(0.0, text="Loading PyTorch (the network that turns photos into vectors)…")
        import torch  # noqa: F401 - the longest part of the first start, named on the progress line

        line.progress(0.6, text="Loading the search engine: catalogues, indexes, the embedding map…")
        import ui  # noqa: F401
    frame.empty()
import ui  # noqa: E402

# The catalogue and model pickers live here, not in the pages: a widget rendered by the entry script on every run
# keeps its value when the user changes page (a page's own widgets are new widgets on each page).
try:
    ui.sidebar_settings()
    navigation.run()
except Exception:  # noqa: BLE001 - st.stop / st.rerun are BaseExceptions and pass through
    # What a page could not handle: a message for the visitor, the traceback (server paths and all) for the log.
    logging.getLogger("fvs.app").exception("page %s failed", navigation.url_path or "home")
    st.error("**Something went wrong on this page.** Try again, or change the catalogue or model in the sidebar; "
             "if it keeps happening, the operator finds the details in the server log.", icon=":material/error:")
