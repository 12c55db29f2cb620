"""Training pages: start form (model menu, presets, advanced settings, errors), progress page, run list, project
section, page actions and downloads, tenancy (404) and roles (403)."""
from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from gpu_worker.models.registry import PRESETS
from piggyback.jobs import RunStatus
from tests.jobs.test_training_job import TINY, dataset, models_synced  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def web(client, owner):
    client.force_login(owner)
    return client


def test_start_page_offers_only_available_enabled_models(web, dataset, settings):
    from training_app.models import PretrainedModel

    PretrainedModel.objects.filter(key="baseline-bow").update(enabled=False)
    settings.GPU_WORKER_MEMORY_GB = 0
    url = reverse("training:start", args=[dataset.pk])
    assert url == f"/training/datasets/{dataset.pk}/start/"
    html = web.get(url).content.decode()
    options = re.findall(r'<option value="([^"]*)"', html)
    assert options[0] == "" and "baseline-rnn" in options
    # a newcomer who changes nothing gets the default model, marked as such
    assert re.search(r'<option value="baseline-rnn" selected>[^<]*\(default\)</option>', html)
    assert "baseline-bow" not in options and "blip" not in options and "vilt" not in options
    assert "Choose a model" in html and "Start fine-tuning" in html
    for preset in ("Quick", "Balanced", "Thorough"):
        assert preset in html
    assert 'id="advanced"' in html and 'class="collapse"' in html  # collapsed by default
    for field in ("epochs", "learning_rate", "batch_size", "warmup_ratio", "weight_decay", "val_fraction", "patience",
                  "grad_accum_steps", "seed", "max_train_items", "freeze_encoder", "num_beams", "max_new_tokens"):
        assert f'name="{field}"' in html, field
    assert 'max="100"' in html  # epochs limit rendered for the browser too
    info = json.loads(re.search(r'<script id="model-info" type="application/json">(.*?)</script>', html, re.S).group(1))
    assert set(info) == set(options[1:]) and info["baseline-rnn"]["default_params"]["epochs"] >= 1
    presets = json.loads(re.search(r'<script id="presets" type="application/json">(.*?)</script>', html, re.S).group(1))
    assert presets["quick"]["epochs"] < presets["thorough"]["epochs"]


def test_start_without_model_shows_red_error_and_starts_nothing(web, dataset):
    from training_app.models import TrainingRun

    r = web.post(reverse("training:start", args=[dataset.pk]), {"model": "", "preset": "balanced"})
    assert r.status_code == 200
    html = r.content.decode()
    assert "alert-danger" in html and "Choose a model to fine-tune." in html and "is-invalid" in html
    assert TrainingRun.objects.count() == 0


def test_start_with_bad_setting_shows_field_error(web, dataset):
    from training_app.models import TrainingRun

    r = web.post(reverse("training:start", args=[dataset.pk]),
                 {"model": "baseline-rnn", "preset": "balanced", "epochs": "500", "learning_rate": "0.001"})
    html = r.content.decode()
    assert r.status_code == 200 and "between 1 and 100" in html and "collapse show" in html
    assert TrainingRun.objects.count() == 0


def test_start_lands_on_progress_page_and_runs(web, owner, dataset, run_jobs, django_capture_on_commit_callbacks):
    from training_app.models import TrainingRun

    with django_capture_on_commit_callbacks(execute=True):
        r = web.post(reverse("training:start", args=[dataset.pk]), {
            "model": "baseline-rnn", "preset": "quick", "epochs": "2", "batch_size": "8", "val_fraction": "0.2",
            "patience": "0", "freeze_encoder": ["false"], "name": "My first model"})
    run = TrainingRun.objects.get()
    assert r.status_code == 302 and r.url == reverse("training:detail", args=[run.pk])
    assert run.name == "My first model" and run.params["epochs"] == 2 and run.params["freeze_encoder"] is False
    assert run.preset == "quick" and run.params["max_train_items"] == PRESETS["quick"]["max_train_items"]
    page = web.get(r.url).content.decode()
    assert "pbPoll" in page and f"/api/v1/training-runs/{run.pk}/" in page and "chart.umd.js" in page
    assert f"/evaluate/runs/{run.pk}/" in page and 'id="run-progress"' in page
    assert "Cancel" in page and "Re-run" in page and "Resume" in page
    run_jobs(("gpu",))
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    page = web.get(reverse("training:detail", args=[run.pk])).content.decode()
    assert "Download model (ZIP)" in page
    lst = web.get(reverse("training:list", args=[dataset.project_id])).content.decode()
    assert "My first model" in lst and f"{run.vqa_accuracy:.1f} %" in lst and " s</td>" in lst
    proj = web.get(f"/projects/{dataset.project_id}/").content.decode()
    assert 'id="training-section"' in proj and "My first model" in proj
    assert reverse("training:start", args=[dataset.pk]) in proj
    r = web.get(reverse("training:export", args=[run.pk]))
    assert r.status_code == 200 and r["Content-Disposition"].startswith("attachment")
    assert b"".join(r.streaming_content)[:2] == b"PK"


def test_page_actions_cancel_resume_rerun(web, owner, dataset, django_capture_on_commit_callbacks):
    from training_app import services
    from training_app.models import TrainingRun

    run = services.start_run(owner, dataset, "baseline-rnn", params=TINY)
    r = web.post(reverse("training:cancel", args=[run.pk]))
    assert r.status_code == 302
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    with django_capture_on_commit_callbacks(execute=True):
        web.post(reverse("training:resume", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.attempts == 2
    with django_capture_on_commit_callbacks(execute=True):
        r = web.post(reverse("training:rerun", args=[run.pk]))
    new = TrainingRun.objects.exclude(pk=run.pk).get()
    assert r.url == reverse("training:detail", args=[new.pk]) and new.rerun_of_id == run.pk
    # Export of an unfinished run: a message, no file.
    r = web.get(reverse("training:export", args=[run.pk]), follow=True)
    assert "Only a finished" in r.content.decode()


def test_outsiders_get_404_and_viewers_403(client, owner, members, dataset, make_user):
    from training_app import services

    run = services.start_run(owner, dataset, "baseline-rnn", params=TINY)
    client.force_login(make_user("eve"))
    for url in [reverse("training:start", args=[dataset.pk]), reverse("training:detail", args=[run.pk]),
                reverse("training:list", args=[dataset.project_id]), reverse("training:export", args=[run.pk])]:
        assert client.get(url).status_code == 404, url
    assert client.post(reverse("training:cancel", args=[run.pk])).status_code == 404
    client.force_login(members["viewer"])
    assert client.get(reverse("training:detail", args=[run.pk])).status_code == 200
    assert client.get(reverse("training:list", args=[dataset.project_id])).status_code == 200
    assert client.get(reverse("training:start", args=[dataset.pk])).status_code == 403
    assert client.post(reverse("training:cancel", args=[run.pk])).status_code == 403
    page = client.get(reverse("training:detail", args=[run.pk])).content.decode()
    assert 'id="cancel-form"' not in page  # no action buttons for viewers
    client.logout()
    assert client.get(reverse("training:detail", args=[run.pk])).status_code == 302
