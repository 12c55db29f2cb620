"""The essential user journey in a real browser (Debian's Chromium via Playwright), with screenshots.

Sign up → create a project → download the sample dataset from the page and upload it → success banner
and exploration charts → start a quick training run → the progress bar moves → land on evaluation →
ask a single question, see the answer and the overlay → batch evaluation → download both files.
A real `rqworker` process runs the jobs. Screenshots go to test-artifacts/e2e/.
"""
import csv
import io
import zipfile

import pytest

from gpu_worker.sample_data import easy_vqa_files
from tests.e2e.axe import FAILING_IMPACTS, assert_accessible, axe_violations, format_violations

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _download(page, link_text, target_dir):
    with page.expect_download() as info:
        page.click(f"text={link_text}")
    download = info.value
    path = target_dir / download.suggested_filename
    download.save_as(str(path))
    return path


def test_user_journey(page, live_server, live_worker, shot, tmp_path):
    from django.core.management import call_command

    call_command("sync_models", verbosity=0)  # what `manage.py up` does at start
    url = live_server.url
    # 1. Sign up and create a project.
    page.goto(url + "/accounts/signup/")
    page.fill("input[name=email]", "grace@example.com")
    page.fill("input[name=username]", "grace")
    page.fill("input[name=password1]", "Correct-Horse-42")
    page.fill("input[name=password2]", "Correct-Horse-42")
    page.click("button[type=submit]")
    page.wait_for_url("**/projects/")
    page.fill("#id_name", "Shapes class")
    page.click("text=Create project")
    page.wait_for_selector("text=Project “Shapes class” created")
    shot(page, "project-created")
    assert_accessible(page, "project created")

    # 2. Download the sample dataset from the upload page and upload it again.
    page.click("#datasets-section a:has-text('Upload a dataset')")
    page.wait_for_url("**/upload/")
    page.wait_for_selector("#upload-form")
    zip_path = _download(page, "Download images (ZIP)", tmp_path)
    csv_path = _download(page, "Download questions (CSV)", tmp_path)
    assert zipfile.is_zipfile(zip_path) and csv_path.read_text(encoding="utf-8-sig").startswith("image,question")
    shot(page, "upload-page")
    page.fill("input[name=name]", "easy-VQA sample")
    page.set_input_files("input[name=images]", str(zip_path))
    page.set_input_files("input[name=questions]", str(csv_path))
    page.click("text=Upload and check")
    page.wait_for_selector("#result-banner.alert-success", timeout=120_000)
    assert "Your dataset is ready" in page.inner_text("#result-banner")
    page.wait_for_function("document.querySelector('#chart-answers') && document.querySelector('#chart-answers').width > 0")
    page.wait_for_timeout(500)  # let Chart.js finish its animation for the screenshot
    shot(page, "dataset-ready-charts")
    assert_accessible(page, "dataset ready, with charts")

    # 3. Start a quick training run and watch its progress bar.
    page.click("#train-button")
    page.wait_for_selector("#start-form")
    page.select_option("#id_model", "baseline-rnn")
    page.click("label[for=preset-quick]")
    shot(page, "start-training")
    page.click("#start-button")
    page.wait_for_url("**/training/runs/*/")
    seen, shot_taken, running_findings = set(), False, []
    for _ in range(600):
        if "/evaluate/runs/" in page.url:
            break
        try:
            value = page.get_attribute("#run-progress", "aria-valuenow", timeout=1000)
            if value is not None:
                seen.add(int(float(value)))
                if len(seen) >= 2 and not shot_taken:
                    shot_taken = bool(shot(page, "training-progress"))
                    running_findings = [v for v in axe_violations(page) if v["impact"] in FAILING_IMPACTS]
        except Exception:
            pass  # the page is navigating to the evaluation page
        page.wait_for_timeout(200)
    page.wait_for_url("**/evaluate/runs/*/", timeout=240_000)
    assert len(seen) >= 2, f"the progress bar never moved: {sorted(seen)}"
    assert not running_findings, format_violations(running_findings, "the run page while training")
    shot(page, "evaluation-page")

    # 4. Ask a single question about an uploaded image.
    files = easy_vqa_files("test", tmp_path / "test", max_images=12)
    with zipfile.ZipFile(files["zip"]) as zf:
        first = sorted(n for n in zf.namelist() if n.endswith(".png"))[0]
        (tmp_path / "mine.png").write_bytes(zf.read(first))
    page.click("button[data-bs-target='#tab-single']")
    page.set_input_files("#q-image", str(tmp_path / "mine.png"))
    page.fill("#q-question", "What shape is in the image?")
    page.click("#tab-single button[type=submit]")
    page.wait_for_selector("[data-testid=answer]")
    answer = page.inner_text("[data-testid=answer]").strip()
    # A quick run on 200 images is not accurate yet; the answer must come from the learned vocabulary.
    vocabulary = {"circle", "rectangle", "triangle", "yes", "no", "red", "green", "blue", "black", "gray",
                  "teal", "brown", "yellow"}
    assert answer in vocabulary, answer
    assert page.locator("[data-testid=top-k] li").count() == 5
    page.wait_for_function("document.querySelector('#result-image').complete && document.querySelector('#result-image').naturalWidth > 0")
    shot(page, "single-answer-overlay")
    assert_accessible(page, "single answer with overlay")

    # 5. Batch evaluation with answers, then both downloads.
    page.click("button[data-bs-target='#tab-batch']")
    page.set_input_files("#b-images", str(files["zip"]))
    page.set_input_files("#b-questions", str(files["csv"]))
    page.click("text=Start the evaluation")
    page.wait_for_url("**/evaluate/evaluations/*/")
    page.wait_for_selector("[data-testid=vqa-accuracy]", timeout=180_000)
    shot(page, "batch-results")
    assert_accessible(page, "batch results")
    csv_file = _download(page, "Download predictions (CSV)", tmp_path)
    rows = list(csv.DictReader(io.StringIO(csv_file.read_text(encoding="utf-8-sig"))))
    n_questions = sum(1 for _ in open(files["csv"], encoding="utf-8-sig")) - 1
    assert len(rows) == n_questions and {"image", "question", "answer", "confidence"} <= set(rows[0])
    zip_file = _download(page, "Download annotated images (ZIP)", tmp_path)
    with zipfile.ZipFile(zip_file) as zf:
        pngs = [n for n in zf.namelist() if n.lower().endswith(".png")]
    assert len(pngs) == n_questions
