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


def _evaluate_files(client, run, run_jobs, capture, extra_rows=()):
    from evaluation_app.models import Evaluation

    images, questions, items = batch_files(4, extra_rows=extra_rows)
    pk = _start(client, run, images, questions, capture)
    run_jobs()
    return Evaluation.objects.get(pk=pk), items


def _downloads(client, pk):
    csv_body = b"".join(client.get(f"/api/v1/evaluations/{pk}/predictions.csv").streaming_content)
    zf = zipfile.ZipFile(io.BytesIO(b"".join(client.get(f"/api/v1/evaluations/{pk}/annotated.zip").streaming_content)))
    return csv_body, [(n, zf.read(n)) for n in zf.namelist()]


def test_chunked_evaluation_streams_and_gives_the_same_results(run, owner, client_for, run_jobs, settings,
                                                               monkeypatch, django_capture_on_commit_callbacks):
    """Questions are answered, drawn and stored a chunk (whole images) at a time: while a later chunk is drawn the
    earlier answers are already stored, and the downloads, metrics and ECE are those of a one-chunk run."""
    from evaluation_app import services
    from evaluation_app.models import Prediction

    client = client_for(owner)
    _, _, items = batch_files(4)
    first = items[0]
    # questions of the first image again at the end (and a repeated question: unique ZIP names across chunks)
    extra = [(first["image"], "Which shape is this?", first["answers"][0]), (first["image"], "What is it?", "circle"),
             (first["image"], "what is it", "circle")]
    settings.EVAL_CHUNK_QUESTIONS = 100_000
    whole, _ = _evaluate_files(client, run, run_jobs, django_capture_on_commit_callbacks, extra)
    assert whole.status == "succeeded", whole.error

    stored_while_drawing = []
    real_store = services.store_overlay

    def spying_store(image, regions, name):
        stored_while_drawing.append(Prediction.objects.filter(evaluation__status="running").count())
        return real_store(image, regions, name)

    monkeypatch.setattr(services, "store_overlay", spying_store)
    settings.EVAL_CHUNK_QUESTIONS = 2
    chunked, items = _evaluate_files(client, run, run_jobs, django_capture_on_commit_callbacks, extra)
    assert chunked.status == "succeeded", chunked.error
    n = len(items) + len(extra)
    assert chunked.predictions.count() == n == chunked.metrics["count"] == chunked.counts["rows_kept"]
    # one image per chunk: 4 chunks, each stored before the next is drawn
    assert stored_while_drawing == sorted(stored_while_drawing)
    assert stored_while_drawing[0] == 0 and len(set(stored_while_drawing)) == 4 and max(stored_while_drawing) < n

    timing = {"predict_seconds", "questions_per_second"}
    assert {k: v for k, v in chunked.metrics.items() if k not in timing} == \
           {k: v for k, v in whole.metrics.items() if k not in timing}
    assert chunked.ece == whole.ece and chunked.ece is not None
    assert _downloads(client, chunked.pk) == _downloads(client, whole.pk)
    names = [name for name, _ in _downloads(client, chunked.pk)[1]]
    assert "annotated/What is it.png" in names and "annotated/what is it-2.png" in names
    assert names[-1] == "predictions.csv"


def test_a_failure_mid_way_leaves_no_half_answers(run, owner, client_for, run_jobs, settings, monkeypatch,
                                                  django_capture_on_commit_callbacks):
    """A chunk failing after earlier chunks were stored: the evaluation fails and shows none of its answers, and
    a worker killed half-way (its answers left behind) shows none either until a retry replaces them."""
    from evaluation_app import jobs, services
    from evaluation_app.models import Evaluation, Prediction
    from gpu_worker import Cancelled

    calls, stored = [], []
    real_save = jobs._Batch.save

    def failing_save(self, chunk, preds, overlays):
        calls.append(len(chunk))
        stored.append(Prediction.objects.filter(evaluation=self.row).count())
        if len(calls) == 3:
            raise failure
        real_save(self, chunk, preds, overlays)

    monkeypatch.setattr(jobs._Batch, "save", failing_save)
    settings.EVAL_CHUNK_QUESTIONS = 1
    client = client_for(owner)
    failure = Cancelled()   # the user pressed Cancel during the third chunk
    ev, items = _evaluate_files(client, run, run_jobs, django_capture_on_commit_callbacks)
    assert ev.status == "cancelled" and len(calls) == 3 and stored[2] > 0
    assert Prediction.objects.filter(evaluation=ev).count() == 0
    calls.clear()
    stored.clear()
    failure = RuntimeError("disk full")
    ev, items = _evaluate_files(client, run, run_jobs, django_capture_on_commit_callbacks)
    assert ev.status == "failed" and "disk full" in ev.error and len(calls) == 3 and stored[2] > 0
    assert Prediction.objects.filter(evaluation=ev).count() == 0

    # a killed worker's leftovers: not shown (page, API, review queue), then replaced by the retry
    monkeypatch.setattr(jobs._Batch, "save", real_save)
    Prediction.objects.create(project=ev.project, kind="batch", evaluation=ev, training_run=ev.training_run,
                              image="x.png", question="Left behind?", answer="yes")
    assert client.get(f"/api/v1/evaluations/{ev.pk}/predictions/").json()["count"] == 0
    assert services.review_queue(ev).count() == 0
    with django_capture_on_commit_callbacks(execute=True):
        services.retry_evaluation(owner, ev)
    run_jobs()
    ev = Evaluation.objects.get(pk=ev.pk)
    assert ev.status == "succeeded", ev.error
    assert not ev.predictions.filter(question="Left behind?").exists()
    assert ev.predictions.count() == len(items) == ev.metrics["count"]
    assert client.get(f"/api/v1/evaluations/{ev.pk}/predictions/").json()["count"] == len(items)


