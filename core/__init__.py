"""Fashion visual search: the library behind the dashboard (no Streamlit here)."""

import os

# No network at run time. core.model.backbone never asks timm for pretrained weights (it reads the cache as files), so
# this is a second guard, set (not defaulted: "0" in the environment must not open the door) before anything
# imports huggingface_hub, which reads it once.
os.environ["HF_HUB_OFFLINE"] = "1"
