"""Evaluation pages through the Django test client: run workspace (sample / single / batch), zero-shot page,
evaluation results with filters, question history with its ZIP, the project section, tenancy and roles."""
from __future__ import annotations

import csv
import io
import zipfile

import pytest
from django.test import Client
from django.urls import reverse
from django.utils.html import escape
from PIL import Image

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


def login(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_run_page_sample_and_single(run, owner):
    from evaluation_app.models import Prediction

    c = login(owner)
    url = reverse("evaluation:run", args=[run.pk])
    assert url == f"/evaluate/runs/{run.pk}/"
    page = c.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    for text in ("Try a sample image", "Your own image", "Many images (batch)", "Get answer"):
        assert text in html
    assert 'name="s-num_beams"' not in html  # classifier: no generation sliders
    sample = page.context["samples"][0]
    assert sample["key"].startswith("d")  # the run's validation images provide the samples (no holdout set here)
    assert "validation split" in page.context["samples_source"] and "validation split" in html
    assert c.get(reverse("evaluation:sample_image", args=[sample["key"]])).status_code == 200

    question = sample["questions"][0]["text"]
    r = c.post(url, {"mode": "sample", "s-sample": sample["key"], "s-question": question})
    assert r.status_code == 302 and "prediction=" in r["Location"]
    p = Prediction.objects.get(user=owner, kind="sample")
    assert p.question == question and p.expected_answers and p.vqa_score is not None
    shown = c.get(r["Location"]).content.decode()
    assert 'data-testid="answer"' in shown and p.answer in shown and "heatmap-toggle" in shown
    assert len(p.top_k) == 5 and shown.count('aria-valuemin="0"') == 5

    r = c.post(url, {"mode": "single", "q-image": upload("mine.jpg", png_bytes(fmt="JPEG"), "image/jpeg"),
                     "q-question": "Is there a red square?"})
    assert r.status_code == 302
    single = Prediction.objects.get(user=owner, kind="single")
    assert single.image_original_name == "mine.jpg" and single.overlay and single.heatmap
    assert c.get(reverse("api-prediction-file", args=[single.pk, "heatmap"])).status_code == 200

    r = c.post(url, {"mode": "single", "q-image": upload("x.png", b"nope", "image/png"), "q-question": "What?"})
    assert r.status_code == 400 and "not an image" in r.content.decode()


def test_batch_page_flow_with_filters(run, owner, run_jobs, django_capture_on_commit_callbacks):
    from evaluation_app.models import Evaluation

    c = login(owner)
    images, questions, items = batch_files(2)
    with django_capture_on_commit_callbacks(execute=True):
        r = c.post(reverse("evaluation:run", args=[run.pk]),
                   {"mode": "batch", "b-images": images, "b-questions": questions, "b-name": "Holdout"})
    ev = Evaluation.objects.get()
    assert r.status_code == 302 and r["Location"] == reverse("evaluation:evaluation", args=[ev.pk])
    queued = c.get(r["Location"]).content.decode()
    assert 'id="eval-progress"' in queued
    run_jobs()
    html = c.get(r["Location"]).content.decode()
    assert 'data-level="success"' in html and 'data-testid="vqa-accuracy"' in html
    assert html.count("<tr>") >= len(items)
    ev.refresh_from_db()
    wrong = ev.predictions.filter(vqa_score__lt=1).count()
    page = c.get(r["Location"] + "?wrong=1")
    assert len(page.context["page"].object_list) == min(wrong, 50)
    needle = items[0]["question"].split()[-1].rstrip("?")
    page = c.get(r["Location"] + f"?q={needle}")
    assert all(needle.lower() in (p.question + p.answer).lower() for p in page.context["page"].object_list)
    assert c.get(reverse("api-evaluation-csv", args=[ev.pk])).status_code == 200
    # thumbnails were made once, at cleaning, and the list shows them (the full image is one click away)
    from django.core.files.storage import default_storage
    shown = page.context["page"].object_list[0]
    assert all(p.thumbnail.startswith(f"projects/{run.project_id}/evaluations/{ev.pk}/thumbs/")
               and p.thumbnail.endswith(".webp") and default_storage.exists(p.thumbnail) for p in ev.predictions.all())
    html = page.content.decode()
    assert reverse("api-prediction-file", args=[shown.pk, "thumbnail"]) in html
    assert f'<img src="{reverse("api-prediction-file", args=[shown.pk, "image"])}"' not in html
    # the project page lists it
    project_html = c.get(reverse("projects:detail", args=[run.project_id])).content.decode()
    assert "Holdout" in project_html and reverse("evaluation:run", args=[run.pk]) in project_html


def test_warning_and_error_banners(run, owner, run_jobs, django_capture_on_commit_callbacks):
    from evaluation_app.models import Evaluation

    c = login(owner)
    images, questions, items = batch_files(1, extra_rows=[("ghost.png", "Is it there?", "no")])
    with django_capture_on_commit_callbacks(execute=True):
        c.post(reverse("evaluation:run", args=[run.pk]), {"mode": "batch", "b-images": images, "b-questions": questions})
        c.post(reverse("evaluation:run", args=[run.pk]),
               {"mode": "batch", "b-images": upload("i.zip", b"garbage", "application/zip"),
                "b-questions": upload("q.csv", b"image,question\n1.png,What?\n", "text/csv")})
    run_jobs()
    warn, bad = Evaluation.objects.order_by("pk")
    html = c.get(reverse("evaluation:evaluation", args=[warn.pk])).content.decode()
    assert 'data-level="warning"' in html and "ghost.png" in html
    html = c.get(reverse("evaluation:evaluation", args=[bad.pk])).content.decode()
    assert 'data-level="error"' in html and escape(bad.error) in html


def test_zero_shot_page_with_generation_sliders(blip_model, project, owner):
    from evaluation_app.models import Prediction

    c = login(owner)
    listing = c.get(reverse("evaluation:zero_shot") + f"?project={project.pk}").content.decode()
    assert "BLIP VQA" in listing and reverse("evaluation:model", args=[blip_model.pk]) in listing
    assert "Choose one" in c.get(reverse("evaluation:model", args=[blip_model.pk])).content.decode()
    url = reverse("evaluation:model", args=[blip_model.pk]) + f"?project={project.pk}"
    html = c.get(url).content.decode()
    assert 'name="q-num_beams"' in html and 'name="q-max_new_tokens"' in html
    assert page_samples_are_easy_vqa(c.get(url).context["samples"])
    r = c.post(url, {"mode": "single", "q-image": upload("a.png", png_bytes(), "image/png"), "q-question": "what?",
                     "q-num_beams": "2", "q-max_new_tokens": "3"})
    assert r.status_code == 302, r.content.decode()[:2000]
    p = Prediction.objects.get(model=blip_model)
    assert p.params == {"top_k": 5, "num_beams": 2, "max_new_tokens": 3}


def page_samples_are_easy_vqa(samples) -> bool:
    return bool(samples) and all(s["key"].startswith("e") and s["questions"] for s in samples)


def test_history_page_and_zip(run, owner):
    c = login(owner)
    url = reverse("evaluation:run", args=[run.pk])
    for q in ("=cmd|' /C calc'!A0", "What color is the shape?", "What color is the shape?"):
        c.post(url, {"mode": "single", "q-image": upload("s.png", png_bytes(), "image/png"), "q-question": q})
    html = c.get(reverse("evaluation:history")).content.decode()
    assert html.count("Tiny baseline") >= 3 and "What color is the shape?" in html
    r = c.get(reverse("evaluation:history_zip"))
    assert r.status_code == 200 and r["Content-Type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(b"".join(r.streaming_content)))
    names = zf.namelist()
    # overlays are drawn lazily; the ZIP draws the missing ones (an overlay is scaled up to >= 256 px, the image is 64)
    assert Image.open(zf.open("annotated/What color is the shape.png")).size[0] >= 256
    assert "annotated/What color is the shape.png" in names and "annotated/What color is the shape-2.png" in names
    assert sum(n.startswith("images/") for n in names) == 3
    rows = list(csv.DictReader(io.StringIO(zf.read("history.csv").decode("utf-8-sig"))))
    assert len(rows) == 3 and any(r["question"].startswith("'=cmd") for r in rows)
    assert all(r["model"] == "Tiny baseline" for r in rows)


def test_tenancy_and_roles_on_pages(run, owner, other_user, members):
    from evaluation_app.models import Prediction

    c = login(owner)
    url = reverse("evaluation:run", args=[run.pk])
    c.post(url, {"mode": "single", "q-image": upload("s.png", png_bytes(), "image/png"), "q-question": "Shape?"})
    p = Prediction.objects.get()
    outsider = login(other_user)
    assert outsider.get(url).status_code == 404
    assert outsider.post(url, {"mode": "single", "q-question": "x"}).status_code == 404
    assert outsider.get(reverse("api-prediction-file", args=[p.pk, "overlay"])).status_code == 404
    assert outsider.get(reverse("evaluation:sample_image", args=[f"d{run.dataset.items.first().pk}"])).status_code == 404
    assert "Shape?" not in outsider.get(reverse("evaluation:history")).content.decode()
    assert outsider.get(reverse("evaluation:history_zip")).status_code == 404
    viewer = login(members["viewer"])
    html = viewer.get(url).content.decode()
    assert "You are a viewer" in html
    r = viewer.post(url, {"mode": "single", "q-image": upload("s.png", png_bytes(), "image/png"), "q-question": "x"})
    assert r.status_code == 403
    # the owner's question history is personal: other members get 404 for its files too
    for which in ("image", "overlay", "heatmap"):
        assert viewer.get(reverse("api-prediction-file", args=[p.pk, which])).status_code == 404
        assert c.get(reverse("api-prediction-file", args=[p.pk, which])).status_code == 200
    assert Prediction.objects.count() == 1


def test_zero_shot_model_without_weights_says_so(blip_model, project, owner, client_for):
    blip_model.source, blip_model.available = "Salesforce/blip-vqa-base", False
    blip_model.availability_reason = "not in the local Hugging Face cache"
    blip_model.save()
    c = login(owner)
    html = c.get(reverse("evaluation:model", args=[blip_model.pk]) + f"?project={project.pk}").content.decode()
    assert "not in the local Hugging Face cache" in html and "Get answer" not in html
    listing = c.get(reverse("evaluation:zero_shot")).content.decode()
    assert "Weights not on this server" in listing
    data = {"image": upload("s.png", png_bytes(), "image/png"), "question": "what?"}
    r = client_for(owner).post(f"/api/v1/models/blip/predict/?project={project.pk}", data, format="multipart")
    assert r.status_code == 409 and "not on this server" in r.json()["detail"]
