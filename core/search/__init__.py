"""Search over a catalogue: the nearest-neighbour indexes (``index``), the one ``Workspace`` the app, the CLI and the
tests share (``workspace``), the metrics that judge it (``metrics``), words with the photo (``text_search``), browsing,
exports, the embedding map, and which model serves a catalogue (``serving``).

Imports ``core.embedding`` and below."""
