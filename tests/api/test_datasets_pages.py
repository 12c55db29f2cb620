"""Dataset pages: upload (formats, banners, sample), detail (progress, counts, report, items, charts),
thumbnails and permissions."""
from __future__ import annotations

import io
import zipfile

import pytest
from django.urls import reverse

from datasets_app.models import Dataset
from tests.api.dataset_uploads import FORMULA, clean_files, hostile_zip_files, mixed_files, png, upload, vqa2_files

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def page_upload(client, project, files, name, capture):
    data = {"name": name, "images": files[0], "questions": files[1]}
    if len(files) > 2:
        data["annotations"] = files[2]
    with capture(execute=True):
        return client.post(reverse("datasets:upload", args=[project.pk]), data)


@pytest.fixture
def logged_in(client, owner):
    client.force_login(owner)
    return client


def test_upload_page_explains_formats_and_offers_the_sample(logged_in, project):
    r = logged_in.get(reverse("datasets:upload", args=[project.pk]))
    assert r.status_code == 200
    html = r.content.decode()
    for text in ("CSV", "VQAv2", "JSON Lines", "answer_1", 'enctype="multipart/form-data"',
                 reverse("datasets:sample", args=["easy-vqa-images.zip"]),
                 reverse("datasets:sample", args=["easy-vqa-questions.csv"]),
                 reverse("datasets:load_sample", args=[project.pk])):
        assert text in html, text


def test_page_upload_csv_then_green_detail_with_charts_items_and_train_button(
        logged_in, project, run_jobs, django_capture_on_commit_callbacks):
    r = page_upload(logged_in, project, clean_files(), "Shapes", django_capture_on_commit_callbacks)
    ds = Dataset.objects.get(name="Shapes")
    assert r.status_code == 302 and r["Location"] == reverse("datasets:detail", args=[ds.pk])
    html = logged_in.get(r["Location"]).content.decode()
    assert 'id="progress"' in html and f"/api/v1/datasets/{ds.pk}/" in html and "pbPoll" in html
    run_jobs()
    html = logged_in.get(r["Location"]).content.decode()
    assert "alert-success" in html and "Your dataset is ready: 3 images, 3 questions" in html
    for canvas in ("chart-answers", "chart-length", "chart-types", "chart-qtypes", "dataset-stats", "chart.umd.js"):
        assert canvas in html, canvas
    assert f"/training/datasets/{ds.pk}/start/" in html and "Train a model on this dataset" in html
    item = ds.items.order_by("row").first()
    assert reverse("datasets:item_image", args=[item.pk]) in html
    assert "pbPoll" not in html
    r = logged_in.get(reverse("datasets:item_image", args=[item.pk]))
    assert r.status_code == 200 and r["Content-Type"] == "image/png"


def test_page_upload_vqav2_with_annotations(logged_in, project, run_jobs, django_capture_on_commit_callbacks):
    page_upload(logged_in, project, vqa2_files(), "COCO bits", django_capture_on_commit_callbacks)
    run_jobs()
    ds = Dataset.objects.get(name="COCO bits")
    assert ds.status == "succeeded" and ds.format == "vqav2" and ds.items.count() == 2


def test_upload_errors_show_a_red_banner_naming_the_file(logged_in, project, redis_conn):
    r = logged_in.post(reverse("datasets:upload", args=[project.pk]),
                       {"images": upload("photo.png", png()), "questions": clean_files()[1]})
    assert r.status_code == 400
    html = r.content.decode()
    assert "alert-danger" in html and "photo.png" in html and "not a ZIP archive" in html
    r = logged_in.post(reverse("datasets:upload", args=[project.pk]), {"name": "x"})
    assert r.status_code == 400 and "alert-danger" in r.content.decode()
    assert not Dataset.objects.exists()


def test_warning_detail_yellow_banner_counts_report_and_search(
        logged_in, project, run_jobs, django_capture_on_commit_callbacks):
    page_upload(logged_in, project, mixed_files(), "Mixed", django_capture_on_commit_callbacks)
    run_jobs()
    ds = Dataset.objects.get(name="Mixed")
    url = reverse("datasets:detail", args=[ds.pk])
    html = logged_in.get(url).content.decode()
    assert "alert-warning" in html and "4 of 8 rows and 1 of 5 images were removed" in html
    assert "upload again" in html and "image not found" in html and "not an image" in html
    assert "Row 7 is a duplicate of row 2 (same image and question)." in html
    assert reverse("datasets:report", args=[ds.pk]) in html
    html = logged_in.get(url, {"q": "circle"}).content.decode()
    assert "Is there a circle?" in html and "How many shapes" not in html
    r = logged_in.get(reverse("datasets:report", args=[ds.pk]))
    text = r.content.decode("utf-8-sig")
    assert r.status_code == 200 and "'" + FORMULA.replace('"', '""') in text
    assert "\n=" not in text and ",=" not in text


