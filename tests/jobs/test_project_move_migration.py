"""Project and Membership moved from datasets_app to the core app (piggyback) with state-only migrations:
the rows stay where they were, and what pointed at them still does."""
from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("datasets_app", "0004_merge_20261130_1356"), ("piggyback", "0001_initial"),
          ("training_app", "0002_rename_resumed_from_rerun_of"), ("evaluation_app", "0005_exactly_one_target")]


@pytest.mark.slow
def test_existing_projects_memberships_and_datasets_survive_the_move(transactional_db, django_user_model):
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    user = old.get_model("auth", "User").objects.create(username="ada")
    OldProject = old.get_model("datasets_app", "Project")
    project = OldProject.objects.create(name="Kept", owner_id=user.pk)
    old.get_model("datasets_app", "Membership").objects.create(project=project, user_id=user.pk, role="owner")
    old.get_model("datasets_app", "Dataset").objects.create(project=project, name="d", images_file="a.zip",
                                                            questions_file="b.csv")
    with connection.cursor() as cur:  # an old deployment's content type (the test database was made at the latest state)
        cur.execute("DELETE FROM django_content_type WHERE app_label = 'piggyback' AND model = 'project'")
        cur.execute("INSERT INTO django_content_type (app_label, model) VALUES ('datasets_app', 'project') ON CONFLICT DO NOTHING")

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(latest)

    from piggyback.models import Membership, Project

    moved = Project.objects.get(pk=project.pk)
    assert moved.name == "Kept" and moved.owner.username == "ada"
    assert list(Membership.objects.filter(project=moved).values_list("user__username", "role")) == [("ada", "owner")]
    assert [d.name for d in moved.datasets.all()] == ["d"]
    assert Project._meta.db_table == "datasets_app_project" and Project._meta.app_label == "piggyback"
    from django.contrib.contenttypes.models import ContentType as CT

    assert CT.objects.filter(app_label="piggyback", model="project").exists()
    assert not CT.objects.filter(app_label="datasets_app", model="project").exists()
