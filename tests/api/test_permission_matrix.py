"""The permission matrix: every API endpoint and page x (anonymous, outsider, staff outsider, viewer, editor, owner).

Rules asserted (docs/ARCHITECTURE.md "Tenancy and permissions"):
* anonymous: API 401 with ``WWW-Authenticate: Token`` (TokenAuthentication first); pages 302 to /accounts/login/;
* outsider and staff-but-not-member: 404 on every object of the project (pages, API, files) and absent from lists;
* viewer: reads 200, every write 403; editor: reads and writes 2xx/302, deletes and member management 403;
* owner: everything.
Every refused request (4xx, anonymous) leaves the database and the project's stored files exactly as they were;
every allowed write really changes something. ``test_every_endpoint_is_in_the_matrix`` walks the OpenAPI schema
and the URL patterns so a new endpoint without a matrix row fails the suite.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from django.urls import resolve

from tests.api.perm_fixtures import (
    MEMBER_ROLES,
    PREFIX,
    ROLES,
    build_world,
    dataset_uploads,
    destroy_world,
    image_upload,
    train_tiny_baseline,
)

LOGIN = "login"  # sentinel: 302 to the login page
API, PAGE = "api", "page"
OUTSIDERS = ("other", "staff")


def exp(kind, viewer, editor, owner, outsider=404, anon=None):
    return {"anon": anon if anon is not None else (401 if kind == API else LOGIN),
            "other": outsider, "staff": outsider, "viewer": viewer, "editor": editor, "owner": owner}


def read(kind, ok=200):
    return exp(kind, ok, ok, ok)


def write(kind, ok):
    return exp(kind, 403, ok, ok)


def owner_only(kind, ok):
    return exp(kind, 403, 403, ok)


def anyone(kind, ok=200):
    return exp(kind, ok, ok, ok, outsider=ok)


@dataclass(frozen=True)
class Row:
    id: str
    kind: str
    method: str
    url: str                       # formatted with World.ids (+ own_pred)
    expect: dict
    covers: str                    # "GET /api/v1/..." (schema path) or a URL name "ns:name"
    data: Callable | None = None   # (world, role) -> dict
    fmt: str | None = None         # "multipart" | "json" (API); pages always post multipart
    changes: bool = False          # an allowed request must change the snapshot
    listing: Callable | None = None  # (world, role) -> (ids that must be listed, ids that must not)
    ctype: str = ""                # expected Content-Type prefix of a 200
    headers: dict | None = None    # raw request (tus): these headers, ``data`` gives the body bytes


def _q(**kw):
    return lambda w, role: {k: (v.format(**w.ids) if isinstance(v, str) else v) for k, v in kw.items()}


def _dataset_upload(w, role):
    images, questions = dataset_uploads()
    return {"project": w.ids["p"], "images": images, "questions": questions, "name": "uploaded"}


def _eval_upload(w, role):
    images, questions = dataset_uploads()
    return {"project": w.ids["p"], "training_run": w.ids["run"], "images": images, "questions": questions}


def _ask(w, role):
    return {"image": image_upload(), "question": "What color is the shape?"}


def _ask_page(w, role):
    return {"mode": "single", "q-image": image_upload(), "q-question": "What color is the shape?"}


def _page_upload(w, role):
    images, questions = dataset_uploads()
    return {"name": "page upload", "images": images, "questions": questions}


def _listing(*keys):
    def f(w, role):
        ids = {w.ids[k] for k in keys}
        return (ids, set()) if role in MEMBER_ROLES else (set(), ids)
    return f


def _own_history(w, role):
    mine = {w.own_prediction[role]} if role in MEMBER_ROLES else set()
    return mine, set(w.own_prediction.values()) - mine


def _token(w, role):
    return {"username": PREFIX + role, "password": "pw-permx-123" if role != "anon" else "wrong"}


def _has_token(w, role):
    """Every signed-in role holds a token to revoke (whatever ran before)."""
    from rest_framework.authtoken.models import Token

    if role in w.users:
        Token.objects.get_or_create(user=w.users[role])
    return None


V1 = "/api/v1"
TUS = {"HTTP_TUS_RESUMABLE": "1.0.0"}
# resumable uploads are private to their user: the owner's upload is 404 for everyone else, members included
PRIVATE = exp(API, 404, 404, 200)
API_ROWS = [
    Row("upload-create", API, "post", f"{V1}/uploads/", anyone(API, 201), "POST /api/v1/uploads/",
        headers={**TUS, "HTTP_UPLOAD_LENGTH": "10"}),
    Row("upload-get", API, "get", f"{V1}/uploads/{{upload}}/", PRIVATE, "GET /api/v1/uploads/{upload_id}/",
        headers=TUS),
    Row("upload-patch", API, "patch", f"{V1}/uploads/{{upload}}/", {**PRIVATE, "owner": 204},
        "PATCH /api/v1/uploads/{upload_id}/", lambda w, role: b"abc",
        headers={**TUS, "HTTP_UPLOAD_OFFSET": "0", "CONTENT_TYPE": "application/offset+octet-stream"}),
    Row("upload-delete", API, "delete", f"{V1}/uploads/{{upload_del}}/", {**PRIVATE, "owner": 204},
        "DELETE /api/v1/uploads/{upload_id}/", headers=TUS),
    Row("token", API, "post", f"{V1}/auth/token/", {**anyone(API), "anon": 400}, "POST /api/v1/auth/token/",
        _token, "json"),
    Row("token-revoke", API, "delete", f"{V1}/auth/token/", anyone(API, 204), "DELETE /api/v1/auth/token/",
        _has_token),
    Row("projects-list", API, "get", f"{V1}/projects/", anyone(API), "GET /api/v1/projects/", listing=_listing("p")),
    Row("projects-create", API, "post", f"{V1}/projects/", anyone(API, 201), "POST /api/v1/projects/",
        _q(name="Fresh"), "json", changes=True),
    Row("project-get", API, "get", f"{V1}/projects/{{p}}/", read(API), "GET /api/v1/projects/{id}/"),
    Row("project-patch", API, "patch", f"{V1}/projects/{{p}}/", owner_only(API, 200), "PATCH /api/v1/projects/{id}/",
        _q(description="changed"), "json", changes=True),
    Row("project-put", API, "put", f"{V1}/projects/{{p}}/", owner_only(API, 200), "PUT /api/v1/projects/{id}/",
        _q(name="Renamed", description="x"), "json", changes=True),
    Row("project-delete", API, "delete", f"{V1}/projects/{{p}}/", owner_only(API, 204),
        "DELETE /api/v1/projects/{id}/", changes=True),
    Row("project-audit", API, "get", f"{V1}/projects/{{p}}/audit/", owner_only(API, 200),
        "GET /api/v1/projects/{id}/audit/"),
    Row("members-list", API, "get", f"{V1}/projects/{{p}}/members/", read(API), "GET /api/v1/projects/{id}/members/"),
    Row("members-add", API, "post", f"{V1}/projects/{{p}}/members/", owner_only(API, 201),
        "POST /api/v1/projects/{id}/members/", _q(user="{newbie}", role="viewer"), "json", changes=True),
    Row("datasets-list", API, "get", f"{V1}/datasets/", anyone(API), "GET /api/v1/datasets/",
        listing=_listing("ds", "ds_spare", "ds_failed")),
    Row("dataset-upload", API, "post", f"{V1}/datasets/", write(API, 202), "POST /api/v1/datasets/",
        _dataset_upload, "multipart", changes=True),
    Row("dataset-get", API, "get", f"{V1}/datasets/{{ds}}/", read(API), "GET /api/v1/datasets/{id}/"),
    Row("dataset-delete", API, "delete", f"{V1}/datasets/{{ds_spare}}/", owner_only(API, 204),
        "DELETE /api/v1/datasets/{id}/", changes=True),
    Row("dataset-cancel", API, "post", f"{V1}/datasets/{{ds_queued}}/cancel/", write(API, 200),
        "POST /api/v1/datasets/{id}/cancel/", changes=True),
    Row("dataset-retry", API, "post", f"{V1}/datasets/{{ds_failed}}/retry/", write(API, 202),
        "POST /api/v1/datasets/{id}/retry/", changes=True),
    Row("dataset-items", API, "get", f"{V1}/datasets/{{ds}}/items/", read(API), "GET /api/v1/datasets/{id}/items/"),
    Row("dataset-item-image", API, "get", f"{V1}/datasets/{{ds}}/items/{{item}}/image/", read(API),
        "GET /api/v1/datasets/{id}/items/{item_pk}/image/", ctype="image/"),
    Row("dataset-item-thumbnail", API, "get", f"{V1}/datasets/{{ds}}/items/{{item}}/thumbnail/", read(API),
        "GET /api/v1/datasets/{id}/items/{item_pk}/thumbnail/", ctype="image/"),
    Row("dataset-report", API, "get", f"{V1}/datasets/{{ds}}/report.csv", read(API),
        "GET /api/v1/datasets/{id}/report.csv", ctype="text/csv"),
    Row("dataset-stats", API, "get", f"{V1}/datasets/{{ds}}/stats/", read(API), "GET /api/v1/datasets/{id}/stats/"),
    Row("models-list", API, "get", f"{V1}/models/", anyone(API), "GET /api/v1/models/"),
    Row("model-get", API, "get", f"{V1}/models/{{zs_key}}/", anyone(API), "GET /api/v1/models/{key}/"),
    Row("model-predict", API, "post", f"{V1}/models/{{zs_key}}/predict/?project={{p}}", write(API, 201),
        "POST /api/v1/models/{key}/predict/", _ask, "multipart", changes=True),
    Row("runs-list", API, "get", f"{V1}/training-runs/", anyone(API), "GET /api/v1/training-runs/",
        listing=_listing("run", "run_failed", "run_queued")),
    Row("run-start", API, "post", f"{V1}/training-runs/", write(API, 202), "POST /api/v1/training-runs/",
        _q(dataset="{ds}", model="{baseline_key}", preset="quick"), "json", changes=True),
    Row("run-get", API, "get", f"{V1}/training-runs/{{run}}/", read(API), "GET /api/v1/training-runs/{id}/"),
    Row("run-cancel", API, "post", f"{V1}/training-runs/{{run_queued}}/cancel/", write(API, 200),
        "POST /api/v1/training-runs/{id}/cancel/", changes=True),
    Row("run-resume", API, "post", f"{V1}/training-runs/{{run_failed}}/resume/", write(API, 202),
        "POST /api/v1/training-runs/{id}/resume/", changes=True),
    Row("run-rerun", API, "post", f"{V1}/training-runs/{{run}}/rerun/", write(API, 202),
        "POST /api/v1/training-runs/{id}/rerun/", changes=True),
    Row("run-export", API, "get", f"{V1}/training-runs/{{run}}/export/", read(API),
        "GET /api/v1/training-runs/{id}/export/", ctype="application/zip"),
    Row("run-predict", API, "post", f"{V1}/training-runs/{{run}}/predict/", write(API, 201),
        "POST /api/v1/training-runs/{id}/predict/", _ask, "multipart", changes=True),
    Row("evaluations-list", API, "get", f"{V1}/evaluations/", anyone(API), "GET /api/v1/evaluations/",
        listing=_listing("ev", "ev_queued", "ev_failed")),
    Row("evaluation-create", API, "post", f"{V1}/evaluations/", write(API, 201), "POST /api/v1/evaluations/",
        _eval_upload, "multipart", changes=True),
    Row("evaluation-get", API, "get", f"{V1}/evaluations/{{ev}}/", read(API), "GET /api/v1/evaluations/{id}/"),
    Row("evaluation-cancel", API, "post", f"{V1}/evaluations/{{ev_queued}}/cancel/", write(API, 200),
        "POST /api/v1/evaluations/{id}/cancel/", changes=True),
    Row("evaluation-retry", API, "post", f"{V1}/evaluations/{{ev_failed}}/retry/", write(API, 202),
        "POST /api/v1/evaluations/{id}/retry/", changes=True),
    Row("evaluation-predictions", API, "get", f"{V1}/evaluations/{{ev}}/predictions/", read(API),
        "GET /api/v1/evaluations/{id}/predictions/"),
    Row("evaluation-csv", API, "get", f"{V1}/evaluations/{{ev}}/predictions.csv", read(API),
        "GET /api/v1/evaluations/{id}/predictions.csv", ctype="text/csv"),
    Row("evaluation-zip", API, "get", f"{V1}/evaluations/{{ev}}/annotated.zip", read(API),
        "GET /api/v1/evaluations/{id}/annotated.zip", ctype="application/zip"),
    # issue 14: evaluate on a project dataset, leaderboard, review queue, corrections, versions, retrain, model card
    Row("evaluation-create-dataset", API, "post", f"{V1}/evaluations/", write(API, 201), "POST /api/v1/evaluations/",
        _q(project="{p}", training_run="{run}", dataset="{ds}"), "json", changes=True),
    Row("evaluation-review", API, "get", f"{V1}/evaluations/{{ev}}/review/", read(API),
        "GET /api/v1/evaluations/{id}/review/"),
    Row("leaderboard", API, "get", f"{V1}/projects/{{p}}/leaderboard/?dataset={{ds}}", read(API),
        "GET /api/v1/projects/{id}/leaderboard/"),
    Row("prediction-correct", API, "post", f"{V1}/predictions/{{batch_pred}}/correct/", write(API, 201),
        "POST /api/v1/predictions/{id}/correct/", _q(answer="purple"), "json", changes=True),
    Row("dataset-versions", API, "post", f"{V1}/datasets/{{ds}}/versions/", write(API, 202),
        "POST /api/v1/datasets/{id}/versions/", changes=True),
    Row("run-retrain", API, "post", f"{V1}/training-runs/{{run}}/retrain/", write(API, 202),
        "POST /api/v1/training-runs/{id}/retrain/", _q(dataset="{ds_v2}"), "json", changes=True),
    Row("run-model-card", API, "get", f"{V1}/training-runs/{{run}}/model-card/", read(API),
        "GET /api/v1/training-runs/{id}/model-card/", ctype="text/markdown"),
    Row("history-list", API, "get", f"{V1}/predictions/", anyone(API), "GET /api/v1/predictions/",
        listing=_own_history),
    # the question history is personal: each member reads their own prediction ...
    Row("history-own", API, "get", f"{V1}/predictions/{{own_pred}}/", read(API), "GET /api/v1/predictions/{id}/"),
    # ... and not another member's (owner's) history entry, not even as a project owner's co-member
    Row("history-owners", API, "get", f"{V1}/predictions/{{owner_pred}}/", exp(API, 404, 404, 200),
        "GET /api/v1/predictions/{id}/"),
]
for _which in ("image", "overlay", "heatmap"):
    API_ROWS.append(Row(f"batch-pred-{_which}", API, "get", f"{V1}/predictions/{{batch_pred}}/files/{_which}/",
                        read(API), "GET /api/v1/predictions/{id}/files/{which}/", ctype="image/png"))
API_ROWS.append(Row("history-pred-overlay", API, "get", f"{V1}/predictions/{{own_pred}}/files/overlay/", read(API),
                    "GET /api/v1/predictions/{id}/files/{which}/", ctype="image/png"))
# ... and another member's history files answer 404 like the history entry itself (batch files above are project data)
for _which in ("image", "overlay", "heatmap"):
    API_ROWS.append(Row(f"history-owners-{_which}", API, "get", f"{V1}/predictions/{{owner_pred}}/files/{_which}/",
                        exp(API, 404, 404, 200), "GET /api/v1/predictions/{id}/files/{which}/", ctype="image/png"))

PUBLIC_ROWS = [  # no login needed at all
    Row("schema", PAGE, "get", "/api/schema/", {r: 200 for r in ROLES}, "schema"),
    Row("api-docs", PAGE, "get", "/api/docs/", {r: 200 for r in ROLES}, "swagger-ui"),
    Row("healthz", PAGE, "get", "/healthz", {r: 200 for r in ROLES}, "healthz"),
    Row("home", PAGE, "get", "/", {**{r: 302 for r in ROLES}, "anon": 200}, "home"),
]

PAGE_ROWS = [
    Row("p-projects", PAGE, "get", "/projects/", anyone(PAGE), "projects:list"),
    Row("p-project-create", PAGE, "post", "/projects/", anyone(PAGE, 302), "projects:list",
        _q(name="From the page", description=""), changes=True),
    Row("p-project", PAGE, "get", "/projects/{p}/", read(PAGE), "projects:detail"),
    Row("p-member-add", PAGE, "post", "/projects/{p}/members/add/", owner_only(PAGE, 302), "projects:member_add",
        _q(user="{newbie}", role="viewer"), changes=True),
    Row("p-member-remove", PAGE, "post", "/projects/{p}/members/{m_viewer}/remove/", owner_only(PAGE, 302),
        "projects:member_remove", changes=True),
    Row("p-project-delete", PAGE, "post", "/projects/{p}/delete/", owner_only(PAGE, 302), "projects:delete",
        changes=True),
    Row("p-project-audit", PAGE, "get", "/projects/{p}/audit/", owner_only(PAGE, 200), "projects:audit"),
    Row("p-upload-form", PAGE, "get", "/datasets/projects/{p}/upload/", write(PAGE, 200), "datasets:upload"),
    Row("p-upload", PAGE, "post", "/datasets/projects/{p}/upload/", write(PAGE, 302), "datasets:upload",
        _page_upload, changes=True),
    Row("p-load-sample", PAGE, "post", "/datasets/projects/{p}/load-sample/", write(PAGE, 302),
        "datasets:load_sample", changes=True),
    Row("p-sample-file", PAGE, "get", "/datasets/sample/easy-vqa-questions.csv", anyone(PAGE), "datasets:sample",
        ctype="text/csv"),
    Row("p-dataset", PAGE, "get", "/datasets/{ds}/", read(PAGE), "datasets:detail"),
    Row("p-dataset-report", PAGE, "get", "/datasets/{ds}/report.csv", read(PAGE), "datasets:report",
        ctype="text/csv"),
    Row("p-dataset-retry", PAGE, "post", "/datasets/{ds_failed}/retry/", write(PAGE, 302), "datasets:retry",
        changes=True),
    Row("p-dataset-cancel", PAGE, "post", "/datasets/{ds_queued}/cancel/", write(PAGE, 302), "datasets:cancel",
        changes=True),
    Row("p-dataset-delete", PAGE, "post", "/datasets/{ds_spare}/delete/", owner_only(PAGE, 302), "datasets:delete",
        changes=True),
    Row("p-item-image", PAGE, "get", "/datasets/items/{item}/image", read(PAGE), "datasets:item_image",
        ctype="image/"),
    Row("p-item-thumbnail", PAGE, "get", "/datasets/items/{item}/thumbnail", read(PAGE), "datasets:item_thumbnail",
        ctype="image/"),
    Row("p-train-form", PAGE, "get", "/training/datasets/{ds}/start/", write(PAGE, 200), "training:start"),
    Row("p-train-start", PAGE, "post", "/training/datasets/{ds}/start/", write(PAGE, 302), "training:start",
        _q(model="{baseline_key}", preset="quick"), changes=True),
    Row("p-runs", PAGE, "get", "/training/projects/{p}/", read(PAGE), "training:list"),
    Row("p-run", PAGE, "get", "/training/runs/{run}/", read(PAGE), "training:detail"),
    Row("p-run-cancel", PAGE, "post", "/training/runs/{run_queued}/cancel/", write(PAGE, 302), "training:cancel",
        changes=True),
    Row("p-run-resume", PAGE, "post", "/training/runs/{run_failed}/resume/", write(PAGE, 302), "training:resume",
        changes=True),
    Row("p-run-rerun", PAGE, "post", "/training/runs/{run}/rerun/", write(PAGE, 302), "training:rerun",
        changes=True),
    Row("p-run-export", PAGE, "get", "/training/runs/{run}/export/", read(PAGE), "training:export",
        ctype="application/zip"),
    Row("p-ask-run", PAGE, "get", "/evaluate/runs/{run}/", read(PAGE), "evaluation:run"),
    Row("p-ask-run-post", PAGE, "post", "/evaluate/runs/{run}/", write(PAGE, 302), "evaluation:run", _ask_page,
        changes=True),
    Row("p-zero-shot", PAGE, "get", "/evaluate/models/", anyone(PAGE), "evaluation:zero_shot"),
    Row("p-zero-shot-project", PAGE, "get", "/evaluate/models/?project={p}", read(PAGE), "evaluation:zero_shot"),
    Row("p-model-choose", PAGE, "get", "/evaluate/models/{zs}/", anyone(PAGE), "evaluation:model"),
    Row("p-model", PAGE, "get", "/evaluate/models/{zs}/?project={p}", read(PAGE), "evaluation:model"),
    Row("p-model-post", PAGE, "post", "/evaluate/models/{zs}/?project={p}", write(PAGE, 302), "evaluation:model",
        _ask_page, changes=True),
    Row("p-evaluation", PAGE, "get", "/evaluate/evaluations/{ev}/", read(PAGE), "evaluation:evaluation"),
    Row("p-evaluation-cancel", PAGE, "post", "/evaluate/evaluations/{ev_queued}/cancel/", write(PAGE, 302),
        "evaluation:evaluation_cancel", changes=True),
    Row("p-evaluation-retry", PAGE, "post", "/evaluate/evaluations/{ev_failed}/retry/", write(PAGE, 302),
        "evaluation:evaluation_retry", changes=True),
    Row("p-review", PAGE, "get", "/evaluate/evaluations/{ev}/review/", read(PAGE), "evaluation:review"),
    Row("p-review-post", PAGE, "post", "/evaluate/evaluations/{ev}/review/", write(PAGE, 302), "evaluation:review",
        _q(prediction="{batch_pred}", answer="purple", action="correct", dataset="{ds}"), changes=True),
    Row("p-leaderboard", PAGE, "get", "/evaluate/projects/{p}/leaderboard/?dataset={ds}", read(PAGE),
        "evaluation:leaderboard"),
    Row("p-new-version", PAGE, "post", "/datasets/{ds}/versions/", write(PAGE, 302), "datasets:new_version",
        changes=True),
    Row("p-run-retrain", PAGE, "post", "/training/runs/{run}/retrain/", write(PAGE, 302), "training:retrain",
        changes=True),
    Row("p-history", PAGE, "get", "/evaluate/history/", anyone(PAGE), "evaluation:history"),
    # personal history ZIP: each member downloads their own; outsiders have none (404, nothing of P leaks)
    Row("p-history-zip", PAGE, "get", "/evaluate/history/download.zip", read(PAGE), "evaluation:history_zip",
        ctype="application/zip"),
    Row("p-sample-item", PAGE, "get", "/evaluate/samples/d{item}.png", read(PAGE), "evaluation:sample_image",
        ctype="image/png"),
    Row("p-sample-easyvqa", PAGE, "get", "/evaluate/samples/e0.png", anyone(PAGE), "evaluation:sample_image",
        ctype="image/png"),
]

ALL_ROWS = API_ROWS + PUBLIC_ROWS + PAGE_ROWS
CASES = [pytest.param(row, role, id=f"{row.id}-{role}") for row in ALL_ROWS for role in ROLES]


# ------------------------------------------------------------------------------------------ the world
@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, tmp_path_factory):
    out = tmp_path_factory.mktemp("permx-baseline")
    model_dir = train_tiny_baseline(out)
    with django_db_blocker.unblock():
        w = build_world(model_dir)
        w.ids.update(_owner_uploads(w))
        try:
            yield w
        finally:
            destroy_world(w)


def _owner_uploads(w) -> dict:
    """Two unfinished resumable uploads of the project owner (one to read and append to, one to delete)."""
    from datetime import timedelta

    from django.utils import timezone

    from datasets_app.models import ResumableUpload
    from piggyback import files

    ids = {}
    for key in ("upload", "upload_del"):
        uid = f"permx{key.replace('_', '')}0000000000000000"[:32]
        name = f"uploads/resumable/{w.users['owner'].pk}/{uid}.part"
        files.create_empty(name)
        ResumableUpload.objects.create(id=uid, user=w.users["owner"], length=10, storage_name=name,
                                       expires_at=timezone.now() + timedelta(hours=1))
        ids[key] = uid
    return ids


@pytest.fixture
def client_as(world, db):
    from rest_framework.test import APIClient

    def _make(role):
        c = APIClient()
        if role != "anon":
            c.force_login(world.users[role])
        return c

    return _make


def snapshot(w):
    """Rows, statuses, names, roles and the project's stored files: what a refused request must not touch."""
    from django.conf import settings

    from datasets_app.models import Correction, Dataset, DatasetItem, DroppedRow
    from evaluation_app.models import Evaluation, Prediction
    from piggyback.models import Membership, Project
    from training_app.models import PretrainedModel, TrainingRun

    state = [(m.__name__, m.objects.count()) for m in (Project, Membership, Dataset, DatasetItem, DroppedRow,
                                                        TrainingRun, Evaluation, Prediction, PretrainedModel,
                                                        Correction)]
    state += list(Correction.objects.order_by("pk").values_list("pk", "answer", "created_by_id", "applied_in_id"))
    for m in (Dataset, TrainingRun, Evaluation):
        state += list(m.objects.order_by("pk").values_list("pk", "status", "cancel_requested", "attempts"))
    state += list(Project.objects.order_by("pk").values_list("pk", "name", "description"))
    state += list(Membership.objects.order_by("pk").values_list("pk", "user_id", "role"))
    root = Path(settings.MEDIA_ROOT) / "projects" / str(w.project_pk)
    state.append(sorted(str(Path(d) / f) for d, _, fs in os.walk(root) for f in fs
                        if "/export/" not in f"{d}/"))  # a viewer's export download builds the ZIP once
    return state


