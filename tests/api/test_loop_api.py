"""Issue 14 through the API: evaluate on a project dataset, the leaderboard, the review queue, corrections into
dataset versions, training again on a version, and the model card. Jobs run on a real RQ SimpleWorker."""
from __future__ import annotations

import io
import zipfile

import pytest
import yaml

from datasets_app.models import Correction, Dataset, DatasetItem
from evaluation_app.models import Evaluation, Prediction
from tests.evaluation_helpers import (  # noqa: F401  (fixtures)
    baseline_model,
    batch_files,
    make_dataset,
    make_run,
    run,
    trained_baseline_dir,
)
from training_app.models import TrainingRun

pytestmark = pytest.mark.django_db
V1 = "/api/v1"
HUGE = 10**30


@pytest.fixture
def zero_shot(db, trained_baseline_dir):
    from training_app.models import PretrainedModel

    return PretrainedModel.objects.create(
        key="loop-zs", name="Loop zero-shot", family="baseline", task="classify", registry_key="baseline-rnn",
        zero_shot=True, enabled=True, available=True, can_explain=True, source=str(trained_baseline_dir))


@pytest.fixture
def holdout(project, owner):
    return make_dataset(project, n_images=2, user=owner)


def _evaluate(client, project, holdout, capture, **target):
    with capture(execute=True):
        r = client.post(f"{V1}/evaluations/", {"project": project.pk, "dataset": holdout.pk, **target}, format="json")
    assert r.status_code == 201, r.content
    return r.json()


# ------------------------------------------------------------------------------------------ 1. evaluate on a dataset
def test_evaluate_on_a_project_dataset(run, project, owner, holdout, client_for, run_jobs,
                                       django_capture_on_commit_callbacks):
    client = client_for(owner)
    body = _evaluate(client, project, holdout, django_capture_on_commit_callbacks, training_run=run.pk)
    assert body["dataset"] == holdout.pk and body["status"] == "queued"
    run_jobs()
    ev = Evaluation.objects.get(pk=body["id"])
    assert ev.status == "succeeded", ev.error
    items = list(holdout.items.order_by("row"))
    preds = list(ev.predictions.order_by("row"))
    assert [p.question for p in preds] == [it.question for it in items]
    # image files are the dataset's own (shared, not copied), names as uploaded
    assert [p.image for p in preds] == [it.image for it in items]
    assert [p.image_original_name for p in preds] == [it.image_original_name for it in items]
    assert all(p.margin is not None and 0 <= p.margin <= 1 for p in preds)
    m = ev.metrics
    assert m["vqa_accuracy"] is not None and m["labelled"] == len(items)
    assert m["questions_per_second"] > 0 and m["model_parameters"] > 1000
    assert ev.counts["rows_kept"] == len(items) and ev.counts["dataset_version"] == 1
    # multipart works too, and so does a zero-shot model
    r = client.post(f"{V1}/evaluations/", {"project": project.pk, "training_run": run.pk, "dataset": holdout.pk},
                    format="multipart")
    assert r.status_code == 201
    # a dataset evaluated on stays (its images are the predictions' images): 409 with the reason, nothing lost
    r = client.delete(f"{V1}/datasets/{holdout.pk}/")
    assert r.status_code == 409 and "2 evaluations" in r.json()["detail"]
    assert Dataset.objects.filter(pk=holdout.pk).exists() and holdout.items.count() == len(items)


@pytest.mark.parametrize("payload, field", [
    ({"dataset": "abc"}, "dataset"),
    ({"dataset": HUGE}, "dataset"),
    ({"dataset": -1}, "dataset"),
    ({"dataset": [1]}, "dataset"),
    ({}, "images"),
])
def test_evaluate_on_dataset_bad_types(run, project, owner, client_for, payload, field):
    r = client_for(owner).post(f"{V1}/evaluations/", {"project": project.pk, "training_run": run.pk, **payload},
                               format="json")
    assert r.status_code == 400 and field in r.json(), r.content
    assert not Evaluation.objects.exists()


