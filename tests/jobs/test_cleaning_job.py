"""The cleaning job on real Postgres + Redis + an RQ SimpleWorker: results, report, rollback, cancel."""
from __future__ import annotations

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command

from datasets_app import jobs as dataset_jobs
from datasets_app import services
from datasets_app.models import Dataset, DatasetItem, DroppedRow
from piggyback.jobs import Reporter
from tests.api.dataset_uploads import FORMULA, clean_files, csv_bytes, mixed_files, upload, zip_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Users are made by the shared fixtures; a cheap hasher keeps this file fast on 2 cores."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def create(owner, project, files, name="d", capture=None):
    images, questions = files[:2]
    with capture(execute=True):
        ds = services.create_dataset(owner, project, name, images=images, questions=questions,
                                     annotations=files[2] if len(files) > 2 else None)
    return ds


def test_clean_upload_succeeds_with_items_counts_stats_and_images(
        owner, project, run_jobs, django_capture_on_commit_callbacks):
    ds = create(owner, project, clean_files(), capture=django_capture_on_commit_callbacks)
    assert ds.status == "queued" and ds.format == "csv"
    assert ds.images_file.name.startswith(f"projects/{project.pk}/uploads/") and "shapes" not in ds.images_file.name
    run_jobs()
    ds.refresh_from_db()
    assert ds.status == "succeeded", ds.error
    assert ds.level == "success" and ds.warnings == [] and ds.has_answers
    assert ds.counts["rows_in"] == 3 and ds.counts["rows_kept"] == 3 and ds.counts["images_kept"] == 3
    items = list(ds.items.order_by("row"))
    assert [i.row for i in items] == [2, 3, 4]
    assert items[1].answers == ["green", "green", "dark green"] * 3 + ["green"]
    assert items[2].answer_type == "yes/no" and items[0].question_type
    for it in items:
        assert it.image.startswith(f"projects/{project.pk}/datasets/{ds.pk}/images/")
        assert default_storage.exists(it.image)
    assert items[0].image_original_name == "shapes/a.png" and items[0].image_width == 16
    stats = ds.stats
    assert stats["questions"] == 3 and stats["images"] == 3
    assert dict(zip(stats["top_answers"]["labels"], stats["top_answers"]["values"])) == {"red": 1, "green": 1, "yes": 1}
    assert sum(stats["question_length"]["values"]) == 3 and stats["question_length"]["labels"][-1] == "5"
    assert dict(zip(stats["answer_types"]["labels"], stats["answer_types"]["values"])) == {"yes/no": 1, "other": 2}


def test_training_items_round_trip(owner, project, run_jobs, django_capture_on_commit_callbacks):
    ds = create(owner, project, clean_files(), capture=django_capture_on_commit_callbacks)
    with pytest.raises(services.Conflict, match="not ready"):
        services.training_items(ds)
    run_jobs()
    ds.refresh_from_db()
    items, root = services.training_items(ds)
    assert root == services.dataset_image_root(ds)
    assert [it["id"] for it in items] == list(ds.items.order_by("row").values_list("pk", flat=True))
    assert set(items[0]) >= {"id", "image", "question", "answers", "answer_type", "question_type"}
    for it in items:
        assert "/" not in it["image"] and (root / it["image"]).is_file()
        assert len(it["answers"]) == 10
    # repeated strings are one object (a 440,000-question dataset fits a worker): answers, question texts
    assert all(a is items[0]["answers"][0] for a in items[0]["answers"])
    assert items[0]["question"] == items[1]["question"] and items[0]["question"] is items[1]["question"]
    # the training job's slim items: the same questions in the same order (so the same split), only the keys
    # training reads, and one shared tuple per distinct answer list
    slim, _root = services.training_items(ds, labelled_only=True, slim=True)
    full = [it for it in items if it["answers"]]
    assert set(slim[0]) == {"image", "question", "answers", "answer_type", "question_type"}
    assert [(it["image"], it["question"], list(it["answers"])) for it in slim] == \
        [(it["image"], it["question"], it["answers"]) for it in full]
    assert isinstance(slim[0]["answers"], tuple) and all(a is slim[0]["answers"][0] for a in slim[0]["answers"])
    by_value: dict = {}
    for it in slim:
        assert by_value.setdefault(it["answers"], it["answers"]) is it["answers"]
    # batch evaluation reads the same questions a chunk at a time, every question of an image in one chunk
    from evaluation_app.jobs import _DatasetChunks

    def key(it):
        return (it["image"], it["question"], tuple(it["answers"]), it["answer_type"], it["question_type"], it["row"],
                it["stored"], it["image_original_name"])

    for size in (1, 3, 1000):
        chunks = _DatasetChunks(ds, size)
        assert chunks.n == len(items) and chunks.images == len({it["image"] for it in items})
        read = list(chunks)
        assert sorted(key(it) for chunk in read for it in chunk) == sorted(key(it) for it in items)
        images = [{it["image"] for it in chunk} for chunk in read]
        assert all(not (a & b) for i, a in enumerate(images) for b in images[i + 1:])   # no image in two chunks
        assert all(len(chunk) <= size or len(imgs) == 1 for chunk, imgs in zip(read, images))
    assert len(list(_DatasetChunks(ds, 1000))) == 1


