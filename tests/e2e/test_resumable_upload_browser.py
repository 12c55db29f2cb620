"""The upload page in Chromium: large files go through tus (tus-js-client served locally) with a progress
bar; a connection dropped in the middle continues from the server's offset; small files post as before."""
from __future__ import annotations

import io
import os
import zipfile

import pytest

from tests.api.dataset_uploads import clean_files

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _files(tmp_path):
    images, questions = clean_files()
    buf = io.BytesIO(images.read())
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_STORED) as zf:  # padding so the ZIP takes several pieces
        zf.writestr("notes/readme.txt", os.urandom(300_000))
    zp, qp = tmp_path / "shapes.zip", tmp_path / "questions.csv"
    zp.write_bytes(buf.getvalue())
    qp.write_bytes(questions.read())
    return zp, qp


def _login(page, url, user):
    page.goto(url + "/accounts/login/")
    page.fill("input[name=login]", user.username)
    page.fill("input[name=password]", f"pw-{user.username}-123")
    page.click("button[type=submit]")
    page.wait_for_url("**/projects/**")


def test_large_files_upload_resumably_and_survive_a_dropped_connection(
        page, live_server, owner, project, settings, tmp_path, shot):
    from datasets_app.models import Dataset, ResumableUpload

    settings.RESUMABLE_PAGE_MIN_BYTES = 200_000    # the ZIP goes through tus, the small CSV in the form
    settings.RESUMABLE_PAGE_CHUNK_BYTES = 64 * 1024
    zp, qp = _files(tmp_path)
    seen = []

    def on_upload_request(route, request):
        offset = request.headers.get("upload-offset")
        seen.append((request.method, offset))
        patches = [s for s in seen if s[0] == "PATCH"]
        if request.method == "PATCH" and len(patches) == 3:
            route.abort("connectionreset")  # the network drops in the middle of the upload
            return
        route.continue_()

    page.route("**/api/v1/uploads/**", on_upload_request)
    created = []   # the upload's id, from the Location the server gave the page's POST
    page.on("response", lambda r: created.append(r.headers["location"].rstrip("/").rsplit("/", 1)[-1])
            if r.request.method == "POST" and "/api/v1/uploads/" in r.url and r.status == 201 else None)
    _login(page, live_server.url, owner)
    page.goto(f"{live_server.url}/datasets/projects/{project.pk}/upload/")
    assert page.evaluate("typeof window.tus === 'object' && window.tus.isSupported")
    page.fill("input[name=name]", "resumed in the browser")
    page.set_input_files("input[name=images]", str(zp))
    page.set_input_files("input[name=questions]", str(qp))
    page.click("#upload-submit")
    page.wait_for_url("**/datasets/*/", timeout=60_000)
    shot(page, "resumable-upload-done")

    ds = Dataset.objects.get(name="resumed in the browser")
    with ds.images_file.open("rb") as fh:
        assert fh.read() == zp.read_bytes()  # every byte arrived once, in order
    assert ds.questions_original_name == "questions.csv" and ds.images_original_name == "shapes.zip"
    assert not ResumableUpload.objects.exists()  # consumed by the dataset
    # the page names the project, so the bytes were stored where the dataset keeps them: taken in place, no copy
    assert len(created) == 1 and ds.images_file.name == f"projects/{project.pk}/uploads/{created[0]}.zip"
    methods = [m for m, _ in seen]
    assert methods[0] == "POST" and "HEAD" in methods[methods.index("PATCH"):], seen  # asked where to resume
    resumed = [int(o) for m, o in seen[seen.index(("HEAD", None)):] if m == "PATCH"]
    assert resumed and resumed[0] == 2 * 64 * 1024, seen  # continued after the two pieces that had arrived


def test_small_files_still_post_in_the_form(page, live_server, owner, project, tmp_path):
    from datasets_app.models import Dataset, ResumableUpload

    images, questions = clean_files()
    zp, qp = tmp_path / "s.zip", tmp_path / "q.csv"
    zp.write_bytes(images.read())
    qp.write_bytes(questions.read())
    tus_requests = []
    page.on("request", lambda r: tus_requests.append(r.url) if "/api/v1/uploads/" in r.url else None)
    _login(page, live_server.url, owner)
    page.goto(f"{live_server.url}/datasets/projects/{project.pk}/upload/")
    page.set_input_files("input[name=images]", str(zp))
    page.set_input_files("input[name=questions]", str(qp))
    page.click("#upload-submit")
    page.wait_for_url("**/datasets/*/")
    assert Dataset.objects.filter(project=project).count() == 1 and tus_requests == []
    assert not ResumableUpload.objects.exists()
