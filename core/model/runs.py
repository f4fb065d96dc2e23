"""Fine-tuning runs on disk: identity, checkpoints, live status, and the background job that trains one.

A run lives in ``<artifacts>/runs/<run id>/``; the id is a hash of what determines its result (catalogue, backbone,
pretrained weights, recipe), so running the same recipe again resumes instead of starting over. Files:

    run.json             what the run is: catalogue key, backbone, categories, tags, recipe
    checkpoint-last.pt   after every epoch: weights, optimizer, schedule, history (resume point)
    checkpoint-best.pt   the epoch with the best validation top-1 (what the app serves)
    status.json          live progress, rewritten every few seconds (what the Model page polls)
    test.json            the final test-split figures
    job.json, train.log  the background process, when started from the app

Checkpoints hold only tensors, numbers, strings, lists and dicts, so ``torch.load(..., weights_only=True)`` reads
them: a checkpoint is never trusted to run code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from core import locks
from core.artifacts import atomic_path, fingerprint
from core.config import Settings, TrainConfig
from core.model.backbone import BACKBONES

CHECKPOINT_FORMAT = "fvs-checkpoint-v2"  # v2: a checksum of the contents inside, required
LEGACY_FORMATS = ("fvs-checkpoint-v1",)  # written before checksums: read without one
ACTIVE_STATES = ("starting", "running", "indexing")
RECENT_S = 3600  # a run that ended badly longer ago than this is in the runs table, not repeated as an alert


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or belongs to another model; the message says which and why."""


def run_id(catalog_key: str, backbone: str, weights: str, config: TrainConfig) -> str:
    inputs = {"catalog": catalog_key, "backbone": backbone, "weights": weights, "recipe": config.identity()}
    return f"{backbone}-ft-{fingerprint(inputs)}"


def runs_root(settings: Settings) -> Path:
    """Where this machine's runs are trained and kept."""
    return Path(settings.runs_dir) if settings.runs_dir else Path(settings.artifacts_dir) / "runs"


def run_roots(settings: Settings) -> list[Path]:
    """Where runs are looked for: this machine's first, then the ones that ship with the project."""
    return [runs_root(settings), Path(settings.shipped_runs_dir)]