def test_evaluate_on_dataset_refusals(run, project, owner, other_user, members, holdout, client_for):
    from piggyback.project_services import create_project

    theirs = create_project(other_user, "Theirs", "")
    other_ds = make_dataset(theirs, n_images=1, user=other_user)
    client = client_for(owner)
    base = {"project": project.pk, "training_run": run.pk}
    r = client.post(f"{V1}/evaluations/", {**base, "dataset": other_ds.pk}, format="json")
    assert r.status_code == 400 and "not a dataset of the project" in r.json()["dataset"]
    r = client.post(f"{V1}/evaluations/", {**base, "dataset": 2**31 - 1}, format="json")
    assert r.status_code == 400
    Dataset.objects.filter(pk=holdout.pk).update(status="running")
    r = client.post(f"{V1}/evaluations/", {**base, "dataset": holdout.pk}, format="json")
    assert r.status_code == 400 and "not ready" in r.json()["dataset"]
    Dataset.objects.filter(pk=holdout.pk).update(status="succeeded")
    images, questions, _ = batch_files(1)
    r = client.post(f"{V1}/evaluations/", {**base, "dataset": holdout.pk, "images": images, "questions": questions},
                    format="multipart")
    assert r.status_code == 400 and "not both" in str(r.json())
    r = client_for(members["viewer"]).post(f"{V1}/evaluations/", {**base, "dataset": holdout.pk}, format="json")
    assert r.status_code == 403
    r = client_for(other_user).post(f"{V1}/evaluations/", {**base, "dataset": holdout.pk}, format="json")
    assert r.status_code == 404
    r = client.post(f"{V1}/evaluations/", {**base, "project": HUGE, "dataset": holdout.pk}, format="json")
    assert r.status_code == 400
    assert not Evaluation.objects.exists()


# ------------------------------------------------------------------------------------------ 2. leaderboard
def _finished(project, dataset, *, run=None, model=None, acc=None, ece=None, qps=10.0, when=0):
    from datetime import timedelta

    from django.utils import timezone

    metrics = {"vqa_accuracy": acc, "per_answer_type": {"other": acc, "yes/no": 100.0} if acc is not None else {},
               "per_question_type": {"what color is the": acc} if acc is not None else {},
               "questions_per_second": qps, "model_parameters": 1234, "labelled": 4, "count": 4}
    if ece is not None:
        metrics["ece"] = ece
    return Evaluation.objects.create(project=project, training_run=run, model=model, dataset=dataset,
                                     status="succeeded", images_file="", questions_file="", metrics=metrics,
                                     finished_at=timezone.now() + timedelta(seconds=when))


def test_leaderboard_rows_ordering_and_latest(make_run, project, owner, holdout, zero_shot, client_for):
    run_a, run_b = make_run(project, user=owner), make_run(project, user=owner)
    run_a._update(metrics={"train_seconds": 12.5})
    _finished(project, holdout, run=run_a, acc=40.0, when=0)
    latest_a = _finished(project, holdout, run=run_a, acc=70.0, ece=0.05, when=10)   # the latest one counts
    ev_b = _finished(project, holdout, run=run_b, acc=90.0, when=5)
    ev_zs = _finished(project, holdout, model=zero_shot, acc=55.0, when=3)
    _finished(project, make_dataset(project, n_images=1), run=run_b, acc=99.0)      # another dataset: not here
    Evaluation.objects.create(project=project, training_run=run_b, dataset=holdout, status="failed",
                              images_file="", questions_file="", metrics={"vqa_accuracy": 100.0})
    r = client_for(owner).get(f"{V1}/projects/{project.pk}/leaderboard/?dataset={holdout.pk}")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["count"] == 3 and set(body) >= {"count", "next", "previous", "results"}
    rows = body["results"]
    assert [row["vqa_accuracy"] for row in rows] == [90.0, 70.0, 55.0]
    assert [row["evaluation"] for row in rows] == [ev_b.pk, latest_a.pk, ev_zs.pk]
    assert rows[0]["target"] == {"type": "training_run", "id": run_b.pk, "name": str(run_b), "key": ""}
    assert rows[2]["target"]["type"] == "model" and rows[2]["target"]["id"] == zero_shot.pk
    assert rows[1]["ece"] == 0.05 and rows[0]["ece"] is None
    assert rows[1]["per_answer_type"] == {"other": 70.0, "yes/no": 100.0}
    assert rows[1]["questions_per_second"] == 10.0 and rows[1]["training_seconds"] == 12.5
    assert rows[2]["training_seconds"] is None and rows[0]["model_parameters"] == 1234
    assert set(rows[0]) >= {"target", "evaluation", "vqa_accuracy", "per_answer_type", "ece",
                            "questions_per_second", "per_question_type"}
    # paginated like every list: page 2 of 3 rows (page size 50) does not exist
    assert client_for(owner).get(f"{V1}/projects/{project.pk}/leaderboard/?dataset={holdout.pk}&page=2"
                                 ).status_code == 404


