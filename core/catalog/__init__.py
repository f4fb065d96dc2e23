"""Catalogues: reading a user's source (``sources``), the built-in ones (``builtin``, ``fashion_mnist``), what a
catalogue is (``base``), preparing one (``prepare``) and reading it back (``prepared_layout``), the one door to all of
them (``registry``), their image files, thumbnails and montages, and the train/validation/test rows (``splits``).

Imports ``core.photo``, ``core.text`` and the plumbing; never a model, an embedding or a search."""
