"""The audit trail: every audited action writes one entry (who, what, when, from where, on what), through the
pages, the API and the admin; entries are append-only; owners read their project's trail (page + API), staff
read everything in the admin; nothing secret is stored."""
from __future__ import annotations

import pytest

from tests.evaluation_helpers import (  # noqa: F401  (fixtures)
    baseline_model,
    make_run,
    png_bytes,
    run,
    trained_baseline_dir,
    upload,
)

pytestmark = pytest.mark.django_db
TOKEN_URL = "/api/v1/auth/token/"


def entries(action=None, **filters):
    from audit.models import AuditEntry

    qs = AuditEntry.objects.all()
    if action:
        qs = qs.filter(action=action)
    return list(qs.filter(**filters).order_by("id"))


def only(action, **filters):
    found = entries(action, **filters)
    assert len(found) == 1, (action, [(e.action, e.target_repr, e.details) for e in entries()])
    return found[0]


def assert_nothing_secret(*secrets):
    from audit.models import AuditEntry

    for e in AuditEntry.objects.all():
        text = repr([getattr(e, f.attname) for f in AuditEntry._meta.fields])
        for secret in secrets:
            assert secret not in text, (e.action, text)


# ------------------------------------------------------------------------------------------ sign-ins
def test_page_sign_in_success_failure_and_sign_out(client, owner):
    r = client.post("/accounts/login/", {"login": "olivia", "password": "Wrong-pass-1"}, REMOTE_ADDR="10.1.2.3")
    assert r.status_code == 200
    failed = only("auth.login_failed")
    assert failed.actor_id == owner.pk and failed.actor_username == "olivia" and failed.ip == "10.1.2.3"
    assert failed.via == "page" and failed.details == {"account_exists": True}
    client.post("/accounts/login/", {"login": "ghost-Secret-9", "password": "Wrong-pass-2"})
    ghost = only("auth.login_failed", details={"account_exists": False})
    assert ghost.actor_id is None and ghost.actor_username == "" and ghost.ip == "127.0.0.1"
    client.post("/accounts/login/", {"login": "OLIVIA@example.com", "password": "Wrong-pass-3"})
    by_email = only("auth.login_failed", actor_username="OLIVIA@example.com")
    assert by_email.actor_id == owner.pk
    r = client.post("/accounts/login/", {"login": "olivia", "password": "pw-olivia-123"},
                    HTTP_USER_AGENT="pytest-browser")
    assert r.status_code == 302
    ok = only("auth.login")
    assert ok.actor_id == owner.pk and ok.ip == "127.0.0.1" and ok.user_agent == "pytest-browser"
    client.post("/accounts/logout/")
    assert only("auth.logout").actor_username == "olivia"
    # nothing typed that is not an account's name: it may be a password in the wrong field
    assert_nothing_secret("Wrong-pass-1", "Wrong-pass-2", "Wrong-pass-3", "pw-olivia-123", "ghost-Secret-9")


def test_api_sign_in_token_created_and_revoked(api_client, owner):
    from rest_framework.authtoken.models import Token

    assert api_client.post(TOKEN_URL, {"username": "olivia", "password": "Nope-123"}, format="json").status_code == 400
    failed = only("auth.login_failed")
    assert failed.via == "api" and failed.actor_id == owner.pk
    r = api_client.post(TOKEN_URL, {"username": "olivia", "password": "pw-olivia-123"}, format="json")
    key = r.json()["token"]
    login = only("auth.login")
    assert login.via == "api" and login.actor_id == owner.pk
    created = only("token.created")
    assert created.actor_id == owner.pk and created.target_repr == "olivia"
    # a second sign-in returns the same token: a sign-in entry, no new token entry
    api_client.post(TOKEN_URL, {"username": "olivia", "password": "pw-olivia-123"}, format="json")
    assert len(entries("auth.login")) == 2 and len(entries("token.created")) == 1
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api_client.delete(TOKEN_URL, REMOTE_ADDR="10.9.9.9").status_code == 204
    revoked = only("token.revoked")
    assert revoked.actor_id == owner.pk and revoked.ip == "10.9.9.9" and revoked.details["reason"] == "revoked by its owner"
    assert not Token.objects.exists()
    assert_nothing_secret(key, "Nope-123", "pw-olivia-123")


def test_password_change_is_audited_with_the_revocation(client, api_client, owner):
    key = api_client.post(TOKEN_URL, {"username": "olivia", "password": "pw-olivia-123"}, format="json").json()["token"]
    client.force_login(owner)
    client.post("/accounts/password/change/", {"oldpassword": "pw-olivia-123", "password1": "N3w-long-secret!",
                                               "password2": "N3w-long-secret!"})
    changed = only("auth.password_changed")
    assert changed.actor_id == owner.pk and changed.details == {"tokens_revoked": 1}
    assert only("token.revoked").details == {"reason": "password changed"}
    assert_nothing_secret(key, "N3w-long-secret!", "pw-olivia-123")