def test_unique_namer_matches_unique_names_one_at_a_time():
    import random

    from evaluation_app.exports import UniqueNamer

    def reference(texts):  # the plain algorithm: probe -2, -3, ... for every repeat
        used, out = set(), []
        for text in texts:
            stem = safe_stem(text)
            name, n = f"{stem}.png", 1
            while name.lower() in used:
                n += 1
                name = f"{stem}-{n}.png"
            used.add(name.lower())
            out.append(name)
        return out

    rng = random.Random(3)
    pool = ["Same?", "same", "SAME", "same-2", "Same-3?", "other", "", "CON", "x" * 300]
    texts = [rng.choice(pool) for _ in range(2000)]
    namer = UniqueNamer()
    assert [namer(t) for t in texts] == reference(texts) == unique_names(texts)


def test_question_chunks_keep_images_whole():
    from evaluation_app.jobs import question_chunks

    items = [{"image": im} for im in ["a", "b", "a", "c", "c", "c", "d", "b"]]
    assert question_chunks(items, 4) == [[0, 1, 2, 7], [3, 4, 5, 6]]
    assert question_chunks(items, 3) == [[0, 2], [1, 7], [3, 4, 5], [6]]
    assert question_chunks(items, 2) == [[0, 2], [1, 7], [3, 4, 5], [6]]   # "c" alone is over the size
    assert question_chunks(items, 100) == [list(range(8))]
    assert sorted(i for c in question_chunks(items, 1) for i in c) == list(range(8))


def test_annotated_zip_keeps_its_directory_on_disk_and_reads_back_whole(tmp_path, monkeypatch):
    """write_annotated_zip keeps no ZipInfo per member in memory (Python's zipfile holds ~370 bytes a member
    until it closes; a VQAv2-sized evaluation has 440,000): the directory is spooled to a file. The archive
    still lists every member with the right bytes, the CSV last."""
    import gc
    from types import SimpleNamespace

    from evaluation_app import exports

    monkeypatch.setattr(exports, "open_stream", lambda name: io.BytesIO(name.encode()))
    monkeypatch.setattr(exports, "model_label", lambda p: "m")
    alive = []   # ZipInfo objects alive when the CSV, the last member, is copied in
    real_copy = exports.shutil.copyfileobj

    def counting_copy(src, dst, length=0):
        alive.append(sum(1 for o in gc.get_objects() if type(o) is zipfile.ZipInfo))
        return real_copy(src, dst, length)

    monkeypatch.setattr(exports.shutil, "copyfileobj", counting_copy)
    n = 3_000
    preds = (SimpleNamespace(row=i + 1, image=f"img/{i % 7}.png", image_original_name="", question=f"Q {i % 50}?",
                             answer="circle", confidence=0.5, top_k=[], expected_answers=[], vqa_score=None,
                             overlay=f"ov/{i}.png", training_run=None, model=None) for i in range(n))
    assert exports.write_annotated_zip(tmp_path / "a.zip", preds) == n
    assert len(alive) == 1 and alive[0] <= 2, alive

    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert len(names) == n + 1 and names[-1] == "predictions.csv"
        assert names[0] == "annotated/Q 0.png" and names[50] == "annotated/Q 0-2.png"
        assert zf.read(names[1234]) == b"ov/1234.png"
        rows = list(csv.DictReader(io.StringIO(zf.read("predictions.csv").decode("utf-8-sig"))))
    assert len(rows) == n and rows[50]["overlay_file"] == "annotated/Q 0-2.png"
