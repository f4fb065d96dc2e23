"""Fine-tuning on the generated catalogue with timm's tiny test network: it learns, it resumes exactly, its
metrics agree with scikit-learn, and bad checkpoints are refused with a clear message."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from conftest import encoded, synthetic_photos, tiny_settings
from sklearn.metrics import f1_score, top_k_accuracy_score

from core.catalog.splits import Splits
from core.config import TrainConfig
from core.model.backbone import create_backbone
from core.model.network import apply_freeze, batch_hard_triplet_loss, build_net, start_tags_at_their_frequency
from core.model.runs import CheckpointError, RunDir, list_runs, load_checkpoint, runs_table
from core.search.metrics import best_tag_threshold, nearest, retrieval_scores, tag_f1, top_k_accuracy
from core.search.workspace import Workspace
from core.training.trainer import Trainer, TrainingStopped, prepare_run, train

# Small batches so each epoch has several steps on 43 train items; the tiny network learns from scratch.
TINY_RECIPE = TrainConfig(epochs=10, batch_size=8, lr=3e-3, image_size=32, embedding_dim=32, warmup_epochs=1,
                          freeze="full")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    settings = tiny_settings(tmp_path_factory.mktemp("train"))
    return settings, train(settings, TINY_RECIPE.replace(triplet_weight=0.5))


def test_a_tiny_model_learns_the_tiny_catalogue(trained):
    settings, run = trained
    figures = run.test_figures()
    # 4 balanced categories: chance is 25 %. The test split was never trained on.
    assert figures["split"] == "test" and figures["queries"] == 16
    assert figures["top1"] >= 0.75 and figures["precision_at_10"] >= 0.6
    assert figures["tag_f1_micro"] >= 0.7  # round/angular and dark/muted are learnable from the image
    assert figures["classifier"] == "fine-tuned category head"
    history = run.history()
    assert len(history) == TINY_RECIPE.epochs and history[-1]["train_loss"] < history[0]["train_loss"]
    assert {"val_top1", "val_top3", "val_top5", "val_precision_at_10", "val_map_at_10", "val_tag_f1_macro",
            "val_tag_f1_samples"} <= set(history[0])
    assert run.status().state == "done"


def test_the_fine_tuned_model_serves_search_with_its_head(trained):
    settings, run = trained
    ws = Workspace.open(settings.replace(run=run.id))
    assert ws.embeddings.shape == (64, TINY_RECIPE.embedding_dim)
    assert ws.category_probs.shape == (64, 4) and np.allclose(np.sum(ws.category_probs, axis=1), 1, atol=1e-5)
    photos, items = synthetic_photos()
    result = ws.search(encoded(photos[52]), k=5)
    assert result.predicted_by == "the fine-tuned category head"
    assert result.predicted[0][0] == items.loc[52, "category"]
    assert abs(sum(p for _, p in result.predicted) - 1) < 1e-4
    # A different model, so a different artifact directory than the ImageNet-style baseline
    assert ws.store.path != Workspace.store_for(settings)
    assert ws.tag_probs().shape == (64, 4)


def test_the_same_recipe_resumes_instead_of_retraining(trained):
    settings, run = trained
    again = train(settings, TINY_RECIPE.replace(triplet_weight=0.5))
    assert again.id == run.id and again.last.stat().st_mtime == run.last.stat().st_mtime
    assert [r.id for r in list_runs(settings, run.info()["catalog"])] == [run.id]
    table = runs_table([run])
    assert table.loc[0, "state"] == "done" and table.loc[0, "epochs"] == "10/10"


def _trainer(settings, config, **kw) -> Trainer:
    catalog, run = prepare_run(settings, config)
    return Trainer(settings, config, catalog, run, **kw)


def assert_an_interrupted_run_resumes_to_the_same_weights(straight_settings, settings, config) -> None:
    """Train ``config`` straight through, then again in another folder killed in the middle of epoch 2 and resumed:
    the same weights and the same validation history (shared with the union runs' test)."""
    straight = _trainer(straight_settings, config)
    straight.fit()
    calls = {"n": 0}

    def stop_in_epoch_two() -> bool:  # a kill in the middle of epoch 2
        calls["n"] += 1
        return calls["n"] == straight.steps_per_epoch + 2

    with pytest.raises(TrainingStopped):
        _trainer(settings, config, should_stop=stop_in_epoch_two).fit()
    resumed = _trainer(settings, config)
    assert resumed.resume() and resumed.epoch == 1  # the last whole epoch
    resumed.fit()
    for (name, a), (_, b) in zip(straight.net.state_dict().items(), resumed.net.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert [h["val_top1"] for h in straight.history] == [h["val_top1"] for h in resumed.history]


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_resume_after_an_interruption_gives_the_same_weights(tmp_path, schedule):
    assert_an_interrupted_run_resumes_to_the_same_weights(tiny_settings(tmp_path / "a"), tiny_settings(tmp_path / "b"),
                                                          TINY_RECIPE.replace(epochs=3, schedule=schedule))


def test_validation_is_carved_from_train_and_test_is_untouched(settings):
    from core.catalog.registry import open_catalog

    catalog = open_catalog(settings)
    splits = Splits.of(catalog, TINY_RECIPE)
    assert set(splits.val).isdisjoint(splits.train) and set(splits.test).isdisjoint(splits.train)
    assert len(splits.val) == round(48 * TINY_RECIPE.val_fraction) and len(splits.test) == 16
    assert np.array_equal(splits.val, Splits.of(catalog, TINY_RECIPE).val)  # fixed seed
    assert not np.array_equal(splits.val, Splits.of(catalog, TINY_RECIPE.replace(seed=1)).val)


def test_freeze_policies_choose_what_learns():
    backbone = create_backbone("test_efficientnet")
    net = build_net(backbone, TINY_RECIPE.replace(freeze="heads"), 4, 2)
    apply_freeze(net, TINY_RECIPE.replace(freeze="heads"))
    assert not any(p.requires_grad for p in net.backbone.parameters())
    assert all(p.requires_grad for p in net.category_head.parameters())

    apply_freeze(net, TINY_RECIPE.replace(freeze="last", trainable_blocks=2))
    learns = {name.split(".")[0] + ("." + name.split(".")[1] if name.startswith("blocks") else "")
              for name, p in net.backbone.named_parameters() if p.requires_grad}
    assert learns == {"blocks.3", "blocks.4", "conv_head", "bn2"}

    apply_freeze(net, TINY_RECIPE)
    assert all(p.requires_grad for p in net.parameters())


def test_heads_only_policy_trains_on_cached_features(tmp_path):
    config = TINY_RECIPE.replace(freeze="heads", epochs=2)
    trainer = _trainer(tiny_settings(tmp_path), config)
    before = {k: v.clone() for k, v in trainer.net.backbone.state_dict().items()}
    trainer.fit()
    assert (trainer.run.path / "features-32px.npy").is_file()
    after = trainer.net.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # backbone untouched, BN statistics included


def test_invalid_recipes_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="freeze must be one of"):
        TrainConfig(freeze="some")
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        TrainConfig(epochs=0)


# ---------------------------------------------------------------- checkpoints
def test_checkpoints_load_with_weights_only(trained):
    _, run = trained
    state = torch.load(run.last, map_location="cpu", weights_only=True)
    assert state["epoch"] == TINY_RECIPE.epochs and "optimizer" in state and "scheduler" in state
    assert load_checkpoint(run.best)["categories"] == ["Square", "Disc", "Bar", "Ring"]


def test_a_checkpoint_of_another_model_is_refused(trained):
    _, run = trained
    with pytest.raises(CheckpointError, match="is for backbone 'test_efficientnet', not 'efficientnet_lite0'"):
        load_checkpoint(run.best, backbone="efficientnet_lite0")
    with pytest.raises(CheckpointError, match="trained on categories"):
        load_checkpoint(run.best, categories=["Shirt", "Dress"])


def test_a_truncated_or_foreign_checkpoint_is_refused(trained, tmp_path):
    _, run = trained
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(run.best.read_bytes()[: run.best.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a fine-tuning checkpoint"):
        load_checkpoint(foreign)

    class Payload:  # a pickle that would run code when loaded without weights_only
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Payload(), protocol=2))
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(evil)


def test_serving_a_damaged_run_says_so(trained, tmp_path):
    settings, run = trained
    with pytest.raises(CheckpointError, match="No fine-tuned run 'nope'"):
        RunDir.of(settings.replace(run="nope"))
    copy = tiny_settings(tmp_path)
    clone = RunDir(copy.artifacts_dir / "runs" / run.id)
    clone.path.mkdir(parents=True)
    (clone.path / "run.json").write_bytes(run.info_path.read_bytes())
    clone.best.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        Workspace.open(copy.replace(run=run.id))


# ---------------------------------------------------------------- metrics and losses
def test_a_run_serves_the_tag_threshold_its_validation_chose(trained):
    settings, run = trained
    best = load_checkpoint(run.best)
    chosen = [h for h in run.history() if h["epoch"] == best["epoch"]][0]
    assert 0.05 <= best["tag_threshold"] <= 0.95 and best["tag_threshold"] == chosen["val_tag_threshold"]
    assert chosen["val_tag_f1_micro_tuned"] >= chosen["val_tag_f1_micro"]  # 0.5 is one of the thresholds tried
    ws = Workspace.open(settings.replace(run=run.id))
    assert ws.tag_threshold == best["tag_threshold"] == run.test_figures()["tag_threshold"]


def test_the_best_tag_threshold_is_the_one_with_the_best_micro_f1():
    true = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    probs = np.array([[0.32, 0.1], [0.4, 0.2], [0.1, 0.33], [0.2, 0.05]])  # every real tag scores 0.3-0.4
    threshold, f1 = best_tag_threshold(true, probs)
    assert threshold == 0.3 and f1 == 1.0
    assert tag_f1(true, probs >= 0.5)["tag_f1_micro"] == 0.0
    # ties go to the threshold nearest 0.5: here everything from 0.35 to 0.95 misses the same way
    assert best_tag_threshold(np.array([[0, 0]]), np.array([[0.3, 0.1]]))[0] == 0.5


def test_the_tag_head_starts_at_each_tags_share():
    net = build_net(create_backbone("test_efficientnet"), TINY_RECIPE, n_categories=4, n_tags=3)
    tags = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float32)
    start_tags_at_their_frequency(net, tags)
    # a tag nobody has starts near 0, not at 0.5 (clamped at 1e-3 so its logit is finite)
    assert torch.allclose(net.tag_head.bias.sigmoid(), torch.tensor([0.75, 0.25, 1e-3]), atol=1e-4)