def test_warning_level_keeps_every_dropped_row_with_reason(
        owner, project, run_jobs, django_capture_on_commit_callbacks):
    ds = create(owner, project, mixed_files(), capture=django_capture_on_commit_callbacks)
    run_jobs()
    ds.refresh_from_db()
    assert ds.status == "succeeded" and ds.level == "warning"
    c = ds.counts
    assert (c["rows_in"], c["rows_kept"], c["rows_dropped"]) == (8, 4, 4)
    assert (c["images_in"], c["images_kept"], c["images_dropped"]) == (5, 4, 1)
    assert c["dropped_by_reason"] == {"image_not_found": 1, "duplicate": 1, "not_an_image": 1, "empty_question": 1}
    rows = {d.row: d for d in DroppedRow.objects.filter(dataset=ds)}
    assert rows[6].reason_code == "image_not_found" and rows[6].question == FORMULA
    assert "Row 7 is a duplicate of row 2" in rows[7].reason
    assert rows[None].image == "broken.png"
    text = services.report_csv(ds)
    assert "'" + FORMULA.replace('"', '""') in text and "\n=HYPERLINK" not in text and ",=HYPERLINK" not in text


def test_failure_names_the_problem_and_leaves_other_datasets_alone(
        owner, project, run_jobs, django_capture_on_commit_callbacks):
    good = create(owner, project, clean_files(), "good", capture=django_capture_on_commit_callbacks)
    wrong_header = upload("q.csv", csv_bytes([("a.png", "q?")], header=("picture", "question")))
    bad_columns = create(owner, project, (clean_files()[0], wrong_header), "bad columns",
                         capture=django_capture_on_commit_callbacks)
    questions = mixed_files()[1]
    no_images = create(owner, project, (upload("none.zip", zip_bytes({"x.png": b"junk"})), questions),
                       "no images", capture=django_capture_on_commit_callbacks)
    run_jobs()
    for ds in (good, bad_columns, no_images):
        ds.refresh_from_db()
    assert good.status == "succeeded" and good.items.count() == 3
    assert bad_columns.status == "failed"
    assert "no image column" in bad_columns.error and "'picture'" in bad_columns.error
    assert no_images.status == "failed" and "no usable images" in no_images.error
    for ds in (bad_columns, no_images):
        assert ds.items.count() == 0 and ds.dropped.count() == 0 and ds.counts == {}
        assert not default_storage.exists(services.images_prefix(ds))


def test_error_while_saving_rolls_everything_back(
        owner, project, run_jobs, django_capture_on_commit_callbacks, monkeypatch):
    ds = create(owner, project, mixed_files(), capture=django_capture_on_commit_callbacks)
    real_bulk = DroppedRow.objects.bulk_create

    def boom(*a, **kw):
        raise RuntimeError("disk full")

    monkeypatch.setattr(DroppedRow.objects, "bulk_create", boom)
    run_jobs()
    monkeypatch.setattr(DroppedRow.objects, "bulk_create", real_bulk)
    ds.refresh_from_db()
    assert ds.status == "failed" and "disk full" in ds.error and "Traceback" in ds.traceback
    assert DatasetItem.objects.filter(dataset=ds).count() == 0  # items were created, then rolled back
    assert ds.counts == {} and ds.stats == {}
    assert not default_storage.exists(services.images_prefix(ds))
    # retry works and fills everything
    with django_capture_on_commit_callbacks(execute=True):
        services.retry_cleaning(ds)
    run_jobs()
    ds.refresh_from_db()
    assert ds.status == "succeeded" and ds.attempts == 2 and ds.items.count() == 4 and ds.dropped.count() == 5


def test_cancel_during_cleaning_leaves_no_half_data(
        owner, project, run_jobs, django_capture_on_commit_callbacks, monkeypatch):
    ds = create(owner, project, clean_files(), capture=django_capture_on_commit_callbacks)
    real_clean = dataset_jobs.clean_dataset

    def clean_then_cancel(*args, **kwargs):
        result = real_clean(*args, **kwargs)
        Dataset.objects.filter(pk=ds.pk).update(cancel_requested=True)
        return result

    monkeypatch.setattr(dataset_jobs, "clean_dataset", clean_then_cancel)
    # read the flag on every call (the real Reporter reads it at most once a second)
    monkeypatch.setattr(Reporter, "should_cancel",
                        lambda self: Dataset.objects.get(pk=self.row.pk).cancel_requested)
    run_jobs()
    ds.refresh_from_db()
    assert ds.status == "cancelled"
    assert ds.items.count() == 0 and ds.dropped.count() == 0 and ds.counts == {}
    assert not default_storage.exists(services.images_prefix(ds))