def test_leaderboard_bad_input(project, owner, other_user, members, holdout, client_for):
    from piggyback.project_services import create_project

    theirs = make_dataset(create_project(other_user, "Theirs", ""), n_images=1)
    client = client_for(owner)
    url = f"{V1}/projects/{project.pk}/leaderboard/"
    for query in ("", "?dataset=", "?dataset=abc", f"?dataset={HUGE}", "?dataset=-3", f"?dataset={theirs.pk}",
                  "?dataset=0"):
        r = client.get(url + query)
        assert r.status_code == 400 and "dataset" in r.json(), (query, r.content)
    assert client.get(url + f"?dataset={holdout.pk}").json()["count"] == 0
    assert client_for(members["viewer"]).get(url + f"?dataset={holdout.pk}").status_code == 200
    assert client_for(other_user).get(url + f"?dataset={holdout.pk}").status_code == 404
    assert client_for(None).get(url + f"?dataset={holdout.pk}").status_code == 401  # no credentials
    assert client.get(f"{V1}/projects/{HUGE}/leaderboard/?dataset={holdout.pk}").status_code == 404


# ------------------------------------------------------------------------------------------ 3. review queue
def _batch_prediction(ev, *, row, confidence, top_k, question="What color is the shape?", image=None, name="a.png"):
    from evaluation_app.models import margin_of

    return Prediction.objects.create(
        project=ev.project, kind="batch", evaluation=ev, training_run=ev.training_run, model=ev.model,
        user=ev.created_by, row=row, image=image or f"projects/{ev.project_id}/evaluations/{ev.pk}/images/{name}",
        image_original_name=name, question=question, answer=top_k[0]["answer"], confidence=confidence,
        margin=margin_of(top_k, confidence), top_k=top_k)


def test_review_queue_order_and_fields(run, project, owner, members, other_user, holdout, client_for):
    ev = _finished(project, holdout, run=run, acc=50.0)
    sure = _batch_prediction(ev, row=1, confidence=0.9, top_k=[{"answer": "red", "score": 0.9},
                                                               {"answer": "blue", "score": 0.05}])
    wide = _batch_prediction(ev, row=2, confidence=0.4, top_k=[{"answer": "red", "score": 0.4},
                                                               {"answer": "blue", "score": 0.1}], name="b.png")
    close = _batch_prediction(ev, row=3, confidence=0.4, top_k=[{"answer": "red", "score": 0.4},
                                                                {"answer": "blue", "score": 0.39}], name="c.png")
    low = _batch_prediction(ev, row=4, confidence=0.2, top_k=[{"answer": "green", "score": 0.2}], name="d.png")
    r = client_for(members["viewer"]).get(f"{V1}/evaluations/{ev.pk}/review/")
    assert r.status_code == 200, r.content
    results = r.json()["results"]
    assert [p["id"] for p in results] == [low.pk, close.pk, wide.pk, sure.pk]
    assert results[0]["image_name"] == "d.png" and results[0]["answer"] == "green"
    assert results[0]["confidence"] == 0.2 and results[0]["question"] == "What color is the shape?"
    assert results[1]["margin"] == pytest.approx(0.01) and results[0]["correction"] is None
    Correction.objects.create(dataset=holdout, prediction=low, image=low.image, question=low.question, answer="x")
    pending = client_for(owner).get(f"{V1}/evaluations/{ev.pk}/review/?pending=1").json()["results"]
    assert [p["id"] for p in pending] == [close.pk, wide.pk, sure.pk]
    full = client_for(owner).get(f"{V1}/evaluations/{ev.pk}/review/").json()["results"]
    assert full[0]["correction"]["answer"] == "x" and full[0]["correction"]["pending"] is True
    assert client_for(other_user).get(f"{V1}/evaluations/{ev.pk}/review/").status_code == 404
    assert client_for(owner).get(f"{V1}/evaluations/{HUGE}/review/").status_code == 404
    assert client_for(owner).get(f"{V1}/evaluations/abc/review/").status_code == 404