@dataclass(frozen=True)
class RunStatus:
    """What a run's status.json holds, and what it means: the one definition the trainer writes and the Model
    page and the runs table read.

    ``state`` is "new" (no status yet), then "starting", "running" (training epochs), "indexing" (embeddings,
    index and test figures with the new model), and finally "done", "stopped" (asked to stop; training again
    resumes) or "failed" (``error`` says why)."""

    state: str = "new"
    started: float | None = None  # time.time() when this training began
    updated: float = 0.0  # time.time() of the last write
    epoch: int = 0  # the epoch under way (1-based; 0 before the first)
    epochs: int = 0  # of the recipe (0: not reported yet)
    step: int = 0  # steps done in the epoch under way
    steps: int = 0  # per epoch
    images_per_s: float = 0.0
    eta_s: float = 0.0  # training time left, in seconds
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # one dict per finished epoch
    train_seconds: float | None = None  # training time so far (every finished epoch)
    stage: str | None = None  # what is being done outside the training steps (features, index, test)
    done: int = 0  # of ``stage``
    total: int = 0  # of ``stage``
    device: str | None = None  # what trains: "cpu", "cuda", …
    resumed_from_epoch: int | None = None  # the checkpoint's epoch when training resumed, else None
    error: str | None = None  # why it failed
    test: dict[str, Any] = dataclasses.field(default_factory=dict)  # the final test figures (test.json), when done

    @classmethod
    def from_dict(cls, data: Any) -> "RunStatus":
        """Tolerant: keys this version does not know (an older or newer file) are ignored, a value of the wrong
        type reads as its field's default, and anything but a dict reads as the default status."""
        if not isinstance(data, dict):
            return cls()
        hints = _status_hints()
        return cls(**{name: data[name] for name, hint in hints.items() if name in data and _fits(data[name], hint)})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def active(self) -> bool:
        """The file says training is under way; stale if its trainer died (``RunDir.is_active`` knows)."""
        return self.state in ACTIVE_STATES

    def fraction(self, default_epochs: int) -> float:
        """How far the run is, in [0, 1]: steps trained while running, items done while indexing, else 0.
        ``default_epochs``: the recipe's, until the trainer reports its own."""
        if self.state == "running":
            epochs, steps = self.epochs or default_epochs, self.steps or 1
            done = ((self.epoch - 1) * steps + self.step) / (epochs * steps) if self.epoch else 0.0
        elif self.state == "indexing":
            done = self.done / max(self.total, 1)
        else:
            done = 0.0
        return min(max(done, 0.0), 1.0)

    def progress_text(self, run_id: str, default_epochs: int) -> str:
        """The line under the Model page's progress bar."""
        if self.state == "running":
            return (f"`{run_id}` · epoch {self.epoch}/{self.epochs or default_epochs}, step {self.step}/"
                    f"{self.steps or 1} · {self.images_per_s:.0f} images/s · about {self.eta_s / 60:.0f} min left")
        # starting, or indexing the catalogue with the new model
        state = "starting" if self.state == "new" else self.state
        return f"`{run_id}` · {state}: {'…' if self.stage is None else self.stage}"

    def problem(self, run_id: str, now: float | None = None) -> tuple[str, str] | None:
        """For a run that is not training: ("warning", …) if its trainer died while the file still says it
        trains, ("error", …) if it failed; None otherwise, and for anything older than RECENT_S."""
        if (time.time() if now is None else now) - self.updated >= RECENT_S:
            return None
        if self.active:
            return ("warning", f"Run `{run_id}` stopped unexpectedly at epoch {self.epoch}; training it again "
                               "resumes from its last checkpoint. See its train.log.")
        if self.state == "failed":
            return "error", f"Run `{run_id}` failed: {self.error}"
        return None


