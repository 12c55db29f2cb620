"""Batch evaluation through a real RQ worker: cleaning banners, predictions, official VQA metrics,
formula-safe CSV and the annotated ZIP named by question (file-system safe)."""
from __future__ import annotations

import csv
import io
import math
import zipfile

import pytest

from evaluation_app.exports import safe_stem, unique_names
from tests.evaluation_helpers import (  # noqa: F401  (fixtures)
    baseline_model,
    batch_files,
    make_run,
    run,
    trained_baseline_dir,
)

pytestmark = pytest.mark.django_db(transaction=False)


def _start(client, run, images, questions, django_capture_on_commit_callbacks, **extra):
    with django_capture_on_commit_callbacks(execute=True):
        r = client.post("/api/v1/evaluations/", {"project": run.project_id, "training_run": run.pk, "images": images,
                                                 "questions": questions, **extra}, format="multipart")
    assert r.status_code == 201, r.content
    assert r.json()["status"] == "queued"
    return r.json()["id"]


def test_batch_with_answers_gives_official_vqa_metrics(run, owner, client_for, run_jobs,
                                                       django_capture_on_commit_callbacks):
    from evaluation_app.models import Evaluation
    from gpu_worker.metrics import evaluate

    images, questions, items = batch_files(4)
    client = client_for(owner)
    pk = _start(client, run, images, questions, django_capture_on_commit_callbacks)
    run_jobs()
    ev = Evaluation.objects.get(pk=pk)
    assert ev.status == "succeeded", ev.error
    assert ev.counts["rows_kept"] == len(items) and ev.counts["level"] == "success"
    preds = list(ev.predictions.order_by("row"))
    assert len(preds) == len(items)
    # the stored metrics are the official ones recomputed from the stored answers
    by_question = {(it["image"], it["question"]): it for it in items}
    ordered = [by_question[(p.image_original_name, p.question)] for p in preds]
    expected = evaluate([p.answer for p in preds], ordered)
    assert ev.metrics["vqa_accuracy"] == expected["vqa_accuracy"]
    assert ev.metrics["per_answer_type"] == expected["per_answer_type"]
    assert ev.metrics["per_question_type"] == expected["per_question_type"]
    assert ev.metrics["labelled"] == len(items)
    right = sum(p.vqa_score for p in preds)
    assert round(100 * right / len(preds), 2) == ev.metrics["vqa_accuracy"]
    # every prediction has a stored overlay under the project's overlays folder
    assert all(p.overlay.startswith(f"projects/{run.project_id}/overlays/") for p in preds)
    assert all(len(p.top_k) == 5 and len(p.regions) == 5 for p in preds)

    r = client.get(f"/api/v1/evaluations/{pk}/")
    body = r.json()
    assert body["status"] == "succeeded" and body["progress"] == 1.0
    assert body["metrics"]["vqa_accuracy"] == ev.metrics["vqa_accuracy"]
    # calibration of the confidences (issue 11.4): ECE over 15 bins, recomputed independently here
    conf, score = [p.confidence for p in preds], [p.vqa_score for p in preds]
    bins = [[c for c, _ in zip(conf, score) if min(14, max(0, math.ceil(c * 15) - 1)) == b] for b in range(15)]
    want = sum(len(bn) / len(conf) * abs(
        sum(s for c, s in zip(conf, score) if min(14, max(0, math.ceil(c * 15) - 1)) == b) / len(bn)
        - sum(bn) / len(bn)) for b, bn in enumerate(bins) if bn)
    assert body["ece"] == ev.ece and ev.ece == pytest.approx(want, abs=1e-5)
    assert sum(b["count"] for b in ev.metrics["reliability"]) == len(preds)
    client.force_login(owner)
    page = client.get(f"/evaluate/evaluations/{pk}/")
    assert page.status_code == 200
    assert b'data-testid="reliability-table"' in page.content and b"min(1, matching answers" in page.content

    r = client.get(f"/api/v1/evaluations/{pk}/predictions.csv")
    assert r.status_code == 200 and "attachment" in r["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(r.streaming_content).decode("utf-8-sig"))))
    assert len(rows) == len(items)
    assert {"image", "question", "answer", "confidence", "top_5"} <= set(rows[0])
    assert rows[0]["top_5"].count("|") == 4

    r = client.get(f"/api/v1/evaluations/{pk}/annotated.zip")
    zf = zipfile.ZipFile(io.BytesIO(b"".join(r.streaming_content)))
    names = [n for n in zf.namelist() if n.startswith("annotated/")]
    assert len(names) == len(items) and len(set(n.lower() for n in names)) == len(names)
    assert zf.read(names[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "predictions.csv" in zf.namelist()
    first = preds[0]
    assert f"annotated/{safe_stem(first.question)}.png" in names


def test_batch_without_answers_and_hostile_rows(run, owner, client_for, run_jobs, django_capture_on_commit_callbacks):
    from evaluation_app.models import Evaluation

    hostile = [
        ("{img}", "=HYPERLINK(\"http://evil\")"),
        ("{img}", "../../etc/passwd"),
        ("{img}", "CON"),
        ("{img}", "What colour is the shape? " * 30),
        ("{img}", "Is it a 🐷 or a 🐮?"),
        ("{img}", "What colour is the shape"),
        ("{img}", "what colour is the shape?"),
        ("missing.png", "Where is this image?"),
    ]
    images, questions, items = batch_files(1, answers=False, seed=11)
    img = items[0]["image"]
    # rebuild the CSV with the hostile rows appended
    text = questions.read().decode() + "".join(f'{a.format(img=img)},"{q.replace(chr(34), chr(34) * 2)}"\n' for a, q in hostile)
    from tests.evaluation_helpers import upload

    client = client_for(owner)
    pk = _start(client, run, images, upload("q.csv", text.encode(), "text/csv"), django_capture_on_commit_callbacks)
    run_jobs()
    ev = Evaluation.objects.get(pk=pk)
    assert ev.status == "succeeded", ev.error
    assert ev.counts["level"] == "warning" and ev.counts["rows_dropped"] == 1
    assert "vqa_accuracy" not in ev.metrics and ev.metrics["labelled"] == 0
    assert ev.ece is None and client.get(f"/api/v1/evaluations/{pk}/").json()["ece"] is None
    assert ev.predictions.count() == len(items) + len(hostile) - 1
    assert all(p.vqa_score is None for p in ev.predictions.all())

    body = b"".join(client.get(f"/api/v1/evaluations/{pk}/predictions.csv").streaming_content).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(body)))
    formula = [r for r in rows if "HYPERLINK" in r["question"]][0]
    assert formula["question"].startswith("'=")
    zf = zipfile.ZipFile(io.BytesIO(b"".join(client.get(f"/api/v1/evaluations/{pk}/annotated.zip").streaming_content)))
    names = [n[len("annotated/"):] for n in zf.namelist() if n.startswith("annotated/")]
    assert len(names) == ev.predictions.count()
    for n in names:
        assert "/" not in n and "\\" not in n and ".." not in n and len(n.encode()) <= 110
        assert n.split(".")[0].upper() not in {"CON", "PRN", "AUX", "NUL"}
    assert "etc_passwd.png" in names and "_CON.png" in names
    assert "What colour is the shape.png" in names and "what colour is the shape-2.png" in names
    assert any("🐷" in n for n in names)


def test_broken_upload_fails_with_a_readable_message(run, owner, client_for, run_jobs,
                                                     django_capture_on_commit_callbacks):
    from evaluation_app.models import Evaluation
    from tests.evaluation_helpers import upload

    bad_zip = upload("images.zip", b"this is not a zip", "application/zip")
    csv_file = upload("q.csv", b"image,question\n1.png,What colour?\n", "text/csv")
    pk = _start(client_for(owner), run, bad_zip, csv_file, django_capture_on_commit_callbacks)
    run_jobs()
    ev = Evaluation.objects.get(pk=pk)
    assert ev.status == "failed"
    assert "zip" in ev.error.lower() and "Traceback" not in ev.error
    assert ev.predictions.count() == 0


@pytest.mark.parametrize("text, expected", [
    ("../../etc/passwd", "etc_passwd"),
    ("CON", "_CON"),
    ("nul.txt", "_nul.txt"),
    ("", "question"),
    ("   ...   ", "question"),
    ("a\x00b\x1fc\u202e", "abc"),
    ("What colour is it?", "What colour is it"),
    ('a<b>c:"d"|e*f', "a_b_c_d_e_f"),
])
def test_safe_stem(text, expected):
    assert safe_stem(text) == expected


def test_unique_names_are_bounded_and_unique():
    long = "é" * 300
    names = unique_names(["Same?", "same", "SAME?", long, long, "🐷" * 100, ""])
    assert names[:3] == ["Same.png", "same-2.png", "SAME-3.png"]
    assert all(len(n.encode("utf-8")) <= 110 for n in names)
    assert names[3] != names[4] and names[4].endswith("-2.png")
    names[5].encode("utf-8").decode("utf-8")  # no half characters
    assert names[6] == "question.png"


def test_cancel_before_it_starts(run, owner, members, client_for, run_jobs, django_capture_on_commit_callbacks):
    from evaluation_app.models import Evaluation

    images, questions, _ = batch_files(1)
    pk = _start(client_for(owner), run, images, questions, django_capture_on_commit_callbacks)
    assert client_for(members["viewer"]).post(f"/api/v1/evaluations/{pk}/cancel/").status_code == 403
    r = client_for(members["editor"]).post(f"/api/v1/evaluations/{pk}/cancel/")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    run_jobs()
    ev = Evaluation.objects.get(pk=pk)
    assert ev.status == "cancelled" and ev.predictions.count() == 0
    assert client_for(owner).get(f"/api/v1/evaluations/{pk}/predictions.csv").status_code == 409
