"""RunStatus, what a run's status.json holds: what the Model page and the runs table make of it, how tolerant reading
is of old or damaged files, and how RunDir writes it. No training: statuses are written by hand."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from core.model.runs import RECENT_S, RunDir, RunStatus, job_running, runs_table


@pytest.fixture
def run(tmp_path) -> RunDir:
    path = tmp_path / "some-run"
    path.mkdir()
    return RunDir(path)


def test_a_running_status_reports_steps_done_and_speed():
    status = RunStatus(state="running", epoch=2, epochs=4, step=5, steps=10, images_per_s=123.4, eta_s=150)
    assert status.fraction(99) == pytest.approx((1 * 10 + 5) / (4 * 10))
    assert status.progress_text("r1", 99) == "`r1` · epoch 2/4, step 5/10 · 123 images/s · about 2 min left"
    # before the trainer reports its epochs and steps: the recipe's epochs, one step
    early = RunStatus(state="running", epoch=1)
    assert early.fraction(8) == 0.0 and early.progress_text("r1", 8).startswith("`r1` · epoch 1/8, step 0/1 · 0 ")
    assert RunStatus(state="running", epoch=1, epochs=2, step=1, steps=1).fraction(2) == 0.5
    assert RunStatus(state="running", epoch=0, epochs=2, steps=3).fraction(2) == 0.0
    assert RunStatus(state="running", epoch=3, epochs=2, step=9, steps=3).fraction(2) == 1.0  # clamped


def test_an_indexing_status_reports_its_stage():
    status = RunStatus(state="indexing", epoch=4, epochs=4, step=10, steps=10, stage="Embedding", done=30, total=120)
    assert status.fraction(4) == 0.25  # the stage's items, not the (finished) training steps
    assert status.progress_text("r1", 4) == "`r1` · indexing: Embedding"
    assert RunStatus(state="indexing").fraction(4) == 0.0
    assert RunStatus(state="indexing").progress_text("r1", 4) == "`r1` · indexing: …"


def test_a_starting_or_new_status_shows_no_progress():
    for state in ("starting", "new", "done", "stopped"):
        status = RunStatus(state=state, epoch=2, epochs=4, step=5, steps=10, done=3, total=4)
        assert status.fraction(4) == 0.0
    assert RunStatus(state="starting", stage="Caching features").progress_text("r1", 4) == \
        "`r1` · starting: Caching features"
    assert RunStatus().progress_text("r1", 4) == "`r1` · starting: …"  # no file yet


def test_active_states():
    assert [s for s in ("new", "starting", "running", "indexing", "done", "stopped", "failed")
            if RunStatus(state=s).active] == ["starting", "running", "indexing"]


def test_a_stale_active_state_is_reported_as_stopped_unexpectedly():
    now = time.time()
    status = RunStatus(state="running", epoch=3, updated=now - 60)
    assert status.problem("r1", now) == ("warning", "Run `r1` stopped unexpectedly at epoch 3; training it again "
                                                    "resumes from its last checkpoint. See its train.log.")
    assert RunStatus(state="indexing", updated=now).problem("r1", now)[1].startswith(
        "Run `r1` stopped unexpectedly at epoch 0;")
    assert RunStatus(state="running", epoch=3, updated=now - RECENT_S - 1).problem("r1", now) is None  # old news
    assert RunStatus(state="running", epoch=3).problem("r1") is None  # never written: updated 0


def test_a_failure_is_reported_with_its_error():
    now = time.time()
    status = RunStatus(state="failed", error="RuntimeError: out of memory", updated=now - 10)
    assert status.problem("r1", now) == ("error", "Run `r1` failed: RuntimeError: out of memory")
    assert RunStatus(state="failed", updated=now - RECENT_S - 1).problem("r1", now) is None
    for state in ("done", "stopped", "new"):
        assert RunStatus(state=state, updated=now).problem("r1", now) is None


def test_a_missing_or_damaged_file_reads_as_the_default_status(run):
    assert run.status() == RunStatus() and run.status().state == "new" and run.history() == []
    for damaged in (b"{\"state\": \"runn", b"\x00\xff\xfe garbage", b"[1, 2, 3]", b"\"running\"", b"null", b""):
        (run.path / "status.json").write_bytes(damaged)
        assert run.status() == RunStatus(), damaged


def test_an_older_file_with_other_keys_and_types_reads_what_it_can(run):
    (run.path / "status.json").write_text(json.dumps({
        "state": "running", "epoch": 2, "epochs": 5, "steps": "ten", "step": True, "eta_s": 90,
        "history": [{"epoch": 1, "val_top1": 0.5}], "phase": "training", "loss": 0.3, "test": [],
        "error": None, "train_seconds": 12.5}))
    status = run.status()
    assert (status.state, status.epoch, status.epochs, status.eta_s, status.train_seconds) == ("running", 2, 5, 90,
                                                                                                12.5)
    assert status.steps == 0 and status.step == 0 and status.test == {}  # wrong types: the defaults
    assert run.history() == [{"epoch": 1, "val_top1": 0.5}]
    assert not hasattr(status, "phase") and "loss" not in status.as_dict()
    (run.path / "status.json").write_text(json.dumps({"state": 3, "history": [1, 2], "updated": "yesterday"}))
    assert run.status() == RunStatus()


def test_update_status_changes_fields_and_the_time(run):
    run.write_status(RunStatus(state="starting", started=100.0, updated=100.0, history=[{"epoch": 1}]))
    before = time.time()
    run.update_status(state="running", epoch=2, device="cpu")
    status = run.status()
    assert (status.state, status.epoch, status.device, status.started) == ("running", 2, "cpu", 100.0)
    assert status.history == [{"epoch": 1}] and status.updated >= before
    assert RunStatus.from_dict(json.loads((run.path / "status.json").read_text())) == status


def test_update_status_with_an_unknown_field_raises(run):
    run.update_status(state="running")
    written = (run.path / "status.json").read_text()
    with pytest.raises(TypeError):
        run.update_status(epcoh=3)
    assert (run.path / "status.json").read_text() == written  # nothing written


def test_the_runs_table_calls_a_stale_active_run_interrupted(run):
    run.write_status(RunStatus(state="running", epoch=1, history=[{"epoch": 1, "val_top1": 0.4}],
                               train_seconds=90.0))
    row = runs_table([run]).iloc[0]
    assert row["state"] == "interrupted" and row["best val top-1"] == 0.4 and row["train min"] == 1.5
    run.update_status(state="done")
    assert runs_table([run]).iloc[0]["state"] == "done"
    (run.path / "status.json").unlink()
    row = runs_table([run]).iloc[0]
    assert row["state"] == "new" and row["train min"] is None


def test_a_job_that_died_without_a_word_is_marked_failed(run):
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    deadline = time.time() + 30
    while time.time() < deadline and not open(f"/proc/{child.pid}/stat").read().split(")")[1].split()[0] == "Z":
        time.sleep(0.05)  # ended, not yet reaped: job_running reaps it
    run.write_json("job.json", {"pid": child.pid})
    run.write_status(RunStatus(state="running", epoch=2, updated=time.time()))
    assert not job_running(run)
    status = run.status()
    assert status.state == "failed" and status.epoch == 2
    assert status.error == "the training process ended with exit status 3; see train.log"
    child.returncode = 3  # reaped by job_running; keeps Popen from waiting for it again
