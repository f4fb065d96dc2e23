"""The Model page's background training job, end to end on the real built-in catalogue (a 300-item slice and
timm's tiny network, so it takes seconds): a detached `python -m core train` process that reports through
status.json, survives its caller, and can be stopped and resumed."""

from __future__ import annotations

import os
import time

import pytest

from core.catalog import fashion_mnist
from core.config import Settings, TrainConfig
from core.model.runs import job_running, stop_job
from core.training.trainer import start_training


@pytest.fixture
def real_settings(tmp_path) -> Settings:
    settings = Settings(artifacts_dir=tmp_path / "artifacts", catalog="fashion-mnist", catalog_limit=300,
                        backbone="test_efficientnet", n_trees=4)
    try:
        fashion_mnist.find_dir(settings.data_dir)
    except fashion_mnist.MissingDataError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the built-in catalogue: {exc}")
        pytest.skip(str(exc))
    return settings


def wait_for(condition, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError("timed out")


def test_a_background_job_trains_indexes_and_reports(real_settings):
    recipe = TrainConfig(epochs=2, batch_size=32, image_size=32, embedding_dim=32)
    run = start_training(real_settings, recipe)
    assert job_running(run)
    assert start_training(real_settings, recipe).id == run.id  # a second click finds the same job
    wait_for(lambda: not job_running(run), 240)
    status = run.status()
    assert status.state == "done", (run.path / "train.log").read_text()[-2000:]
    assert run.is_complete() and len(status.history) == 2
    assert status.test["queries"] == 43 and 0 <= status.test["top1"] <= 1  # 300 × 1/7 test items


def test_stop_ends_the_job_and_training_again_resumes(real_settings):
    recipe = TrainConfig(epochs=40, batch_size=8, image_size=32, embedding_dim=32)
    run = start_training(real_settings, recipe)
    wait_for(lambda: len(run.status().history) >= 1, 240)
    stop_job(run)
    wait_for(lambda: not job_running(run), 60)
    assert run.status().state == "stopped" and not run.is_complete()
    done = len(run.status().history)
    start_training(real_settings, recipe)
    wait_for(lambda: run.status().resumed_from_epoch is not None, 120)
    assert run.status().resumed_from_epoch >= done
    stop_job(run)
    wait_for(lambda: not job_running(run), 60)