@functools.cache
def _status_hints() -> dict[str, Any]:
    return typing.get_type_hints(RunStatus)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a value read from JSON has the type a RunStatus field declares."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if isinstance(value, bool):  # JSON's true/false are not numbers here
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    if origin is list:
        return isinstance(value, list) and all(_fits(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(key, str) for key in value)
    return isinstance(value, hint)


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def of(cls, settings: Settings, run: str | None = None) -> "RunDir":
        """The directory of ``run`` (default: ``settings.run``); raises with the known runs if there is none."""
        name = run or settings.run
        if not name or "/" in name or name.startswith("."):
            raise CheckpointError(f"{name!r} is not a run id.")
        for root in run_roots(settings):
            found = cls(root / name)
            if found.info_path.is_file():
                return found
        known = ", ".join(r.id for r in list_runs(settings)) or "none yet (python -m core train)"
        raise CheckpointError(f"No fine-tuned run {name!r} under {runs_root(settings)} or "
                              f"{settings.shipped_runs_dir}. Known runs: {known}.")

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def info_path(self) -> Path:
        return self.path / "run.json"

    @property
    def last(self) -> Path:
        return self.path / "checkpoint-last.pt"

    @property
    def best(self) -> Path:
        return self.path / "checkpoint-best.pt"

    def info(self) -> dict[str, Any]:
        return _read_json(self.info_path)

    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.info().get("recipe", {}))

    def status(self) -> RunStatus:
        return RunStatus.from_dict(_read_json(self.path / "status.json"))

    def test_figures(self) -> dict[str, Any]:
        return _read_json(self.path / "test.json")

    def history(self) -> list[dict[str, Any]]:
        return self.status().history

    def is_active(self) -> bool:
        """Training right now: a trainer holds the run's lock (from the app or a terminal), or the job the app just
        started has not taken it yet."""
        return job_running(self) or self._lock_held()

    @contextlib.contextmanager
    def training_lock(self) -> Iterator[None]:
        """Exclusive while a trainer works on this run; a second one fails at once instead of waiting."""
        try:
            with locks.exclusive(self.path / "train.lock", wait=False):
                yield
        except locks.LockBusy:
            raise RuntimeError(f"Run {self.id} is already training in another process; follow it on the Model "
                               "page, or stop it first.") from None

    def _lock_held(self) -> bool:
        return locks.is_locked(self.path / "train.lock")

    def clear(self) -> None:
        """Forget this run's training (``--fresh``): checkpoints, status and test figures."""
        for name in ("checkpoint-last.pt", "checkpoint-best.pt", "status.json", "test.json"):
            (self.path / name).unlink(missing_ok=True)

    def is_complete(self) -> bool:
        return self.best.is_file() and bool(self.test_figures())

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        with atomic_path(self.path / name) as tmp:
            tmp.write_text(json.dumps(payload, indent=2, default=str))

    def update_status(self, **changes: Any) -> None:
        """Change some of status.json's fields (a name RunStatus does not have is a TypeError) and its time."""
        self.write_status(dataclasses.replace(self.status(), **{**changes, "updated": time.time()}))

    def write_status(self, status: RunStatus) -> None:
        """Replace status.json with ``status``, as it is."""
        self.write_json("status.json", status.as_dict())

    def save_checkpoint(self, path: Path, payload: dict[str, Any]) -> None:
        """Written atomically, with a checksum of its contents inside it: torch.load reads a checkpoint with a
        flipped bit in a tensor without complaint, and the app would serve nonsense from it."""
        state = {"format": CHECKPOINT_FORMAT, **payload}
        with atomic_path(path) as tmp:
            torch.save({**state, "checksum": content_checksum(state)}, tmp)

    def label(self) -> str:
        """What the sidebar shows: backbone, recipe and the test figure when there is one."""
        info, figures = self.info(), self.test_figures()
        recipe = info.get("recipe", {})
        accuracy = f", test {figures['top1']:.1%}" if "top1" in figures else ""
        name = info.get("backbone", "?")
        short = BACKBONES[name].label.replace(" (ImageNet)", "") if name in BACKBONES else name
        both = f" · on {info.get('catalog_name')}" if info.get("members") else ""  # a union run (several catalogues)
        return f"{short} fine-tuned{both} · {recipe.get('image_size')} px · {recipe.get('epochs')} ep{accuracy}"


def list_runs(settings: Settings, catalog_key: str | None = None) -> list[RunDir]:
    """Runs on disk (this machine's, then the shipped ones, one per id), newest first; only those trained on
    ``catalog_key`` when given, a union run (``core.catalog.union``) counting as trained on each of its members."""
    found: dict[str, RunDir] = {}
    for root in run_roots(settings):
        for path in sorted(root.glob("*/run.json")) if root.is_dir() else []:
            found.setdefault(path.parent.name, RunDir(path.parent))
    runs = list(found.values())
    if catalog_key is not None:
        runs = [r for r in runs if catalog_key in (r.info().get("catalog"), *r.info().get("members", {}).values())]
    return sorted(runs, key=lambda r: r.info_path.stat().st_mtime, reverse=True)


