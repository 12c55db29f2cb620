"""Training jobs on the real PostgreSQL + Redis with a real RQ SimpleWorker: succeed, cancel, resume, fail.

The datasets are built directly from easy-VQA (Dataset + DatasetItem rows, images in the storage), so these
tests do not depend on the cleaning job. Helpers here are also imported by the other training test files.
"""
from __future__ import annotations

import threading
import time

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from gpu_worker.models.registry import PRESETS
from piggyback.jobs import RunStatus

TINY = {"epochs": 2, "batch_size": 8, "val_fraction": 0.2, "patience": 0}
SLOW = {"epochs": 40, "batch_size": 2, "val_fraction": 0.2, "patience": 0}


def make_easyvqa_dataset(project, user, *, max_images=5, with_answers=True, name="easy-VQA shapes"):
    """A cleaned (succeeded) Dataset with ~10 questions per image, images stored like the cleaning job does."""
    import os

    from datasets_app.models import Dataset, DatasetItem
    from gpu_worker.easyvqa import load_items

    items, root = load_items("train", max_images=max_images, seed=1)
    ds = Dataset.objects.create(project=project, name=name, created_by=user, images_file="x/images.zip",
                                questions_file="x/questions.csv", status=RunStatus.SUCCEEDED, progress=1.0,
                                has_answers=with_answers)
    prefix = f"projects/{project.pk}/datasets/{ds.pk}/images"
    stored = {}
    for it in items:
        if it["image"] not in stored:
            with open(os.path.join(root, it["image"]), "rb") as fh:
                stored[it["image"]] = default_storage.save(f"{prefix}/{it['image']}", ContentFile(fh.read()))
    DatasetItem.objects.bulk_create([
        DatasetItem(dataset=ds, row=i + 2, image=stored[it["image"]], image_original_name=it["image"],
                    image_width=64, image_height=64, question=it["question"],
                    answers=it["answers"] if with_answers else [], original_answers=it["answers"][:1],
                    answer_type=it["answer_type"], question_type=it["question_type"])
        for i, it in enumerate(items)
    ])
    ds._update(counts={"questions": len(items), "images": len(stored)})
    return ds


@pytest.fixture
def models_synced(db):
    from training_app.registry_sync import sync_models

    sync_models()


@pytest.fixture
def dataset(project, owner, models_synced):
    return make_easyvqa_dataset(project, owner)


