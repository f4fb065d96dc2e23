"""The benchmarks behind BENCHMARKS.md, one module each (``python -m core bench NAME``).

Each module has its ``run_*`` function (callable from the pages and the tests) and, for the command line,
``add_arguments(parser)`` (its own options), ``main(args, settings, progress) -> dict`` (the figures) and
``SERVED`` (whether it measures the catalogue's served model, or makes catalogues of its own).

``BENCHMARKS`` lists them in the order the command line shows them, each with its module's import path: a
module is imported only when its benchmark is asked for, so ``python -m core --help`` stays quick.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Benchmark:
    name: str
    module: str  # import path of the module with add_arguments, main and SERVED
    summary: str  # one line for `python -m core bench --help`

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("search", "core.bench.search", "cold build, warm load, query latency, recall and precision (default)"),
    Benchmark("retrieval", "core.bench.retrieval", "exact, K-Means, PCA, Annoy and HNSW side by side; Annoy and "
              "HNSW sweeps; scale curve"),
    Benchmark("crossover", "core.bench.crossover", "exact against Annoy at recall 0.95 by catalogue size: where "
              "the served index switches (exact_max_items)"),
    Benchmark("load", "core.bench.load", "concurrent searches on one shared Workspace"),
    Benchmark("map", "core.bench.map", "UMAP time, cold and warm, and silhouettes"),
    Benchmark("embed", "core.bench.embed", "where a photo catalogue's embedding time goes; each runtime and decode "
              "option side by side, speedup and vector agreement"),
    Benchmark("stream", "core.bench.stream", "a photo-file catalogue embedded, killed and resumed"),
    Benchmark("runners", "core.bench.runners", "a photo-file catalogue embedded by the sequential and the Ray Data "
              "runner on this machine"),
    Benchmark("photos", "core.bench.photos", "real photos (DIR with labels.csv) against their labels, contact sheet"),
    Benchmark("cross-domain", "core.bench.cross_domain", "held-out photos of one catalogue searched against the other "
              "(both directions) and in third styles no fit has seen; served model and ImageNet features"),
    Benchmark("colour", "core.bench.colour", "garment colours read from the pixels against the shop's colour column; "
              "their cost; contact sheets"),
    Benchmark("hostile", "core.bench.hostile", "peak memory under inputs that used to exhaust it"),
)}
DEFAULT = "search"  # `python -m core bench` with no name


def benchmark_module(name: str) -> ModuleType:
    """The module of benchmark ``name`` (imported now, if it was not yet). Not called ``load``: importing the
    module ``core.bench.load`` would rebind that name on the package."""
    return BENCHMARKS[name].load()
