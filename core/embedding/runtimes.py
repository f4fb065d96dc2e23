"""What runs the feature network at inference: ONNX Runtime, a frozen TorchScript trace, or eager PyTorch.

On CPU the runtime is most of an embedding pass's cost. Measured side by side on 2 cores (BENCHMARKS.md, "Faster
CPU embedding"), ONNX Runtime runs EfficientNet-Lite0 at 224 px about twice as fast as the frozen TorchScript
trace and several times faster than eager PyTorch, with vectors that agree to a cosine of 0.9999999: so "auto"
picks it wherever ``onnxruntime`` is installed (requirements.txt installs it), and the model key, which names
what the vectors are, does not depend on the runtime (the same cached embeddings serve either).

The exported ``.onnx`` file is cached on disk, keyed by the model key, the input size and the exporter, so only
the first start of a model pays the export (~2 s).
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.artifacts import atomic_path

Network = Callable[[torch.Tensor], torch.Tensor]
ONNX_OPSET = 17


class InferenceError(RuntimeError):
    """The runtime asked for cannot run here; the message says what to install."""


def resolve_runtime(requested: str) -> str:
    """``auto`` → ``cuda`` where a GPU is visible (a Ray actor given one, a GPU workstation), else ``onnx`` where
    ONNX Runtime (and the exporter's ``onnx``) are installed, else ``torchscript``."""
    have_onnx = all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "onnx" if have_onnx else "torchscript"
    if requested == "onnx" and not have_onnx:
        raise InferenceError("inference 'onnx' needs the packages onnxruntime and onnx: "
                             "pip install -r requirements.txt (or set FVS_INFERENCE=torchscript).")
    if requested == "cuda" and not torch.cuda.is_available():
        raise InferenceError("inference 'cuda' needs a CUDA GPU and a CUDA build of torch; none is visible here "
                             "(set FVS_INFERENCE=auto to use the CPU).")
    return requested


def inference_network(network: nn.Module, image_size: int, runtime: str, onnx_path: Path | None = None) -> Network:
    """``network`` (eval mode, pooled features out) ready for ``runtime``; ``onnx_path`` caches the export.

    A network that cannot be exported or traced (an exotic timm architecture) runs with the next simpler
    runtime instead: onnx → torchscript → eager, with a warning, never an error."""
    if runtime == "onnx":
        try:
            return _onnx_network(network, image_size, onnx_path)
        except Exception as exc:  # noqa: BLE001 - any export failure just means "use TorchScript"
            warnings.warn(f"ONNX export failed ({type(exc).__name__}: {exc}); using TorchScript", stacklevel=2)
            runtime = "torchscript"
    if runtime == "cuda":
        return DeviceNetwork(network, image_size, torch.device("cuda"))
    if runtime == "torchscript":
        return frozen_trace(network, image_size)
    return network


def runtime_of(network: Network) -> str:
    """What actually runs ``network``: ``inference_network`` falls back from onnx to torchscript to eager, and a
    summary must say which one serves, not which one was asked for."""
    if isinstance(network, OnnxNetwork):
        return "onnx"
    if isinstance(network, DeviceNetwork):
        return "cuda"
    if isinstance(network, torch.jit.ScriptModule):
        return "torchscript"
    return "eager"


def _onnx_network(network: nn.Module, image_size: int, path: Path | None) -> "OnnxNetwork":
    try:
        return OnnxNetwork(export_onnx(network, image_size, path))
    except Exception:
        if path is None or not path.is_file():
            raise
        path.unlink(missing_ok=True)  # a damaged cached export: make it again
        return OnnxNetwork(export_onnx(network, image_size, path))


def frozen_trace(network: nn.Module, image_size: int, device: torch.device | None = None) -> nn.Module:
    """A frozen TorchScript trace (batch-norm folded into the convolutions), or the eager module if tracing fails."""
    example = torch.zeros(2, 3, image_size, image_size, device=device)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.freeze(torch.jit.trace(network, example))
    except Exception:  # noqa: BLE001 - any tracing failure just means "run eagerly"
        return network


def export_onnx(network: nn.Module, image_size: int, path: Path | None) -> bytes:
    """The network as an ONNX model with a free batch dimension: read from ``path`` when it is there, else
    exported (and written to ``path`` atomically, so a half-written file is never read)."""
    if path is not None and path.is_file():
        return path.read_bytes()
    import io

    buffer = io.BytesIO()
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network, (torch.zeros(2, 3, image_size, image_size),), buffer, dynamo=False,
                          input_names=["images"], output_names=["features"], opset_version=ONNX_OPSET,
                          dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}})
    model = buffer.getvalue()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_bytes(model)
        except OSError as exc:  # read-only or full: the export runs from memory, and is made again next start
            warnings.warn(f"the ONNX export could not be cached ({exc.strerror or exc}); it is kept in memory",
                          stacklevel=2)
    return model


def onnx_file(artifacts_dir: Path, model_key: str, image_size: int) -> Path:
    """Where a model's export is cached: the model key names the weights, the rest names the export."""
    exporter = f"opset{ONNX_OPSET}-torch{torch.__version__.split('+')[0]}"
    return Path(artifacts_dir) / "onnx" / f"{model_key}-{image_size}px-{exporter}.onnx"


class OnnxNetwork:
    """An ONNX Runtime session behind the module's call signature (float tensor in, float tensor out).

    One session serves every thread: ONNX Runtime's ``run`` is thread-safe, so the dashboard's sessions share it
    as they share the TorchScript module. Its intra-op pool gets torch's thread count, set by the settings."""

    def __init__(self, model: bytes, threads: int | None = None):
        import onnxruntime as ort

        self.model = model
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # Its threads would otherwise spin for a while after each run, taking the cores from the rest of the query
        # (decode, transform, search): query p50 29 -> 20 ms on 2 cores, catalogue passes unchanged (BENCHMARKS.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: its optimiser's notes are not the user's business
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def with_threads(self, threads: int) -> "OnnxNetwork":
        """Another session of the same model on ``threads`` threads (a catalogue pass's stream,
        core.embedding.sequential_runner)."""
        return OnnxNetwork(self.model, threads)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


class DeviceNetwork:
    """The frozen trace on an accelerator, behind the CPU call signature: batches go over and features come back,
    so the transform, the heads and the runners stay on the CPU side unchanged."""

    def __init__(self, network: nn.Module, image_size: int, device: torch.device):
        self.device = device
        self.network = frozen_trace(network.to(device), image_size, device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images.to(self.device, non_blocking=True)).float().cpu()
