"""All settings in one dataclass, overridable from the environment (``FVS_<FIELD>``) and the CLI.

Everything that changes an artifact (catalogue, backbone, image size, index parameters) lives here, so the
fingerprints in ``core.artifacts`` can be computed from one object instead of from scattered constants.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "FVS_"
ISOLATE_MODES = ("auto", "on", "off")
INFERENCE_MODES = ("auto", "cuda", "onnx", "torchscript", "eager")
RUNNERS = ("sequential", "ray")
INDEX_MODES = ("auto", "exact", "annoy", "hnsw")
# The smallest value each whole-number setting may take (image_size 0 and workers -1 mean "decide for me").
SETTING_MINIMUMS = {"catalog_limit": 0, "page_max_items": 0, "image_size": 0, "pca_dim": 0, "pca_min_fit_items": 0,
                    "batch_size": 1,
                    "num_threads": 0, "workers": -1, "n_trees": 1, "search_k": -1, "kmeans_clusters": 1,
                    "kmeans_probe": 1, "pca_search_dim": 1, "hnsw_m": 2, "hnsw_ef_construction": 1,
                    "hnsw_ef": 1, "ray_shard_rows": 1, "exact_max_items": 0, "seed": 0}
MAX_IMAGE_SIZE = 1024


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    # Where things live.
    data_dir: Path = field(default_factory=lambda: _project_root() / "data")
    artifacts_dir: Path = field(default_factory=lambda: _project_root() / "artifacts")
    builtin_dir: Path = field(default_factory=lambda: _project_root() / "builtin")  # the shipped colour catalogues
    runs_dir: Path | None = None  # fine-tuning runs; default <artifacts_dir>/runs
    # Runs that ship with the project (read only): the fine-tuned models of the built-in catalogues.
    shipped_runs_dir: Path = field(default_factory=lambda: _project_root() / "models")
    # Files the browser fetches on its own: the map's hover thumbnails under <static_dir>/thumbs/<catalogue key>/.
    # The default is the folder Streamlit serves at app/static/ (.streamlit/config.toml), so `prepare` can make them
    # before the dashboard starts; another folder still works, without pictures on hover.
    static_dir: Path = field(default_factory=lambda: _project_root() / "static")

    # What is searched.
    # The default demo: real colour photos (core/catalog/builtin.py). "fashion-mnist" is the 70,000-item benchmark
    # catalogue.
    catalog: str = "garment-photos"
    # Folders whose catalogues the dashboard's "Add your own catalogue" may read (comma-separated). Empty: a
    # ``catalogs`` folder beside the data folder. A browser user reaches nothing else on the server; the CLI, run
    # by the machine's owner, reads whatever path it is given.
    catalog_roots: str = ""
    # The most entries a catalogue added from the dashboard may have (0: no limit; the CLI has none).
    page_max_items: int = 50_000
    # 0 = every item. A smaller number keeps a deterministic subset (the first N of each split, in order) for
    # quick demos and tests; it is part of the catalogue fingerprint.
    catalog_limit: int = 0

    # How images become vectors.
    backbone: str = "efficientnet_lite0"
    # A local .pth/.safetensors state dict for backbones without a packaged weights file.
    weights_path: Path | None = None
    # Model input size. 0: the catalogue's own choice (its domain's input_size): 64 px for Fashion-MNIST's 28-px
    # items (fast on CPU, enough resolution for ImageNet features), 224 px for colour photos.
    image_size: int = 0
    # PCA of the pooled features, fitted on the catalogue's train split: 5x smaller vectors at the same
    # precision@10 as the raw 1280-d features, and the Annoy recall/speed trade-off the README promises.
    # Whitening adds ~1.5 points of precision@10 but makes Annoy's job harder (BENCHMARKS.md has the sweep).
    # pca_dim 0 keeps the raw features.
    pca_dim: int = 256
    pca_whiten: bool = False
    # No PCA for a catalogue whose train split is smaller than this: a 256-d PCA fitted on a few hundred items keeps
    # only their span, and a photo of another style lands wherever its shadow falls (BENCHMARKS.md, "Across photo
    # styles": the shop's 374 train items took phone photos -> shop from the raw features' share to far below it).
    pca_min_fit_items: int = 2000
    # Real photos: separate the garment from its surroundings (GrabCut, core/photo/isolate.py) before the catalogue's
    # conversion: "on", "off", or "auto" = on for fine-tuned models on a catalogue of cut-outs (Fashion-MNIST),
    # off for ImageNet features and for photo catalogues. Measured on our real photos (BENCHMARKS.md, "Real
    # photos"), isolation lifts a fine-tuned model on Fashion-MNIST from 0.33 to 0.69 of the top 10 in an accepted
    # category, but takes ImageNet features from 0.31 to 0.26; against a catalogue of garment photos, which are not
    # cut-outs, it lowered on-model photos from 0.57 to 0.42 (issue 14).
    isolate: str = "auto"
    # Photos of other styles (core/search/shared_space.py): for a catalogue in a group of the shared category map
    # (the two built-in colour catalogues), the served vectors blend its own with a discriminant in shared garment
    # classes fitted on every catalogue of the group: cosine = (1 - w) own + w shared. 0 = off. BENCHMARKS.md,
    # "Across photo styles", has the sweep that chose 0.75.
    shared_weight: float = 0.75
    # Every image (catalogue item and query) embedded with its mirror image too, features averaged: a garment
    # photographed facing the other way lands on the same vector. Twice the embedding cost.
    flip_average: bool = False
    # Search results re-ranked by the query's predicted category (the fine-tuned head, else the neighbours' vote):
    # when the prediction is at least this sure, that category's items come first. 0 = off.
    category_rerank: float = 0.0
    batch_size: int = 32  # small batches stay in cache: faster on CPU than 256 (BENCHMARKS.md)
    num_threads: int = 0  # 0 = all cores
    # DataLoader worker processes that decode a file catalogue's images ahead of the model; -1: min(8, cores).
    workers: int = -1
    # What runs the backbone at inference: "cuda" (the frozen trace on the GPU), "onnx" (ONNX Runtime on the CPU,
    # ~2x the images/s of TorchScript with the same vectors, BENCHMARKS.md "Faster CPU embedding"), "torchscript"
    # (a frozen trace on the CPU), "eager" (plain PyTorch), or "auto": cuda where a GPU is visible, else onnx
    # where onnxruntime is installed, else torchscript.
    inference: str = "auto"
    # Who embeds a whole catalogue: "sequential" (this process, DataLoader workers decoding) or "ray" (Ray Data:
    # decode tasks and embedding actors on a Ray cluster, shards resumable; core/embedding/ray_runner.py).
    runner: str = "sequential"
    ray_address: str = ""  # the cluster to join ("" = start a local one; "auto" = the one `ray start` made here)
    ray_shard_rows: int = 4096  # rows per shard file: the unit of resume

    # Which index serves searches (core/search/served.py, issue 27): "exact", "annoy", "hnsw", or "auto": exact
    # search up to ``exact_max_items`` items, Annoy above it with the smallest search_k from ``search_k`` up that
    # holds recall@10 >= 0.95 on the catalogue's own items, HNSW where Annoy cannot within 2 ms. The Annoy index is
    # built for every catalogue either way; the HNSW graph only where it is served.
    # 7,500: the largest size measured (`python -m core bench crossover`, BENCHMARKS.md) where a scan of 512-d
    # vectors still costs under 1 ms on 2 cores (0.97 ms; 1.7 ms at 10,000, where Annoy at recall 0.95 takes
    # 0.28 ms); 256-d vectors are cheaper still (0.28 ms at 10,000). Below it exact search is free next to a query's
    # ~25 ms model forward, and Annoy's 0.2-0.3 ms saving would cost one true neighbour in thirty.
    index: str = "auto"
    exact_max_items: int = 7_500

    # Annoy parameters: see BENCHMARKS.md for the sweep that chose them. ``search_k`` is what "annoy" serves and
    # where "auto" starts its search for enough recall.
    n_trees: int = 32
    search_k: int = 2000

    # The retrieval lab's other methods (python -m core bench retrieval): K-Means cluster-then-search and exact
    # search on PCA-reduced vectors.
    kmeans_clusters: int = 256
    kmeans_probe: int = 12
    pca_search_dim: int = 64
    # HNSW (hnswlib), served past Annoy's reach and in the lab: graph degree, build-time and query-time candidate
    # lists ("auto" raises ``hnsw_ef`` where the catalogue needs it for recall@10 >= 0.95).
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    hnsw_ef: int = 64

    # A fine-tuned run to serve (``python -m core train`` prints its id; the sidebar lists them). Empty: the
    # backbone's ImageNet weights with the PCA projection above.
    run: str = ""

    # Serve prepared artifacts without writing (no lock taken, nothing built): for replicas sharing a read-only
    # volume. A folder that cannot be written is served this way anyway, found by trying (Workspace.open).
    read_only: bool = False

    seed: int = 0

    def __post_init__(self) -> None:
        """Every field checked when the settings are made (from the environment, the CLI or code), so a bad value
        is one message naming the setting and its variable, not an error deep inside a page later."""
        problems = []
        for f in fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            if "Path" in kind:
                if value is not None and not isinstance(value, (str, os.PathLike)):
                    problems.append(f"{f.name} must be a path (got {value!r})")
                elif value is not None and not isinstance(value, Path):
                    object.__setattr__(self, f.name, Path(value))
            elif kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
                problems.append(f"{f.name} must be a whole number (got {value!r})")
            elif kind == "int" and value < SETTING_MINIMUMS.get(f.name, value):
                problems.append(f"{f.name} must be at least {SETTING_MINIMUMS[f.name]} (got {value})")
            elif kind == "float" and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                      or not 0.0 <= value <= 1.0):
                problems.append(f"{f.name} must be a number from 0 to 1 (got {value!r})")
            elif kind == "bool" and not isinstance(value, bool):
                problems.append(f"{f.name} must be true or false (got {value!r})")
            elif kind == "str" and not isinstance(value, str):
                problems.append(f"{f.name} must be text (got {value!r})")
        if isinstance(self.image_size, int) and self.image_size > MAX_IMAGE_SIZE:
            problems.append(f"image_size must be at most {MAX_IMAGE_SIZE} (got {self.image_size})")
        if isinstance(self.isolate, str) and self.isolate.lower() not in ISOLATE_MODES:
            problems.append(f"isolate must be one of {', '.join(ISOLATE_MODES)}, not {self.isolate!r}")
        for name, allowed in (("inference", INFERENCE_MODES), ("runner", RUNNERS), ("index", INDEX_MODES)):
            value = getattr(self, name)
            if isinstance(value, str) and value not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        for name in ("catalog", "backbone"):
            if isinstance(getattr(self, name), str) and not getattr(self, name).strip():
                problems.append(f"{name} must not be empty")
        if isinstance(self.run, str) and ("/" in self.run or self.run.startswith(".")):
            problems.append(f"run must be a run id, not a path (got {self.run!r})")
        if problems:
            raise ValueError("Invalid settings: " + "; ".join(f"{p} ({ENV_PREFIX}{p.split()[0].upper()})"
                                                             for p in problems))

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def allowed_catalog_roots(self) -> list[Path]:
        """``catalog_roots`` as resolved folders (symlinks followed, so a link cannot widen them)."""
        given = [Path(part.strip()).expanduser() for part in self.catalog_roots.split(",") if part.strip()]
        return [path.resolve() for path in given or [Path(self.data_dir).parent / "catalogs"]]

    def for_catalog(self, input_size: int, fit_items: int | None = None) -> "Settings":
        """Settings with ``image_size`` resolved (the catalogue domain's ``input_size`` unless one was chosen) and,
        given how many items a projection would be fitted on, no PCA below ``pca_min_fit_items``."""
        resolved = self if self.image_size else self.replace(image_size=input_size)
        if fit_items is not None and resolved.pca_dim and fit_items < resolved.pca_min_fit_items:
            resolved = resolved.replace(pca_dim=0)
        return resolved

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> "Settings":
        """Defaults, then ``FVS_*`` environment variables, then explicit overrides (e.g. CLI flags)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse(name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if "Path" in str(kind):
            return Path(raw).expanduser()
        if kind in ("int", int):
            return int(raw)
        if kind in ("float", float):
            return float(raw)
        if kind in ("bool", bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        return raw
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from exc


TYPE_WORDS = {"bool": "true or false", "str": "text", "int": "a whole number", "float": "a number"}
FREEZE_POLICIES = ("full", "last", "heads")
SCHEDULES = ("cosine", "onecycle")


@dataclass(frozen=True)
class TrainConfig:
    """A fine-tuning recipe. It is saved with every run and its hash is the run's id, so the same recipe on the same
    catalogue and weights resumes the same run instead of starting a second one.

    The defaults are the 2-core CPU recipe measured in BENCHMARKS.md; the GPU recipe there changes a few fields.
    """

    epochs: int = 5
    # 64 px, not Fashion-MNIST's native 28: EfficientNet downsamples 32x, and at 32 px the last stages see 1x1 maps
    # (measured on a 12k subset: 83.5 % at 32 px vs 89.7 % at 64 px after 3 epochs).
    image_size: int = 64
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    schedule: str = "cosine"
    # full: every layer learns. last: only the last ``trainable_blocks`` stages and the heads. heads: the backbone
    # is frozen, its features are computed once and cached, and only the embedding layer and heads learn (so
    # ``augment`` does not apply: the cached features are of the unaugmented items).
    # The CPU default freezes the first three stages: their ImageNet edges and textures are worth keeping, their
    # backward pass is the costliest (highest resolution), and it scored better than full fine-tuning (BENCHMARKS.md).
    freeze: str = "last"
    trainable_blocks: int = 4
    embedding_dim: int = 512
    label_smoothing: float = 0.1
    tag_weight: float = 1.0
    # Batch-hard triplet margin loss on the unit embeddings, added to cross-entropy with this weight (0 = off).
    triplet_weight: float = 0.0
    triplet_margin: float = 0.2
    augment: bool = True
    # Share of each batch that also gets photo-like augmentation (gamma, contrast, a flattened light garment, blur,
    # ragged mask edges): what isolated real photos look like after the catalogue's conversion. The rest of the
    # batch stays clean, which keeps the catalogue's own accuracy (BENCHMARKS.md, "Photo-robust training").
    photo_augment: float = 0.0
    # Share of each batch turned into another photo style (core/training/styles.py): a garment cut out onto a
    # plain backdrop, or an on-model photo cropped to the garment, from masks the project's isolation finds once
    # per catalogue. Colour catalogues only, and not with ``freeze="heads"`` (its cached features are unaugmented).
    style_augment: float = 0.0
    # Stronger augmentation on top of ``augment`` (core/training/augmentations.py): random-resized crops, saturation
    # and contrast jitter, random erasing.
    strong_augment: bool = False
    # Training on several catalogues at once (core/catalog/union.py): each epoch draws every member's train items
    # equally often (a smaller catalogue's repeated), so batches mix the styles instead of being 92 % phone photos.
    balance_catalogues: bool = False
    val_fraction: float = 0.1  # carved from the train split with ``seed``; the test split is never trained on
    seed: int = 0

    def __post_init__(self) -> None:
        """Each field checked by its type first (``augment="no"`` is not true, ``epochs=5.5`` is not a whole
        number of epochs; a float field takes an int), then by its range."""
        problems = []
        for f in fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            ok = {"bool": isinstance(value, bool), "str": isinstance(value, str),
                  "int": isinstance(value, int) and not isinstance(value, bool),
                  "float": isinstance(value, (int, float)) and not isinstance(value, bool)}.get(kind, True)
            if not ok:
                problems.append(f"{f.name} must be {TYPE_WORDS[kind]} (got {value!r})")
        if problems:
            raise ValueError("Invalid training recipe: " + "; ".join(problems))
        if self.freeze not in FREEZE_POLICIES:
            problems.append(f"freeze must be one of {', '.join(FREEZE_POLICIES)} (got {self.freeze!r})")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)} (got {self.schedule!r})")
        for name in ("epochs", "image_size", "batch_size", "embedding_dim", "trainable_blocks"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.batch_size < 2:
            problems.append("batch_size must be at least 2 (batch norm needs two samples)")
        if not 0.0 < self.val_fraction < 0.5:
            problems.append(f"val_fraction must be in (0, 0.5) (got {self.val_fraction})")
        if self.lr <= 0:
            problems.append(f"lr must be positive (got {self.lr})")
        for name in ("warmup_epochs", "weight_decay", "tag_weight", "triplet_weight", "triplet_margin"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative (got {getattr(self, name)})")
        for name in ("photo_augment", "style_augment"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1] (got {getattr(self, name)})")
        if not 0.0 <= self.label_smoothing < 1.0:
            problems.append(f"label_smoothing must be in [0, 1) (got {self.label_smoothing})")
        if problems:
            raise ValueError("Invalid training recipe: " + "; ".join(problems))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """What a run's id hashes: every field, except fields added later while they keep their default, so the
        runs trained before a field existed keep their ids."""
        later = {"photo_augment": 0.0, "balance_catalogues": False, "style_augment": 0.0, "strong_augment": False}
        return {k: v for k, v in self.as_dict().items() if not (k in later and v == later[k])}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