def test_failed_detail_red_banner_and_retry(logged_in, project, run_jobs, django_capture_on_commit_callbacks):
    page_upload(logged_in, project, hostile_zip_files(), "Evil", django_capture_on_commit_callbacks)
    run_jobs()
    ds = Dataset.objects.get(name="Evil")
    html = logged_in.get(reverse("datasets:detail", args=[ds.pk])).content.decode()
    assert "alert-danger" in html and "could not be used" in html and "no usable images" in html
    assert "Fix the files and upload again" in html and "Retry the cleaning" in html
    assert "Train a model" not in html
    with django_capture_on_commit_callbacks(execute=True):
        r = logged_in.post(reverse("datasets:retry", args=[ds.pk]))
    assert r.status_code == 302
    ds.refresh_from_db()
    assert ds.status == "queued" and ds.attempts == 2


def test_sample_files_download(logged_in):
    r = logged_in.get(reverse("datasets:sample", args=["easy-vqa-images.zip"]))
    assert r.status_code == 200 and r["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(b"".join(r.streaming_content))) as zf:
        assert len(zf.namelist()) == 200 and all(n.endswith(".png") for n in zf.namelist())
    r = logged_in.get(reverse("datasets:sample", args=["easy-vqa-questions.csv"]))
    first = b"".join(r.streaming_content).decode("utf-8-sig").splitlines()[0]
    assert first == "image,question,answer"
    assert logged_in.get(reverse("datasets:sample", args=["settings.py"])).status_code == 404


def test_load_sample_button(logged_in, project, run_jobs, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        r = logged_in.post(reverse("datasets:load_sample", args=[project.pk]))
    ds = Dataset.objects.get(project=project)
    assert r.status_code == 302 and r["Location"] == reverse("datasets:detail", args=[ds.pk])
    run_jobs()
    ds.refresh_from_db()
    assert ds.status == "succeeded" and ds.counts["images_kept"] == 200


def test_project_section_lists_datasets_and_upload_button_for_editors(
        client, logged_in, members, project, run_jobs, django_capture_on_commit_callbacks):
    page_upload(logged_in, project, clean_files(), "Shapes", django_capture_on_commit_callbacks)
    run_jobs()
    html = logged_in.get(reverse("projects:detail", args=[project.pk])).content.decode()
    assert "Shapes" in html and "3 images · 3 questions" in html and "Ready" in html
    assert reverse("datasets:upload", args=[project.pk]) in html
    client.force_login(members["viewer"])
    html = client.get(reverse("projects:detail", args=[project.pk])).content.decode()
    assert "Shapes" in html and reverse("datasets:upload", args=[project.pk]) not in html


def test_page_permissions(client, owner, members, other_user, project, run_jobs, django_capture_on_commit_callbacks):
    client.force_login(owner)
    page_upload(client, project, clean_files(), "Shapes", django_capture_on_commit_callbacks)
    run_jobs()
    ds = Dataset.objects.get(name="Shapes")
    item = ds.items.first()
    reads = [reverse("datasets:detail", args=[ds.pk]), reverse("datasets:report", args=[ds.pk]),
             reverse("datasets:item_image", args=[item.pk])]
    client.force_login(other_user)
    for url in reads + [reverse("datasets:upload", args=[project.pk])]:
        assert client.get(url).status_code == 404, url
    assert client.post(reverse("datasets:delete", args=[ds.pk])).status_code == 404
    client.force_login(members["viewer"])
    for url in reads:
        assert client.get(url).status_code == 200, url
    html = client.get(reads[0]).content.decode()
    assert "Train a model" not in html and "Delete" not in html
    assert client.get(reverse("datasets:upload", args=[project.pk])).status_code == 403
    assert client.post(reverse("datasets:load_sample", args=[project.pk])).status_code == 403
    client.force_login(members["editor"])
    assert client.post(reverse("datasets:delete", args=[ds.pk])).status_code == 403
    client.force_login(owner)
    r = client.post(reverse("datasets:delete", args=[ds.pk]))
    assert r.status_code == 302 and r["Location"] == reverse("projects:detail", args=[project.pk])
    assert not Dataset.objects.filter(pk=ds.pk).exists()
    client.logout()
    assert client.get(reads[0]).status_code == 302  # to the login page
