"""A newcomer's first run: samples the model has not seen, the project's path through the product, the demo data."""
from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tests.evaluation_helpers import (  # noqa: F401  (fixtures)
    TRAIN_PARAMS,
    baseline_model,
    make_dataset,
    make_run,
    run,
    trained_baseline_dir,
)

pytestmark = pytest.mark.django_db


def login(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def _images(samples, model=None):
    from datasets_app.models import DatasetItem

    return {DatasetItem.objects.get(pk=int(s["key"][1:])).image for s in samples}


def test_samples_come_from_the_validation_split_not_the_training_images(run):
    from datasets_app.services import training_items
    from evaluation_app.services import sample_images
    from gpu_worker.train import training_split

    samples, source = sample_images(run.project, run)
    items, _root = training_items(run.dataset)
    train, val = training_split(items, run.params)
    trained_on = {it["image"] for it in train}
    shown = {name.rsplit("/", 1)[-1] for name in _images(samples)}
    assert samples and shown and not (shown & trained_on)
    assert shown <= {it["image"] for it in val}
    assert "validation split" in source


def test_a_holdout_dataset_is_preferred_and_shared_images_are_left_out(run, owner):
    from datasets_app.models import DatasetItem
    from evaluation_app.services import sample_images

    holdout = make_dataset(run.project, n_images=3, user=owner)
    holdout.name = "Holdout"
    holdout.save()
    # a "version" of the training data that shares one of its image files must not leak that image
    shared = DatasetItem.objects.filter(dataset=run.dataset).first()
    DatasetItem.objects.filter(dataset=holdout).update(image=shared.image)
    samples, source = sample_images(run.project, run)
    assert "validation split" in source  # every holdout image is one the run trained on, so none is used

    other = make_dataset(run.project, n_images=2, user=owner)
    other.name = "Truly unseen"
    other.save()
    fresh = {f"new/{i}.png" for i in range(2)}
    originals = sorted(set(DatasetItem.objects.filter(dataset=other).values_list("image", flat=True)))
    assert len(originals) == 2
    for image, name in zip(originals, sorted(fresh)):
        DatasetItem.objects.filter(dataset=other, image=image).update(image=name)
    samples, source = sample_images(run.project, run)
    assert _images(samples) <= fresh and "Truly unseen" in source and "holdout" in source


def test_no_unseen_project_images_falls_back_to_the_easy_vqa_test_split(run):
    from evaluation_app.services import sample_images

    run.params = {**TRAIN_PARAMS, "val_fraction": 0.0}
    run.save()
    samples, source = sample_images(run.project, run)
    assert samples and all(s["key"].startswith("e") for s in samples) and "easy-VQA test split" in source


def test_the_page_says_where_the_samples_come_from(run, owner):
    html = login(owner).get(reverse("evaluation:run", args=[run.pk])).content.decode()
    assert 'id="samples-source"' in html and "kept out of training" in html


def test_project_page_shows_the_next_step_until_each_is_done(project, owner, members, make_run):
    from evaluation_app.models import Evaluation, Prediction

    c = login(owner)
    url = reverse("projects:detail", args=[project.pk])

    def steps():
        r = c.get(url)
        assert r.status_code == 200
        return r.context["first_steps"], r.content.decode()

    first, html = steps()
    assert [s.key for s in first] == ["dataset", "train", "ask", "batch"] and not any(s.done for s in first)
    assert first[0].is_next and reverse("datasets:upload", args=[project.pk]) in html and "Next step" in html

    run = make_run(project, user=owner)  # a ready dataset and a finished run
    first, html = steps()
    assert [s.done for s in first] == [True, True, False, False] and first[2].is_next
    assert reverse("evaluation:run", args=[run.pk]) in html

    Prediction.objects.create(project=project, user=owner, kind="sample", training_run=run, image="x.png",
                              question="q?", answer="a")
    first, _ = steps()
    assert first[3].is_next and f"{reverse('evaluation:run', args=[run.pk])}?tab=batch" == first[3].url

    Evaluation.objects.create(project=project, training_run=run, images_file="a.zip", questions_file="b.csv")
    first, html = steps()
    assert first is None and 'id="first-steps"' not in html

    # a viewer sees the steps but no buttons to act
    Evaluation.objects.all().delete()
    viewer_page = login(members["viewer"]).get(url)
    assert viewer_page.context["first_steps"][3].url is None


def test_demo_datasets_are_the_train_split_and_a_holdout_test_split(project, owner, run_jobs, settings, tmp_path,
                                                                     django_capture_on_commit_callbacks):
    from datasets_app.models import Dataset
    from datasets_app.services import DEMO_HOLDOUT_NAME, DEMO_TRAIN_NAME, create_demo_datasets

    settings.VAR_DIR = tmp_path
    with django_capture_on_commit_callbacks(execute=True):
        create_demo_datasets(owner, project, max_images=6)
    run_jobs()
    train = Dataset.objects.get(project=project, name=DEMO_TRAIN_NAME)
    holdout = Dataset.objects.get(project=project, name=DEMO_HOLDOUT_NAME)
    assert train.status == holdout.status == "succeeded"
    assert train.counts["images_kept"] == holdout.counts["images_kept"] == 6
    assert train.items.count() > 0 and holdout.items.count() > 0
    # the holdout's pictures are not the training pictures (easy-VQA numbers each split's files from 0)
    from piggyback.files import local_copy

    def digests(ds):
        import hashlib

        return {hashlib.sha256(local_copy(name).read_bytes()).hexdigest()
                for name in set(ds.items.values_list("image", flat=True))}

    assert not (digests(train) & digests(holdout))


def test_predictions_and_evaluations_name_exactly_one_target(run, baseline_model, owner):
    from django.db import IntegrityError, transaction

    from evaluation_app.models import Evaluation, Prediction
    from piggyback.targets import target_of

    common = dict(project=run.project, user=owner, kind="single", image="x.png", question="q?", answer="a")
    for fields in ({}, {"training_run": run, "model": baseline_model}):
        with pytest.raises(IntegrityError), transaction.atomic():
            Prediction.objects.create(**common, **fields)
        with pytest.raises(IntegrityError), transaction.atomic():
            Evaluation.objects.create(project=run.project, images_file="a.zip", questions_file="b.csv", **fields)
    for target in (run, baseline_model):
        p = Prediction.objects.create(**common, **target.target_fields())
        assert target_of(p) == target and p.pk
        assert target.as_target_dict() == {"type": target.target_type, "id": target.pk, "name": str(target)}
    assert run.pretrained == baseline_model == baseline_model.pretrained
    assert run.trained_on_dataset_id == run.dataset_id and baseline_model.trained_on_dataset_id is None