# ------------------------------------------------------------------------------------------ members
def test_member_changes_through_the_api(client_for, owner, project, make_user):
    bob = make_user("bob")
    c = client_for(owner)
    assert only("project.created").project_id == project.pk
    assert c.post(f"/api/v1/projects/{project.pk}/members/", {"user": "bob", "role": "viewer"},
                  format="json").status_code == 201
    added = only("member.added", target_repr="bob")
    assert added.actor_id == owner.pk and added.project_id == project.pk and added.details == {"role": "viewer"}
    assert added.via == "api" and added.project_name == "Radiology" and added.target_id == str(bob.pk)
    c.post(f"/api/v1/projects/{project.pk}/members/", {"user": "bob", "role": "editor"}, format="json")
    changed = only("member.role_changed")
    assert changed.details == {"from": "viewer", "to": "editor"} and changed.target_repr == "bob"
    # the same role again changes nothing and records nothing
    c.post(f"/api/v1/projects/{project.pk}/members/", {"user": "bob", "role": "editor"}, format="json")
    assert len(entries("member.role_changed")) == 1


def test_member_changes_through_the_pages(client, owner, project, make_user):
    make_user("carol")
    client.force_login(owner)
    client.post(f"/projects/{project.pk}/members/add/", {"user": "carol", "role": "editor"})
    added = only("member.added", target_repr="carol")
    assert added.via == "page" and added.actor_id == owner.pk
    membership = project.memberships.get(user__username="carol")
    client.post(f"/projects/{project.pk}/members/{membership.pk}/remove/")
    removed = only("member.removed")
    assert removed.target_repr == "carol" and removed.details == {"role": "editor"} and removed.project_id == project.pk


def test_role_change_in_the_admin_is_audited(client, make_user, project, members):
    staff = make_user("root_admin", is_staff=True, is_superuser=True)
    client.force_login(staff)
    m = project.memberships.get(user=members["viewer"])
    r = client.post(f"/admin/piggyback/membership/{m.pk}/change/",
                    {"project": project.pk, "user": members["viewer"].pk, "role": "owner"})
    assert r.status_code == 302
    e = only("member.role_changed")
    assert e.via == "admin" and e.actor_username == "root_admin" and e.details == {"from": "viewer", "to": "owner"}


# ------------------------------------------------------------------------------------------ deletions
def test_project_deletion_is_one_entry(client_for, owner, project, make_run):
    from evaluation_app.models import Evaluation

    run = make_run(project, user=owner)
    Evaluation.objects.create(project=project, training_run=run, status="succeeded", images_file="", questions_file="")
    assert client_for(owner).delete(f"/api/v1/projects/{project.pk}/").status_code == 204
    e = only("project.deleted")
    assert e.project_id == project.pk and e.project_name == "Radiology" and e.actor_id == owner.pk
    # what went with the project is not listed one by one
    for action in ("dataset.deleted", "training_run.deleted", "evaluation.deleted", "member.removed"):
        assert entries(action) == [], action
    # the trail outlives the project
    assert len(entries(project_id=project.pk)) >= 2


def test_project_deletion_through_the_page(client, owner, project):
    client.force_login(owner)
    assert client.post(f"/projects/{project.pk}/delete/").status_code == 302
    assert only("project.deleted").via == "page"


def test_dataset_deletion(client_for, client, owner, project):
    from tests.evaluation_helpers import make_dataset

    ds = make_dataset(project, n_images=1)
    assert client_for(owner).delete(f"/api/v1/datasets/{ds.pk}/").status_code == 204
    e = only("dataset.deleted")
    assert e.project_id == project.pk and e.target_id == str(ds.pk) and e.target_repr == "easy" and e.via == "api"
    ds2 = make_dataset(project, n_images=1)
    client.force_login(owner)
    client.post(f"/datasets/{ds2.pk}/delete/")
    assert len(entries("dataset.deleted")) == 2


def test_refused_dataset_deletion_is_not_recorded(client_for, owner, project, make_run):
    run = make_run(project, user=owner)
    r = client_for(owner).delete(f"/api/v1/datasets/{run.dataset_id}/")
    assert r.status_code == 409
    assert entries("dataset.deleted") == []