# ------------------------------------------------------------------------------------------ 4. corrections + versions
@pytest.fixture
def evaluated(run, project, owner, holdout, client_for, run_jobs, django_capture_on_commit_callbacks):
    body = _evaluate(client_for(owner), project, holdout, django_capture_on_commit_callbacks, training_run=run.pk)
    run_jobs()
    ev = Evaluation.objects.get(pk=body["id"])
    assert ev.status == "succeeded", ev.error
    return ev


def test_correct_then_version_two(evaluated, run, project, owner, client_for, run_jobs,
                                  django_capture_on_commit_callbacks):
    client = client_for(owner)
    train_ds = run.dataset
    first, second = list(evaluated.predictions.order_by("row"))[:2]
    r = client.post(f"{V1}/predictions/{first.pk}/correct/", {"answer": "  The Purple. "}, format="json")
    assert r.status_code == 201, r.content
    c = r.json()
    assert c["dataset"] == train_ds.pk and c["pending"] and c["answer"] == "The Purple."
    # the same (image, question) again: the pending correction is updated, not doubled
    r = client.post(f"{V1}/predictions/{first.pk}/correct/", {"answer": "Purple"}, format="json")
    assert r.status_code == 200 and Correction.objects.count() == 1
    r = client.post(f"{V1}/predictions/{second.pk}/correct/", {"accept": True}, format="json")
    assert r.status_code == 201 and r.json()["answer"] == second.answer and r.json()["accepted"]
    # a correction of an item the training dataset already has replaces its answers
    existing = train_ds.items.order_by("row").first()
    same = Prediction.objects.create(project=project, kind="batch", evaluation=evaluated, training_run=run,
                                     image=existing.image, image_original_name=existing.image_original_name,
                                     question=existing.question, answer="no", confidence=0.1, top_k=[])
    assert client.post(f"{V1}/predictions/{same.pk}/correct/", {"answer": "Two"}, format="json").status_code == 201
    # an unreadable image is dropped with its reason
    broken = Prediction.objects.create(project=project, kind="batch", evaluation=evaluated, training_run=run,
                                       image=f"projects/{project.pk}/gone.png", image_original_name="gone.png",
                                       question="What is it?", answer="x", confidence=0.1, top_k=[])
    assert client.post(f"{V1}/predictions/{broken.pk}/correct/", {"answer": "cat"}, format="json").status_code == 201
    assert client.get(f"{V1}/datasets/{train_ds.pk}/").json()["pending_corrections"] == 4

    with django_capture_on_commit_callbacks(execute=True):
        r = client.post(f"{V1}/datasets/{train_ds.pk}/versions/", format="json")
    assert r.status_code == 202, r.content
    v2 = r.json()
    assert v2["version"] == 2 and v2["parent"] == train_ds.pk and v2["id"] != train_ds.pk
    assert client.get(f"{V1}/datasets/{train_ds.pk}/").json()["pending_corrections"] == 0
    run_jobs()
    version = Dataset.objects.get(pk=v2["id"])
    assert version.status == "succeeded", version.error
    parent_items = list(train_ds.items.order_by("row"))
    items = {(it.image, it.question): it for it in version.items.all()}
    assert len(items) == len(parent_items) + 2  # two new (image, question) pairs; the replaced one stays one item
    replaced = items[(existing.image, existing.question)]
    assert replaced.answers == ["2"] * 10 and replaced.original_answers == ["Two"] and replaced.row == existing.row
    added = items[(first.image, first.question)]
    assert added.answers == ["purple"] * 10 and added.image == first.image  # the file is shared, not copied
    assert added.row > max(it.row for it in parent_items) and added.image_original_name == first.image_original_name
    assert items[(second.image, second.question)].answers == [second.answer] * 10
    untouched = parent_items[1]
    assert items[(untouched.image, untouched.question)].answers == untouched.answers
    assert version.counts["replaced"] == 1 and version.counts["added"] == 2 and version.level == "warning"
    report = client.get(f"{V1}/datasets/{version.pk}/report.csv")
    assert report.status_code == 200 and b"image_not_found" in report.content and b"gone.png" in report.content
    assert version.stats.get("questions") == len(items)
    # version 2 trains and evaluates from the shared files
    from datasets_app.services import training_items

    rows, root = training_items(version, labelled_only=True)
    assert len(rows) == len(items) and all((root / it["image"]).is_file() for it in rows)
    # nothing pending any more: a new version needs new corrections; versions never change
    r = client.post(f"{V1}/datasets/{train_ds.pk}/versions/", format="json")
    assert r.status_code == 400 and "no pending corrections" in r.json()["detail"]
    # the parent cannot be deleted while a version is made from it
    r = client.delete(f"{V1}/datasets/{train_ds.pk}/")
    assert r.status_code == 409 and "version" in r.json()["detail"]


