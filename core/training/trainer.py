"""Fine-tuning: the loop, augmentation, validation metrics, checkpoints and resume.

Reproducible by construction: every random choice of epoch ``e`` (shuffle order, augmentation, dropout) is drawn
from generators seeded with ``(seed, e)``, and a checkpoint is written after every epoch. A run killed mid-epoch
therefore resumes from its last checkpoint and, on CPU with the same thread count, ends with exactly the weights an
uninterrupted run would have had (on CUDA, cuDNN's backward kernels and bf16 make it equal only up to rounding).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay

from core.artifacts import ArtifactDir, save_npy
from core.catalog.base import Catalog
from core.catalog.registry import open_catalog
from core.catalog.splits import Splits
from core.config import Settings, TrainConfig
from core.model.backbone import backbone_spec, create_backbone, weights_fingerprint
from core.model.network import apply_freeze, build_net, start_tags_at_their_frequency, training_loss
from core.model.runs import RunDir, RunStatus, load_checkpoint, load_weights, run_id, runs_root, start_job
from core.photo.domain import ModelInput
from core.progress import Progress, no_progress
from core.search.metrics import best_tag_threshold, evaluate_workspace, nearest, quality_figures
from core.search.workspace import Workspace
from core.text import tags
from core.text.tags import DEFAULT_THRESHOLD
from core.threads import configure_threads
from core.training.augmentations import augment, photo_augment, strong_augment
from core.training.styles import GarmentMasks, garment_masks, style_augment

STATUS_EVERY_S = 2.0


class TrainingStopped(RuntimeError):
    """Raised when the caller asks the loop to stop; the last epoch's checkpoint is the resume point."""


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Trainer:
    """One run: the catalogue, the network, the optimiser and where its files go."""

    settings: Settings
    config: TrainConfig
    catalog: Catalog
    run: RunDir
    progress: Progress = no_progress
    should_stop: Callable[[], bool] = lambda: False

    def __post_init__(self) -> None:
        self.device = pick_device()
        configure_threads(self.settings)
        self.splits = Splits.of(self.catalog, self.config)
        self.tag_names = self.catalog.trained_tags()
        self.tags = torch.from_numpy(tags.binarize(self.catalog.items, self.tag_names)).to(self.device)
        self.labels = torch.from_numpy(self.catalog.labels.astype(np.int64)).to(self.device)
        # An in-memory catalogue is copied to the device once (mmaps are read-only); a file catalogue's images are
        # decoded per batch (core.catalog.item_files), so memory is bounded by the batch, not the catalogue.
        self.pixels = None if self.catalog.on_disk else torch.from_numpy(np.array(self.catalog.pixels)).to(self.device)
        self.colour = len(self.catalog.domain.shape) == 3
        spec = backbone_spec(self.settings.backbone)
        self.transform = ModelInput(self.config.image_size, spec.mean, spec.std)
        backbone = create_backbone(self.settings.backbone, weights_path=self.settings.weights_path)
        self.net = build_net(backbone, self.config, len(self.catalog.categories), len(self.tag_names))
        start_tags_at_their_frequency(self.net, self.tags[torch.as_tensor(self.splits.train, device=self.device)])
        self.frozen = apply_freeze(self.net, self.config)
        self.channels_last = self.config.freeze != "heads"
        self.net.to(self.device)
        if self.channels_last:  # measured 1.6x faster on CPU as well as on GPU (BENCHMARKS.md)
            self.net.to(memory_format=torch.channels_last)
        self.train_rows = self._epoch_rows()
        self.masks: GarmentMasks | None = None
        if self.config.style_augment > 0 and self.colour and self.config.freeze != "heads":
            self.masks = garment_masks(self.settings, self.catalog, self.splits.train, self.progress)
        self.batch_size = min(self.config.batch_size, len(self.train_rows))
        self.steps_per_epoch = len(self.train_rows) // self.batch_size  # whole batches: batch norm needs > 1
        self.optimizer = torch.optim.AdamW(param_groups_weight_decay(self.net, self.config.weight_decay),
                                           lr=self.config.lr)
        self.scheduler = self._schedule()
        self.features: torch.Tensor | None = None
        self.epoch, self.history, self.best_top1 = 0, [], -1.0

    # ---------------------------------------------------------------- pieces
    def _epoch_rows(self) -> np.ndarray:
        """The rows one epoch trains on: the train split, or with ``balance_catalogues`` on a union, every member's
        train rows repeated up to the largest member's count (whole copies, then the first rows again)."""
        train = self.splits.train
        if not (self.config.balance_catalogues and self.catalog.members):
            return train
        member_of = self.catalog.items["member"].to_numpy()[train]
        parts = [train[member_of == name] for name in self.catalog.members]
        largest = max(len(p) for p in parts)
        return np.sort(np.concatenate([np.resize(p, largest) for p in parts if len(p)]))

    def _schedule(self) -> torch.optim.lr_scheduler.LRScheduler:
        total = self.config.epochs * self.steps_per_epoch
        warmup = min(total - 1, round(self.config.warmup_epochs * self.steps_per_epoch))
        if self.config.schedule == "onecycle" and total >= 4:
            # OneCycleLR needs at least two steps in each phase
            return torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=self.config.lr, total_steps=total,
                                                       pct_start=min(max(warmup, 2), total - 2) / total)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    def inputs(self, rows: torch.Tensor | np.ndarray, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.pixels is None:
            batch = torch.from_numpy(self.catalog.domain_batch(torch.as_tensor(rows).cpu().numpy()))
            x = self.transform.resized(batch.to(self.device))
        else:
            x = self.transform.resized(self.pixels[torch.as_tensor(rows, device=self.device)])
        if generator is not None and self.config.photo_augment > 0 and not self.colour:
            x = photo_augment(x, generator, self.config.photo_augment)
        if generator is not None and self.masks is not None:
            masks, found = self.masks.batch(torch.as_tensor(rows).cpu().numpy(), x.device)
            x = style_augment(x, masks, found, generator, self.config.style_augment)
        x = self.transform.normalise(x)
        if generator is not None and self.config.augment:
            x = augment(x, generator, self.colour)
            if self.config.strong_augment:
                x = strong_augment(x, generator, self.colour)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    @torch.no_grad()
    def _cached_features(self) -> torch.Tensor:
        """The "heads" policy: backbone features of every item, computed once (on disk beside the run)."""
        store, name = ArtifactDir(self.run.path), f"features-{self.config.image_size}px.npy"
        path = store.file(name)
        if not store.verified(name):
            self._borrow_features(store, name)
        if store.verified(name):  # size and checksum recorded when written: a damaged cache is computed again
            features = np.load(path)
            if features.shape[0] == len(self.catalog):
                return torch.from_numpy(features).to(self.device)
        self.net.backbone.eval()
        out = []
        step = self.inference_rows
        for start in range(0, len(self.catalog), step):
            rows = np.arange(start, min(start + step, len(self.catalog)))
            with self._autocast():
                out.append(self.net.backbone(self.inputs(rows)).float().cpu())
            self.progress("Caching backbone features", int(rows[-1]) + 1, len(self.catalog))
        features = torch.cat(out).numpy()
        save_npy(path, features)
        store.record(name, shape=list(features.shape))
        return torch.from_numpy(features).to(self.device)

    def _borrow_features(self, store: ArtifactDir, name: str) -> None:
        """Link another heads-only run's cache of the same catalogue, backbone, weights and image size into this
        run: the frozen backbone's features do not depend on the rest of the recipe, and on 2 busy cores the pass over
        both built-in catalogues took 17.5 minutes while training the heads on it takes seconds (BENCHMARKS.md)."""
        mine = self.run.info()
        for other in sorted(self.run.path.parent.glob("*/run.json")):
            theirs, folder = RunDir(other.parent).info(), ArtifactDir(other.parent)
            same = all(theirs.get(k) == mine.get(k) for k in ("catalog", "backbone", "weights_path"))
            if other.parent == self.run.path or not same or theirs.get("recipe", {}).get("image_size") != \
                    self.config.image_size or not folder.verified(name):
                continue
            store.file(name).unlink(missing_ok=True)
            try:
                os.link(folder.file(name), store.file(name))
            except OSError:
                shutil.copyfile(folder.file(name), store.file(name))
            shape = list(np.load(store.file(name), mmap_mode="r").shape)
            store.record(name, shape=shape, borrowed_from=other.parent.name)
            return

    @torch.no_grad()
    def catalogue_features(self) -> np.ndarray:
        """What the served network (backbone + embedding layer) gives every item: for a heads-only run its
        embedding layer over the cached backbone features (no second backbone pass), else one eval pass over the
        catalogue (a union run fits its members' own heads on it), which then indexes it
        (``Workspace.open(features=…)``) instead of a second pass there."""
        self.net.eval()
        if self.features is not None:
            step = 4096
            return torch.cat([self.net.embedding(self.features[i : i + step]).float().cpu()
                              for i in range(0, len(self.features), step)]).numpy()
        out, step = [], self.inference_rows
        for start in range(0, len(self.catalog), step):
            rows = np.arange(start, min(start + step, len(self.catalog)))
            with self._autocast():
                out.append(self.net.embedding(self.net.backbone(self.inputs(rows))).float().cpu())
            self.progress("Embedding the catalogue with the trained network", int(rows[-1]) + 1, len(self.catalog))
        return torch.cat(out).numpy()

    def fit_member_heads(self, features: np.ndarray) -> dict[str, dict]:
        """Each member catalogue's own category head, for a union run: a softmax regression on the trained
        network's features of that member's train rows (validation and test rows left out), over its own
        categories. The shared-class head cannot tell a garment photo's "T-Shirt" from its "Polo", nor the shop's
        "Tanks" from its "Bras & Tanks"; each catalogue's own head can, and is what serves it."""
        from sklearn.linear_model import LogisticRegression

        items, heads = self.catalog.items, {}
        member_of = items["member"].to_numpy()
        for name in self.catalog.members:
            rows = self.splits.train[member_of[self.splits.train] == name]
            categories = list(dict.fromkeys(items["member_category"].iloc[rows]))
            if len(categories) < 2:
                continue
            order = {c: i for i, c in enumerate(sorted(categories))}
            labels = items["member_category"].iloc[rows].map(order).to_numpy()
            model = LogisticRegression(C=1.0, max_iter=2000).fit(features[rows], labels)
            heads[name] = {"categories": sorted(categories),
                           "weight": torch.from_numpy(model.coef_.astype(np.float32)),
                           "bias": torch.from_numpy(model.intercept_.astype(np.float32))}
        return heads

    def _forward(self, rows: torch.Tensor, generator: torch.Generator | None = None):
        with self._autocast():
            if self.features is not None:
                return self.net.heads(self.features[rows])
            return self.net(self.inputs(rows, generator))

    @property
    def inference_rows(self) -> int:
        """Items per forward pass outside training: 512 at Fashion-MNIST's 64 px, fewer as the pixels grow (41 at
        224 px), never under the settings' batch size. A fixed 512 at 224 px holds 512 × 32 × 112² floats per
        activation: measured on the garment photos, one validation pass of 512 items peaked at 7.1 GB and took
        19.7 s; 41 at a time, 1.6 GB and 8.3 s."""
        return max(self.settings.batch_size, 512 * 64 * 64 // self.config.image_size ** 2)

    @torch.no_grad()
    def predict(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Unit embeddings, category probabilities and tag probabilities for catalogue rows (eval mode)."""
        self.net.eval()
        embeddings, categories, tags = [], [], []
        batch = self.inference_rows
        for start in range(0, len(rows), batch):
            out = self._forward(torch.as_tensor(rows[start : start + batch], device=self.device))
            embeddings.append(F.normalize(out.embedding.float(), dim=1).cpu())
            categories.append(out.category_logits.float().softmax(1).cpu())
            if out.tag_logits is not None:
                tags.append(out.tag_logits.float().sigmoid().cpu())
        return {"embeddings": torch.cat(embeddings).numpy(), "categories": torch.cat(categories).numpy(),
                "tags": torch.cat(tags).numpy() if tags else np.zeros((len(rows), 0), np.float32)}

    def figures(self, rows: np.ndarray) -> dict[str, float]:
        """top-1/3/5, precision@10 and mAP@10 among the same rows; with tags, tag F1 at 0.5 and the threshold that
        serves these rows best (``tag_threshold``) with its micro-F1 (``tag_f1_micro_tuned``)."""
        predicted = self.predict(rows)
        labels = self.catalog.labels[rows]
        neighbours, _ = nearest(predicted["embeddings"], predicted["embeddings"], 10, query_rows=np.arange(len(rows)))
        tag_truth = self.tags[torch.as_tensor(rows, device=self.device)].cpu().numpy() > 0.5
        families = tags.tag_families(self.tag_names, self.catalog.tag_sources)
        decided = (tag_truth, tags.decide(predicted["tags"], families, DEFAULT_THRESHOLD)) if self.tag_names else None
        out = quality_figures(predicted["categories"], labels, labels[neighbours], labels, decided)
        if self.tag_names:
            out["tag_threshold"], out["tag_f1_micro_tuned"] = best_tag_threshold(tag_truth, predicted["tags"],
                                                                                 families=families)
        return out

    # ---------------------------------------------------------------- checkpoints
    def _payload(self, with_optimizer: bool, tag_threshold: float = DEFAULT_THRESHOLD) -> dict:
        payload = {"run": self.run.id, "backbone": self.settings.backbone, "catalog": self.catalog.key,
                   "categories": list(self.catalog.categories), "tags": self.tag_names, "tag_threshold": tag_threshold,
                   "recipe": self.config.as_dict(), "epoch": self.epoch, "history": self.history,
                   "feature_dim": self.net.embedding[0].in_features, "model": self.net.state_dict()}
        if with_optimizer:
            payload.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                           best_top1=self.best_top1)
        return payload

    def resume(self) -> bool:
        """Continue from checkpoint-last.pt when there is one; False when starting fresh."""
        if not self.run.last.is_file():
            return False
        state = load_checkpoint(self.run.last, backbone=self.settings.backbone, categories=self.catalog.categories)
        load_weights(self.net, state, self.run.last)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        self.best_top1 = float(state.get("best_top1", -1.0))
        return True

    # ---------------------------------------------------------------- the loop
    def fit(self) -> list[dict]:
        if self.config.freeze == "heads":
            self.features = self._cached_features()
        steps, started_all = self.steps_per_epoch, time.perf_counter()
        while self.epoch < self.config.epochs:
            epoch = self.epoch
            generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            torch.manual_seed(self.config.seed * 1_000_003 + epoch)  # dropout
            order = torch.from_numpy(self.train_rows)[torch.randperm(len(self.train_rows), generator=generator)]
            self.net.train()
            for module in self.frozen:
                module.eval()
            started, losses, last_status = time.perf_counter(), [], 0.0
            stage = f"Epoch {epoch + 1}/{self.config.epochs}"
            for step in range(steps):
                rows = order[step * self.batch_size : (step + 1) * self.batch_size].to(self.device)
                output = self._forward(rows, generator)
                loss = training_loss(output, self.labels[rows], self.tags[rows] if self.tag_names else None,
                                     self.config)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                losses.append(loss.detach())
                self.progress(stage, step + 1, steps)
                now = time.perf_counter()
                if now - last_status > STATUS_EVERY_S or step + 1 == steps:
                    last_status = now
                    rate = (step + 1) * self.batch_size / (now - started)
                    remaining = (steps - step - 1 + (self.config.epochs - epoch - 1) * steps) * self.batch_size
                    self.run.update_status(state="running", epoch=epoch + 1, epochs=self.config.epochs,
                                           step=step + 1, steps=steps, images_per_s=round(rate, 1),
                                           eta_s=round(remaining / max(rate, 1e-9)), history=self.history)
                if self.should_stop():
                    raise TrainingStopped(f"stopped in epoch {epoch + 1}; it resumes from epoch {epoch + 1}'s start")
            seconds = time.perf_counter() - started
            record = {"epoch": epoch + 1, "train_loss": float(torch.stack(losses).mean()),
                      "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2),
                      "images_per_s": round(steps * self.batch_size / seconds, 1),
                      **{f"val_{k}": v for k, v in self.figures(self.splits.val).items()}}
            self.history.append(record)
            self.epoch = epoch + 1
            # the first epoch with the best validation top-1, not a later tie: on the shop, later epochs with the
            # same validation top-1 had better tags but lost 2-6 of 66 test categories (BENCHMARKS.md)
            if record["val_top1"] > self.best_top1:
                self.best_top1 = record["val_top1"]
                threshold = record.get("val_tag_threshold", DEFAULT_THRESHOLD)
                self.run.save_checkpoint(self.run.best, self._payload(False, threshold))
            self.run.save_checkpoint(self.run.last, self._payload(with_optimizer=True))
            self.run.update_status(state="running", epoch=self.epoch, epochs=self.config.epochs, step=steps,
                                   steps=steps, history=self.history,
                                   train_seconds=round(time.perf_counter() - started_all, 1))
        return self.history


def prepare_run(settings: Settings, config: TrainConfig) -> tuple[Catalog, RunDir]:
    """Open the catalogue and the run directory for this recipe (created with its run.json if new)."""
    catalog = open_catalog(settings)
    rid = run_id(catalog.key, settings.backbone, weights_fingerprint(settings.backbone, settings.weights_path), config)
    run = RunDir(runs_root(settings) / rid)
    run.path.mkdir(parents=True, exist_ok=True)
    if not run.info_path.is_file():
        run.write_json("run.json", {"run": rid, "catalog": catalog.key, "catalog_name": catalog.name,
                                    "backbone": settings.backbone, "weights_path": settings.weights_path,
                                    "categories": catalog.categories, "tags": catalog.trained_tags(),
                                    "recipe": config.as_dict(),
                                    **({"members": catalog.members} if catalog.members else {}),
                                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return catalog, run


def train(settings: Settings, config: TrainConfig, progress: Progress = no_progress,
          should_stop: Callable[[], bool] = lambda: False, fresh: bool = False) -> RunDir:
    """Train (or resume, or do nothing if already complete) the run for this recipe, then build its embeddings
    and index and measure it on the test split (test.json); returns its directory.

    Holds the run's lock throughout, so a second trainer of the same run (a double click, a second tab, a terminal)
    stops at once with a clear error instead of overwriting this one's checkpoints."""
    catalog, run = prepare_run(settings, config)
    with run.training_lock():
        if fresh:
            run.clear()
        if run.is_complete():
            run.update_status(state="done", test=run.test_figures())
            return run

        previous = run.status().history
        run.write_status(RunStatus(state="starting", started=time.time(), updated=time.time(), history=previous))
        report = _reporting(run, progress, should_stop)
        try:
            trainer = Trainer(settings, config, catalog, run, report, should_stop)
            resumed = trainer.resume()
            run.update_status(state="running", resumed_from_epoch=trainer.epoch if resumed else None,
                              device=str(trainer.device))
            history = trainer.fit()
            known = None
            # a union run's own heads need every item's features; a heads-only run has them for free
            if trainer.features is not None or catalog.members:
                best = load_checkpoint(run.best)
                trainer.net.load_state_dict(best["model"])  # served: the best epoch's network, not the last one's
                known = trainer.catalogue_features()
            if catalog.members and "member_heads" not in best:
                best["member_heads"] = trainer.fit_member_heads(known)
                best.pop("format", None)
                run.save_checkpoint(run.best, best)
            del trainer  # frees the training copy of the catalogue and the optimiser state before indexing
            run.update_status(state="indexing", stage="loading the fine-tuned model")
            if catalog.members:
                figures = evaluate_members(settings.replace(run=run.id), catalog, report, known)
            else:
                figures = evaluate_run(settings.replace(run=run.id), report, known)
            figures["best_epoch"] = int(np.argmax([h["val_top1"] for h in history]) + 1)
            run.write_json("test.json", figures)
        except TrainingStopped:
            run.update_status(state="stopped")
            raise
        except BaseException as exc:
            run.update_status(state="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        run.update_status(state="done", test=figures)
    return run


def _reporting(run: RunDir, progress: Progress, should_stop: Callable[[], bool]) -> Progress:
    """``progress``, plus the run's status.json (at most every 2 s) so the Model page can follow feature caching
    and indexing, plus the stop request, so Stop also works outside the training steps."""
    last = [0.0]

    def report(stage: str, done: int, total: int) -> None:
        progress(stage, done, total)
        if not stage.startswith("Epoch") and (time.perf_counter() - last[0] > STATUS_EVERY_S or done >= total):
            last[0] = time.perf_counter()
            run.update_status(stage=stage, done=done, total=total)
        if should_stop():
            raise TrainingStopped(f"stopped during: {stage}")

    return report


def evaluate_run(settings: Settings, progress: Progress = no_progress, features: np.ndarray | None = None) -> dict:
    """Embeddings + index for the settings' model (built if missing; from ``features`` when given, see
    ``Workspace.open``), then its test-split figures."""
    return evaluate_workspace(Workspace.open(settings, progress, features))


def evaluate_members(settings: Settings, union: Catalog, progress: Progress = no_progress,
                     known: np.ndarray | None = None) -> dict:
    """A union run's test figures: each member catalogue served by the run (what the dashboard serves), and their
    query-weighted means as the run's own figures. The union itself is not indexed: its items are the members'.
    ``known``: the served network's features of every union item (heads-only runs), split by member."""
    member_of = union.items["member"].to_numpy()
    per_member = {name: evaluate_run(settings.replace(catalog=name), progress,
                                     None if known is None else known[member_of == name])
                  for name in union.members}
    queries = sum(f["queries"] for f in per_member.values())
    shared = set.intersection(*(set(k for k, v in f.items() if isinstance(v, float)) for f in per_member.values()))
    means = {k: sum(f[k] * f["queries"] for f in per_member.values()) / queries for k in sorted(shared)}
    return {"catalog": settings.catalog, "run": settings.run, "queries": queries,
            "averaged": "query-weighted mean over the member catalogues' test splits", **means, "members": per_member}


def start_training(settings: Settings, config: TrainConfig) -> RunDir:
    """Start ``python -m core train`` for this recipe in the background (the Model page's "Train"); the run's
    status.json reports its progress to whoever looks, and a reload or a second tab finds the same job."""
    catalog, run = prepare_run(settings, config)
    if run.is_complete() or run.is_active():
        return run
    argv = ["--catalog", settings.catalog, "--catalog-limit", str(settings.catalog_limit), "--backbone",
            settings.backbone, "--data-dir", str(settings.data_dir), "--artifacts-dir", str(settings.artifacts_dir)]
    if settings.weights_path:
        argv += ["--weights", str(settings.weights_path)]
    for name, value in config.as_dict().items():
        flag = "--" + name.replace("_", "-")
        argv += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    run.update_status(state="starting", error=None, started=time.time())
    start_job(run.path, argv)
    return run
