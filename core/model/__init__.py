"""The network: a timm backbone with offline weights (``backbone``), the embedding layer and heads with their losses
(``network``), and fine-tuning runs on disk (``runs``).

Imports ``core.catalog`` and below; knows nothing of embedding passes or search."""
