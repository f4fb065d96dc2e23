"""Image → vector: the ``Embedder`` (``embedder``), the runtimes that run its network (``runtimes``), and the runners
that embed a whole catalogue, in this process (``sequential_runner``) or on a Ray cluster (``ray_runner``).

Imports ``core.model`` and below."""
