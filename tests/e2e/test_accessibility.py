"""WCAG 2.1 A/AA in the browser: axe-core on every page in every state a user meets (issue 17.1).

The states are made the way the product makes them where that is cheap (a real batch evaluation run by an RQ
worker, a real question answered by the tiny trained baseline in the web process, real form posts with
errors) and written as database rows where a job would take minutes (a run that is *still* running, a
cleaning that failed). Each page is checked with :func:`tests.e2e.axe.assert_accessible`; all findings of
the tour are collected and reported together.
"""
from __future__ import annotations

import re
import time

import pytest

from tests.e2e.axe import FAILING_IMPACTS, axe_violations, format_violations
from tests.evaluation_helpers import (  # noqa: F401  (fixtures)
    baseline_model,
    batch_files,
    make_dataset,
    make_run,
    trained_baseline_dir,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "Correct-Horse-42"


class Tour:
    """Visit pages, run axe on each state, collect serious/critical violations."""

    def __init__(self, page, base, shot):
        self.page, self.base, self.shot, self.failures, self.checked = page, base, shot, [], []
        self.seconds = {"screenshots": 0.0, "axe": 0.0}

    def check(self, label):
        t0 = time.perf_counter()
        self.shot(self.page, "a11y-" + "-".join(label.split()))
        t1 = time.perf_counter()
        found = [v for v in axe_violations(self.page) if v["impact"] in FAILING_IMPACTS]
        self.seconds["screenshots"] += t1 - t0
        self.seconds["axe"] += time.perf_counter() - t1
        self.checked.append(label)
        if found:
            self.failures.append(format_violations(found, f"{label} ({self.page.url})"))

    def visit(self, path, label, wait_for=None):
        self.page.goto(self.base + path)
        if wait_for:
            self.page.wait_for_selector(wait_for)
        self.check(label)

    def report(self):
        from tests.e2e.conftest import ARTIFACTS

        (ARTIFACTS / "axe-report.txt").write_text(
            f"{len(self.checked)} page states checked in {self.seconds['axe']:.1f} s of axe-core "
            f"({self.seconds['screenshots']:.1f} s of screenshots): {', '.join(self.checked)}\n\n"
            + "\n\n".join(self.failures))
        assert not self.failures, "\n\n".join(self.failures)


def _login(page, base, username):
    page.goto(base + "/accounts/login/")
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/projects/")


def _states(owner, make_run):
    """Project with a cleaned dataset (+ charts), a finished run with a curve, a running and a failed run,
    a running, a failed and a warning cleaning, a running and a failed evaluation."""
    from datasets_app.charts import compute_stats
    from datasets_app.models import Dataset
    from evaluation_app.models import Evaluation
    from piggyback.project_services import create_project

    project = create_project(owner, "Eye clinic", "retina scans")
    run = make_run(project, user=owner)
    curve = [{"x": e / 2, "loss": 2.0 / (1 + e)} for e in range(1, 7)]
    epochs = [{"epoch": e, "val_vqa_accuracy": 40.0 + 10 * e} for e in (1, 2, 3)]
    run._update(metrics={"loss_curve": curve, "epochs": epochs, "epoch": 3, "epochs_total": 3, "best_epoch": 3,
                         "num_train": 36, "num_val": 4}, progress=1.0, stage="Finished", log="epoch 1\nepoch 2\nepoch 3")
    ds = run.dataset
    items = [{"question": i.question, "answers": i.answers, "answer_type": i.answer_type,
              "question_type": i.question_type} for i in ds.items.all()]
    ds.stats = compute_stats(items)
    ds.counts = {"rows_in": 12, "rows_kept": 10, "rows_dropped": 2, "images_in": 3, "images_kept": 3,
                 "images_dropped": 0, "images_unused": 0, "images_oversized": 0}
    ds.level = "warning"
    ds.warnings = ["2 questions had no image in the ZIP."]
    ds.save()
    running = type(run).objects.create(project=project, dataset=ds, model=run.model, name="Still learning",
                                       status="running", progress=0.42, stage="Epoch 2 of 5",
                                       created_by=owner, metrics={"epoch": 2, "epochs_total": 5, "eta_seconds": 80,
                                                                  "loss_curve": curve[:3]},
                                       log="\n".join(f"step {i}: loss 0.{i}" for i in range(40)))
    failed = type(run).objects.create(project=project, dataset=ds, model=run.model, name="Broken", status="failed",
                                      error="The worker ran out of memory. Try a smaller batch size.",
                                      created_by=owner)
    cleaning = Dataset.objects.create(project=project, name="Still checking", status="running", progress=0.3,
                                      stage="Reading row 300 of 1,000", images_file="x.zip", questions_file="x.csv")
    bad = Dataset.objects.create(project=project, name="Unusable", status="failed", images_file="x.zip",
                                 questions_file="x.csv", error="The questions file has no column named “question”.")
    ev_running = Evaluation.objects.create(project=project, training_run=run, status="running", progress=0.5,
                                           stage="Answering question 5 of 10", created_by=owner)
    ev_failed = Evaluation.objects.create(project=project, training_run=run, status="failed", created_by=owner,
                                          error="The ZIP holds no image the questions file names.")
    return {"project": project, "run": run, "running": running, "failed": failed, "cleaning": cleaning, "bad": bad,
            "ev_running": ev_running, "ev_failed": ev_failed, "dataset": ds}


def _batch_evaluation(owner, run, redis_conn):
    """A real batch evaluation with answers, run by a real RQ SimpleWorker."""
    import django_rq
    from rq import SimpleWorker

    from evaluation_app.services import create_evaluation

    images, questions, _ = batch_files(4)
    ev = create_evaluation(owner, run.project, run, images_file=images, questions_file=questions, name="Check")
    SimpleWorker([django_rq.get_queue("gpu"), django_rq.get_queue("default")], connection=redis_conn).work(
        burst=True, with_scheduler=False)
    ev.refresh_from_db()
    assert ev.status == "succeeded", ev.error
    return ev


def test_every_page_and_state_passes_axe(page, live_server, make_user, make_run, redis_conn, shot):
    from django.core.management import call_command

    from training_app.models import PretrainedModel

    base = live_server.url
    tour = Tour(page, base, shot)
    # anonymous: landing page and the account pages, with and without errors
    tour.visit("/", "landing page")
    tour.visit("/accounts/login/", "log in")
    page.fill("input[name=login]", "nobody")
    page.fill("input[name=password]", "wrong-password")
    page.click("button[type=submit]")
    page.wait_for_selector(".alert-danger, .invalid-feedback, .text-danger")
    tour.check("log in with a wrong password")
    tour.visit("/accounts/signup/", "sign up")
    page.fill("input[name=email]", "x@example.com")
    page.fill("input[name=username]", "x")
    page.fill("input[name=password1]", "short")
    page.fill("input[name=password2]", "other")
    page.click("button[type=submit]")
    page.wait_for_selector(".invalid-feedback, .text-danger, .alert-danger")
    tour.check("sign up with errors")
    tour.visit("/accounts/password/reset/", "password reset")
    page.fill("input[name=email]", "ada@example.com")
    page.click("button[type=submit]")
    page.wait_for_url("**/password/reset/done/")
    tour.check("password reset sent")
    tour.visit("/accounts/password/reset/key/1-bad-key/", "password reset with a bad key")

    call_command("sync_models", verbosity=0)  # the registry, as `manage.py up` does
    owner = make_user("ada")
    owner.set_password(PASSWORD)
    owner.save()
    _login(page, base, "ada")
    tour.check("empty project list")
    page.fill("#id_name", "")
    page.click("text=Create project")
    tour.check("project form with an error (browser validation)")
    s = _states(owner, make_run)
    ev = _batch_evaluation(owner, s["run"], redis_conn)
    p, run = s["project"], s["run"]
    tour.visit("/projects/", "project list")
    tour.visit(f"/projects/{p.pk}/", "project page")
    tour.visit(f"/datasets/projects/{p.pk}/upload/", "upload page")
    page.fill("input[name=name]", "broken")
    page.set_input_files("input[name=images]", {"name": "a.zip", "mimeType": "application/zip", "buffer": b"not a zip"})
    page.set_input_files("input[name=questions]", {"name": "q.csv", "mimeType": "text/csv", "buffer": b"image,question\n"})
    page.click("text=Upload and check")
    page.wait_for_selector("#upload-error, .invalid-feedback")
    tour.check("upload with an error")
    tour.visit(f"/datasets/{s['dataset'].pk}/", "dataset ready with removals and charts", "#chart-answers")
    tour.visit(f"/datasets/{s['cleaning'].pk}/", "dataset being cleaned")
    tour.visit(f"/datasets/{s['bad'].pk}/", "dataset that failed")
    tour.visit(f"/training/datasets/{s['dataset'].pk}/start/", "start a run")
    page.fill("#id_epochs", "100000") if page.locator("#id_epochs").count() else None
    page.click("#start-button")
    page.wait_for_selector("#form-errors")
    tour.check("start form with errors")
    tour.visit(f"/training/projects/{p.pk}/", "run list")
    tour.visit(f"/training/runs/{s['running'].pk}/", "run in progress")
    tour.visit(f"/training/runs/{s['failed'].pk}/", "run that failed", "#error-box:not(.d-none)")
    tour.visit(f"/training/runs/{run.pk}/", "finished run")
    tour.visit(f"/evaluate/runs/{run.pk}/", "evaluation workspace")
    page.click("#sample-form button[type=submit]")
    page.wait_for_selector("[data-testid=answer]")
    page.wait_for_function("document.querySelector('#result-image') && document.querySelector('#result-image').complete")
    tour.check("answer with overlay")
    # the regions in words, the answer said by the live region, focus on the answer (issue 17.3)
    words = page.locator("[data-testid=regions] li").all_inner_texts()
    assert words and all(re.fullmatch(r"\d\. (top|centre|bottom)( (left|centre|right))?, \d+ %", w) for w in words), words
    assert page.evaluate("document.activeElement.id") == "result"
    page.wait_for_function("document.getElementById('pb-announcer').textContent.startsWith('Answer: ')")
    assert "Confidence" in page.text_content("#pb-announcer")
    if page.locator("#heatmap-toggle").count():
        page.check("#heatmap-toggle")
        tour.check("answer as heat-map")
    page.click("button[data-bs-target='#tab-single']")
    page.fill("#q-question", "What shape?")
    page.set_input_files("#q-image", {"name": "x.png", "mimeType": "image/png", "buffer": b"not an image"})
    page.click("#tab-single button[type=submit]")
    page.wait_for_selector(".alert-danger")
    tour.check("single question with an error")
    tour.visit(f"/evaluate/evaluations/{ev.pk}/", "evaluation with results", "[data-testid=vqa-accuracy]")
    tour.visit(f"/evaluate/evaluations/{s['ev_running'].pk}/", "evaluation running")
    tour.visit(f"/evaluate/evaluations/{s['ev_failed'].pk}/", "evaluation failed")
    tour.visit(f"/evaluate/evaluations/{ev.pk}/review/", "review queue")
    tour.visit(f"/evaluate/projects/{p.pk}/leaderboard/", "leaderboard")
    tour.visit(f"/projects/{p.pk}/audit/", "audit trail")
    tour.visit("/evaluate/history/", "question history")
    tour.visit("/evaluate/models/", "zero-shot models")
    zero_shot = PretrainedModel.objects.filter(zero_shot=True).order_by("pk").first()
    tour.visit(f"/evaluate/models/{zero_shot.pk}/", "zero-shot model: choose a project")
    tour.visit(f"/evaluate/models/{zero_shot.pk}/?project={p.pk}", "zero-shot model without weights (warning)")
    tour.visit("/accounts/email/", "e-mail addresses")
    tour.visit("/accounts/password/change/", "change password")
    tour.visit("/accounts/logout/", "log out")
    assert len(tour.checked) >= 30
    tour.report()


def test_progress_is_announced_only_on_meaningful_change(page, live_server):
    """pbProgressAnnouncer (static/piggyback/a11y.js): a new status, a new epoch or another 10 %, never a repeat."""
    page.goto(live_server.url + "/")
    said = page.evaluate("""() => {
      const el = document.createElement("div"), update = pbProgressAnnouncer(el, {label: "Training"}), out = [];
      [[0.01, "queued", null], [0.01, "running", 1], [0.02, "running", 1], [0.09, "running", 1], [0.11, "running", 1],
       [0.12, "running", 2], [0.15, "running", 2], [0.5, "running", 2], [0.52, "running", 2], [1, "succeeded", 3]]
        .forEach(([p, s, e]) => { if (update({progress: p, status: s, metrics: e ? {epoch: e, epochs_total: 3} : {}})) out.push(el.textContent); });
      return out;
    }""")
    assert said == ["Training: Waiting for a free worker, 1 %",
                    "Training: Running, 1 %, epoch 1 of 3",
                    "Training: Running, 11 %, epoch 1 of 3",
                    "Training: Running, 12 %, epoch 2 of 3",
                    "Training: Running, 50 %, epoch 2 of 3",
                    "Training: Finished, epoch 3 of 3"]
    bar = page.evaluate("""() => {
      const el = document.createElement("div"); el.innerHTML = '<div class="progress-bar"></div>';
      pbProgressBar(el, {progress: 0.42, status: "running", stage: "Epoch 2 of 5"});
      return [el.getAttribute("aria-valuenow"), el.getAttribute("aria-valuetext")];
    }""")
    assert bar == ["42", "42 %, Epoch 2 of 5"]
