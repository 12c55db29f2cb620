"""Issue 14 through the pages: "Evaluate on: <dataset>", the leaderboard (sortable, chart + text alternative),
the review queue worked with the keyboard's form posts, version N+1 from the dataset page, "Train again on
version N+1" and the model card on the run page. Bad input answers 4xx with a message, never 5xx."""
from __future__ import annotations

import io

import pytest
from django.test import Client
from django.urls import reverse

from datasets_app.models import Correction, Dataset
from evaluation_app.models import Evaluation, Prediction
from tests.api.test_loop_api import _batch_prediction, _finished, zero_shot  # noqa: F401  (fixture)
from tests.evaluation_helpers import (  # noqa: F401  (fixtures)
    baseline_model,
    make_dataset,
    make_run,
    run,
    trained_baseline_dir,
)
from training_app.models import TrainingRun

pytestmark = pytest.mark.django_db


def login(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def holdout(project, owner):
    return make_dataset(project, n_images=2, user=owner)


def test_evaluate_on_a_dataset_from_the_workspace(run, project, owner, members, holdout, run_jobs,
                                                  django_capture_on_commit_callbacks):
    c = login(owner)
    url = reverse("evaluation:run", args=[run.pk])
    html = c.get(url + "?tab=batch").content.decode()
    assert "Evaluate on" in html and f'<option value="{holdout.pk}">' in html
    with django_capture_on_commit_callbacks(execute=True):
        r = c.post(url, {"mode": "dataset", "d-dataset": holdout.pk, "d-name": "Holdout check"})
    ev = Evaluation.objects.get()
    assert r.status_code == 302 and r["Location"] == reverse("evaluation:evaluation", args=[ev.pk])
    assert ev.dataset_id == holdout.pk and ev.name == "Holdout check"
    run_jobs()
    html = c.get(r["Location"]).content.decode()
    assert 'data-level="success"' in html and 'id="review-link"' in html and 'id="leaderboard-link"' in html
    assert "evaluated on" in html
    # bad choices: another project's dataset, junk, a huge number -> 400 with the form's message
    for bad in (make_dataset(project, n_images=1).pk + 1000, "abc", 10**30, ""):
        r = c.post(url, {"mode": "dataset", "d-dataset": bad})
        assert r.status_code == 400 and "alert-danger" in r.content.decode(), bad
    assert Evaluation.objects.count() == 1
    assert login(members["viewer"]).post(url, {"mode": "dataset", "d-dataset": holdout.pk}).status_code == 403


def test_leaderboard_page(make_run, project, owner, other_user, holdout, zero_shot):
    run_a, run_b = make_run(project, user=owner), make_run(project, user=owner)
    run_a._update(metrics={"train_seconds": 30})
    _finished(project, holdout, run=run_a, acc=60.0, ece=0.2, qps=50.0)
    _finished(project, holdout, run=run_b, acc=80.0, ece=0.1, qps=20.0)
    _finished(project, holdout, model=zero_shot, acc=None, qps=99.0)
    c = login(owner)
    url = reverse("evaluation:leaderboard", args=[project.pk])
    r = c.get(url + f"?dataset={holdout.pk}")
    assert r.status_code == 200
    rows = r.context["rows"]
    assert [row["vqa_accuracy"] for row in rows] == [80.0, 60.0, None]  # best first, unmeasured last
    html = r.content.decode()
    assert 'canvas id="lb-chart"' in html and 'id="lb-chart-text"' in html and "80.00 %" in html
    assert 'aria-sort="descending"' in html and "zero-shot" in html and "fine-tuned" in html
    # sortable: fastest first, lowest ECE first
    assert [row["questions_per_second"] for row in c.get(url + f"?dataset={holdout.pk}&sort=questions_per_second"
                                                         ).context["rows"]] == [99.0, 50.0, 20.0]
    assert [row["ece"] for row in c.get(url + f"?dataset={holdout.pk}&sort=ece").context["rows"]][:2] == [0.1, 0.2]
    assert c.get(url + f"?dataset={holdout.pk}&sort=nonsense").context["sort"] == "vqa_accuracy"
    assert c.get(url).context["dataset"].pk == holdout.pk  # the first evaluated dataset by default
    for bad in ("abc", str(10**30), "-1"):
        assert c.get(url + f"?dataset={bad}").status_code == 400
    assert login(other_user).get(url + f"?dataset={holdout.pk}").status_code == 404
    project_html = c.get(reverse("projects:detail", args=[project.pk])).content.decode()
    assert url in project_html


def test_review_page_keyboard_flow(run, project, owner, members, other_user, holdout):
    ev = _finished(project, holdout, run=run, acc=50.0)
    image = holdout.items.first().image
    low = _batch_prediction(ev, row=1, confidence=0.1, top_k=[{"answer": "red", "score": 0.1}], image=image,
                            name="low.png")
    mid = _batch_prediction(ev, row=2, confidence=0.5, top_k=[{"answer": "blue", "score": 0.5}], image=image,
                            question="What shape is it?", name="mid.png")
    c = login(members["editor"])
    url = reverse("evaluation:review", args=[ev.pk])
    r = c.get(url)
    assert r.status_code == 200 and r.context["current"].pk == low.pk
    html = r.content.decode()
    assert "autofocus" in html and 'id="review-keys"' in html and "low.png" in html
    assert f'value="{run.dataset_id}" selected' in html  # corrections go into the run's training dataset
    # Enter on an empty box: accept
    r = c.post(url, {"prediction": low.pk, "answer": "", "dataset": run.dataset_id})
    assert r.status_code == 302
    corr = Correction.objects.get(prediction=low)
    assert corr.accepted and corr.answer == "red" and corr.dataset_id == run.dataset_id
    assert c.get(r["Location"]).context["current"].pk == mid.pk
    # a typed answer: a correction
    r = c.post(url, {"prediction": mid.pk, "answer": "circle", "dataset": run.dataset_id, "action": "correct"})
    assert r.status_code == 302 and Correction.objects.get(prediction=mid).answer == "circle"
    done = c.get(url)
    assert done.context["current"] is None and 'id="review-done"' in done.content.decode()
    # bad input -> 400 with a message, nothing recorded
    other_ev = _finished(project, holdout, run=run, acc=10.0)
    stranger = _batch_prediction(other_ev, row=1, confidence=0.1, top_k=[{"answer": "x", "score": 0.1}])
    for data in ({"prediction": stranger.pk, "answer": "y"}, {"prediction": "abc"}, {"prediction": 10**30},
                 {"prediction": mid.pk, "answer": "y", "dataset": 10**30},
                 {"prediction": mid.pk, "answer": "."}):
        r = c.post(url, {"dataset": run.dataset_id, **data})
        assert r.status_code == 400 and "alert-danger" in r.content.decode(), data
    assert Correction.objects.count() == 2
    assert login(members["viewer"]).get(url).status_code == 200
    assert login(members["viewer"]).post(url, {"prediction": mid.pk, "answer": "z"}).status_code == 403
    assert login(other_user).get(url).status_code == 404


def test_version_and_retrain_pages(run, project, owner, members, run_jobs, django_capture_on_commit_callbacks):
    train_ds = run.dataset
    item = train_ds.items.order_by("row").first()
    pred = Prediction.objects.create(project=project, kind="batch", training_run=run, image=item.image,
                                     image_original_name=item.image_original_name, question="Is it big?",
                                     answer="no", confidence=0.2, top_k=[])
    Correction.objects.create(dataset=train_ds, prediction=pred, image=item.image, question="Is it big?",
                              answer="Yes", created_by=owner, image_original_name=item.image_original_name)
    c = login(owner)
    html = c.get(reverse("datasets:detail", args=[train_ds.pk])).content.decode()
    assert 'data-testid="pending-count">1<' in html and 'id="new-version-button"' in html
    with django_capture_on_commit_callbacks(execute=True):
        r = c.post(reverse("datasets:new_version", args=[train_ds.pk]))
    v2 = Dataset.objects.get(parent=train_ds)
    assert r.status_code == 302 and r["Location"] == reverse("datasets:detail", args=[v2.pk])
    run_jobs()
    v2.refresh_from_db()
    assert v2.status == "succeeded" and v2.version == 2 and v2.items.count() == train_ds.items.count() + 1
    html = c.get(r["Location"]).content.decode()
    assert 'data-testid="version-badge">version 2<' in html and "1 corrections" in html
    # nothing pending: a clear message, no new version
    r = c.post(reverse("datasets:new_version", args=[train_ds.pk]), follow=True)
    assert "no pending corrections" in r.content.decode() and Dataset.objects.filter(parent=train_ds).count() == 1
    assert login(members["viewer"]).post(reverse("datasets:new_version", args=[train_ds.pk])).status_code == 403
    # the run page offers "Train again on version 2" and shows its model card
    html = c.get(reverse("training:detail", args=[run.pk])).content.decode()
    assert 'id="retrain-button"' in html and "Train again on version 2" in html
    assert 'data-testid="model-card-text"' in html and "library_name: transformers" in html
    with django_capture_on_commit_callbacks(execute=False):
        r = c.post(reverse("training:retrain", args=[run.pk]), {"dataset": v2.pk})
    new = TrainingRun.objects.exclude(pk=run.pk).get()
    assert r.status_code == 302 and r["Location"] == reverse("training:detail", args=[new.pk])
    assert new.dataset_id == v2.pk and all(new.params[k] == v for k, v in run.params.items())  # the same settings
    assert 'data-testid="dataset-version">version 2<' in c.get(r["Location"]).content.decode()
    for bad in ("abc", str(10**30), "999999"):
        r = c.post(reverse("training:retrain", args=[run.pk]), {"dataset": bad})
        assert r.status_code == 302 and r["Location"] == reverse("training:detail", args=[run.pk])
    assert TrainingRun.objects.count() == 2
    assert login(members["viewer"]).post(reverse("training:retrain", args=[run.pk])).status_code == 403


def test_review_and_history_pages_show_permission_checked_thumbnails(run, project, owner, members, other_user,
                                                                      holdout):
    """Issue 13: lists and review pages load small WebP thumbnails, never the full photos; the full image is a
    link away; a thumbnail URL is checked like the image's (another user gets 404)."""
    from django.core.files.storage import default_storage
    from PIL import Image

    from tests.evaluation_helpers import png_bytes, upload

    ev = _finished(project, holdout, run=run, acc=50.0)
    image = holdout.items.first().image
    low = _batch_prediction(ev, row=1, confidence=0.1, top_k=[{"answer": "red", "score": 0.1}], image=image)
    assert low.thumbnail == ""   # an evaluation from before thumbnails: made on first view
    editor = login(members["editor"])
    thumb_url = reverse("api-prediction-file", args=[low.pk, "thumbnail"])
    image_url = reverse("api-prediction-file", args=[low.pk, "image"])
    for url in (reverse("evaluation:review", args=[ev.pk]), reverse("evaluation:evaluation", args=[ev.pk])):
        html = editor.get(url).content.decode()
        assert f'<img src="{thumb_url}"' in html and f'<img src="{image_url}"' not in html, url
        assert f'href="{image_url}"' in html   # full size by click
    assert login(other_user).get(thumb_url).status_code == 404
    r = editor.get(thumb_url)
    assert r.status_code == 200 and r["Content-Type"] == "image/webp"
    with Image.open(io.BytesIO(b"".join(r.streaming_content))) as im:
        assert im.format == "WEBP" and max(im.size) <= 256
    low.refresh_from_db()
    assert low.thumbnail.endswith(".webp") and default_storage.exists(low.thumbnail)
    assert low.thumbnail.startswith(f"projects/{project.pk}/datasets/{holdout.pk}/thumbs/")  # beside the dataset's
    gone = _batch_prediction(ev, row=2, confidence=0.2, top_k=[{"answer": "red", "score": 0.2}], name="gone.png")
    assert editor.get(reverse("api-prediction-file", args=[gone.pk, "thumbnail"])).status_code == 404  # not a 500

    # a single question: its thumbnail is made when the image enters, once, and history lists show it
    c = login(owner)
    c.post(reverse("evaluation:run", args=[run.pk]),
           {"mode": "single", "q-image": upload("cat.jpg", png_bytes(size=(600, 300), fmt="JPEG"), "image/jpeg"),
            "q-question": "What color is the shape?"})
    single = Prediction.objects.get(kind="single")
    assert single.thumbnail.endswith(".webp") and default_storage.exists(single.thumbnail)
    with default_storage.open(single.thumbnail, "rb") as fh, Image.open(fh) as im:
        assert im.size == (256, 128)
    thumb_url = reverse("api-prediction-file", args=[single.pk, "thumbnail"])
    image_url = reverse("api-prediction-file", args=[single.pk, "image"])
    for url in (reverse("evaluation:history"), reverse("evaluation:run", args=[run.pk])):
        html = c.get(url).content.decode()
        assert f'<img src="{thumb_url}"' in html and f'<img src="{image_url}"' not in html, url
        assert 'alt="cat.jpg, full size' in html
    assert c.get(thumb_url).status_code == 200
    # personal history: other members of the project, and strangers, get 404
    assert login(members["viewer"]).get(thumb_url).status_code == 404
    assert login(other_user).get(thumb_url).status_code == 404
