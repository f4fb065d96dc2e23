"""Hover latency of the Embedding map's thumbnail card, in headless Chromium (a dev tool: needs selenium and
Debian's chromium + chromium-driver, like the browser test).

    .venv/bin/python scripts/bench_hover.py --catalog fashion-mnist --points 20000 [--hovers 40]

Starts the dashboard on a free port, opens the map with the chosen number of points, and for each of ``--hovers``
points spread over the map sends the mouse there (a real mousemove on plotly's drag layer) and times, in the page,
from the event to the card showing that item's thumbnail loaded. Prints one JSON object: the time to the first
drawn map, and the latency p50 / p95 / max in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = (1_000, 2_000, 5_000, 10_000, 20_000)  # app_pages/map.py SAMPLES, asked for with /map?points=N
POINTS = """
const chart = document.querySelector('.st-key-map_chart .js-plotly-plot');
if (!chart || !chart._fullLayout || !chart._fullData) return null;
const xa = chart._fullLayout.xaxis, ya = chart._fullLayout.yaxis, out = [];
const traces = chart._fullData.filter(t => t.customdata);
const total = traces.reduce((n, t) => n + t.x.length, 0);
for (const t of traces) for (let i = 0; i < t.x.length; i += Math.max(1, Math.floor(total / arguments[0])))
  out.push([xa._offset + xa.l2p(t.x[i]), ya._offset + ya.l2p(t.y[i])]);
return {total: total, points: out};
"""
HOVER = """
const [x, y, done] = arguments, card = document.querySelector('.fvs-hover-card');
const drag = document.querySelector('.st-key-map_chart .nsewdrag'), box = drag.getBoundingClientRect();
const chart = document.querySelector('.st-key-map_chart .js-plotly-plot').getBoundingClientRect();
const before = card ? card.dataset.row : undefined, started = performance.now();
drag.dispatchEvent(new MouseEvent('mousemove', {bubbles: true, clientX: chart.left + x, clientY: chart.top + y}));
(function wait() {
  const c = document.querySelector('.fvs-hover-card'), img = c && c.querySelector('img');
  const shown = c && c.style.display === 'block' && c.dataset.row !== before;
  if (shown && c.dataset.loaded === c.dataset.row && img.complete) return done(performance.now() - started);
  if (performance.now() - started > 3000) return done(null);
  requestAnimationFrame(wait);
})();
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", default="fashion-mnist")
    parser.add_argument("--points", type=int, default=20_000, choices=SIZES)
    parser.add_argument("--hovers", type=int, default=40)
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    app = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"), "--server.port",
                            str(port), "--server.address", "127.0.0.1"], cwd=ROOT,
                           env={**os.environ, "FVS_CATALOG": args.catalog}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="fvs-hover-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1400,1400"):
        options.add_argument(flag)
    os.environ["SE_OFFLINE"] = "true"
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        started = time.time()
        browser.get(f"{url}/map?points={args.points}")
        wait = WebDriverWait(browser, 900, poll_frequency=1)
        found = wait.until(lambda b: (p := b.execute_script(POINTS, args.hovers)) and p["total"] >= args.points and p)
        wait.until(lambda b: b.execute_script("return !!document.querySelector('.fvs-hover-card')"))
        drawn = time.time() - started
        latencies = [browser.execute_async_script(HOVER, x, y) for x, y in found["points"][: args.hovers]]
        measured = sorted(v for v in latencies if v is not None)

        def pct(q: float) -> float:
            return round(measured[min(len(measured) - 1, int(q * len(measured)))], 1) if measured else None

        print(json.dumps({"catalog": args.catalog, "points": found["total"], "hovers": len(latencies),
                          "shown": len(measured), "map_drawn_s": round(drawn, 1), "p50_ms": pct(0.5),
                          "p95_ms": pct(0.95), "max_ms": round(measured[-1], 1) if measured else None}, indent=2))
    finally:
        browser.quit()
        app.terminate()
        app.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
