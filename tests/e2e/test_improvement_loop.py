"""The improvement loop in a real browser (Debian's Chromium via Playwright), a real `rqworker` running the jobs:

evaluate a fine-tuned run on a project dataset → the leaderboard → the review queue worked with the keyboard
(Enter accepts, a typed answer + Enter corrects) → version 2 of the training dataset from the corrections →
"Train again on version 2" → the new run trains on version 2 and carries a model card. Screenshots go to
test-artifacts/e2e/.
"""
import pytest

from tests.evaluation_helpers import (  # noqa: F401  (fixtures)
    baseline_model,
    make_dataset,
    trained_baseline_dir,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _login(page, live_server, user):
    from django.test import Client

    c = Client()
    c.force_login(user)
    page.context.add_cookies([{"name": "sessionid", "value": c.cookies["sessionid"].value, "url": live_server.url}])


def test_evaluate_review_correct_version_retrain(page, live_server, live_worker, shot, trained_baseline_dir,
                                                 baseline_model, django_user_model):
    from datasets_app.models import Correction, Dataset
    from piggyback.files import save_tree
    from piggyback.project_services import create_project
    from training_app.models import TrainingRun

    user = django_user_model.objects.create_user("loop_expert", "loop@example.com", "Correct-Horse-42")
    project = create_project(user, "Loop clinic", "")
    train_ds = make_dataset(project, n_images=3, user=user)
    Dataset.objects.filter(pk=train_ds.pk).update(name="shapes")
    holdout = make_dataset(project, n_images=2, user=user)
    Dataset.objects.filter(pk=holdout.pk).update(name="holdout set")
    run = TrainingRun.objects.create(project=project, dataset=train_ds, model=baseline_model, name="First model",
                                     status="succeeded", created_by=user, vqa_accuracy=50.0, preset="quick",
                                     params={"epochs": 1, "batch_size": 8, "val_fraction": 0.2, "seed": 0})
    save_tree(trained_baseline_dir, f"projects/{project.pk}/runs/{run.pk}/model")
    run._update(output_dir=f"projects/{project.pk}/runs/{run.pk}")
    url = live_server.url
    _login(page, live_server, user)

    # 1. Evaluate on: holdout set ▾
    page.goto(f"{url}/evaluate/runs/{run.pk}/?tab=batch")
    page.select_option("#d-dataset", str(holdout.pk))
    shot(page, "loop-evaluate-on-dataset")
    page.click("#dataset-eval-form button[type=submit]")
    page.wait_for_url("**/evaluate/evaluations/*/")
    page.wait_for_selector("[data-level=success]", timeout=120_000)
    assert "holdout set" in page.inner_text("body")

    # 2. The leaderboard of the holdout set: the run, its accuracy, a chart with a text alternative
    page.click("#leaderboard-link")
    page.wait_for_selector("[data-testid=leaderboard]")
    row = page.inner_text("[data-testid=leaderboard] tbody tr")
    assert "First model" in row and "%" in row
    assert "First model" in page.inner_text("#lb-chart-text")
    page.wait_for_function("document.querySelector('#lb-chart').width > 0")
    shot(page, "loop-leaderboard")

    # 3. The review queue, with the keyboard only: Enter accepts, a typed answer + Enter corrects
    page.click("[data-testid=leaderboard] tbody tr a:has-text('review')")
    page.wait_for_selector("#review-card")
    assert page.evaluate("document.activeElement.id") == "review-answer-input"
    shot(page, "loop-review")
    page.keyboard.press("Enter")                      # accept the model's answer
    page.wait_for_selector("text=Saved:")
    page.keyboard.type("purple")                      # the input has the focus again
    page.keyboard.press("Enter")
    page.wait_for_selector("text=→ purple")
    assert Correction.objects.filter(dataset=train_ds, applied_in__isnull=True).count() == 2
    assert Correction.objects.filter(answer="purple").exists() and Correction.objects.filter(accepted=True).exists()

    # 4. Version 2 of the training dataset from the corrections
    page.goto(f"{url}/datasets/{train_ds.pk}/")
    assert page.inner_text("[data-testid=pending-count]") == "2"
    shot(page, "loop-pending-corrections")
    page.click("#new-version-button")
    page.wait_for_selector("[data-testid=version-badge]")
    page.wait_for_selector("#result-banner", timeout=120_000)
    assert "version 2" in page.inner_text("[data-testid=version-badge]")
    v2 = Dataset.objects.get(parent=train_ds)
    assert v2.version == 2 and v2.status == "succeeded"
    # both corrections are about holdout images, new to the training data: two questions added, files shared
    assert v2.items.count() == train_ds.items.count() + 2
    assert set(v2.items.values_list("image", flat=True)) - set(train_ds.items.values_list("image", flat=True)) <= set(
        holdout.items.values_list("image", flat=True))
    shot(page, "loop-version-2")

    # 5. Train again on version 2: same settings, new data; it trains and carries its model card
    page.goto(f"{url}/training/runs/{run.pk}/")
    assert "First model" in page.inner_text("h1")
    page.click("#retrain-button")
    page.wait_for_url("**/training/runs/*/")
    new = TrainingRun.objects.exclude(pk=run.pk).get()
    assert new.dataset_id == v2.pk and {k: new.params[k] for k in run.params} == run.params
    assert "version 2" in page.inner_text("[data-testid=dataset-version]")
    shot(page, "loop-train-again")
    page.wait_for_url("**/evaluate/runs/*/", timeout=240_000)  # the run page moves on when training succeeded
    new.refresh_from_db()
    assert new.status == "succeeded", new.error
    page.goto(f"{url}/training/runs/{new.pk}/")
    card = page.inner_text("[data-testid=model-card-text]")
    assert "library_name: transformers" in card and "version 2" in card and "## Known limits" in card
    shot(page, "loop-model-card")