@pytest.mark.django_db(transaction=True)  # the command's enqueue fires on a real commit
def test_load_sample_dataset_command_sync(owner, project, redis_conn, capsys):
    call_command("load_sample_dataset", "--project", str(project.pk), "--images", "12", "--sync")
    ds = Dataset.objects.get(project=project)
    assert ds.status == "succeeded", ds.error
    assert ds.counts["images_kept"] == 12 and ds.items.count() == ds.counts["rows_kept"] > 12
    assert "Your dataset is ready: 12 images" in capsys.readouterr().out
    assert ds.stats["top_answers"]["labels"]


def test_thumbnails_are_made_once_at_cleaning_and_list_pages_use_them(
        owner, project, run_jobs, django_capture_on_commit_callbacks, client, settings):
    """Each kept image gets a WebP of at most 256 px in storage; the item list shows those, never the photos;
    items cleaned before thumbnails existed get one on first view, stored for the next."""
    import io

    from PIL import Image

    settings.CLEANING_WORKERS = 2  # the process pool, as on a worker with two cores
    ds = create(owner, project, clean_files(), capture=django_capture_on_commit_callbacks)
    run_jobs()
    ds.refresh_from_db()
    assert ds.status == "succeeded", ds.error
    items = list(ds.items.order_by("row"))
    for it in items:
        assert it.thumbnail.startswith(f"projects/{project.pk}/datasets/{ds.pk}/thumbs/") and it.thumbnail.endswith(".webp")
        with default_storage.open(it.thumbnail, "rb") as fh, Image.open(fh) as im:
            assert im.format == "WEBP" and max(im.size) <= 256
    client.force_login(owner)
    html = client.get(f"/datasets/{ds.pk}/").content.decode()
    assert f"/datasets/items/{items[0].pk}/thumbnail" in html and f"/datasets/items/{items[0].pk}/image" not in html.replace(
        f'href="/datasets/items/{items[0].pk}/image"', "")
    resp = client.get(f"/datasets/items/{items[0].pk}/thumbnail")
    assert resp.status_code == 200 and resp["Content-Type"] == "image/webp"
    api = client.get(f"/api/v1/datasets/{ds.pk}/items/").json()["results"][0]
    assert api["thumbnail_url"] == f"/datasets/items/{items[0].pk}/thumbnail"
    # an item from before thumbnails: made on first request, stored, reused
    old = items[1]
    default_storage.delete(old.thumbnail)
    DatasetItem.objects.filter(pk=old.pk).update(thumbnail="")
    resp = client.get(f"/api/v1/datasets/{ds.pk}/items/{old.pk}/thumbnail/")
    assert resp.status_code == 200
    with Image.open(io.BytesIO(b"".join(resp.streaming_content))) as im:
        assert im.format == "WEBP"
    old.refresh_from_db()
    assert old.thumbnail.endswith(".webp") and default_storage.exists(old.thumbnail)
    # deleting the dataset removes the thumbnails too
    thumb = old.thumbnail
    services.delete_stored_files(ds)
    assert not default_storage.exists(thumb)


def test_excel_questions_file_is_cleaned_like_csv(owner, project, run_jobs, django_capture_on_commit_callbacks):
    import io

    import openpyxl

    images = clean_files()[0]
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["image", "question", "answers"])
    ws.append(["shapes/a.png", "What color is it?", "Red"])
    ws.append([])
    ws.append(["shapes/b.png", "Is it green?", "yes|yeah"])
    ws.append(["missing.png", "Where?", "here"])
    buf = io.BytesIO()
    wb.save(buf)
    ds = create(owner, project, (images, upload("questions.xlsx", buf.getvalue())),
                capture=django_capture_on_commit_callbacks)
    run_jobs()
    ds.refresh_from_db()
    assert ds.status == "succeeded", ds.error
    assert ds.format == "csv" and ds.counts["rows_kept"] == 2
    assert [(i.row, i.answers[0]) for i in ds.items.order_by("row")] == [(2, "red"), (4, "yes")]
    dropped = list(ds.dropped.filter(row__isnull=False))
    assert [(d.row, d.reason_code) for d in dropped] == [(5, "image_not_found")]


def test_items_are_spooled_in_chunks_and_inserted_in_batches(
        owner, project, run_jobs, django_capture_on_commit_callbacks, monkeypatch):
    """The job hands the cleaning a sink (chunks of 2 here) and inserts 2 rows per query: same rows, same order."""
    real_clean = dataset_jobs.clean_dataset
    chunks = []

    def small_chunks(*a, **kw):
        sink = kw["sink"]
        real_add = sink.add_items

        def add_items(items):
            chunks.append(len(items))
            real_add(items)
        sink.add_items = add_items
        return real_clean(*a, **dict(kw, chunk_size=2))

    monkeypatch.setattr(dataset_jobs, "clean_dataset", small_chunks)
    monkeypatch.setattr(dataset_jobs, "BATCH", 2)
    ds = create(owner, project, mixed_files(), capture=django_capture_on_commit_callbacks)
    run_jobs()
    ds.refresh_from_db()
    assert ds.status == "succeeded", ds.error
    assert chunks == [2, 2] and ds.items.count() == 4 == ds.counts["rows_kept"]
    assert ds.dropped.count() == 5 and ds.stats["questions"] == 4
    rows = list(ds.items.order_by("pk").values_list("row", flat=True))
    assert rows == sorted(rows)
