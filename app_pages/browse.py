"""Browse the catalogue: filter by every column it has, page through the items, and search with the one you mean."""

import streamlit as st

import ui
from core.search.browse import ItemFilter, facet_values, filter_rows, open_ended, price_range, tag_values
from core.search.export import csv_bytes, items_table

COLUMNS, ROWS = 5, 4
PAGE_SIZE = COLUMNS * ROWS

ui.follow_search_request()
settings = ui.current_settings()
ws = ui.workspace(settings)
catalog, state = ws.catalog, st.session_state


@st.cache_data(max_entries=8, show_spinner=False)
def facets(catalog_key: str, _catalog) -> tuple[dict[str, list[str]], list[str], tuple[float, float] | None]:
    return facet_values(_catalog), tag_values(_catalog), price_range(_catalog)


def reset_page() -> None:
    state["browse_page"] = 1


st.title("Browse the catalogue")
st.markdown("Filter by what the catalogue records, then **Search with this** on the item you mean: its most "
            "similar items open on the Search page.")
facet_options, tag_options, prices = facets(catalog.key, catalog)

top = st.columns([2, 2, 3])
categories = top[0].multiselect("Category", catalog.categories, key="browse_categories", on_change=reset_page)
tags = top[1].multiselect("Tags (all of them)", tag_options, key="browse_tags", on_change=reset_page,
                          disabled=not tag_options, format_func=ui.tag_with_source(catalog))
words = top[2].text_input("Words in the name or description", key="browse_words", on_change=reset_page,
                          placeholder="zip fleece", disabled="description" not in catalog.items.columns
                          and "name" not in catalog.items.columns)
chosen_facets: dict[str, tuple[str, ...]] = {}
price = None
if facet_options or prices:
    with st.expander("More filters", expanded=any(state.get(f"browse_facet_{c}") for c in facet_options)):
        cols = st.columns(4)
        for i, (column, values) in enumerate(facet_options.items()):
            picked = cols[i % 4].multiselect(ui.plain(column.capitalize()), values, key=f"browse_facet_{column}",
                                             on_change=reset_page)  # a column's name is catalogue text
            chosen_facets[column] = tuple(picked)
        if prices:
            low, high = prices
            price = st.slider("Price", low, high, (low, high), key="browse_price", on_change=reset_page,
                              help="An end left at its place also keeps the few prices beyond it.")
            price = open_ended(price, prices)

wanted = ItemFilter(categories=tuple(categories), tags=tuple(tags), facets=chosen_facets, price=price, words=words)
rows = filter_rows(catalog, wanted)
pages = max(1, -(-len(rows) // PAGE_SIZE))
if state.get("browse_page", 1) > pages:
    state["browse_page"] = 1

head = st.columns([3, 2, 2])
head[0].subheader(f"{len(rows):,} of {len(catalog):,} items")
page = head[1].number_input(f"Page (of {pages:,})", 1, pages, key="browse_page")
head[2].download_button("Download these items (CSV)", csv_bytes(items_table(catalog, rows)), width="stretch",
                        file_name=f"{catalog.name}-items.csv", mime="text/csv", key="browse_csv",
                        icon=":material/download:", disabled=not len(rows),
                        help="Every filtered item with every column the catalogue has (not the server's paths)")
if not len(rows):
    st.info("No item passes these filters; remove one.")
    st.stop()

shown = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
with st.container(key="browse_grid"):
    for start in range(0, len(shown), COLUMNS):
        for col, row in zip(st.columns(COLUMNS), shown[start : start + COLUMNS], strict=False):
            with col:
                row = int(row)
                st.image(catalog.thumbnail(row), width="stretch")
                title, facts = catalog.headline(row)
                st.markdown(f"**{ui.plain(title)}**" + (f"  \n{ui.plain(facts)}" if facts else ""))
                st.caption(ui.plain(catalog.items.iloc[row]["id"]))
                st.button("Search with this", key=f"browse-search-{row}", on_click=ui.search_with_item, args=(row,),
                          width="stretch", help="Its most similar items, on the Search page")
first = (page - 1) * PAGE_SIZE + 1
st.caption(f"Items {first:,}–{first + len(shown) - 1:,} of {len(rows):,}, in catalogue order.")