def _listed(body) -> set:
    results = body["results"] if isinstance(body, dict) and "results" in body else body
    return {r["id"] for r in results}


def _request(client, row, url, data):
    if row.headers is not None:
        extra = {k: v for k, v in row.headers.items() if k != "CONTENT_TYPE"}
        return client.generic(row.method.upper(), url, data or b"",
                              content_type=row.headers.get("CONTENT_TYPE", "application/octet-stream"), **extra)
    fn = getattr(client, row.method)
    if row.method == "get":
        return fn(url)
    if row.kind == PAGE:
        return fn(url, data or {})  # Django test client: multipart by default
    return fn(url, data or {}, format=row.fmt or "json")


@pytest.mark.parametrize("row, role", CASES)
def test_matrix(world, client_as, row, role):
    url = world.fmt(row.url, role)
    data = row.data(world, role) if row.data else None
    expected = row.expect[role]
    refused = expected == LOGIN or expected >= 400 or row.id == "token"
    watch = refused or row.changes  # a member's successful read needs no before/after comparison
    before = snapshot(world) if watch else None
    response = _request(client_as(role), row, url, data)
    body = b"" if getattr(response, "streaming", False) else response.content
    if expected == LOGIN:
        assert response.status_code == 302, (url, response.status_code)
        assert response["Location"].startswith("/accounts/login/"), response["Location"]
    else:
        assert response.status_code == expected, (role, row.method, url, response.status_code, body[:300])
    if response.status_code == 401:
        assert response["WWW-Authenticate"] == "Token", (url, response.headers)
    after = snapshot(world) if watch else None
    if refused:
        assert after == before, f"{role} {row.method.upper()} {url} was refused but changed data or files"
    elif row.changes:
        assert after != before, f"{role} {row.method.upper()} {url} succeeded but changed nothing"
    if expected == 200 and row.ctype:
        assert response["Content-Type"].startswith(row.ctype), response["Content-Type"]
        if getattr(response, "streaming", False):
            assert b"".join(response.streaming_content)
    if row.listing and expected == 200:
        must, must_not = row.listing(world, role)
        ids = _listed(response.json())
        assert must <= ids, (role, must - ids)
        assert not (must_not & ids), (role, "leaked", must_not & ids)
    if role in OUTSIDERS and expected in (200, 404):
        assert b"Permission matrix" not in body, f"{role} sees the project's name at {url}"


