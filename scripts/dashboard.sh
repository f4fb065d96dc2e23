#!/usr/bin/env bash
# One command from a fresh machine to the dashboard on the built-in catalogue: set up, build, serve.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
printf '\n== Building embeddings and the Annoy index (first run: about 2-3 minutes on 2 CPU cores; cached after)\n' >&2
.venv/bin/python -m core prepare >/dev/null
exec .venv/bin/python -m streamlit run streamlit_app.py --server.port "${PORT:-8501}" "$@"