def wait_for(predicate, timeout=60.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def _start(user, dataset, params):
    from training_app import services

    return services.start_run(user, dataset, "baseline-rnn", params=params)


# ------------------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_tiny_baseline_trains_to_completion_with_live_metrics(owner, dataset, run_jobs):
    from training_app.models import TrainingRun

    run = _start(owner, dataset, TINY)
    assert run.status == RunStatus.QUEUED and run.rq_job_id == f"train-{run.pk}-1"
    run_jobs(("gpu",))
    run = TrainingRun.objects.get(pk=run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.progress == 1.0 and run.vqa_accuracy is not None and 0 <= run.vqa_accuracy <= 100
    m = run.metrics
    assert [e["epoch"] for e in m["epochs"]] == [1, 2]
    assert all(e["val_vqa_accuracy"] is not None for e in m["epochs"])
    assert m["loss_curve"] and all(p["loss"] > 0 for p in m["loss_curve"])
    assert m["vqa_accuracy"] == run.vqa_accuracy and m["num_train"] + m["num_val"] == dataset.items.count()
    assert run.device.startswith("CPU") or run.device.startswith("GPU")
    assert "epoch 2/2" in run.log and "finished" in run.log
    out = default_storage.path(run.output_dir)
    import os

    assert os.path.isfile(os.path.join(out, "model", "config.json"))
    assert os.path.isfile(os.path.join(out, "metrics.json")) and os.path.isfile(os.path.join(out, "train.log"))


@pytest.mark.django_db(transaction=True)
def test_cancel_queued_run_never_starts(owner, dataset, run_jobs):
    from training_app import services
    from training_app.models import TrainingRun

    run = _start(owner, dataset, TINY)
    services.cancel_run(owner, run)
    run_jobs(("gpu",))
    run = TrainingRun.objects.get(pk=run.pk)
    assert run.status == RunStatus.CANCELLED and run.started_at is None
    with pytest.raises(services.RunStateError, match="nothing to cancel"):
        services.cancel_run(owner, run)


def _cancel_when(run_pk, user, min_epochs=1):
    """In another thread (own DB connection): cancel once the run has finished ``min_epochs`` epochs."""
    from django.db import connection

    from training_app import services
    from training_app.models import TrainingRun

    def target():
        try:
            row = wait_for(lambda: (r := TrainingRun.objects.get(pk=run_pk)).status == RunStatus.RUNNING
                           and len((r.metrics or {}).get("epochs") or []) >= min_epochs and r, timeout=120)
            services.cancel_run(user, row)
        finally:
            connection.close()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


@pytest.mark.django_db(transaction=True)
def test_cancel_running_then_resume_continues_from_checkpoint(owner, dataset, run_jobs):
    from training_app import services
    from training_app.models import TrainingRun

    run = _start(owner, dataset, SLOW)
    t = _cancel_when(run.pk, owner, min_epochs=2)
    run_jobs(("gpu",))
    t.join(10)
    run = TrainingRun.objects.get(pk=run.pk)
    assert run.status == RunStatus.CANCELLED, (run.status, run.error)
    done = len(run.metrics["epochs"])
    assert 2 <= done < SLOW["epochs"]
    assert "checkpoint saved" in run.log
    # Resume: same row, continues after the cancelled epoch (fewer epochs to train this time).
    run = services.resume_run(owner, TrainingRun.objects.get(pk=run.pk))
    assert run.status == RunStatus.QUEUED and run.attempts == 2
    run_jobs(("gpu",))
    run = TrainingRun.objects.get(pk=run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert "resuming from epoch" in run.log
    epochs = [h["epoch"] for h in run.metrics["history"]]
    assert epochs == list(range(1, SLOW["epochs"] + 1))  # continued after the cancel, none repeated
    assert [e["epoch"] for e in run.metrics["epochs"]] == epochs
    assert run.vqa_accuracy is not None


@pytest.mark.django_db(transaction=True)
def test_corrupt_image_fails_with_readable_message_and_rerun_makes_new_row(owner, dataset, run_jobs):
    from training_app import services
    from training_app.models import TrainingRun

    run = _start(owner, dataset, TINY)
    name = dataset.items.first().image
    with open(default_storage.path(name), "wb") as fh:
        fh.write(b"this is not a PNG")
    run_jobs(("gpu",))
    run = TrainingRun.objects.get(pk=run.pk)
    assert run.status == RunStatus.FAILED
    assert "Could not read the image" in run.error and "Traceback" not in run.error
    assert "Traceback" in run.traceback
    new = services.rerun(owner, run)
    assert new.pk != run.pk and new.rerun_of_id == run.pk and new.params == run.params
    assert new.status == RunStatus.QUEUED


@pytest.mark.django_db(transaction=True)
def test_answers_removed_after_start_fail_readably(owner, dataset, run_jobs):
    from training_app.models import TrainingRun

    run = _start(owner, dataset, TINY)
    dataset.items.update(answers=[])
    run_jobs(("gpu",))
    run = TrainingRun.objects.get(pk=run.pk)
    assert run.status == RunStatus.FAILED and "no questions with answers" in run.error


@pytest.mark.django_db
def test_start_rules(owner, project, members, models_synced, settings):
    from training_app import services
    from training_app.models import PretrainedModel

    ds = make_easyvqa_dataset(project, owner, max_images=2)
    with pytest.raises(services.TrainingError) as exc:
        services.start_run(owner, ds, None)
    assert exc.value.errors["model"] == "Choose a model to fine-tune."
    with pytest.raises(services.TrainingError) as exc:
        services.start_run(owner, ds, "baseline-rnn", params={"epochs": 500, "learning_rate": "fast", "bogus": 1})
    errs = exc.value.errors
    assert "between 1 and 100" in errs["epochs"] and "number" in errs["learning_rate"] and "bogus" in errs
    with pytest.raises(services.TrainingError) as exc:
        services.start_run(owner, ds, "vilt")  # no weights offline
    assert "not available" in exc.value.errors["model"]
    PretrainedModel.objects.filter(key="baseline-bow").update(enabled=False)
    with pytest.raises(services.TrainingError, match="disabled"):
        services.start_run(owner, ds, "baseline-bow")
    unlabelled = make_easyvqa_dataset(project, owner, max_images=1, with_answers=False, name="no answers")
    with pytest.raises(services.TrainingError) as exc:
        services.start_run(owner, unlabelled, "baseline-rnn")
    assert "answers" in exc.value.errors["dataset"]
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        services.start_run(members["viewer"], ds, "baseline-rnn")
    # Presets overlay the defaults; explicit params win; queue follows CPU_ONLY for baselines.
    settings.CPU_ONLY = True
    run = services.start_run(members["editor"], ds, "baseline-rnn", preset="quick", params={"epochs": 2})
    assert run.params["epochs"] == 2 and run.params["max_train_items"] == PRESETS["quick"]["max_train_items"] and run.preset == "quick"
    assert services.queue_for(run.model) == "default"
    settings.CPU_ONLY = False
    assert services.queue_for(run.model) == "gpu"
    # Memory warning for big models vs. the workers' memory.
    blip = PretrainedModel.objects.get(key="blip")
    settings.GPU_WORKER_MEMORY_GB = 4
    assert "GPU memory" in services.memory_warning(blip) and "4 GB" in services.memory_warning(blip)
    settings.GPU_WORKER_MEMORY_GB = 80
    assert services.memory_warning(blip) == ""


def test_live_metrics_reads_fields_not_the_stage_text(monkeypatch):
    """training_app.jobs.LiveMetrics fills run.metrics from the report's fields; the stage line is free text."""
    from types import SimpleNamespace

    from training_app import jobs

    live = jobs.LiveMetrics(SimpleNamespace(pk=1, metrics={}), min_interval=1e9)
    monkeypatch.setattr(live, "flush", lambda with_log=False: None)
    fields = {"epoch": 2, "epochs_total": 3, "step": 5, "steps_per_epoch": 10, "loss": 0.5, "eta_seconds": 7.0}
    live.report_wrapper(lambda *a, **k: None)(0.5, "Zweite Epoche läuft", fields)
    live(fields)
    m = live.data
    assert (m["epoch"], m["epochs_total"], m["step"], m["steps_per_epoch"]) == (2, 3, 5, 10)
    assert m["loss_curve"] == [{"x": 1.5, "loss": 0.5}] and m["eta_seconds"] == 7.0
    live(dict(fields, step=10, epoch_done=True, val_vqa_accuracy=40.0))
    assert m["epochs"] == [{"epoch": 2, "loss": 0.5, "val_vqa_accuracy": 40.0}]
    assert m["loss_curve"][-1] == {"x": 2.0, "loss": 0.5}

