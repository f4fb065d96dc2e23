"""Fashion visual search: the library behind the dashboard (no Streamlit here)."""

import os

# No network at run time: timm/huggingface_hub must only ever look in the local cache. huggingface_hub reads
# this when first imported, so it is set before anything imports timm.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
