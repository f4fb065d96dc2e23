"""Entry point: ``streamlit run streamlit_app.py``. Navigation and page chrome only; pages do the rest."""

import streamlit as st

st.set_page_config(page_title="Fashion visual search", page_icon="👗", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/search.py", title="Search by photo", icon="🔎", url_path="search"),
]
st.navigation(pages).run()
