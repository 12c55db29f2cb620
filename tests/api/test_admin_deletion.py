"""Deleting a project or a dataset in Django admin: the confirmation page gives a count per kind of row instead
of listing every row (a VQAv2-sized project takes about a million with it), says what blocks a deletion and which
permissions are missing, and the deletion itself goes through the same services as the pages and the API
(predictions in batches, stored files removed after the commit)."""
from __future__ import annotations

import pytest
from django.core.files.storage import default_storage

from tests.evaluation_helpers import (  # noqa: F401  (fixtures)
    baseline_model,
    make_dataset,
    make_run,
    trained_baseline_dir,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, make_user):
    user = make_user("root_admin", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


def test_project_deletion_counts_rows_and_goes_through_delete_project(
        client, staff, owner, project, make_run, django_capture_on_commit_callbacks):
    from datasets_app.models import DatasetItem
    from piggyback.models import Project

    run = make_run(project, user=owner)
    spare = make_dataset(project, n_images=2)
    items = DatasetItem.objects.filter(dataset__project=project)
    n_items = items.count()
    question = items.first().question
    image = spare.items.first().image
    assert default_storage.exists(image)

    page = client.get(f"/admin/piggyback/project/{project.pk}/delete/")
    assert page.status_code == 200
    text = page.content.decode()
    assert f"Project: {project.name} (with 2 datasets, {n_items:,} dataset items, 1 training run" in text
    assert question not in text  # no row listed one by one
    assert "protected" not in text.lower()

    with django_capture_on_commit_callbacks(execute=True):
        r = client.post(f"/admin/piggyback/project/{project.pk}/delete/", {"post": "yes"})
    assert r.status_code == 302
    assert not Project.objects.filter(pk=project.pk).exists() and not items.exists()
    assert not default_storage.exists(image)  # the stored files went too (the ORM cascade left them)
    assert not default_storage.exists(f"{run.output_dir}/model/config.json")


def test_dataset_deletion_lists_what_blocks_it_then_deletes_an_unused_one(
        client, staff, owner, project, make_run, django_capture_on_commit_callbacks):
    from datasets_app.models import Dataset

    run = make_run(project, user=owner)
    used = run.dataset
    page = client.get(f"/admin/datasets_app/dataset/{used.pk}/delete/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "would require deleting the following protected related objects" in text
    assert f"Training run: {run}" in text
    client.post(f"/admin/datasets_app/dataset/{used.pk}/delete/", {"post": "yes"})
    assert Dataset.objects.filter(pk=used.pk).exists()

    spare = make_dataset(project, n_images=2)
    image = spare.items.first().image
    n = spare.items.count()
    page = client.get(f"/admin/datasets_app/dataset/{spare.pk}/delete/")
    assert f"Dataset: {spare} (with {n:,} dataset items, and its stored files)" in page.content.decode()
    # the bulk action asks the same way, and deletes through delete_dataset too
    with django_capture_on_commit_callbacks(execute=True):
        r = client.post("/admin/datasets_app/dataset/", {"action": "delete_selected", "post": "yes",
                                                         "_selected_action": [str(spare.pk)]})
    assert r.status_code == 302
    assert not Dataset.objects.filter(pk=spare.pk).exists() and not default_storage.exists(image)


def test_missing_delete_permissions_are_named(client, make_user, project):
    from django.contrib.auth.models import Permission

    make_dataset(project, n_images=1)
    clerk = make_user("clerk", is_staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=["view_project", "delete_project"]))
    client.force_login(clerk)
    page = client.get(f"/admin/piggyback/project/{project.pk}/delete/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "doesn’t have permission to delete the following types of objects" in text or \
        "doesn't have permission to delete the following types of objects" in text
    assert "dataset item" in text
    r = client.post(f"/admin/piggyback/project/{project.pk}/delete/", {"post": "yes"})
    assert r.status_code == 403