# ------------------------------------------------------------------------------------------ staff tools
def _admin_urls():
    from django.contrib import admin

    urls = ["/admin/"]
    for model in admin.site._registry:
        urls.append(f"/admin/{model._meta.app_label}/{model._meta.model_name}/")
    return urls


@pytest.mark.parametrize("role", ROLES)
def test_staff_tools(world, client_as, role):
    """Django admin and the django-rq dashboard: staff 200, everyone else a redirect to the admin login."""
    client = client_as(role)
    urls = _admin_urls() + [f"/admin/piggyback/project/{world.ids['p']}/change/", "/django-rq/"]
    assert len(urls) >= 10
    for url in urls:
        r = client.get(url)
        if role == "staff":
            assert r.status_code == 200, (url, r.status_code)
        else:
            assert r.status_code == 302 and r["Location"].startswith("/admin/login/"), (role, url, r.status_code)


def test_cross_project_references_are_404(world, client_as):
    """An editor of P cannot reach Q's objects through P: a run/dataset id of another project answers 404."""
    from datasets_app.models import Dataset

    other_ds = Dataset.objects.create(project_id=world.ids["q"], name="theirs", status="succeeded",
                                      images_file="", questions_file="")
    editor = client_as("editor")
    r = editor.post(f"{V1}/training-runs/", {"dataset": other_ds.pk, "model": "baseline-rnn"}, format="json")
    assert r.status_code == 404
    images, questions = dataset_uploads()
    r = editor.post(f"{V1}/datasets/", {"project": world.ids["q"], "images": images, "questions": questions},
                    format="multipart")
    assert r.status_code == 404
    r = editor.post(f"{V1}/models/{world.ids['zs_key']}/predict/?project={world.ids['q']}", _ask(world, "editor"),
                    format="multipart")
    assert r.status_code == 404
    assert editor.get(f"/training/projects/{world.ids['q']}/").status_code == 404


