"""Image → vector: the ``Embedder`` (a feature network and the input transform it was trained with), a fine-tuned
run's ``Heads`` and the PCA ``Projection``, and the description whose hash keys everything they produce.

A whole catalogue is embedded by a runner (``core.embedding.sequential_runner``); the Embedder only maps a batch to
vectors, so a distributed runner can call the same Embedder on shards without touching the model code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import timm
import torch

from core.artifacts import fingerprint
from core.config import Settings
from core.embedding.runtimes import Network, inference_network, onnx_file, resolve_runtime, runtime_of
from core.model.backbone import backbone_spec, create_backbone, file_fingerprint, weights_fingerprint
from core.model.network import EmbeddingOnly, build_net
from core.model.runs import RunDir, load_checkpoint, load_weights
from core.photo.domain import ModelInput
from core.text.tags import DEFAULT_THRESHOLD
from core.threads import configure_threads
from core.vectors import l2_normalize


@dataclass
class Embedder:
    """A feature network plus the input transform it was trained with; ``key`` names what it produces."""

    network: Network  # the feature network, run by ``runtime`` (core.embedding.runtimes)
    transform: ModelInput
    key: str
    description: dict
    projection: "Projection | None" = None  # fitted on the catalogue's features, set by the Workspace
    feature_dim: int = 0
    heads: "Heads | None" = None  # a fine-tuned run's category (and tag) heads
    pca_dim: int = 0  # the projection to fit on the catalogue (0: the features are the vectors)
    pca_whiten: bool = False
    runtime: str = "eager"  # what runs ``network``: cuda, onnx, torchscript or eager (core.embedding.runtimes)
    flip_average: bool = False  # features are the mean of the image's and its mirror image's (twice the cost)
    # a run trained on several catalogues: each member's own category head (its categories), by member name
    member_heads: dict[str, "Heads"] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Embedder":
        configure_threads(settings)
        if settings.run:
            return cls.from_run(settings)
        network = create_backbone(settings.backbone, weights_path=settings.weights_path)
        description = describe_model(settings)
        # timm resolves size/mean/std/interpolation from the model's pretrained config; our overrides win, so the
        # description (and with it the model key) is known without loading the network.
        config = timm.data.resolve_data_config(
            {"input_size": (3, settings.image_size, settings.image_size), "mean": tuple(description["mean"]),
             "std": tuple(description["std"])}, model=network)
        key = model_key(description)
        graph, runtime = _for_runtime(network, settings.image_size, settings, key)
        return cls(graph, ModelInput.from_data_config(config), key, description, pca_dim=settings.pca_dim,
                   pca_whiten=settings.pca_whiten, runtime=runtime, flip_average=settings.flip_average)

    @classmethod
    def from_run(cls, settings: Settings) -> "Embedder":
        """A fine-tuned run's best checkpoint: its embedding layer gives the vectors, its heads the predictions."""
        run = RunDir.of(settings)
        state = load_checkpoint(run.best)
        recipe = run.config()
        backbone = create_backbone(state["backbone"], pretrained=False)
        net = build_net(backbone, recipe, len(state["categories"]), len(state["tags"]))
        load_weights(net, state, run.best)
        description = describe_model(settings)
        transform = ModelInput(recipe.image_size, tuple(description["mean"]), tuple(description["std"]))
        key = model_key(description)
        graph, runtime = _for_runtime(EmbeddingOnly(net), recipe.image_size, settings, key)
        heads = Heads.from_state(state)
        own = {name: dataclasses.replace(heads, categories=list(head["categories"]),
                                         category_w=head["weight"].float().numpy(),
                                         category_b=head["bias"].float().numpy(),
                                         source="its own category head (a run trained on several catalogues)")
               for name, head in state.get("member_heads", {}).items()}
        return cls(graph, transform, key, description, heads=heads, runtime=runtime,
                   flip_average=settings.flip_average, member_heads=own)

    def __post_init__(self) -> None:
        # Two single-image passes: they give the feature size, and the runtimes optimise on their first calls
        # (TorchScript's profiling executor, ONNX Runtime's allocations), which would otherwise land on the
        # user's first query (~300 ms instead of ~10).
        with torch.inference_mode():
            zeros = torch.zeros(1, 3, self.transform.size, self.transform.size)
            for _ in range(2):
                self.feature_dim = int(self.network(zeros).shape[1])

    @property
    def dim(self) -> int:
        return self.projection.dim if self.projection is not None else self.feature_dim

    @torch.inference_mode()
    def features(self, batch: np.ndarray) -> np.ndarray:
        """uint8 domain arrays (B, H, W[, 3]) → raw pooled features, float32 (B, feature_dim)."""
        x = self.transform(batch)
        if not self.flip_average:
            return self.network(x).float().numpy()
        return ((self.network(x).float() + self.network(torch.flip(x, dims=[-1])).float()) / 2).numpy()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """uint8 domain arrays → float32 (B, dim), projected if fitted, unit length (cosine = dot product)."""
        return self.vectors(self.features(batch))

    def vectors(self, features: np.ndarray) -> np.ndarray:
        """Raw features → the vectors the index holds: projected if fitted, unit length."""
        return l2_normalize(self.projection(features) if self.projection is not None else features)