def test_corrections_bad_input(evaluated, run, project, owner, members, other_user, zero_shot, holdout, client_for):
    from piggyback.project_services import create_project

    pred = evaluated.predictions.order_by("row").first()
    url = f"{V1}/predictions/{pred.pk}/correct/"
    client = client_for(owner)
    for payload, field in [({}, "answer"), ({"answer": ""}, "answer"), ({"answer": "   "}, "answer"),
                           ({"answer": ["red"]}, "answer"), ({"answer": {"a": 1}}, "answer"),
                           ({"answer": "x" * 301}, "answer"), ({"answer": "."}, "answer"),
                           ({"answer": "red", "dataset": "abc"}, "dataset"),
                           ({"answer": "red", "dataset": HUGE}, "dataset"),
                           ({"answer": "red", "dataset": -1}, "dataset"),
                           ({"answer": "red", "accept": "maybe"}, "accept")]:
        r = client.post(url, payload, format="json")
        assert r.status_code == 400 and field in r.json(), (payload, r.content)
    theirs = make_dataset(create_project(other_user, "Theirs", ""), n_images=1)
    r = client.post(url, {"answer": "red", "dataset": theirs.pk}, format="json")
    assert r.status_code == 400 and "not a dataset" in r.json()["dataset"]
    assert client_for(members["viewer"]).post(url, {"answer": "red"}, format="json").status_code == 403
    assert client_for(other_user).post(url, {"answer": "red"}, format="json").status_code == 404
    assert client_for(None).post(url, {"answer": "red"}, format="json").status_code == 401  # no credentials
    assert client.post(f"{V1}/predictions/{HUGE}/correct/", {"answer": "red"}, format="json").status_code == 404
    # a zero-shot model's prediction needs a dataset
    zs_ev = _finished(project, holdout, model=zero_shot, acc=10.0)
    zs_pred = _batch_prediction(zs_ev, row=1, confidence=0.3, top_k=[{"answer": "red", "score": 0.3}],
                                image=pred.image)
    r = client.post(f"{V1}/predictions/{zs_pred.pk}/correct/", {"answer": "blue"}, format="json")
    assert r.status_code == 400 and "zero-shot" in r.json()["dataset"]
    r = client.post(f"{V1}/predictions/{zs_pred.pk}/correct/", {"answer": "blue", "dataset": holdout.pk},
                    format="json")
    assert r.status_code == 201 and r.json()["dataset"] == holdout.pk
    # someone else's personal (single) prediction is not reachable
    single = Prediction.objects.create(project=project, kind="single", user=members["editor"], training_run=run,
                                       image=pred.image, question="Q?", answer="a", confidence=0.5)
    assert client.post(f"{V1}/predictions/{single.pk}/correct/", {"answer": "b"}, format="json").status_code == 404
    assert Correction.objects.count() == 1


def test_versions_bad_input(project, owner, members, other_user, holdout, client_for):
    client = client_for(owner)
    r = client.post(f"{V1}/datasets/{holdout.pk}/versions/", format="json")
    assert r.status_code == 400 and "no pending corrections" in r.json()["detail"]
    Dataset.objects.filter(pk=holdout.pk).update(status="failed")
    r = client.post(f"{V1}/datasets/{holdout.pk}/versions/", format="json")
    assert r.status_code == 400 and "not ready" in r.json()["detail"]
    assert client_for(members["viewer"]).post(f"{V1}/datasets/{holdout.pk}/versions/").status_code == 403
    assert client_for(other_user).post(f"{V1}/datasets/{holdout.pk}/versions/").status_code == 404
    assert client.post(f"{V1}/datasets/{HUGE}/versions/").status_code == 404
    assert Dataset.objects.count() == 1


# ------------------------------------------------------------------------------------------ retrain + model card
def _version_two(dataset, user):
    from datasets_app.versions import create_version

    Correction.objects.create(dataset=dataset, image=dataset.items.first().image, question="How many?",
                              answer="3", created_by=user)
    v2 = create_version(user, dataset)
    Dataset.objects.filter(pk=v2.pk).update(status="succeeded")
    for it in dataset.items.all():
        DatasetItem.objects.create(dataset=v2, row=it.row, image=it.image, question=it.question, answers=it.answers)
    v2.refresh_from_db()
    return v2


