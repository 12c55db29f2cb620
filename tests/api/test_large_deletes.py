"""Deleting a project never loads all its predictions at once: a cascade would load every one (to set its
corrections' link to null), and a VQAv2-sized evaluation has 440,000. They go first, a batch at a time."""
from __future__ import annotations

import weakref

import pytest
from django.db.models.signals import post_init

from tests.evaluation_helpers import baseline_model, make_dataset  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


def _predictions(project, model, evaluation, n):
    from evaluation_app.models import Prediction

    Prediction.objects.bulk_create(
        Prediction(project=project, kind=Prediction.Kind.BATCH, evaluation=evaluation, model=model,
                   question=f"What is {i}?", answer="red", confidence=0.5) for i in range(n))


def test_project_deletion_loads_predictions_a_batch_at_a_time(client_for, owner, project, make_user, baseline_model,
                                                              monkeypatch):
    from datasets_app.models import Correction
    from evaluation_app import models as ev_models
    from evaluation_app.models import Evaluation, Prediction
    from piggyback.project_services import create_project

    monkeypatch.setattr(ev_models, "DELETE_BATCH", 5)
    ds = make_dataset(project, user=owner)
    ev = Evaluation.objects.create(project=project, model=baseline_model, dataset=ds, status="succeeded",
                                   images_file="", questions_file="", created_by=owner)
    _predictions(project, baseline_model, ev, 23)
    corrected = Prediction.objects.filter(evaluation=ev).first()
    Correction.objects.create(dataset=ds, prediction=corrected, image="x.png", question=corrected.question,
                              answer="blue", created_by=owner)
    # another project's predictions stay
    other_owner = make_user("otto")
    other = create_project(other_owner, "Other", "")
    other_ev = Evaluation.objects.create(project=other, model=baseline_model, status="succeeded", images_file="",
                                         questions_file="", created_by=other_owner)
    _predictions(other, baseline_model, other_ev, 4)

    alive, peak = set(), [0]

    def counted(sender, instance, **kwargs):
        key = id(instance)
        alive.add(key)
        peak[0] = max(peak[0], len(alive))
        weakref.finalize(instance, alive.discard, key)

    post_init.connect(counted, sender=Prediction)
    try:
        r = client_for(owner).delete(f"/api/v1/projects/{project.pk}/")
    finally:
        post_init.disconnect(counted, sender=Prediction)
    assert r.status_code == 204
    assert not Prediction.objects.filter(project_id=project.pk).exists()
    assert not Correction.objects.filter(dataset_id=ds.pk).exists()
    assert Prediction.objects.filter(project=other).count() == 4
    assert 1 <= peak[0] <= 2 * 5, peak   # at most about a batch alive at once, never the 23
