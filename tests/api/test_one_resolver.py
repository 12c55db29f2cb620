"""One parameter resolver (issue 15.3): the start page, the API and the worker resolve training
parameters, presets and generation limits through gpu_worker.models.registry and get the same values.
Before, the BLIP-2 Quick preset trained 4 epochs from the page and 3 in the worker, and num_beams was
capped at 10 for training but 8 for evaluation."""
from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from gpu_worker.models import registry
from tests.jobs.test_training_job import dataset, models_synced  # noqa: F401

pytestmark = pytest.mark.django_db


def test_page_and_worker_resolve_every_model_and_preset_alike(models_synced):
    from training_app import services
    from training_app.models import PretrainedModel

    for spec in registry.all_specs():
        row = PretrainedModel.objects.get(key=spec.key)
        shown = services.preset_values(row)               # what the start page fills in
        for preset in registry.PRESETS:
            page, errors = services.resolve_params(row, {}, preset)   # what the page/API store in run.params
            assert not errors
            worker = registry.resolve_params(spec.key, preset=preset)
            assert page == worker == shown[preset], (spec.key, preset)
            assert registry.resolve_params(spec.key, page) == page    # the worker keeps stored params as they are
    assert registry.resolve_params("blip2", preset="quick")["epochs"] == 3  # never longer than its default


def test_api_run_params_are_what_the_worker_trains_with(client_for, members, dataset):  # noqa: F811
    from training_app.models import PretrainedModel, TrainingRun

    PretrainedModel.objects.filter(key="blip2").update(available=True)  # weights present, for this test
    r = client_for(members["editor"]).post("/api/v1/training-runs/",
                                            {"dataset": dataset.pk, "model": "blip2", "preset": "quick"},
                                            format="json")
    assert r.status_code == 202, r.content
    run = TrainingRun.objects.get(pk=r.json()["id"])
    assert run.params["epochs"] == 3
    assert registry.resolve_params("blip2", dict(run.params)) == run.params
    assert run.params == registry.resolve_params("blip2", preset="quick")


def test_start_page_shows_the_resolved_preset_values(client, members, dataset):  # noqa: F811
    client.force_login(members["editor"])
    r = client.get(reverse("training:start", args=[dataset.pk]))
    assert r.status_code == 200, r.status_code
    html = r.content.decode()
    info = json.loads(re.search(r'<script id="model-info" type="application/json">(.*?)</script>', html, re.S).group(1))
    for key, m in info.items():
        for preset, values in m["presets"].items():
            assert values == registry.resolve_params(key, preset=preset)
    # one beam limit on the training form and the evaluation forms
    assert re.search(r'name="num_beams"[^>]*max="8"|max="8"[^>]*name="num_beams"', html)


def test_one_generation_limit_for_training_evaluation_and_worker(client_for, members, dataset):  # noqa: F811
    from evaluation_app import serializers as S
    from evaluation_app.forms import SampleForm
    from gpu_worker.models.hf_common import gen_settings
    from training_app import services
    from training_app.models import PretrainedModel

    cap = registry.GEN_LIMITS["num_beams"]["max"]
    blip = PretrainedModel.objects.get(key="blip")
    _, errors = services.resolve_params(blip, {"num_beams": cap + 1})
    assert "num_beams" in errors and f"between 1 and {cap}" in errors["num_beams"]
    assert not services.resolve_params(blip, {"num_beams": cap})[1]
    assert S.PredictRequestSerializer().fields["num_beams"].max_value == cap
    assert S.EvaluationCreateSerializer().fields["num_beams"].max_value == cap
    assert SampleForm().fields["num_beams"].max_value == cap
    assert gen_settings({}, {"num_beams": cap + 5}, 1)["num_beams"] == cap
    assert gen_settings({}, {}, 1) == {"num_beams": 3, "num_return_sequences": 1, "max_new_tokens": 10}
    with pytest.raises(ValueError):
        registry.resolve_params("blip", {"num_beams": cap + 1})
    from evaluation_app.services import clamp_params

    assert clamp_params(blip, {"num_beams": 99, "max_new_tokens": "7"}) == {"top_k": 5, "num_beams": cap,
                                                                          "max_new_tokens": 7}


def test_feature_extractor_is_shown_on_run_and_dataset_pages(client, members, dataset, tmp_path):  # noqa: F811
    """Issue 11.2: the extractor used (name and weights) is recorded with the run and shown."""
    from gpu_worker.models.base import write_piggyback_json
    from gpu_worker.models.registry import get_spec
    from training_app.jobs import feature_extractor_of
    from training_app.models import PretrainedModel, TrainingRun

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    write_piggyback_json(str(model_dir), get_spec("lxmert"), features={
        "kind": "grid", "name": "ResNet grid 6x6", "weights": "pretrained: microsoft/resnet-50",
        "backbone": "microsoft/resnet-50", "id": "abc", "grid": 6, "dim": 2048})
    fx = feature_extractor_of(str(model_dir))
    assert fx["weights"] == "pretrained: microsoft/resnet-50" and "dim" not in fx
    assert feature_extractor_of(str(tmp_path)) is None  # a family without region features
    run = TrainingRun.objects.create(project=dataset.project, dataset=dataset,
                                     model=PretrainedModel.objects.get(key="lxmert"), params={},
                                     status="succeeded", metrics={"feature_extractor": fx})
    client.force_login(members["viewer"])
    html = client.get(reverse("training:detail", args=[run.pk])).content.decode()
    assert "Region features" in html and "ResNet grid 6x6 · pretrained: microsoft/resnet-50" in html
    html = client.get(reverse("datasets:detail", args=[dataset.pk])).content.decode()
    assert 'id="feature-extractors"' in html and "pretrained: microsoft/resnet-50" in html