def test_retrain_on_the_new_version(run, project, owner, members, other_user, client_for,
                                    django_capture_on_commit_callbacks):
    client = client_for(owner)
    run._update(params={"epochs": 2, "batch_size": 8, "learning_rate": 0.004, "seed": 3}, preset="")
    r = client.post(f"{V1}/training-runs/{run.pk}/retrain/", {}, format="json")
    assert r.status_code == 400 and "no newer ready version" in str(r.json())
    v2 = _version_two(run.dataset, owner)
    with django_capture_on_commit_callbacks(execute=False):
        r = client.post(f"{V1}/training-runs/{run.pk}/retrain/", {}, format="json")
    assert r.status_code == 202, r.content
    new = TrainingRun.objects.get(pk=r.json()["id"])
    assert new.dataset_id == v2.pk and r.json()["dataset_version"] == 2 and new.rerun_of_id == run.pk
    assert {k: new.params[k] for k in run.params} == run.params and new.model_id == run.model_id
    # an explicit dataset, and bad ones
    with django_capture_on_commit_callbacks(execute=False):
        assert client.post(f"{V1}/training-runs/{run.pk}/retrain/", {"dataset": v2.pk},
                           format="json").status_code == 202
    from piggyback.project_services import create_project

    theirs = make_dataset(create_project(other_user, "Theirs", ""), n_images=1)
    for payload in ({"dataset": "abc"}, {"dataset": HUGE}, {"dataset": theirs.pk}, {"dataset": [1]}):
        r = client.post(f"{V1}/training-runs/{run.pk}/retrain/", payload, format="json")
        assert r.status_code == 400 and "dataset" in r.json(), (payload, r.content)
    assert client_for(members["viewer"]).post(f"{V1}/training-runs/{run.pk}/retrain/").status_code == 403
    assert client_for(other_user).post(f"{V1}/training-runs/{run.pk}/retrain/").status_code == 404
    assert TrainingRun.objects.count() == 3


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_model_card_api_and_export(run, project, owner, holdout, client_for):
    run._update(metrics={"num_train": 30, "num_val": 6, "num_answers": 8, "train_seconds": 4.2, "epochs_run": 3,
                         "best_epoch": 2, "val_metrics": {"per_answer_type": {"other": 61.5, "yes/no": 80.0}}},
                params={"epochs": 3, "learning_rate": 0.005}, preset="quick")
    _finished(project, holdout, run=run, acc=66.0, ece=0.123)
    r = client_for(owner).get(f"{V1}/training-runs/{run.pk}/model-card/")
    assert r.status_code == 200 and r["Content-Type"].startswith("text/markdown")
    card = r.content.decode()
    meta = _front_matter(card)
    assert meta["library_name"] == "transformers" and meta["datasets"] == [f"{run.dataset.name} (version 1)"]
    assert meta["metrics"] == ["accuracy"] and "visual-question-answering" in meta["tags"]
    assert "base_model" not in meta  # the baseline is trained from scratch: no hub base model
    for section in ("## Model details", "## Training data", "## Training settings", "## Evaluation",
                    "## Calibration", "## Intended use", "## Known limits"):
        assert section in card, section
    assert "| other | 61.50 % |" in card and "| learning_rate | 0.005 |" in card
    assert "ECE) on evaluation" in card and "0.1230" in card and "version 1" in card
    # a hub base model goes into the front matter
    run.model.source = "dandelin/vilt-b32-mlm"
    run.model.save()
    card = client_for(owner).get(f"{V1}/training-runs/{run.pk}/model-card/").content.decode()
    assert _front_matter(card)["base_model"] == "dandelin/vilt-b32-mlm"
    run.model.source = ""
    run.model.save()
    export = client_for(owner).get(f"{V1}/training-runs/{run.pk}/export/")
    assert export.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(export.streaming_content))) as zf:
        names = set(zf.namelist())
        assert {"README.md", "model/README.md", "model/config.json"} <= names
        assert _front_matter(zf.read("README.md").decode())["library_name"] == "transformers"
    assert client_for(owner).get(f"{V1}/training-runs/{HUGE}/model-card/").status_code == 404