def test_run_and_evaluation_deletions_in_the_admin(client, make_user, owner, project, make_run):
    from evaluation_app.models import Evaluation

    staff = make_user("root_admin", is_staff=True, is_superuser=True)
    client.force_login(staff)
    runs = [make_run(project, user=owner) for _ in range(2)]
    ev = Evaluation.objects.create(project=project, training_run=runs[0], status="succeeded", images_file="",
                                   questions_file="", name="ev one")
    r = client.post(f"/admin/evaluation_app/evaluation/{ev.pk}/delete/", {"post": "yes"})
    assert r.status_code == 302
    e = only("evaluation.deleted")
    assert e.actor_username == "root_admin" and e.via == "admin" and e.project_id == project.pk
    # the admin's bulk action: one entry per selected run
    r = client.post("/admin/training_app/trainingrun/", {"action": "delete_selected", "post": "yes",
                                                          "_selected_action": [str(x.pk) for x in runs]})
    assert r.status_code == 302
    assert sorted(e.target_id for e in entries("training_run.deleted")) == sorted(str(x.pk) for x in runs)


# ------------------------------------------------------------------------------------------ downloads
def test_dataset_report_downloads(client_for, client, owner, project, members):
    from tests.evaluation_helpers import make_dataset

    ds = make_dataset(project, n_images=1)
    r = client_for(members["viewer"]).get(f"/api/v1/datasets/{ds.pk}/report.csv")
    assert r.status_code == 200
    e = only("dataset.downloaded")
    assert e.actor_id == members["viewer"].pk and e.target_id == str(ds.pk) and e.details == {"file": "cleaning report CSV"}
    client.force_login(owner)
    assert client.get(f"/datasets/{ds.pk}/report.csv").status_code == 200
    assert [x.via for x in entries("dataset.downloaded")] == ["api", "page"]


def test_model_export_api_and_page(client_for, client, owner, run):
    r = client_for(owner).get(f"/api/v1/training-runs/{run.pk}/export/")
    assert r.status_code == 200
    e = only("model.exported")
    assert e.target_id == str(run.pk) and e.project_id == run.project_id and e.details == {"model": "baseline-rnn"}
    client.force_login(owner)
    assert client.get(f"/training/runs/{run.pk}/export/").status_code == 200
    assert len(entries("model.exported")) == 2


def test_unfinished_export_is_not_recorded(client_for, owner, project, make_run):
    queued = make_run(project, status="queued", user=owner)
    assert client_for(owner).get(f"/api/v1/training-runs/{queued.pk}/export/").status_code == 409
    assert entries("model.exported") == []


def test_evaluation_downloads(client_for, owner, project, run):
    from evaluation_app.models import Evaluation
    from tests.api.perm_fixtures import _store_bytes

    ev = Evaluation.objects.create(project=project, training_run=run, status="succeeded", images_file="",
                                   questions_file="", name="final check")
    out = f"projects/{project.pk}/evaluations/{ev.pk}"
    _store_bytes(b"row,image,question,answer\n", f"{out}/predictions.csv")
    _store_bytes(b"PK\x05\x06" + b"\0" * 18, f"{out}/annotated.zip")
    ev._update(output_dir=out)
    c = client_for(owner)
    assert c.get(f"/api/v1/evaluations/{ev.pk}/predictions.csv").status_code == 200
    assert c.get(f"/api/v1/evaluations/{ev.pk}/annotated.zip").status_code == 200
    got = entries("evaluation.downloaded")
    assert [e.details["file"] for e in got] == ["predictions.csv", "annotated.zip"]
    assert {e.target_repr for e in got} == {"final check"} and {e.project_id for e in got} == {project.pk}


def test_history_download(client_for, client, owner, run):
    r = client_for(owner).post(f"/api/v1/training-runs/{run.pk}/predict/",
                               {"image": upload("q.png", png_bytes(), "image/png"), "question": "What color is it?"},
                               format="multipart")
    assert r.status_code == 201
    client.force_login(owner)
    assert client.get("/evaluate/history/download.zip").status_code == 200
    e = only("history.downloaded")
    assert e.actor_id == owner.pk and e.details == {"questions": 1} and e.project_id is None


# ------------------------------------------------------------------------------------------ append-only
def test_entries_cannot_be_changed_or_deleted(owner):
    from audit.models import AppendOnlyError, AuditEntry
    from audit.trail import record

    e = record(AuditEntry.Action.LOGIN, actor=owner)
    e.action = AuditEntry.Action.LOGOUT
    with pytest.raises(AppendOnlyError):
        e.save()
    with pytest.raises(AppendOnlyError):
        e.delete()
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.filter(pk=e.pk).update(action="auth.logout")
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.get(pk=e.pk).action == "auth.login"


def test_deleting_a_user_keeps_their_entries(owner, make_user):
    from audit.models import AuditEntry
    from audit.trail import record

    gone = make_user("leaver")
    record(AuditEntry.Action.LOGIN, actor=gone)
    gone.delete()
    e = only("auth.login")
    assert e.actor_username == "leaver"


