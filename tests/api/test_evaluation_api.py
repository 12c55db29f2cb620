"""Evaluation API: single prediction on a fine-tuned run and a zero-shot model, history, overlay files,
the model cache, tenancy (outsiders 404) and roles (viewers read, cannot predict or evaluate)."""
from __future__ import annotations

import io
import os
from unittest import mock

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image

from evaluation_app import model_cache
from evaluation_app.models import Prediction
from tests.evaluation_helpers import (  # noqa: F401  (fixtures)
    baseline_model,
    batch_files,
    blip_model,
    make_run,
    png_bytes,
    run,
    tiny_blip_dir,
    trained_baseline_dir,
    upload,
)

pytestmark = pytest.mark.django_db


def _predict(client, run_pk, question="What color is the shape?", **extra):
    data = {"image": upload("shape.png", png_bytes(size=(120, 80)), "image/png"), "question": question, **extra}
    return client.post(f"/api/v1/training-runs/{run_pk}/predict/", data, format="multipart")


def _content(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_predict_on_a_run(run, owner, client_for):
    model_cache.clear()
    client = client_for(owner)
    r = _predict(client, run.pk, top_k=3)
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["answer"] and 0 <= body["confidence"] <= 1
    assert [t["answer"] for t in body["top_k"]][0] == body["answer"] and len(body["top_k"]) == 3
    assert body["confidence"] == pytest.approx(body["top_k"][0]["score"])
    assert len(body["regions"]) == 5
    for region in body["regions"]:
        x0, y0, x1, y1 = region["box"]
        assert 0 <= x0 < x1 <= 120 and 0 <= y0 < y1 <= 80  # original image pixels
    assert body["kind"] == "single" and body["latency_ms"] > 0
    # the overlays are drawn on their first request, not while answering
    row = Prediction.objects.get(pk=body["id"])
    assert row.overlay and row.heatmap and row.regions
    assert not default_storage.exists(row.overlay) and not default_storage.exists(row.heatmap)
    overlay = client.get(body["overlay"])
    assert overlay.status_code == 200 and overlay["Content-Type"] == "image/png"
    first = _content(overlay)
    assert Image.open(io.BytesIO(first)).size[0] >= 120
    assert default_storage.exists(row.overlay) and not default_storage.exists(row.heatmap)
    heat = client.get(body["heatmap"])
    assert heat.status_code == 200 and _content(heat) != first
    # later requests serve the stored file and never draw again
    stamp = os.stat(default_storage.path(row.overlay)).st_mtime_ns
    with mock.patch("gpu_worker.explain.draw_overlay", side_effect=AssertionError("drawn twice")):
        again = client.get(body["overlay"])
    assert again.status_code == 200 and _content(again) == first
    assert os.stat(default_storage.path(row.overlay)).st_mtime_ns == stamp
    # the second question reuses the cached model
    misses = model_cache.STATS["misses"]
    assert _predict(client, run.pk).status_code == 201
    assert model_cache.STATS["misses"] == misses and model_cache.STATS["hits"] >= 1
    history = client.get("/api/v1/predictions/").json()
    assert history["count"] == 2 and history["results"][0]["model_name"] == "Tiny baseline"



def test_a_phone_photo_is_stored_and_answered_upright(run, owner, client_for):
    """Issue 11.3: a JPEG whose pixels are stored turned (EXIF orientation 6) is made upright at upload;
    the stored image, the regions and the overlay all use the upright 120 x 80 picture."""
    from tests.unit.test_exif_orientation import jpeg_bytes, stored_pixels

    model_cache.clear()
    client = client_for(owner)
    picture = np.asarray(Image.open(io.BytesIO(png_bytes(size=(120, 80)))).convert("RGB"))
    raw = jpeg_bytes(stored_pixels(picture, 6), 6)
    assert Image.open(io.BytesIO(raw)).size == (80, 120)   # as the camera stored it
    data = {"image": upload("phone.jpg", raw, "image/jpeg"), "question": "What color is the shape?"}
    r = client.post(f"/api/v1/training-runs/{run.pk}/predict/", data, format="multipart")
    assert r.status_code == 201, r.content
    body = r.json()
    for region in body["regions"]:
        x0, y0, x1, y1 = region["box"]
        assert 0 <= x0 < x1 <= 120 and 0 <= y0 < y1 <= 80
    stored = Image.open(io.BytesIO(_content(client.get(body["image"])))).convert("RGB")
    assert stored.size == (120, 80)
    assert np.abs(np.asarray(stored, dtype=int) - picture.astype(int)).mean() < 3
    overlay = Image.open(io.BytesIO(_content(client.get(body["overlay"]))))
    assert overlay.size[0] * 80 == overlay.size[1] * 120   # drawn on the upright picture

def test_predict_rejects_bad_input(run, owner, client_for):
    client = client_for(owner)
    r = client.post(f"/api/v1/training-runs/{run.pk}/predict/",
                    {"image": upload("x.png", b"not an image", "image/png"), "question": "What?"}, format="multipart")
    assert r.status_code == 400 and "not an image" in r.json()["detail"]
    r = _predict(client, run.pk, question="   ")
    assert r.status_code == 400
    assert _predict(client, run.pk, top_k=99).status_code == 400


def test_predict_on_unfinished_run_is_a_conflict(make_run, project, owner, client_for):
    pending = make_run(project, status="running")
    r = _predict(client_for(owner), pending.pk)
    assert r.status_code == 409 and "not finished" in r.json()["detail"]


def test_zero_shot_generative_model(blip_model, project, owner, client_for):
    client = client_for(owner)
    data = {"image": upload("s.png", png_bytes(), "image/png"), "question": "what is it?", "num_beams": 2,
            "max_new_tokens": 4}
    r = client.post(f"/api/v1/models/blip/predict/?project={project.pk}", data, format="multipart")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["params"] == {"top_k": 5, "num_beams": 2, "max_new_tokens": 4}
    assert body["model_name"] == "BLIP VQA" and body["top_k"]
    assert client.post("/api/v1/models/blip/predict/", data, format="multipart").status_code == 400
    assert client.post("/api/v1/models/nope/predict/?project=1", data, format="multipart").status_code == 404


def test_outsiders_get_404_everywhere(run, owner, other_user, client_for, django_capture_on_commit_callbacks, run_jobs):
    mine = client_for(owner)
    body = _predict(mine, run.pk).json()
    images, questions, _ = batch_files(1)
    with django_capture_on_commit_callbacks(execute=True):
        ev = mine.post("/api/v1/evaluations/", {"project": run.project_id, "training_run": run.pk, "images": images,
                                                "questions": questions}, format="multipart").json()
    run_jobs()
    assert mine.get(f"/api/v1/evaluations/{ev['id']}/").json()["status"] == "succeeded"
    theirs = client_for(other_user)
    assert _predict(theirs, run.pk).status_code == 404
    assert theirs.get(f"/api/v1/evaluations/{ev['id']}/").status_code == 404
    assert theirs.get(f"/api/v1/evaluations/{ev['id']}/predictions/").status_code == 404
    assert theirs.get(f"/api/v1/evaluations/{ev['id']}/predictions.csv").status_code == 404
    assert theirs.get(f"/api/v1/evaluations/{ev['id']}/annotated.zip").status_code == 404
    assert theirs.get(body["overlay"]).status_code == 404
    assert theirs.get(body["image"]).status_code == 404
    assert theirs.get(f"/api/v1/predictions/{body['id']}/").status_code == 404
    assert theirs.get("/api/v1/predictions/").json()["count"] == 0
    assert theirs.get("/api/v1/evaluations/").json()["count"] == 0
    images, questions, _ = batch_files(1)
    r = theirs.post("/api/v1/evaluations/", {"project": run.project_id, "training_run": run.pk, "images": images,
                                             "questions": questions}, format="multipart")
    assert r.status_code == 404
    assert client_for(None).get(body["overlay"]).status_code in (401, 403)


@pytest.mark.parametrize("role, can_ask", [("viewer", False), ("editor", True)])
def test_roles(run, owner, members, client_for, role, can_ask, django_capture_on_commit_callbacks, run_jobs):
    shared = _predict(client_for(owner), run.pk).json()
    client = client_for(members[role])
    r = _predict(client, run.pk)
    assert r.status_code == (201 if can_ask else 403)
    if not can_ask:
        assert "editor" in r.json()["detail"]
    images, questions, _ = batch_files(1)
    with django_capture_on_commit_callbacks(execute=True):
        r = client.post("/api/v1/evaluations/", {"project": run.project_id, "training_run": run.pk, "images": images,
                                                 "questions": questions}, format="multipart")
    assert r.status_code == (201 if can_ask else 403)
    # another member's question history stays theirs: not the row, not its files ...
    assert client.get(f"/api/v1/predictions/{shared['id']}/").status_code == 404
    for which in ("image", "overlay", "heatmap"):
        assert client.get(shared[which]).status_code == 404
    # ... while evaluations and their predictions' files are project data every member may read
    images, questions, _ = batch_files(1)
    with django_capture_on_commit_callbacks(execute=True):
        ev = client_for(owner).post("/api/v1/evaluations/", {"project": run.project_id, "training_run": run.pk,
                                                             "images": images, "questions": questions},
                                    format="multipart").json()
    run_jobs()
    batch = client.get(f"/api/v1/evaluations/{ev['id']}/predictions/").json()["results"]
    assert batch and client.get(batch[0]["overlay"]).status_code == 200
    assert client.get(batch[0]["image"]).status_code == 200
    assert client.get("/api/v1/evaluations/").status_code == 200
    if can_ask:  # and one's own history files
        assert client.get(_predict(client, run.pk).json()["overlay"]).status_code == 200


def test_history_is_per_user_and_filterable(run, owner, members, client_for):
    _predict(client_for(owner), run.pk, question="What color is the shape?")
    _predict(client_for(owner), run.pk, question="Is there a circle?")
    _predict(client_for(members["editor"]), run.pk, question="Is there a triangle?")
    mine = client_for(owner).get("/api/v1/predictions/").json()
    assert mine["count"] == 2
    assert client_for(owner).get("/api/v1/predictions/?q=circle").json()["count"] == 1
    assert client_for(owner).get(f"/api/v1/predictions/?training_run={run.pk}").json()["count"] == 2
    assert client_for(members["editor"]).get("/api/v1/predictions/").json()["count"] == 1


def test_schema_lists_the_evaluation_endpoints():
    from django.urls import include, path
    from drf_spectacular.generators import SchemaGenerator

    # only this app's routes: the schema of the evaluation endpoints must build on its own
    generator = SchemaGenerator(patterns=[path("api/v1/", include("evaluation_app.api_urls"))])
    paths = generator.get_schema(request=None, public=True)["paths"]
    for p in ("/api/v1/training-runs/{id}/predict/", "/api/v1/models/{key}/predict/", "/api/v1/evaluations/",
              "/api/v1/evaluations/{id}/", "/api/v1/evaluations/{id}/predictions.csv",
              "/api/v1/evaluations/{id}/annotated.zip", "/api/v1/evaluations/{id}/predictions/",
              "/api/v1/predictions/", "/api/v1/predictions/{id}/files/{which}/"):
        assert p in paths, (p, sorted(paths))
    predict = paths["/api/v1/training-runs/{id}/predict/"]["post"]
    assert "multipart/form-data" in predict["requestBody"]["content"]
    assert "multipart/form-data" in paths["/api/v1/evaluations/"]["post"]["requestBody"]["content"]
    assert "text/csv" in paths["/api/v1/evaluations/{id}/predictions.csv"]["get"]["responses"]["200"]["content"]
