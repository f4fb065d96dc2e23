#!/usr/bin/env bash
# One command from a fresh machine to the dashboard on the built-in catalogue: set up, build, serve.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
printf '\n== Preparing embeddings, the Annoy index and the embedding map (built once: about 2 minutes on 2 CPU cores; loaded from cache after)\n' >&2
.venv/bin/python -m core prepare >/dev/null
printf '\n== Serving the dashboard: open http://localhost:%s (Ctrl+C to stop)\n' "${PORT:-8501}" >&2
exec .venv/bin/python -m streamlit run streamlit_app.py --server.port "${PORT:-8501}" "$@"