def load_checkpoint(path: Path, backbone: str | None = None, categories: list[str] | None = None) -> dict[str, Any]:
    """Read a checkpoint safely and check it is one of ours, for the expected model; clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zips, pickles with code, random bytes: all "unreadable"
        raise CheckpointError(f"Checkpoint {path} is unreadable (truncated, damaged or not a checkpoint written by "
                              f"this project): {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") not in (CHECKPOINT_FORMAT, *LEGACY_FORMATS):
        raise CheckpointError(f"{path} is not a fine-tuning checkpoint of this project (no {CHECKPOINT_FORMAT!r} "
                              "marker).")
    recorded = state.pop("checksum", None)
    if state["format"] == CHECKPOINT_FORMAT and recorded != content_checksum(state):
        raise CheckpointError(f"Checkpoint {path} is damaged: its contents no longer match the checksum written "
                              "with it. It cannot be rebuilt from anything else: train the run again "
                              "(python -m core train … --fresh, or the Model page).")
    if backbone is not None and state.get("backbone") != backbone:
        raise CheckpointError(f"Checkpoint {path} is for backbone {state.get('backbone')!r}, not {backbone!r}.")
    if categories is not None and list(state.get("categories", [])) != list(categories):
        raise CheckpointError(f"Checkpoint {path} was trained on categories {state.get('categories')}, not on this "
                              f"catalogue's {categories}.")
    return state


def content_checksum(value: Any) -> str:
    """A hash of a checkpoint's contents (tensors by dtype, shape and bytes; everything else by its repr), in a
    fixed order, so the same state always hashes alike whatever zip layout torch.save chose."""
    digest = hashlib.blake2b(digest_size=16)

    def feed(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            tensor = item.detach().cpu().contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        elif isinstance(item, dict):
            digest.update(b"{")
            for key in sorted(item, key=repr):
                digest.update(repr(key).encode())
                feed(item[key])
            digest.update(b"}")
        elif isinstance(item, (list, tuple)):
            digest.update(b"[")
            for part in item:
                feed(part)
            digest.update(b"]")
        else:
            digest.update(repr(item).encode())

    feed(value)
    return digest.hexdigest()


def load_weights(net: torch.nn.Module, state: dict[str, Any], source: Path) -> None:
    try:
        net.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"Checkpoint {source} does not fit this network (another architecture, embedding size "
                              f"or head): {str(exc).splitlines()[0]}") from exc


# ---------------------------------------------------------------- background jobs (the Model page's "Train")
def start_job(run_dir: Path, argv: list[str]) -> int:
    """Start ``python -m core train …`` detached from the caller (a page reload or a closed tab does not stop it);
    its pid goes to job.json so any later page can find it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "train.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "core", "train", *argv], stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   cwd=Path(__file__).resolve().parent.parent)
    RunDir(run_dir).write_json("job.json", {"pid": process.pid, "argv": argv, "started": time.time()})
    return process.pid


def job_running(run: RunDir) -> bool:
    pid = _read_json(run.path / "job.json").get("pid")
    if not pid:
        return False
    try:
        finished, code = os.waitpid(pid, os.WNOHANG)  # reap our own finished child (else it stays a zombie)
        if finished:
            # it died without saying why (killed, out of memory), and no other trainer of this run is alive
            if run.status().active and not run._lock_held():
                run.update_status(state="failed", error=f"the training process ended with exit status "
                                                        f"{os.waitstatus_to_exitcode(code)}; see train.log")
            return False
        return True  # our own child, still running (perhaps not yet exec'd, so /proc would not show "train")
    except ChildProcessError:
        pass  # not our child (started by another server process): fall through to the /proc check
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return b"core\x00train" in cmdline.read_bytes()  # alive, and still our trainer (pids are reused)
    except OSError:
        return False


def stop_job(run: RunDir) -> None:
    """Ask the trainer to stop; it finishes nothing more and resumes from its last checkpoint next time."""
    if job_running(run):
        os.kill(_read_json(run.path / "job.json")["pid"], signal.SIGTERM)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def runs_table(runs: list[RunDir]) -> pd.DataFrame:
    """One row per run: its recipe, where it is, and its best validation and final test figures."""
    rows = []
    for run in runs:
        info, status, test = run.info(), run.status(), run.test_figures()
        recipe, history = info.get("recipe", {}), status.history
        rows.append({
            "run": run.id, "backbone": info.get("backbone"),
            "state": status.state if run.is_active() or not status.active else "interrupted",
            "epochs": f"{len(history)}/{recipe.get('epochs')}",
            "image px": recipe.get("image_size"), "freeze": recipe.get("freeze"),
            "embedding": recipe.get("embedding_dim"), "triplet": recipe.get("triplet_weight"),
            "best val top-1": max((h["val_top1"] for h in history), default=None),
            "test top-1": test.get("top1"), "test precision@10": test.get("precision_at_10"),
            "test mAP@10": test.get("map_at_10"), "train min": round(status.train_seconds / 60, 1)
            if status.train_seconds is not None else None, "created": info.get("created"),
        })
    return pd.DataFrame(rows)