def test_top_k_accuracy_agrees_with_scikit_learn():
    rng = np.random.default_rng(0)
    scores = rng.random((200, 6))
    labels = rng.integers(0, 6, 200)
    for k in (1, 3, 5):
        assert top_k_accuracy(scores, labels, k) == pytest.approx(
            top_k_accuracy_score(labels, scores, k=k, labels=range(6)))


def test_tag_f1_agrees_with_scikit_learn_and_with_hand_counts():
    true = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    predicted = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
    figures = tag_f1(true, predicted)
    # micro: tp=4, fp=2, fn=1 → 2·4 / (2·4 + 2 + 1)
    assert figures["tag_f1_micro"] == pytest.approx(8 / 11)
    for average in ("macro", "samples"):
        assert figures[f"tag_f1_{average}"] == pytest.approx(f1_score(true, predicted, average=average,
                                                                      zero_division=0))


def test_nearest_and_retrieval_scores_match_a_brute_force_count():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(60, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = rng.integers(0, 3, 60)
    indices, scores = nearest(vectors, vectors, 10, query_rows=np.arange(60), chunk=7)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    expected = np.argsort(-sims, axis=1)[:, :10]
    assert np.array_equal(indices, expected) and np.allclose(scores, np.take_along_axis(sims, expected, axis=1))
    figures = retrieval_scores(labels[indices], labels, labels, k=10)
    assert figures["precision_at_10"] == pytest.approx(np.mean(labels[expected] == labels[:, None]))
    ap = []
    for q in range(60):
        hits = labels[expected[q]] == labels[q]
        ranks = np.flatnonzero(hits) + 1
        ap.append(np.sum(np.arange(1, len(ranks) + 1) / ranks) / min(10, np.sum(labels == labels[q]) - 1))
    assert figures["map_at_10"] == pytest.approx(np.mean(ap))


def test_batch_hard_triplet_loss_picks_the_hardest_pairs():
    # Two classes on a circle: anchor 0's farthest positive is at 90°, its closest negative at 45°.
    angles = np.radians([0, 90, 45, 180])
    embeddings = torch.tensor(np.stack([np.cos(angles), np.sin(angles)], 1), dtype=torch.float32)
    labels = torch.tensor([0, 0, 1, 1])
    chord = lambda degrees: 2 * np.sin(np.radians(degrees) / 2)  # noqa: E731
    expected = np.mean([max(chord(90) - chord(45) + 0.2, 0), max(chord(90) - chord(45) + 0.2, 0),
                        max(chord(135) - chord(45) + 0.2, 0), max(chord(135) - chord(90) + 0.2, 0)])
    assert batch_hard_triplet_loss(embeddings, labels, 0.2).item() == pytest.approx(expected, abs=1e-5)
    assert batch_hard_triplet_loss(embeddings, torch.tensor([0, 1, 2, 3]), 0.2).item() == 0.0  # no positives


def test_a_second_trainer_of_the_same_run_is_refused(tmp_path):
    settings = tiny_settings(tmp_path)
    config = TINY_RECIPE.replace(epochs=1)
    _, run = prepare_run(settings, config)
    with run.training_lock():
        assert run.is_active()
        with pytest.raises(RuntimeError, match="already training in another process"):
            train(settings, config)
    assert not run.is_active()


def test_training_a_finished_recipe_again_starts_nothing(trained):
    from core.training.trainer import start_training

    settings, run = trained
    again = start_training(settings, TINY_RECIPE.replace(triplet_weight=0.5))
    assert again.id == run.id and not (run.path / "job.json").exists()
    assert run.status().state == "done"


def test_onecycle_without_warm_up_trains(tmp_path):
    trainer = _trainer(tiny_settings(tmp_path), TINY_RECIPE.replace(epochs=1, schedule="onecycle", warmup_epochs=0))
    assert len(trainer.fit()) == 1


def test_top_k_does_not_credit_categories_nobody_voted_for():
    votes = np.array([[0.7, 0.3, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    assert top_k_accuracy(votes, np.array([2, 0]), 3) == 0.0
    assert top_k_accuracy(votes, np.array([1, 1]), 1) == 0.5


def test_photo_augment_changes_only_the_chosen_share_and_only_garment_pixels():
    from core.training.augmentations import photo_augment

    x = torch.zeros(64, 3, 16, 16)
    x[:, :, 4:12, 4:12] = torch.rand(64, 1, 8, 8) * 0.6 + 0.3
    out = photo_augment(x, torch.Generator().manual_seed(0), 0.5)
    changed = (out != x).flatten(1).any(dim=1)
    assert 16 <= int(changed.sum()) <= 48  # about half the batch
    assert torch.equal(out[:, :, :4], x[:, :, :4]) and torch.equal(out[..., 12:], x[..., 12:])  # background kept
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(photo_augment(x, torch.Generator().manual_seed(0), 0.0), x)
    with pytest.raises(ValueError, match="photo_augment must be in"):
        TrainConfig(photo_augment=1.5)


def test_strong_augment_crops_every_photo_and_erases_a_quarter_of_them():
    from core.training.augmentations import ERASE_SHARE, strong_augment

    ramp = torch.linspace(-1, 1, 32)
    x = (ramp.view(1, 1, 1, 32) + ramp.view(1, 1, 32, 1)).expand(200, 3, 32, 32) * 0.5  # smooth: no edge anywhere
    out = strong_augment(x.clone(), torch.Generator().manual_seed(0), colour=True)
    assert out.shape == x.shape and torch.equal(out, strong_augment(x.clone(), torch.Generator().manual_seed(0), True))
    steps = (out[..., 1:] - out[..., :-1]).abs().amax(dim=(1, 2, 3))
    erased = steps > 0.5  # a rectangle of noise; the crops and the jitter keep the ramp's small steps
    assert abs(float(erased.float().mean()) - ERASE_SHARE) < 0.1
    grey = strong_augment(x.clone(), torch.Generator().manual_seed(0), colour=False)  # no jitter: only the crop
    cropped = (grey[~erased][:, 0, 0, 0] - x[0, 0, 0, 0]).abs() > 1e-3  # the corner moved: zoomed in, shifted
    assert float(cropped.float().mean()) > 0.9
    assert "strong_augment" not in TrainConfig().identity()  # runs trained before it keep their ids


def test_a_recipe_without_photo_augment_keeps_its_run_id():
    assert "photo_augment" not in TrainConfig().identity()
    assert TrainConfig(photo_augment=0.5).identity()["photo_augment"] == 0.5