def test_secret_looking_details_are_dropped(owner):
    from audit.models import AuditEntry
    from audit.trail import record

    e = record(AuditEntry.Action.LOGIN, actor=owner, details={"password": "x", "token": "y", "Key": "z", "role": "r"})
    assert e.details == {"role": "r"}


def test_admin_is_read_only_for_staff(client, make_user, owner):
    from audit.models import AuditEntry
    from audit.trail import record

    e = record(AuditEntry.Action.LOGIN, actor=owner)
    client.force_login(make_user("helpdesk", is_staff=True))  # staff without model permissions
    assert client.get("/admin/audit/auditentry/").status_code == 200
    r = client.get(f"/admin/audit/auditentry/{e.pk}/change/")
    assert r.status_code == 200 and b'name="_save"' not in r.content
    assert client.post(f"/admin/audit/auditentry/{e.pk}/change/", {"action": "auth.logout"}).status_code == 403
    assert client.get("/admin/audit/auditentry/add/").status_code == 403
    assert client.post(f"/admin/audit/auditentry/{e.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.get(pk=e.pk).action == "auth.login"
    client.force_login(owner)  # not staff
    assert client.get("/admin/audit/auditentry/").status_code == 302


# ------------------------------------------------------------------------------------------ reading the trail
def test_owner_reads_the_project_trail_api(client_for, owner, other_user, project, members):
    from piggyback.project_services import create_project

    theirs = create_project(other_user, "Theirs")
    r = client_for(owner).get(f"/api/v1/projects/{project.pk}/audit/")
    assert r.status_code == 200
    body = r.json()
    # created, its owner's membership, then 3 members added
    assert body["count"] == len(entries(project_id=project.pk)) == 5
    assert {row["action"] for row in body["results"]} == {"project.created", "member.added"}
    row = body["results"][0]  # newest first
    assert set(row) == {"id", "created_at", "action", "action_label", "actor", "ip", "via", "target_type",
                        "target_id", "target_repr", "details"}
    assert row["target_repr"] == "owner_user"
    assert all(theirs.name not in str(x) for x in body["results"])
    for role in ("viewer", "editor"):
        assert client_for(members[role]).get(f"/api/v1/projects/{project.pk}/audit/").status_code == 403
    assert client_for(other_user).get(f"/api/v1/projects/{project.pk}/audit/").status_code == 404
    assert client_for(members["owner"]).get(f"/api/v1/projects/{project.pk}/audit/").status_code == 200
    only_created = client_for(owner).get(f"/api/v1/projects/{project.pk}/audit/?action=project.created").json()
    assert [row["action"] for row in only_created["results"]] == ["project.created"]
    r = client_for(owner).get(f"/api/v1/projects/{project.pk}/audit/?action=bogus")
    assert r.status_code == 400 and "Unknown action" in r.json()["action"]


def test_trail_is_paginated(client_for, owner, project):
    from audit.models import AuditEntry
    from audit.trail import record

    for _ in range(60):
        record(AuditEntry.Action.DATASET_DOWNLOADED, project=project, actor=owner)
    c = client_for(owner)
    first = c.get(f"/api/v1/projects/{project.pk}/audit/").json()
    assert first["count"] == 62 and len(first["results"]) == 50 and first["next"]  # + created, owner added
    assert len(c.get(first["next"]).json()["results"]) == 12
    assert c.get(f"/api/v1/projects/{project.pk}/audit/?page=99").status_code == 404


def test_owner_reads_the_trail_page(client, owner, project, members):
    client.force_login(owner)
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert f"/projects/{project.pk}/audit/" in page
    r = client.get(f"/projects/{project.pk}/audit/")
    assert r.status_code == 200
    text = r.content.decode()
    assert "member added" in text and "editor_user" in text and "project created" in text
    r = client.get(f"/projects/{project.pk}/audit/?action=project.created")
    assert "editor_user" not in r.content.decode() and "project created" in r.content.decode()
    assert client.get(f"/projects/{project.pk}/audit/?action=bogus&page=abc").status_code == 200
    client.force_login(members["editor"])
    assert f"/projects/{project.pk}/audit/" not in client.get(f"/projects/{project.pk}/").content.decode()
    assert client.get(f"/projects/{project.pk}/audit/").status_code == 403


def test_database_refuses_changes_too(owner):
    """Raw SQL from the application cannot rewrite history either (a trigger in the migration)."""
    from django.db import DatabaseError, connection, transaction

    from audit.models import AuditEntry
    from audit.trail import record

    e = record(AuditEntry.Action.LOGIN, actor=owner)
    for sql in (f"UPDATE audit_auditentry SET action = 'auth.logout' WHERE id = {e.pk}",
                f"DELETE FROM audit_auditentry WHERE id = {e.pk}"):
        with pytest.raises(DatabaseError, match="append-only"):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql)
    assert AuditEntry.objects.get(pk=e.pk).action == "auth.login"