# ------------------------------------------------------------------------------------------ completeness
def _schema_operations(client) -> set:
    r = client.get("/api/schema/?format=json")
    assert r.status_code == 200
    ops = set()
    for path, item in r.json()["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                ops.add(f"{method.upper()} {path}")
    return ops


def _page_names() -> set:
    from django.urls import URLPattern, URLResolver, get_resolver

    names = set()
    top = get_resolver().url_patterns
    known_includes = {"admin", "accounts/", "django-rq/", "api/v1/"}  # staff tools, allauth, API (schema-walked)
    for entry in top:
        prefix = str(entry.pattern)
        if isinstance(entry, URLResolver) and entry.namespace in ("projects", "datasets", "training", "evaluation"):
            for p in entry.url_patterns:
                assert isinstance(p, URLPattern) and p.name, f"unnamed page pattern {p} in {entry.namespace}"
                names.add(f"{entry.namespace}:{p.name}")
        elif isinstance(entry, URLResolver):
            assert any(prefix.startswith(k) for k in known_includes), f"new URL include {prefix!r}: add matrix rows"
        else:
            assert entry.name, f"unnamed top-level URL {prefix!r}"
            names.add(entry.name)
    return names


def test_every_endpoint_is_in_the_matrix(world, client_as):
    covered_api = {r.covers for r in API_ROWS}
    operations = _schema_operations(client_as("anon"))
    assert operations - covered_api == set(), "API operations without a permission-matrix row"
    assert covered_api - operations == set(), "matrix rows for operations the schema does not have"
    covered_pages = {r.covers for r in PUBLIC_ROWS + PAGE_ROWS}
    names = _page_names()
    assert names - covered_pages == set(), "pages without a permission-matrix row"
    assert covered_pages - names == set()
    # every row really exercises what it claims to cover
    for row in API_ROWS:
        method, template = row.covers.split(" ", 1)
        pattern = re.sub(r"\\{[a-z_]+\\}", "[^/]+", re.escape(template))
        path = world.fmt(row.url, "owner").split("?")[0]
        assert method.lower() == row.method and re.fullmatch(pattern, path), (row.id, path, row.covers)
    for row in PUBLIC_ROWS + PAGE_ROWS:
        path = world.fmt(row.url, "owner").split("?")[0]
        assert resolve(path).view_name == row.covers, (row.id, path)
    assert len(CASES) == len(ALL_ROWS) * len(ROLES)


def test_owner_deletes_a_project_with_runs_evaluations_and_history(world, client_as, django_capture_on_commit_callbacks):
    """Regression: runs PROTECT their dataset, so deleting a project that had runs answered 500 (ProtectedError)."""
    from datasets_app.models import Dataset
    from evaluation_app.models import Evaluation, Prediction
    from training_app.models import TrainingRun

    p = world.ids["p"]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = client_as("owner").delete(f"{V1}/projects/{p}/")
    assert r.status_code == 204
    for model in (Dataset, TrainingRun, Evaluation, Prediction):
        assert not model.objects.filter(project_id=p).exists(), model.__name__
    assert callbacks, "the project's stored files are removed after the commit"