def describe_model(settings: Settings) -> dict:
    """Everything that determines the vectors, without loading weights: the model key is a hash of this."""
    flip = {"flip_average": True} if settings.flip_average else {}  # absent when off: older keys stay valid
    if settings.run:
        run = RunDir.of(settings)
        info, recipe = run.info(), run.config()
        spec = backbone_spec(info["backbone"])
        return {"backbone": spec.name, "run": run.id, "checkpoint": file_fingerprint(run.best),
                "image_size": recipe.image_size, "mean": [float(v) for v in spec.mean],
                "std": [float(v) for v in spec.std], "embedding": f"fine-tuned-{recipe.embedding_dim}-l2", **flip}
    spec = backbone_spec(settings.backbone)
    return {
        "backbone": spec.name,
        "weights": weights_fingerprint(settings.backbone, settings.weights_path),
        "image_size": settings.image_size,
        "mean": [float(v) for v in spec.mean],
        "std": [float(v) for v in spec.std],
        "embedding": _embedding_recipe(settings),
        **flip,
    }


def _embedding_recipe(settings: Settings) -> str:
    if not settings.pca_dim:
        return "pooled-features-l2"
    return f"pooled-features-pca{settings.pca_dim}{'-whiten' if settings.pca_whiten else ''}-l2"


def model_key(description: dict) -> str:
    kind = "ft-" if "run" in description else ""
    return f"{description['backbone']}-{kind}{fingerprint(description)}"


@dataclass(frozen=True)
class Heads:
    """A fine-tuned run's classifier heads as arrays: applied to embeddings with one matrix product, so the
    query path traces only backbone + embedding layer."""

    categories: list[str]
    category_w: np.ndarray
    category_b: np.ndarray
    tags: list[str]
    tag_w: np.ndarray | None = None
    tag_b: np.ndarray | None = None
    # where a tag counts as predicted: chosen on the run's validation split (older runs: the default)
    tag_threshold: float = DEFAULT_THRESHOLD
    source: str = "the fine-tuned category head"  # what the pages say predicted a category

    @classmethod
    def from_state(cls, state: dict) -> "Heads":
        model = state["model"]

        def array(name: str) -> np.ndarray | None:
            return model[name].float().numpy() if name in model else None

        return cls(list(state["categories"]), array("category_head.weight"), array("category_head.bias"),
                   list(state["tags"]), array("tag_head.weight"), array("tag_head.bias"),
                   float(state.get("tag_threshold", DEFAULT_THRESHOLD)))

    def mapped(self, categories: list[str], classes: list[str], prior: np.ndarray, source: str) -> "Heads":
        """A head over ``categories`` from this one over its classes: category ``c`` of class ``classes[c]`` gets
        that class's logit plus log ``prior[c]`` (its share of its class), so p(c) = p(class) × p(c | class),
        renormalised over the categories there are. A linear head again: the query path and the stored
        probabilities use it like any other. A class this head does not know gives its categories no chance."""
        index = {name: i for i, name in enumerate(self.categories)}
        known = np.array([name in index for name in classes])
        rows = np.array([index.get(name, 0) for name in classes])
        bias = np.where(known, self.category_b[rows] + np.log(np.maximum(prior, 1e-12)), -1e9).astype(np.float32)
        return dataclasses.replace(self, categories=list(categories), category_w=self.category_w[rows],
                                   category_b=bias, source=source)

    def category_probs(self, features: np.ndarray) -> np.ndarray:
        logits = features @ self.category_w.T + self.category_b
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)

    def tag_probs(self, features: np.ndarray) -> np.ndarray:
        if self.tag_w is None:
            return np.zeros((len(features), 0), np.float32)
        return (1.0 / (1.0 + np.exp(-(features @ self.tag_w.T + self.tag_b)))).astype(np.float32)


@dataclass(frozen=True)
class Projection:
    """PCA: centre, rotate onto the top components, and (whitened) scale each to unit variance."""

    mean: np.ndarray
    components: np.ndarray  # (dim, feature_dim)
    scale: np.ndarray  # (dim,)

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) @ self.components.T) / self.scale

    @classmethod
    def fit(cls, features: np.ndarray, dim: int, whiten: bool, seed: int = 0, max_rows: int = 30_000,
            rows: np.ndarray | None = None) -> "Projection":
        """Fitted on at most ``max_rows`` of ``rows`` (default: all), drawn with ``seed``."""
        from sklearn.decomposition import PCA

        rows = np.arange(len(features)) if rows is None else np.asarray(rows)
        sample = np.sort(rows[np.random.default_rng(seed).permutation(len(rows))[:max_rows]])
        fit_on = np.asarray(features[sample])
        pca = PCA(n_components=min(dim, *fit_on.shape), svd_solver="randomized", random_state=seed)
        pca.fit(fit_on)
        return cls(pca.mean_.astype(np.float32), pca.components_.astype(np.float32),
                   _whitening_scale(pca.explained_variance_) if whiten else np.ones(pca.n_components_, np.float32))

    def save(self, path) -> None:
        with open(path, "wb") as fh:
            np.savez(fh, mean=self.mean, components=self.components, scale=self.scale)

    @classmethod
    def load(cls, path) -> "Projection":
        with np.load(path) as data:
            return cls(data["mean"], data["components"], data["scale"])


def _for_runtime(network: torch.nn.Module, image_size: int, settings: Settings, key: str) -> tuple[Network, str]:
    """The network (put in eval mode) ready for the settings' runtime, its ONNX export cached under the model key."""
    graph = inference_network(network.eval(), image_size, resolve_runtime(settings.inference),
                              onnx_file(settings.artifacts_dir, key, image_size))
    return graph, runtime_of(graph)  # the one serving: an export that failed fell back to another


def _whitening_scale(variance: np.ndarray) -> np.ndarray:
    """sqrt of the variance, regularised: near-empty components (small catalogues) must not amplify noise."""
    return np.sqrt(variance + 1e-2 * variance.mean()).astype(np.float32)
