// The embedding map's hover card and click-to-search, bundled with the app (no CDN): attached to the plotly chart
// Streamlit drew (found by its key), it shows the hovered item's thumbnail at once, fetched from the app's own
// static file server, and reports a click on a point to Python as the trigger value "clicked" (its row).
//
// Streamlit runs this function again whenever its data changes (another catalogue) without unmounting it, so
// everything lives in one shared state per chart key: the newest run's thumbnails and trigger win, the card and
// the chart's listeners are made once, and an unmounted instance (3-D on) stops reacting.
export default function (component) {
  const { data, setTriggerValue } = component;
  const { chartKey, thumbs } = data;
  const shared = (window.__fvsMapHover = window.__fvsMapHover || {});
  const state = shared[chartKey] || (shared[chartKey] = { card: makeCard(), chart: null });
  const instance = {};
  Object.assign(state, { thumbs, setTriggerValue, instance });

  function makeCard() {
    const card = document.createElement("div");
    card.className = "fvs-hover-card";
    card.style.cssText = "position:fixed;z-index:100000;display:none;pointer-events:none;background:#fff;" +
      "border:1px solid #ddd;border-radius:8px;box-shadow:0 4px 16px rgba(0,0,0,.18);padding:6px;";
    const img = document.createElement("img");
    img.width = 128;
    img.height = 128;
    img.alt = "";
    img.onload = () => {
      card.dataset.latencyMs = String(Math.round((performance.now() - card.shownAt) * 10) / 10);
      card.dataset.loaded = card.dataset.row;
    };
    card.appendChild(img);
    document.body.appendChild(card);
    return card;
  }

  function rowOf(event) {
    const point = event && event.points && event.points[0];
    if (!point || point.customdata === undefined || point.customdata === null) return null;
    const value = Array.isArray(point.customdata) ? point.customdata[0] : point.customdata;
    return Number.isInteger(value) ? value : null;
  }

  function onHover(event) {
    const row = rowOf(event);
    if (row === null || !state.instance) return;
    const card = state.card;
    card.shownAt = performance.now();
    card.dataset.row = String(row);
    card.querySelector("img").src = `${state.thumbs}/${row}.jpg`;
    const x = event.event ? event.event.clientX : 0;
    const y = event.event ? event.event.clientY : 0;
    // above the pointer, where plotly's own label (beside the point, at its height) is not
    card.style.left = `${Math.min(Math.max(8, x - 71), window.innerWidth - 160)}px`;
    card.style.top = `${y > 170 ? y - 162 : y + 22}px`;
    card.style.display = "block";
  }

  function onClick(event) {
    const row = rowOf(event);
    if (row !== null && state.instance) state.setTriggerValue("clicked", row);
  }

  function attach() {
    const chart = document.querySelector(`.st-key-${chartKey} .js-plotly-plot`);
    if (!chart || typeof chart.on !== "function" || state.chart === chart) return;
    state.chart = chart;  // a rerun may draw a new chart element: listen on each one once
    chart.on("plotly_hover", onHover);
    chart.on("plotly_unhover", () => { state.card.style.display = "none"; });
    chart.on("plotly_click", onClick);
  }

  attach();
  const timer = setInterval(attach, 250);
  return () => {
    clearInterval(timer);
    if (state.instance === instance) {
      state.instance = null;  // unmounted (3-D on, another page): hovers and clicks do nothing until it is back
      state.card.style.display = "none";
    }
  };
}
